"""Wiring of one live session: the broker's handler and bar feed, the session, and their orderly stop.

:func:`trade` is what ``qe live`` runs against TWS / IB Gateway and what the paper replay
(:mod:`engine.live.replay`) runs against the in-process gateway simulator: the same code path either way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from engine.adapters.ib.data import IBBarFeed
from engine.adapters.ib.handler import IBExecutionHandler
from engine.backtest.run import BacktestConfig
from engine.core.instruments import InstrumentBook
from engine.live.control import LiveStatus, create_session
from engine.live.eventlog import EventLog
from engine.live.maintenance import RollMaintenance, next_contract
from engine.live.operator import Operator
from engine.live.session import LiveSession, LiveSettings, universe
from engine.risk import RiskManager
from engine.strategy import Strategy
from warehouse.rolls import front_contracts
from warehouse.sessions import trading_date

__all__ = ["Running", "trade"]

log = logging.getLogger(__name__)

#: ``make_handler(run_id, contracts, risk) -> IBExecutionHandler``: the broker connection of a session
HandlerFactory = Callable[[str, dict[str, str], RiskManager], IBExecutionHandler]


@dataclass
class Running:
    """A started session and what drives it (for a replay driver, a panel, the operator's commands)."""

    session: LiveSession
    feed: IBBarFeed
    handler: IBExecutionHandler
    stop: asyncio.Event
    maintenance: RollMaintenance | None = None


async def trade(wh, strategy: Strategy, query: str, config: BacktestConfig, settings: LiveSettings, *,  # noqa: ANN001
                make_handler: HandlerFactory, kind: str, run_id: str, timeframe: str,
                clock: Callable[[], datetime] | None = None, warm_up_now: datetime | None = None,
                grace: timedelta = timedelta(seconds=2), tick_s: float = 0.5, config_path: Path | None = None,
                show: Callable[[LiveStatus], None] | None = None,
                started: Callable[[Running], None] | None = None, stop: asyncio.Event | None = None) -> LiveSession:
    """Run one session until ``stop`` is set; returns the stopped session (recorded in the ledger).

    Steps: the universe (``settings.roots`` or the query's symbols) and each root's front contract from the
    roll table; the session directory (status, commands, checkpoint, event log: a restart of the same
    ``run_id`` resumes from its checkpoint and hands its orders to the handler); the handler connects (port,
    account and contract guards; journal reconciliation); the warehouse is warmed up from the broker's
    history up to now; the bars stored since the last decided one are decided; the feed's 5-second bars are
    subscribed and bars are decided as they complete, with the operator's commands between bars. On the way
    out the feed stops, the session records its run and the connection closes, also after an error.

    With ``settings.roll_maintenance`` the contract after each root's latest front is streamed from the start
    as well, and the roll table, the contracts streamed and the features are kept current once per trading day
    in the daily halt and on ``qe live rolls`` (:class:`~engine.live.maintenance.RollMaintenance`).
    """
    stop = stop or asyncio.Event()
    con = wh.connect()
    roots = settings.roots or universe(con, query, timeframe)
    # the front the rows name now, and the roll table's latest (a roll ahead when they differ: its bars are
    # streamed beside the front's and the contract is qualified, so the session can roll into it)
    now = warm_up_now or (clock() if clock is not None else datetime.now(timezone.utc))
    contracts = front_contracts(wh, roots, at=now)
    latest = front_contracts(wh, roots)
    risk = RiskManager(config.risk, InstrumentBook(config.instruments))
    handler = make_handler(run_id, contracts, risk)
    # the session is known by the strategy's name at the broker (its IB binding: client ids, orderRefs)
    directory = create_session(Path(wh.root), run_id, kind=kind, strategy=handler.strategy, config=config_path,
                               contracts=contracts)
    session = LiveSession(wh, strategy, query, config, handler, risk, roots, settings=settings, kind=kind,
                          run_id=run_id, timeframe=timeframe, clock=clock, directory=directory)
    if settings.auto_roll:
        held = session.held_contracts()
        for root in roots:
            # a resumed position's contract: the roll's out-leg goes there
            handler.also_trade(root, [latest[root], *([held[root]] if root in held else [])])
    operator = session.operator = Operator(directory, session, show)
    maintenance = RollMaintenance(session, handler) if settings.roll_maintenance else None
    feed = None
    with EventLog(directory):
        log.info("session %s (%s) %s: %s on %s", run_id, kind, "resumes" if session.resumed else "starts",
                 session.strategy_label, ", ".join(f"{r} {c}" for r, c in contracts.items()))
        operator.publish("starting")
        try:
            await handler.connect()
            session.check_contracts({root: c.localSymbol for root, c in handler.contracts.items()})
            if maintenance is not None:
                # the contract after the latest front streams from the start: a crossover shows in the bars stored
                await maintenance.prepare({root: next_contract(latest[root], trading_date(now)) for root in roots}, now)
            operator.publish("warming_up")
            # a bar's features are computed while it is validated and written (those run in a worker thread; with a
            # suspect bar held, after the validation, beside the write); the warm-up stores its bars itself, and the
            # session computes features only once started
            feed = IBBarFeed.for_handler(handler, wh, timeframe=timeframe, grace=grace, tick_s=tick_s,
                                         on_arrived=session.before_stored, on_checked=session.before_stored,
                                         on_not_stored=session.not_stored,
                                         **({"clock": clock} if clock is not None else {}))
            await feed.warm_up(warm_up_now)
            session.start()
            await feed.start()
            if maintenance is not None:
                maintenance.feed = feed
                session.maintenance = maintenance
            operator.publish("running")
            if started is not None:
                started(Running(session, feed, handler, stop, maintenance))
            await session.run(feed.bars, stop)
        except BaseException as exc:
            log.exception("session %s failed", run_id)
            operator.publish("failed", f"{type(exc).__name__}: {exc}")
            raise
        finally:
            try:
                if feed is not None:
                    await feed.stop()
                session.stop()
            finally:
                handler.disconnect()
    return session
