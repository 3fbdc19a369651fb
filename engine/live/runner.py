"""Wiring of one live session: the broker's handler and bar feed, the session, and their orderly stop.

:func:`trade` is what ``qe live`` runs against TWS / IB Gateway and what the paper replay
(:mod:`engine.live.replay`) runs against the in-process gateway simulator: the same code path either way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from engine.adapters.ib.data import IBBarFeed
from engine.adapters.ib.handler import IBExecutionHandler
from engine.backtest.run import BacktestConfig
from engine.core.instruments import InstrumentBook
from engine.live.session import LiveSession, LiveSettings, universe
from engine.risk import RiskManager
from engine.strategy import Strategy
from warehouse.rolls import front_contracts

__all__ = ["Running", "trade"]

#: ``make_handler(run_id, contracts, risk) -> IBExecutionHandler``: the broker connection of a session
HandlerFactory = Callable[[str, dict[str, str], RiskManager], IBExecutionHandler]


@dataclass
class Running:
    """A started session and what drives it (for a replay driver, a panel, the operator's commands)."""

    session: LiveSession
    feed: IBBarFeed
    handler: IBExecutionHandler
    stop: asyncio.Event


async def trade(wh, strategy: Strategy, query: str, config: BacktestConfig, settings: LiveSettings, *,  # noqa: ANN001
                make_handler: HandlerFactory, kind: str, run_id: str, timeframe: str,
                clock: Callable[[], datetime] | None = None, warm_up_now: datetime | None = None,
                grace: timedelta = timedelta(seconds=2), tick_s: float = 0.5,
                started: Callable[[Running], None] | None = None, stop: asyncio.Event | None = None) -> LiveSession:
    """Run one session until ``stop`` is set; returns the stopped session (recorded in the ledger).

    Steps: the universe (``settings.roots`` or the query's symbols) and each root's front contract from the
    roll table; the handler connects (port, account and contract guards; journal reconciliation); the
    warehouse is warmed up from the broker's history up to now; the session starts and the feed's 5-second
    bars are subscribed; bars are decided as they complete. On the way out the feed stops, the session
    records its run and the connection closes, also after an error.
    """
    stop = stop or asyncio.Event()
    con = wh.connect()
    roots = settings.roots or universe(con, query, timeframe)
    contracts = front_contracts(wh, roots)
    risk = RiskManager(config.risk, InstrumentBook(config.instruments))
    handler = make_handler(run_id, contracts, risk)
    await handler.connect()
    feed = None
    session = None
    try:
        options = {"clock": clock} if clock is not None else {}
        feed = IBBarFeed.for_handler(handler, wh, timeframe=timeframe, grace=grace, tick_s=tick_s, **options)
        await feed.warm_up(warm_up_now)
        session = LiveSession(wh, strategy, query, config, handler, risk, roots, settings=settings, kind=kind,
                              run_id=run_id, timeframe=timeframe, clock=clock)
        session.start()
        await feed.start()
        if started is not None:
            started(Running(session, feed, handler, stop))
        await session.run(feed.bars, stop)
    finally:
        if feed is not None:
            await feed.stop()
        if session is not None:
            session.stop()
        handler.disconnect()
    return session
