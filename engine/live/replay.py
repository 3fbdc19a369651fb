"""Paper trading on recorded bars: the gateway simulator in-process, the session's real code path against it.

:func:`replay_paper` starts :class:`~engine.adapters.ib.gateway_sim.GatewaySim` on a loopback port, runs
:func:`engine.live.runner.trade` against it with the real ib_async client, and pushes the given minute bars
one timestamp at a time, each streamed as twelve 5-second bars as IB sends them. The replay clock moves
to a bar's close only once the session's feed has every 5-second bar of it, and the next bar is pushed only
once the session decided the last one: a replay runs as fast as the session can, and its orders meet the
same next prices a backtest's ``next_open`` orders meet.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from itertools import groupby
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from engine.adapters.ib.gateway_sim import GatewaySim
from engine.adapters.ib.gateway_sim.protocol import In
from engine.adapters.ib.handler import IBExecutionHandler
from engine.adapters.ib.journal import OrderJournal
from engine.backtest.run import BacktestConfig
from engine.core.instruments import InstrumentBook
from engine.data.feed import BAR_NS
from engine.live.bars import market_open
from engine.live.maintenance import halt_after
from engine.live.runner import Running, trade
from engine.live.session import LiveSession, LiveSettings
from engine.risk import RiskManager
from engine.strategy import Strategy, strategy_name
from warehouse.errors import QEError
from warehouse.sessions import trading_date

__all__ = ["replay_paper", "paper_gateway", "PAPER_ACCOUNT"]

#: The simulator's one paper account.
PAPER_ACCOUNT = "DU1234567"
_GRACE = timedelta(seconds=1)


async def replay_paper(wh, strategy: Strategy, query: str, config: BacktestConfig, bars: pa.Table, *,  # noqa: ANN001
                       run_id: str, settings: LiveSettings | None = None, timeframe: str = "1m",
                       journal: bool = True, bar_timeout_s: float = 30.0,
                       on_bar: Callable[[Running, datetime], None] | None = None,
                       stop_after: int | None = None, sim: GatewaySim | None = None) -> LiveSession:
    """Paper-trade ``bars`` through the simulator; returns the stopped session (its run recorded, kind ``paper``).

    Parameters
    ----------
    bars : pyarrow.Table
        Minute bars to replay: ``symbol`` (root), ``contract`` (local symbol, e.g. ``ESZ3``), ``ts`` (open,
        UTC), ``open``, ``high``, ``low``, ``close``, ``volume``; the warehouse holds the history before them.
    run_id : str
        The session's run (and every orderRef's key): the same id resumes a session after a stop.
    journal : bool
        Journal orders in the warehouse before they are sent (what makes a restart safe).
    bar_timeout_s : float
        Longest wait for one bar to be decided (wall clock).
    on_bar : callable, optional
        Called after each decided timestamp (a test's kill switch, a benchmark's probe).
    stop_after : int, optional
        Stop after this many timestamps (a stop in the middle of a day, for restart tests).
    sim : GatewaySim, optional
        A running simulator to trade at (its accounts, orders and positions outlive the session, as a
        gateway's do across a restart); default: a new one, stopped at the end.
    """
    settings = settings or LiveSettings()
    rows = bars.sort_by([("ts", "ascending"), ("symbol", "ascending")]).to_pylist()
    if not rows:
        raise QEError("nothing to replay: no bars")
    first = rows[0]["ts"].astimezone(timezone.utc)
    own_sim = sim is None
    if sim is None:
        sim = paper_gateway(config, bars)
        await sim.start()
    now = [first]
    name = strategy_name(strategy)

    def make_handler(run: str, contracts: dict[str, str], risk: RiskManager) -> IBExecutionHandler:
        return IBExecutionHandler(run, name, contracts, port=sim.port, account=PAPER_ACCOUNT, port_kind="paper",
                                  instruments=InstrumentBook(config.instruments), risk=risk, client_id=11,
                                  journal=OrderJournal(Path(wh.root)) if journal else None)

    subscribed = len(sim.requests_of(In.REQ_REAL_TIME_BARS))  # an earlier session's requests do not count
    ready: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    task = asyncio.ensure_future(trade(
        wh, strategy, query, config, settings, make_handler=make_handler, kind="paper", run_id=run_id,
        timeframe=timeframe, clock=lambda: now[0], warm_up_now=first, grace=_GRACE, tick_s=0.01,
        started=ready.set_result, stop=stop))
    try:
        running = await _first(ready, task)
        # pushed bars reach only subscribers: wait until the gateway has every contract's real-time request
        await _until(lambda: len(sim.requests_of(In.REQ_REAL_TIME_BARS)) - subscribed >= len(running.feed.contracts),
                     bar_timeout_s, "the real-time bar subscriptions", task)
        bar = timedelta(microseconds=BAR_NS[timeframe] // 1000)  # the bars' interval (a minute, an hour)
        wait = bar + _GRACE + timedelta(seconds=settings.bar_wait_s) + timedelta(seconds=1)
        previous: datetime | None = None
        for count, (ts, group) in enumerate(groupby(rows, key=lambda r: r["ts"]), start=1):
            group = list(group)
            if previous is not None and trading_date(ts) > trading_date(previous):
                await _through_halt(running, now, group[0]["symbol"], trading_date(previous), bar_timeout_s, task)
            previous = ts
            # every contract's 5-second bars of the interval interleaved, as IB streams them
            sim.push_bars([(row["contract"], ts, row["open"], row["high"], row["low"], row["close"], int(row["volume"]))
                           for row in group], as_5s=True, seconds=int(bar.total_seconds()))
            last_part = ts + bar - timedelta(seconds=5)  # the open time of the bar's last 5-second part
            aggregator = running.feed.aggregator
            await _until(lambda: all((aggregator.last_seen(r["symbol"], r["contract"]) or first) >= last_part
                                     for r in group), bar_timeout_s, f"the 5-second bars of {ts}", task)
            now[0] = ts + wait  # the bar's close (plus grace and the wait for missing roots) has passed
            session = running.session
            # the bar's latency counts from when the interval was over: the feed closed it on its last 5-second
            # bar (the first stream's); else now, as the clock passes its end
            session.closed_at[ts] = min(running.feed.closed_at.get(ts, math.inf), time.perf_counter())
            # Decided are the front contracts' bars in their root's session: outside it the feed drops a bar (IB
            # sends none then); a bar of another contract (around a roll) is stored, not decided.
            traded = [r for r in group if market_open(r["symbol"], ts) and session.is_front(r["symbol"], r["contract"], ts)]
            if not traded:
                continue
            feed = running.feed
            await _until(lambda: (bool(session.decided) and session.decided[-1] >= ts) or (
                all(feed.withheld(r["contract"], ts) for r in traded)), bar_timeout_s,
                         f"the decision on {ts}", task)  # a quarantined (or held) bar is not decided
            # the bar's orders are on the wire: the next bar is pushed only once the gateway has them all, as a
            # minute's worth of time would let them arrive live (else they would meet a later price)
            sent, handler = running.handler.sent_at, running.handler
            await _until(lambda: all(ref in {o.request.order_ref for o in sim.placed} or handler.refused(ref)
                                     for ref in sent), bar_timeout_s, f"the orders of {ts} at the gateway", task)
            await _until(lambda: session.booked, bar_timeout_s, f"the checkpoint of {ts}", task)
            if on_bar is not None:
                on_bar(running, ts)
            if stop_after is not None and count >= stop_after:
                break
        # the last decision's orders meet the market only at a next bar: let their acknowledgements arrive
        await asyncio.sleep(0.05)
    finally:
        stop.set()
        try:
            session = await task
        finally:
            if own_sim:
                await sim.stop()
    return session


def paper_gateway(config: BacktestConfig, bars: pa.Table) -> GatewaySim:
    """The simulator a replay of ``bars`` trades at (not started): one paper account, its date and clock at the
    first bar, and the run's instrument terms (the gateway matches by local symbol, e.g. MESZ3: a run's override
    of a root holds for its contracts too)."""
    first = pc.min(bars["ts"]).as_py().astimezone(timezone.utc)
    overrides = dict(config.instruments)
    for root, contract in zip(bars["symbol"].to_pylist(), bars["contract"].to_pylist()):
        if root in config.instruments:
            overrides.setdefault(contract, config.instruments[root])
    return GatewaySim([PAPER_ACCOUNT], today=trading_date(first), clock=first, instruments=InstrumentBook(overrides))


async def _through_halt(running: Running, now: list[datetime], root: str, day, timeout: float,  # noqa: ANN001
                        task: asyncio.Future) -> None:
    """The replay clock into the halt after trading date ``day``'s close, and, with roll maintenance, wait until
    the session maintained it (an hour passes live before the next session's first bar)."""
    maintenance = running.maintenance
    closed = halt_after(root, day)
    if maintenance is None or closed is None:
        return
    now[0] = max(now[0], closed + timedelta(seconds=1))
    await _until(lambda: maintenance.done_through(day), timeout, f"the roll maintenance after {day}", task)


async def _first(ready: asyncio.Future, task: asyncio.Future) -> Running:
    """The started session, or the error that ended :func:`trade` before it started."""
    done, _ = await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
    if ready in done:
        return ready.result()
    task.result()  # raises the session's error
    raise QEError("the live session ended before it started")


async def _until(condition: Callable[[], bool], timeout: float, what: str, task: asyncio.Future) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if task.done():
            task.result()
            raise QEError(f"the live session stopped while waiting for {what}")
        if loop.time() > deadline:
            raise QEError(f"replay: timed out waiting for {what}")
        await asyncio.sleep(0.002)
