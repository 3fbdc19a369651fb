"""Bars from IB for the live loop: history warms the warehouse up to now, 5-second bars keep it current.

* :func:`warm_up` asks ``reqHistoricalData`` only for the gap between the warehouse's last stored bar of each
  contract and now (nothing when it is up to date), in chunks within IB's duration limits, paced by
  :class:`HistoryPacer`, and appends what comes back through :func:`engine.live.store.append_bars` (validation,
  quarantine, atomic writes; the write lock is taken per append, never while a request is out).
* :class:`IBBarFeed` subscribes ``reqRealTimeBars`` (5 s) per contract through the handler's
  :class:`~engine.adapters.ib.subscriptions.Subscriptions` (renewed after 1101 and reconnects), folds them with
  :class:`engine.live.bars.BarAggregator`, appends each final bar and hands the stored ones to the live loop
  (an asyncio queue and/or a callback); the live session sees the bars while they are validated and written, to
  compute their features meanwhile (``on_arrived``). A bar quarantined by validation is never handed out to trade.
* After a reconnect or 1101 the 5-second bars IB did not send meanwhile are fetched as 5-second history
  (``last seen + 5 s`` to now) and folded in before the real-time bars that arrive again (those wait in a
  buffer), so no bar is lost; bars at or before the last one seen are skipped, so none is counted twice.

IB's historical-data pacing (interactivebrokers.github.io/tws-api/historical_limitations.html): no identical
request within 15 s, at most 5 requests for one contract within 2 s (6 is a violation), at most 60 in any
10 minutes; a violation is error 162 "pacing violation", after which the request is retried later.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import pyarrow as pa
from ib_async import IB, Contract

from engine.adapters.ib.subscriptions import RENEW_ON, Subscription, Subscriptions
from engine.live.bars import SOURCE_SECONDS, Bar, BarAggregator, FinalBar, bars_table, timeframe_seconds
from engine.live.store import (LIVE_TIMEFRAMES, AppendReport, CheckedBars, append_bars, check_live_bars,
                               last_stored_ts, write_checked)
from warehouse.warehouse import Warehouse

if TYPE_CHECKING:
    from engine.adapters.ib.handler import IBExecutionHandler

__all__ = ["IBBarFeed", "HistoryPacer", "WarmUpReport", "warm_up", "history_chunks", "BAR_SIZES"]

log = logging.getLogger(__name__)

#: timeframe -> (IB barSizeSetting, the longest request in seconds IB allows for that bar size)
BAR_SIZES: dict[str, tuple[str, int]] = {
    "5s": ("5 secs", 3_600),      # 3600 S: 5 secs .. 1 hour
    "1m": ("1 min", 86_400),      # 1 D: 1 min .. 1 day
    "1h": ("1 hour", 30 * 86_400),  # 1 M: 30 mins .. 1 month
}
_DAY = 86_400
#: Longest wait, once one stream's bar of an interval closed, for the other streams' bars of the same interval
#: (:meth:`IBBarFeed._gather`), seconds; past it they are stored in a later append.
GATHER_S = 0.25
#: Close times kept in :attr:`IBBarFeed.closed_at` (the newest).
_CLOSE_TIMES = 1_000


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def history_chunks(start: datetime, end: datetime, timeframe: str) -> list[tuple[datetime, str]]:
    """The ``(endDateTime, durationStr)`` requests covering ``[start, end)``, oldest first.

    Each spans at most the longest duration IB allows for the timeframe's bar size; a span up to a day is
    asked in seconds (``"1800 S"``), a longer one in whole days (``"3 D"``, which may reach further back than
    the chunk: the extra bars are dropped).
    """
    limit = BAR_SIZES[timeframe][1]
    out: list[tuple[datetime, str]] = []
    at = start
    while at < end:
        stop = min(at + timedelta(seconds=limit), end)
        seconds = math.ceil((stop - at).total_seconds())
        out.append((stop, f"{seconds} S" if seconds <= _DAY else f"{math.ceil(seconds / _DAY)} D"))
        at = stop
    return out


class HistoryPacer:
    """Spaces historical-data requests within IB's pacing rules (all times in seconds).

    Parameters
    ----------
    per_contract, contract_window_s : int, float
        At most ``per_contract`` requests for one contract within ``contract_window_s`` (IB: 5 in 2 s).
    total, total_window_s : int, float
        At most ``total`` requests within ``total_window_s`` (IB: 60 in 600 s).
    identical_s : float
        An identical request (same contract, end, duration, bar size) waits this long after the last (IB: 15).
    violation_wait_s : float
        Wait after a 162 pacing violation before asking again.
    clock, sleep
        Monotonic clock and async sleep (tests pass fakes).
    """

    def __init__(self, *, per_contract: int = 5, contract_window_s: float = 2.0, total: int = 60,
                 total_window_s: float = 600.0, identical_s: float = 15.0, violation_wait_s: float = 15.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.per_contract, self.contract_window_s = per_contract, contract_window_s
        self.total, self.total_window_s = total, total_window_s
        self.identical_s = identical_s
        self.violation_wait_s = violation_wait_s
        self.clock, self.sleep = clock, sleep
        self._sent: deque[tuple[float, int, tuple]] = deque()  # (time, conId, request key)
        #: seconds waited in total (reported, and what tests check)
        self.waited_s = 0.0

    def delay(self, con_id: int, key: tuple) -> float:
        """Seconds to wait before sending request ``key`` for contract ``con_id`` now."""
        now = self.clock()
        while self._sent and now - self._sent[0][0] >= max(self.total_window_s, self.identical_s, self.contract_window_s):
            self._sent.popleft()
        waits = [0.0]
        same = [t for t, c, k in self._sent if c == con_id and k == key]
        if same:
            waits.append(same[-1] + self.identical_s - now)
        mine = [t for t, c, _ in self._sent if c == con_id and now - t < self.contract_window_s]
        if len(mine) >= self.per_contract:
            waits.append(mine[-self.per_contract] + self.contract_window_s - now)
        recent = [t for t, _, _ in self._sent if now - t < self.total_window_s]
        if len(recent) >= self.total:
            waits.append(recent[-self.total] + self.total_window_s - now)
        return max(waits)

    async def ready(self, con_id: int, key: tuple) -> None:
        """Wait until the request may go, then record it as sent."""
        wait = self.delay(con_id, key)
        if wait > 0:
            log.info("IB history pacing: waiting %.1f s", wait)
            self.waited_s += wait
            await self.sleep(wait)
        self._sent.append((self.clock(), con_id, key))

    async def violated(self) -> None:
        """IB answered 162 (pacing violation): wait before the retry."""
        self.waited_s += self.violation_wait_s
        await self.sleep(self.violation_wait_s)


@dataclass
class WarmUpReport:
    """What :func:`warm_up` did.

    Attributes
    ----------
    requests : int
        Historical-data requests sent (retries after a pacing violation included).
    bars_stored, bars_quarantined : int
        Bars written (or already held with the same values) and bars rejected.
    gaps : dict
        local symbol -> (start, end) of the gap asked for (absent: up to date).
    held : pyarrow.Table or None
        Bars waiting for their next bar (:attr:`engine.live.store.AppendReport.held`).
    """

    requests: int = 0
    bars_stored: int = 0
    bars_quarantined: int = 0
    gaps: dict[str, tuple[datetime, datetime]] = field(default_factory=dict)
    held: pa.Table | None = None


async def fetch_history(ib: IB, root: str, contract: Contract, start: datetime, end: datetime, timeframe: str,
                        pacer: HistoryPacer, *, what: str = "TRADES", use_rth: bool = False,
                        max_retries: int = 3) -> tuple[list[Bar], int]:
    """Bars of ``root``'s ``contract`` opening in ``[start, end)`` (UTC) from ``reqHistoricalData``, and how
    many requests that took.

    Chunked by :func:`history_chunks`, paced by ``pacer``, retried after a 162 pacing violation.

    Raises
    ------
    ConnectionError
        The connection dropped, or IB kept refusing a chunk for pacing.
    """
    size = BAR_SIZES[timeframe][0]
    local = contract.localSymbol
    bars: list[Bar] = []
    sent = 0
    for chunk_end, duration in history_chunks(start, end, timeframe):
        for attempt in range(max_retries + 1):
            if not ib.isConnected():
                raise ConnectionError("not connected to IB")
            await pacer.ready(contract.conId, (chunk_end, duration, size, what))
            errors: list[tuple[int, str]] = []

            def on_error(req_id: int, code: int, text: str, about: object, errors: list = errors) -> None:
                if code == 162 and getattr(about, "conId", contract.conId) == contract.conId:
                    errors.append((code, text))

            ib.errorEvent += on_error
            try:
                got = await ib.reqHistoricalDataAsync(contract, chunk_end, duration, size, what, use_rth,
                                                      formatDate=2)
            finally:
                ib.errorEvent -= on_error
            sent += 1
            if any("pacing" in text.lower() for _, text in errors):
                log.warning("IB history pacing violation for %s (chunk ending %s); retrying", local, chunk_end)
                await pacer.violated()
                continue
            break
        else:
            raise ConnectionError(f"IB refused the history of {local} for pacing {max_retries + 1} times")
        for b in got or []:
            ts = b.date if isinstance(b.date, datetime) else datetime(b.date.year, b.date.month, b.date.day,
                                                                       tzinfo=timezone.utc)
            ts = ts.astimezone(timezone.utc)
            if start <= ts < chunk_end:
                bars.append(Bar(root, local, ts, b.open, b.high, b.low, b.close, int(b.volume)))
    return bars, sent


def stream_pairs(contracts: Mapping[str, Contract] | Iterable[tuple[str, Contract]]) -> list[tuple[str, Contract]]:
    """(root, contract) pairs from a root -> contract mapping or from pairs (a root may have several contracts
    around a roll: the front and the next)."""
    return list(contracts.items()) if isinstance(contracts, Mapping) else list(contracts)


async def warm_up(ib: IB, wh: Warehouse, contracts: Mapping[str, Contract] | Iterable[tuple[str, Contract]],
                  timeframe: str = "1m",
                  now: datetime | None = None, *, lookback: timedelta = timedelta(days=3),
                  max_gap: timedelta = timedelta(days=5), pacer: HistoryPacer | None = None,
                  rebuild_rolls: bool = True) -> WarmUpReport:
    """Fill the warehouse with ``timeframe`` bars of each contract up to ``now`` from IB's history.

    Parameters
    ----------
    ib : ib_async.IB
        Connected.
    wh : Warehouse
    contracts : mapping or iterable of pairs
        root -> qualified IB contract (its ``localSymbol`` is the warehouse's ``contract``), or (root, contract)
        pairs when a root has several.
    timeframe : {"1m", "1h"}
    now : datetime, optional
        Tz-aware; default: the clock. Only bars whose interval has closed by ``now`` are fetched.
    lookback : timedelta
        How far back to start for a contract the warehouse holds no bar of.
    max_gap : timedelta
        The longest gap fetched: an older last bar (a session restarted after weeks) is filled only from
        ``now - max_gap`` on, with a warning; older history is ``qe download`` / ``qe ingest``'s job (at IB's
        pacing, 60 requests per 10 minutes, months of minutes would take hours).
    pacer : HistoryPacer, optional
    rebuild_rolls : bool
        Rebuild the roll table of the roots that received bars (as ``qe ingest`` does), so ``bars_<tf>`` shows them.

    Returns
    -------
    WarmUpReport
    """
    if timeframe not in LIVE_TIMEFRAMES:
        raise ValueError(f"warm-up stores {' or '.join(LIVE_TIMEFRAMES)} bars, not {timeframe!r}")
    pacer = pacer or HistoryPacer()
    step = timeframe_seconds(timeframe)
    now = (now or _utcnow()).astimezone(timezone.utc)
    end = datetime.fromtimestamp(int(now.timestamp()) // step * step, timezone.utc)  # the bar in progress opens here
    report = WarmUpReport()
    held: list[pa.Table] = []
    touched: set[str] = set()
    for root, contract in stream_pairs(contracts):
        last = await asyncio.to_thread(last_stored_ts, wh, timeframe, root, contract.localSymbol)
        start = last + timedelta(seconds=step) if last is not None else \
            datetime.fromtimestamp(int((now - lookback).timestamp()) // step * step, timezone.utc)
        if start >= end:
            continue
        floor = datetime.fromtimestamp(int((now - max_gap).timestamp()) // step * step, timezone.utc)
        if start < floor:
            log.warning("%s: the warehouse's last bar is %s; fetching only from %s (older gaps: qe download or "
                        "qe ingest)", contract.localSymbol, start - timedelta(seconds=step), floor)
            start = floor
        report.gaps[contract.localSymbol] = (start, end)
        bars, sent = await fetch_history(ib, root, contract, start, end, timeframe, pacer)
        report.requests += sent
        if not bars:
            continue
        table = pa.concat_tables([*held, bars_table(bars)])
        # the write lock is taken inside, with no request outstanding
        appended = await asyncio.to_thread(append_bars, wh, table, timeframe=timeframe, source="ib:history",
                                           refresh=False)
        report.bars_stored += appended.stored.num_rows
        report.bars_quarantined += appended.quarantined.num_rows
        held = [appended.held] if appended.held.num_rows else []
        touched.add(root)
    report.held = pa.concat_tables(held) if held else None
    if rebuild_rolls and touched:
        from warehouse.rolls import build_rolls

        await asyncio.to_thread(build_rolls, wh, sorted(touched))
    if touched:
        wh.refresh()  # in the caller's thread (the worker threads above never touch the shared connection)
    return report


class IBBarFeed:
    """Real-time bars of the strategy's contracts, final and stored, for the live loop.

    Parameters
    ----------
    ib : ib_async.IB
    subscriptions : Subscriptions
        The handler's (renewed after drops).
    wh : Warehouse
    contracts : mapping or iterable of pairs
        root -> qualified contract, or (root, contract) pairs: around a roll a root streams its front and
        the next front (both are stored; the query's rows name the one the roll table makes the front).
    timeframe : {"1m", "1h"}
    clock : callable
        Returns now (tz-aware); closes bars of a quiet market (:meth:`BarAggregator.close_due`) and ends
        the reconnect backfill. Default: the system clock.
    grace : timedelta
        How long after an interval ends the clock closes it.
    tick_s : float
        How often the clock is looked at, in seconds.
    pacer : HistoryPacer, optional
    on_bar : callable, optional
        Called with each stored final bar (after it is in the warehouse).
    on_arrived : callable, optional
        Called with a batch's final bars as they closed (a list of :class:`FinalBar`), before their validation,
        in the event loop's thread, while a worker thread validates and writes them: the live session computes
        their features meanwhile, so the validation is not on a bar's path. Not while a suspect bar is held for
        confirmation (its bar and the next are validated together, and features need them in order): then
        ``on_checked`` sees the batch. Bars it saw that are not stored (quarantined, held as a suspect, or the
        write failed) go to ``on_not_stored``; they are never traded.
    on_checked : callable, optional
        Called with the final bars that passed validation (a list of :class:`FinalBar`, in time order) while
        they are being written, in the event loop's thread, when ``on_arrived`` did not see them. They reach
        :attr:`bars` once stored; if the write fails, ``on_not_stored`` is called with the same list.
    on_not_stored : callable, optional
        Called with bars ``on_arrived`` or ``on_checked`` saw that were not stored, in the event loop's thread.

    Attributes
    ----------
    bars : asyncio.Queue of FinalBar
        Stored final bars, in order of their close: what the live loop trades on.
    quarantined : list of dict
        Final bars validation rejected (symbol, contract, ts, rule, detail); never put in :attr:`bars`.
    appends : list of AppendReport
        One per append, for measurements.
    """

    def __init__(self, ib: IB, subscriptions: Subscriptions, wh: Warehouse,
                 contracts: Mapping[str, Contract] | Iterable[tuple[str, Contract]], *,
                 timeframe: str = "1m", clock: Callable[[], datetime] = _utcnow,
                 grace: timedelta = timedelta(seconds=2), tick_s: float = 1.0, pacer: HistoryPacer | None = None,
                 on_bar: Callable[[FinalBar], None] | None = None, use_rth: bool = False,
                 on_arrived: Callable[[list[FinalBar]], None] | None = None,
                 on_checked: Callable[[list[FinalBar]], None] | None = None,
                 on_not_stored: Callable[[list[FinalBar]], None] | None = None) -> None:
        if timeframe not in LIVE_TIMEFRAMES:
            raise ValueError(f"the feed stores {' or '.join(LIVE_TIMEFRAMES)} bars, not {timeframe!r}")
        self.ib = ib
        self.subscriptions = subscriptions
        self.wh = wh
        #: (root, contract) of every stream
        self.contracts = stream_pairs(contracts)
        self.timeframe = timeframe
        self.clock = clock
        self.tick_s = tick_s
        self.pacer = pacer or HistoryPacer()
        self.on_bar = on_bar
        self.on_arrived = on_arrived
        self.on_checked = on_checked
        self.on_not_stored = on_not_stored
        self.use_rth = use_rth
        self.aggregator = BarAggregator(timeframe, grace=grace)
        self.bars: asyncio.Queue[FinalBar] = asyncio.Queue()
        self.quarantined: list[dict] = []
        self.appends: list[AppendReport] = []
        self.backfills = 0
        self._subs: list[Subscription] = []
        self._finals: asyncio.Queue[list[FinalBar]] = asyncio.Queue()
        self._held: pa.Table | None = None
        self._waiting: dict[tuple[str, datetime], FinalBar] = {}  # held bars, by (contract, ts)
        self._buffer: list[Bar] | None = None  # real-time bars arriving during a backfill
        self._tasks: list[asyncio.Task] = []
        self._backfill_task: asyncio.Task | None = None
        self._resume_from: dict[str, datetime] = {}  # local symbol -> where its 5-second history starts
        self._storing = False  # an append is running (see idle())
        #: ``time.perf_counter()`` when the feed first closed a bar of each open time (the newest ones): when the
        #: interval was over for it, the start of a bar's latency
        self.closed_at: dict[datetime, float] = {}

    @classmethod
    def for_handler(cls, handler: IBExecutionHandler, wh: Warehouse, **options: object) -> IBBarFeed:
        """A feed on a connected handler's connection, contracts and subscriptions; backfills after its reconnects."""
        feed = cls(handler.ib, handler.subscriptions, wh, handler.streams(), **options)  # type: ignore[arg-type]
        handler.connection.on_restored.append(feed.on_restored)
        return feed

    async def warm_up(self, now: datetime | None = None, **options: object) -> WarmUpReport:
        """:func:`warm_up` of this feed's contracts; the bars it holds back wait for the first live bars."""
        report = await warm_up(self.ib, self.wh, self.contracts, self.timeframe, now or self.clock(),
                               pacer=self.pacer, **options)  # type: ignore[arg-type]
        if report.held is not None:
            self._held = report.held
        step = timeframe_seconds(self.timeframe)
        moment = int((now or self.clock()).timestamp())
        resume = datetime.fromtimestamp(moment // step * step, timezone.utc)
        for _, contract in self.contracts:  # the bar in progress: its 5-second bars so far, at start()
            self._resume_from[contract.localSymbol] = resume
        return report

    async def start(self) -> None:
        """Subscribe the 5-second bars of every contract and start closing and storing bars.

        After :meth:`warm_up`, the 5-second bars of the bar in progress that IB sent before the subscription
        are fetched from history first, so the first live bar is whole.
        """
        self._tasks = [asyncio.ensure_future(self._store_loop()), asyncio.ensure_future(self._clock_loop())]
        if self._resume_from:
            self._buffer = []
        for root, contract in self.contracts:
            sub = Subscription("realtime", root, contract, use_rth=self.use_rth)
            sub.listeners.append(self._on_update)
            self._subs.append(await self.subscriptions.add(sub))
        if self._resume_from:
            await self._backfill()

    async def add_streams(self, pairs: Iterable[tuple[str, Contract]]) -> list[tuple[str, Contract]]:
        """Stream more contracts from now on (a running session's roll maintenance): their 5-second bars are
        subscribed (renewed after drops like the others) and folded and stored as the others'. No history is
        fetched for them: bars before now would change the volumes an earlier roll was decided on. Returns the
        pairs added (contracts already streamed are left out)."""
        known = {c.conId for _, c in self.contracts}
        added = []
        for root, contract in pairs:
            if contract.conId in known:
                continue
            known.add(contract.conId)
            self.contracts.append((root, contract))
            added.append((root, contract))
            if self._tasks:  # started: subscribe now (else start() subscribes every contract)
                sub = Subscription("realtime", root, contract, use_rth=self.use_rth)
                sub.listeners.append(self._on_update)
                self._subs.append(await self.subscriptions.add(sub))
        return added

    def drop_streams(self, contracts: Iterable[str]) -> None:
        """Stop streaming these contracts (local symbols): their subscriptions are cancelled (called in the daily
        halt, when no bar of theirs is in progress)."""
        drop = set(contracts)
        for sub in [s for s in self._subs if s.contract.localSymbol in drop]:
            with contextlib.suppress(ValueError):
                self.subscriptions.remove(sub)
            self._subs.remove(sub)
        self.contracts = [(root, c) for root, c in self.contracts if c.localSymbol not in drop]

    async def stop(self) -> None:
        """Cancel the subscriptions and the feed's tasks (open bars are dropped, not stored)."""
        for sub in self._subs:
            with contextlib.suppress(ValueError):
                self.subscriptions.remove(sub)
        self._subs.clear()
        tasks = [*self._tasks, *([self._backfill_task] if self._backfill_task else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    # -- real-time bars ---------------------------------------------------------------------------
    def _on_update(self, sub: Subscription, has_new_bar: bool) -> None:
        if not sub.bars:
            return
        rt = sub.bars[-1]
        bar = Bar(sub.root, sub.contract.localSymbol, rt.time.astimezone(timezone.utc), rt.open_, rt.high, rt.low,
                  rt.close, int(rt.volume))
        if self._buffer is not None:  # a backfill is running: these go after it
            self._buffer.append(bar)
            return
        self._fold([bar])

    def _fold(self, bars: list[Bar]) -> None:
        self._closed(self.aggregator.add_many(bars))

    def _closed(self, finals: list[FinalBar]) -> None:
        if not finals:
            return
        now = time.perf_counter()
        for bar in finals:
            self.closed_at.setdefault(bar.ts, now)
        while len(self.closed_at) > _CLOSE_TIMES:
            del self.closed_at[next(iter(self.closed_at))]
        self._finals.put_nowait(finals)

    async def _clock_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            self.tick()

    def tick(self) -> None:
        """Close the bars whose interval ended (plus the grace) by the clock; the clock loop calls this."""
        if self._buffer is None:
            self._closed(self.aggregator.close_due(self.clock()))

    async def _store_loop(self) -> None:
        while True:
            finals = await self._finals.get()
            self._storing = True  # from here: settled() must not see the closed bars as stored meanwhile
            try:
                finals += await self._gather({bar.end for bar in finals})
                await self._store(finals)
            finally:
                self._storing = False

    async def _gather(self, ends: set[datetime]) -> list[FinalBar]:
        """What piled up, and the other streams' bars of the intervals ending at ``ends``, waited for up to
        :data:`GATHER_S`: each stream's bar closes with its own last 5-second bar, and IB sends those within
        moments of each other, so that one append (and one run of the features) takes them all."""
        more: list[FinalBar] = []
        deadline = time.monotonic() + GATHER_S
        while True:
            while not self._finals.empty():
                more += self._finals.get_nowait()
            ends |= {bar.end for bar in more}
            waiting = [(root, contract) for root, contract in self.contracts
                       if (bar := self.aggregator.pending(root, contract.localSymbol)) is not None and bar.end in ends]
            left = deadline - time.monotonic()
            if not waiting or left <= 0:
                return more
            try:
                more += await asyncio.wait_for(self._finals.get(), left)
            except TimeoutError:
                return more

    def idle(self) -> bool:
        """No bar in progress, none closed and not yet stored, none stored and not yet taken from :attr:`bars`,
        and no backfill running: what the warehouse holds is every bar there is (a suspect bar held for its next
        bar aside). The daily halt's roll maintenance waits for this."""
        return (self.settled() and self._buffer is None
                and all(self.aggregator.pending(root, c.localSymbol) is None for root, c in self.contracts))

    def settled(self) -> bool:
        """No final bar being validated or written, and none stored and not yet taken from :attr:`bars` (bars
        may be in progress): the session's features are those of every bar handed over
        (:attr:`on_arrived` and :attr:`on_checked` run while a bar is validated or written)."""
        return not self._storing and self._finals.empty() and self.bars.empty()

    async def _store(self, finals: list[FinalBar]) -> None:
        table = bars_table(finals)
        # with a suspect bar held, it and the new bars are validated together and handed over in order, after
        early = self.on_arrived is not None and self._held is None
        if self._held is not None:
            table = pa.concat_tables([self._held, table])
        for bar in finals:
            self._waiting[(bar.contract, bar.ts)] = bar
        seen: list[FinalBar] = []  # the bars a callback saw (the session computed their features)
        try:
            loop = asyncio.get_running_loop()
            if early:
                # validation, then the write, in a worker thread; the bars' features meanwhile, in this one
                job = loop.run_in_executor(None, self._check_and_write, table)
                seen = list(finals)
                self._hand_over(self.on_arrived, seen)
                checked, report = await job
            else:
                # in worker threads: waiting for the write lock (another command writing) never blocks IB's events
                checked = await asyncio.to_thread(check_live_bars, self.wh, table, timeframe=self.timeframe)
                # the write starts now; the valid bars are handed over meanwhile (their features overlap the write)
                write = loop.run_in_executor(None, functools.partial(write_checked, self.wh, checked, refresh=False))
                seen = self._ready(checked.ready)
                self._hand_over(self.on_checked, seen)
                report = await write
        except Exception:
            log.exception("storing %d live bar(s) failed; they are not traded", len(finals))
            for bar in finals:
                self._waiting.pop((bar.contract, bar.ts), None)
            self._hand_over(self.on_not_stored, seen)
            return
        if early:
            ready = self._ready(checked.ready)
            stored = {(bar.contract, bar.ts) for bar in ready}
            self._hand_over(self.on_not_stored, [bar for bar in seen if (bar.contract, bar.ts) not in stored])
        else:
            ready = seen
        self.appends.append(report)
        if report.views_stale:  # here, in the loop's thread: the connection is not shared with the worker
            self.wh.refresh()
        for row in report.quarantined.to_pylist():
            log.warning("live bar quarantined: %s %s %s (%s)", row["contract"], row["ts"], row["rule"], row["detail"])
            self.quarantined.append(row)
            self._waiting.pop((row["contract"], row["ts"]), None)
        self._held = report.held if report.held.num_rows else None
        for bar in ready:  # the live bars among the stored ones (a warm-up bar held back is history)
            self._waiting.pop((bar.contract, bar.ts), None)
            self.bars.put_nowait(bar)
            self._hand_over(self.on_bar, bar)

    def withheld(self, contract: str, ts: datetime) -> bool:
        """Whether the bar of ``contract`` at ``ts`` was quarantined, or is held as a suspect (not traded, or not
        yet: a held bar is stored and handed over with the next bar when that one confirms it)."""
        if any(row["contract"] == contract and row["ts"] == ts for row in self.quarantined):
            return True
        held = self._held
        return held is not None and any(
            c == contract and t == ts for c, t in zip(held["contract"].to_pylist(), held["ts"].to_pylist()))

    def _check_and_write(self, table: pa.Table) -> tuple[CheckedBars, AppendReport]:
        """Validate ``table`` and write what passed (a worker thread's job: see ``on_arrived``)."""
        checked = check_live_bars(self.wh, table, timeframe=self.timeframe)
        return checked, write_checked(self.wh, checked, refresh=False)

    @staticmethod
    def _hand_over(callback: Callable | None, bars: list[FinalBar] | FinalBar) -> None:
        """``callback(bars)``; its own failure is logged, not the store's (the store loop goes on)."""
        if bars and callback is not None:
            try:
                callback(bars)
            except Exception:
                log.exception("a callback of the feed failed on %s", bars if isinstance(bars, FinalBar) else
                              f"{len(bars)} bar(s)")

    def _ready(self, stored: pa.Table) -> list[FinalBar]:
        """The live final bars among ``stored`` (a warm-up bar held back and stored now is history), in its order."""
        found = (self._waiting.get(key) for key in zip(stored["contract"].to_pylist(), stored["ts"].to_pylist()))
        return [bar for bar in found if bar is not None]

    # -- reconnects -------------------------------------------------------------------------------
    def on_restored(self, reason: str) -> None:
        """Connection hook: after a reconnect or 1101, fetch the 5-second bars missed meanwhile.

        The buffer is opened at once (before the renewed subscription can deliver a bar), so bars arriving
        during the backfill are folded after it, in time order.
        """
        if reason not in RENEW_ON or not self._subs:
            return
        if self._buffer is None:
            self._buffer = []
        if self._backfill_task is None or self._backfill_task.done():
            self._backfill_task = asyncio.ensure_future(self._backfill())

    async def _backfill(self) -> None:
        """Fold the 5-second bars IB sent while we did not listen, then the real-time bars buffered meanwhile.

        From the last 5-second bar seen of each contract (else from where :meth:`warm_up` ended) to the
        last whole 5-second bar before the clock. If the connection drops again the buffer stays open and
        the next reconnect's backfill starts over from the last bar seen.
        """
        now = self.clock().astimezone(timezone.utc)
        end = datetime.fromtimestamp(int(now.timestamp()) // SOURCE_SECONDS * SOURCE_SECONDS, timezone.utc)
        for root, contract in self.contracts:
            last = self.aggregator.last_seen(root, contract.localSymbol)
            start = last + timedelta(seconds=SOURCE_SECONDS) if last is not None else \
                self._resume_from.get(contract.localSymbol)
            if start is None or start >= end:
                continue
            try:
                bars, _ = await fetch_history(self.ib, root, contract, start, end, "5s", self.pacer,
                                              use_rth=self.use_rth)
            except ConnectionError as exc:
                log.warning("IB backfill of %s failed (%s); the next reconnect tries again", contract.localSymbol, exc)
                return
            self._fold(sorted(bars, key=lambda b: b.ts))
        self._resume_from.clear()
        self.backfills += 1
        buffered, self._buffer = self._buffer or [], None
        self._fold(sorted(buffered, key=lambda b: (b.ts, b.contract)))
