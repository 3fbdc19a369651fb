"""Strategies: a class with ``on_start / on_bar / on_fill / on_stop``, or a plain function.

``on_bar(bar)`` receives the current bar as a named tuple whose fields are the query's columns, as plain
Python values (``bar.symbol``, ``bar.close``, ``bar.rsi_14``; ``bar["rsi_14"]`` works too); ``bar.ts`` is
the bar's open time in integer nanoseconds since the epoch (UTC) and ``bar.qe_trading_day`` its CME
trading date in days since 1970-01-01 (cheap integers: the loop runs a million bars in about a second).
It returns an :class:`~engine.core.orders.Order`, a list of orders or ``None``; orders may also be submitted
with :meth:`Strategy.submit`. The strategy sees its account through the helpers below.

The functional form ``strategy(bar, backtester) -> Optional[Order]`` is wrapped by
:class:`FunctionStrategy`.
"""

from __future__ import annotations

import inspect
import sys
import types
import typing
from collections.abc import Callable
from typing import Any, Protocol

from engine.core.orders import Fill, Order, OrderType, TimeInForce
from engine.core.params import Param
from warehouse.errors import ConfigError, QEError


__all__ = ["Engine", "Strategy", "FunctionStrategy", "declared_params", "checked_params", "strategy_name"]


class Engine(Protocol):
    """What a strategy reaches as ``self.engine``: the kernel (:class:`engine.kernel.TradingKernel`), in a
    backtest and live alike. Named here, not imported, so the strategy base depends on no mode."""

    portfolio: Any
    handler: Any
    histories: dict
    orders: list
    now: int

    def submit(self, order: Order) -> Order: ...
    def cancel(self, order: Order) -> bool: ...
    def position(self, symbol: str) -> int: ...
    def price(self, symbol: str) -> float | None: ...
    def sized_target(self, symbol: str, signal: float, instrument_vol: float | None = None) -> int: ...
    def kill_switch(self, reason: str = "manual") -> None: ...
    def reset_kill_switch(self) -> None: ...

#: Python annotation -> declared parameter type
_PARAM_TYPES = {int: "int", float: "double", bool: "bool", str: "str"}


class Strategy:
    """Base class of event-driven strategies.

    Attributes
    ----------
    history_size : int
        Bars of history kept per symbol for :meth:`history` (0 keeps none and saves time in the loop).
    params : dict
        Parameters given at construction (``--param k=v`` on the command line).

    A strategy declares its parameters as the keyword arguments of its ``__init__``, each with a type
    annotation (``int``, ``float``, ``bool`` or ``str``) and a default::

        def __init__(self, fast: int = 20, slow: int = 50) -> None:
            super().__init__(fast=fast, slow=slow)

    Given parameters are checked against them before the strategy is built (:func:`checked_params`).
    """

    history_size: int = 50

    def __init__(self, **params: Any) -> None:
        self.params = params
        for key, value in params.items():
            setattr(self, key, value)
        self.engine: Engine | None = None

    # -- callbacks ----------------------------------------------------------------------------------
    def on_start(self) -> None:
        """Called once before the first bar."""

    def on_bar(self, bar: Any) -> Order | list[Order] | None:
        """Called for every bar (every symbol, in time order)."""
        return None

    def on_fill(self, fill: Fill) -> None:
        """Called for every fill of this strategy's orders (and for roll legs)."""

    def on_stop(self) -> None:
        """Called once after the last bar."""

    # -- account helpers ----------------------------------------------------------------------------
    def position(self, symbol: str) -> int:
        """Signed contracts held."""
        return self.engine.portfolio.position(symbol)

    def working_quantity(self, symbol: str) -> int:
        """Signed contracts of orders still working."""
        return self.engine.handler.working_quantity(symbol)

    @property
    def equity(self) -> float:
        """Account equity marked to the latest closes, currency."""
        return self.engine.portfolio.equity

    @property
    def cash(self) -> float:
        return self.engine.portfolio.cash

    def target_position(self, symbol: str, target: int, tag: str = "") -> Order | None:
        """A market order that takes the position to ``target`` contracts, or None.

        ``delta = target - position - in-flight market orders``: market orders already on their way count,
        resting LIMIT/STOP/MIT orders do not (a protective stop under a long 2 leaves a target of 2 with
        nothing to do; cancel resting orders that no longer fit the target yourself).
        """
        delta = target - self.engine.portfolio.position(symbol) - self.engine.handler.in_flight_quantity(symbol)
        if delta == 0:
            return None
        return Order(symbol, delta, OrderType.MARKET, tif=TimeInForce.GTC, tag=tag)

    def submit(self, order: Order) -> Order:
        """Submit an order now (same as returning it from :meth:`on_bar`).

        A bracket (:func:`engine.core.orders.bracket`) is submitted through its entry: its take-profit and stop-loss
        go with it (submitting them again is a no-op, so the whole list may be submitted or returned).
        """
        self.engine.submit(order)
        return order

    def cancel(self, order: Order) -> bool:
        """Cancel a working order."""
        return self.engine.cancel(order)

    def working_orders(self, symbol: str | None = None) -> list[Order]:
        return self.engine.handler.working_orders(symbol)

    def history(self, symbol: str) -> list[Any]:
        """The last ``history_size`` bars of ``symbol``, oldest first, current bar last."""
        return list(self.engine.histories.get(symbol, ()))


class FunctionStrategy(Strategy):
    """Wraps ``fn(bar, backtester) -> Optional[Order]`` (or a list of orders)."""

    def __init__(self, fn: Callable[[Any, Engine], Order | list[Order] | None], history_size: int = 50) -> None:
        super().__init__()
        self.fn = fn
        self.history_size = history_size
        self.name = getattr(fn, "__qualname__", repr(fn))

    def on_bar(self, bar: Any) -> Order | list[Order] | None:
        return self.fn(bar, self.engine)


def declared_params(cls: type[Strategy]) -> dict[str, Param]:
    """The parameters ``cls`` declares.

    The annotated keyword arguments of its ``__init__`` with their defaults (``X | None`` / ``Optional[X]``
    declares an ``X`` whose default may be None; ``**kwargs`` declares nothing more). A strategy that keeps
    ``Strategy.__init__`` declares its public class attributes of type int, float, bool or str instead
    (``threshold = 0.5``; given values are set as attributes by ``Strategy.__init__``).

    Raises
    ------
    ConfigError
        A parameter without a default or whose type is not int, float, bool or str (the strategy's own
        mistake, named so its author can fix it).
    """
    if cls.__init__ is Strategy.__init__:
        return _class_attribute_params(cls)
    init = cls.__init__
    try:
        hints = typing.get_type_hints(init)
    except Exception:  # noqa: BLE001 - unresolvable annotations: fall back to the defaults' types
        hints = {}
    out: dict[str, Param] = {}
    for name, parameter in list(inspect.signature(init).parameters.items())[1:]:
        if parameter.kind in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
            continue
        if parameter.default is parameter.empty:
            raise ConfigError(f"{cls.__name__}: parameter {name!r} needs a default to be declared")
        kind = _param_type(hints.get(name, type(parameter.default)))
        if kind is None:
            raise ConfigError(f"{cls.__name__}: parameter {name!r} must be annotated int, float, bool or str "
                              "(or one of them | None)")
        out[name] = Param(name, kind, parameter.default, "")
    return out


def _param_type(annotation: Any) -> str | None:
    """``int`` -> ``"int"``, ``float | None`` -> ``"double"``; None for anything else."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else None
    return _PARAM_TYPES.get(annotation)


def _class_attribute_params(cls: type[Strategy]) -> dict[str, Param]:
    """Public int/float/bool/str class attributes of ``cls`` and its bases below :class:`Strategy`."""
    out: dict[str, Param] = {}
    for klass in reversed(cls.__mro__[:cls.__mro__.index(Strategy)]):
        for name, value in vars(klass).items():
            if name.startswith("_") or name in vars(Strategy):
                continue
            kind = _PARAM_TYPES.get(type(value))
            if kind is not None:
                out[name] = Param(name, kind, value, "")
    return out


def checked_params(cls: type[Strategy], params: dict[str, Any], label: str | None = None) -> dict[str, Any]:
    """``params`` coerced to the types ``cls`` declares; an unknown or ill-typed one is one ConfigError.

    ``label`` names the strategy in the message (default: the class name; the CLI gives its spec).

    Example: ``SmaCross`` with ``{"fats": 5}`` -> ``SmaCross: unknown parameter(s) fats; valid: fast (int,
    default 20), slow (int, default 50), quantity (int, default 1)``.
    """
    declared = declared_params(cls)
    label = label or cls.__name__
    unknown = sorted(k for k in params if k not in declared)
    if unknown:
        valid = ", ".join(f"{p.name} ({p.type}, default {p.default!r})" for p in declared.values()) or "none"
        raise ConfigError(f"{label}: unknown parameter(s) {', '.join(unknown)}; valid: {valid}")
    try:
        return {key: declared[key].coerce(value, label) for key, value in params.items()}
    except QEError as exc:  # one line naming the parameter and the type
        raise ConfigError(str(exc)) from None


def strategy_name(strategy: Strategy) -> str:
    """``module:Class`` or ``/path/to/file.py:Class`` (or the function's name) for the run ledger."""
    if isinstance(strategy, FunctionStrategy):
        return f"{_module_label(getattr(strategy.fn, '__module__', '?'))}:{strategy.name}"
    cls = type(strategy)
    return f"{_module_label(cls.__module__)}:{cls.__qualname__}"


def _module_label(module_name: str) -> str:
    """The module's name, or the file a strategy was loaded from (``file.py:Name`` on the command line)."""
    return getattr(sys.modules.get(module_name), "__qe_strategy_file__", module_name)
