"""What the command line needs around a backtest: load a strategy by name, a strict config file, params.

Kept apart from the CLI so that the same resolution (``module:Class`` or ``path/to/file.py:Class``) serves
walk-forward worker processes and tests.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from engine.backtest.run import BacktestConfig
from engine.configfile import read_table
from engine.strategy import FunctionStrategy, Strategy, checked_params
from warehouse.errors import ConfigError

__all__ = ["load_strategy_class", "make_strategy", "parse_params", "load_config"]


def load_strategy_class(spec: str) -> Any:
    """The class (or function) named by ``module.path:Name`` or ``path/to/file.py:Name``."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"strategy must be 'module:Name' or 'file.py:Name', not {spec!r}")
    if module_name.endswith(".py"):
        path = Path(module_name).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"strategy file not found: {module_name}")
        unique = f"qe_user_strategy_{abs(hash(str(path)))}"
        loader = importlib.util.spec_from_file_location(unique, path)
        module = importlib.util.module_from_spec(loader)
        module.__qe_strategy_file__ = str(path)  # the ledger names the file, not this generated module name
        sys.modules[unique] = module
        loader.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"cannot import strategy module {module_name!r}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise ConfigError(f"{module_name} has no {attr!r}") from exc


def make_strategy(spec: str, params: dict[str, Any] | None = None) -> Strategy:
    """Instantiate the strategy ``spec`` with ``params`` (a function becomes a :class:`FunctionStrategy`)."""
    target = load_strategy_class(spec)
    params = params or {}
    if isinstance(target, type) and issubclass(target, Strategy):
        params = checked_params(target, params, label=spec)
        try:
            return target(**params)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{spec}: {exc}") from exc
    if callable(target):
        if params:
            raise ConfigError(f"{spec} is a function; parameters apply to Strategy classes only")
        return FunctionStrategy(target)
    raise ConfigError(f"{spec} is neither a Strategy subclass nor a function")


def parse_params(pairs: list[str] | None) -> dict[str, str]:
    """``["fast=10", "name=x"]`` -> ``{"fast": "10", "name": "x"}``: the text as typed.

    Values stay text: the strategy's (or generator's) declared type converts them, so ``name=1.50`` reaches
    a ``str`` parameter as ``"1.50"`` and ``fast=five`` is refused by the ``int`` parameter it is meant for.
    """
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"parameter must be key=value, not {pair!r}")
        out[key.strip()] = value
    return out


def load_config(path: Path | None, **overrides: Any) -> BacktestConfig:
    """A :class:`BacktestConfig` from a TOML or JSON file (strict), with command-line overrides on top."""
    data: dict[str, Any] = {} if path is None else read_table(path, "backtest")
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return BacktestConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path or 'config'}: {where}: {first['msg']}") from exc
