"""``qe live``: one configuration file, the run to start or resume, the terminal panel, Ctrl-C to stop.

A live configuration (TOML) holds three tables, each strict::

    [backtest]                 # what a backtest of the same strategy takes: capital, timeframe, risk, instruments
    initial_capital = 250000
    timeframe = "1m"
    [backtest.risk]
    max_position_size = 2

    [live]                     # engine.live.session.LiveSettings
    roots = ["MES"]
    ib_strategy = "band"       # the strategy's name under [ib.strategies] (default: the only one there)

    [ib]                       # engine.adapters.ib.accounts: accounts, client ids, the strategy's account
    ...

Starting ``qe live`` again with the same strategy resumes the warehouse's current session of it (same run,
orders reconciled with the broker; :mod:`engine.live.checkpoint`) unless it ended cleanly with ``--new``
given, or the last session was another strategy's.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from engine.backtest.run import BacktestConfig
from engine.live.control import find_session, read_session
from engine.live.session import LiveSettings
from engine.runner import make_strategy, parse_params
from engine.strategy import strategy_name
from warehouse.errors import ConfigError, QEError

__all__ = ["run_live_command", "LiveFile", "read_live_file"]


class LiveFile:
    """The three tables of a live configuration file, validated."""

    def __init__(self, backtest: BacktestConfig, live: LiveSettings, ib: Any, path: Path | None) -> None:
        self.backtest, self.live, self.ib, self.path = backtest, live, ib, path


def read_live_file(path: Path | None) -> LiveFile:
    """Read and check a live configuration (one line naming the table and key on any problem)."""
    from engine.adapters.ib.accounts import load_ib_config

    data: dict[str, Any] = {}
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"live config not found: {path}")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    unknown = sorted(set(data) - {"backtest", "live", "ib"})
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {', '.join(unknown)} (a live config has [backtest], [live], [ib])")
    parts: dict[str, Any] = {}
    for name, model in (("backtest", BacktestConfig), ("live", LiveSettings)):
        try:
            parts[name] = model.model_validate(data.get(name, {}))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"{path}: [{name}] {where}: {first['msg']}") from None
    if "ib" not in data:
        raise ConfigError(f"{path or 'qe live'}: the config needs an [ib] table (accounts and the strategy's account)")
    return LiveFile(parts["backtest"], parts["live"], load_ib_config(data), path)


def run_live_command(wh, *, strategy: str, query: str, params: list[str] | None, config: Path | None,  # noqa: ANN001
                     live: bool, new: bool = False) -> str:
    """Run (or resume) a session until Ctrl-C; returns its run id."""
    from engine.adapters.ib.journal import OrderJournal
    from engine.live.runner import trade
    from engine.results.ledger import new_run_id

    settings = read_live_file(config)
    timeframe = settings.backtest.timeframe or "1m"
    instance = make_strategy(strategy, parse_params(params))
    name = settings.live.ib_strategy or _only_strategy(settings.ib)
    kind = "live" if live else "paper"
    resumed = None if new else _resumable(Path(wh.root), name, kind)
    run_id = resumed or new_run_id()
    print(f"{'resuming' if resumed else 'starting'} {kind} session {run_id} ({strategy_name(instance)}); "
          "Ctrl-C stops it (qe live starts it again where it stopped)", file=sys.stderr)

    def make_handler(run: str, contracts: dict[str, str], risk):  # noqa: ANN001, ANN202
        return settings.ib.handler(name, run, live=live, journal=OrderJournal(Path(wh.root)), risk=risk)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        show, panel = _panel()
        try:
            await trade(wh, instance, query, settings.backtest, settings.live, make_handler=make_handler, kind=kind,
                        run_id=run_id, timeframe=timeframe, config_path=config, show=show, stop=stop)
        finally:
            if panel is not None:
                panel.stop()

    asyncio.run(main())
    return run_id


def _only_strategy(ib: Any) -> str:
    names = list(ib.strategies)
    if len(names) != 1:
        raise ConfigError("the IB config binds " + (f"{len(names)} strategies ({', '.join(names)})" if names else
                                                    "no strategy") + "; name this one with [live] ib_strategy")
    return names[0]


def _resumable(root: Path, strategy: str, kind: str) -> str | None:
    """The warehouse's current session when it is this strategy's (its name at the broker), of this kind."""
    try:
        info = read_session(find_session(root))
    except QEError:
        return None
    return info.run_id if info.strategy == strategy and info.kind == kind else None


def _panel():  # noqa: ANN202
    """The rich panel refreshed with every status when stdout is a terminal; else nothing."""
    if not sys.stdout.isatty():
        return None, None
    from rich.live import Live

    from engine.live.panel import status_panel

    live = Live(refresh_per_second=4, transient=False)
    live.start()
    return (lambda status: live.update(status_panel(status))), live
