"""The live shell: bars from the broker, through the same kernel, query and strategy as a backtest.

One session, bar by bar:

1. the broker's 5-second bars are folded into the query's timeframe and stored in the warehouse once their
   interval closed (:class:`~engine.adapters.ib.data.IBBarFeed`: the same validation and atomic writes as
   ``qe ingest``; quarantined bars never reach the strategy);
2. once every root of the universe has its bar of time T (or ``bar_wait_s`` after T's close, without the
   missing ones), the features of the new bars are computed from in-memory tails
   (:class:`~warehouse.features.live.LiveFeatures`, the same templates as ``qe features build``) and shown
   through the session's ``features_<tf>`` view;
3. the query's rows at T (:class:`~engine.live.rows.QueryRows`) go through
   :meth:`engine.kernel.TradingKernel.process` with the broker's fills made before T ended (booked once T's
   timestamp and trading date are entered; later ones wait in the handler, counted as exposure): marks,
   breakers, the strategy, the risk manager, and the orders to the broker -- the code a backtest runs;
4. the state is checkpointed (:mod:`engine.live.checkpoint`) and the status written; between bars the
   operator's commands are carried out (:mod:`engine.live.operator`), and once per trading day in the daily
   halt the roll table, the contracts streamed and the features are brought up to date
   (:mod:`engine.live.maintenance`).

The decision for a bar is taken when the bar closes; its market orders fill at the broker's next prices
(a backtest's ``next_open``). Outside the root's CME session no order is sent (``MARKET_CLOSED``). The
session is a run in the ledger (kind ``paper`` or ``live``), recorded every ``record_every`` bars and at the
end, so ``qe report RUN`` and ``qe live attribution RUN`` work on it.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from engine.backtest.run import BacktestConfig, load_rolls
from engine.core.instruments import InstrumentBook
from engine.core.portfolio import Portfolio
from engine.data.feed import BAR_NS
from engine.execution.base import ExecutionHandler
from engine.execution.slippage import NoSlippage
from engine.kernel import TradingKernel
from engine.live.bars import FinalBar, bars_table, market_open
from engine.live.checkpoint import CHECKPOINT_FILE, load_checkpoint, restore, save_checkpoint
from engine.live.gcpolicy import GcPolicy
from engine.live.rows import QueryRows
from engine.results.equity import EquityRecorder
from engine.results.result import RunResult, kernel_result
from warehouse import schemas
from engine.risk import Denial, RiskManager, RiskState
from engine.strategy import Strategy, strategy_name
from warehouse.errors import QEError
from warehouse.features.live import LiveFeatures

__all__ = ["LiveSettings", "LiveSession", "BarTiming"]

log = logging.getLogger(__name__)

#: Turns of the event loop between a decision and its bookkeeping: bytes written to a socket are seen by the
#: selector in one turn, handed to their protocol in the next and to the task reading them in a third (measured
#: with the in-process gateway: with one turn it still read the orders ~10 ms later, after the checkpoint).
_TURNS_AFTER_ORDERS = 3


class LiveSettings(BaseModel):
    """The ``[live]`` table of a live configuration (strict).

    Attributes
    ----------
    roots : list of str, optional
        The universe; default: the symbols the query returns over its latest bars.
    ib_strategy : str, optional
        The strategy's name under ``[ib.strategies]`` (its account and client ids); default: the only one.
    bar_wait_s : float
        Seconds after a bar's close to wait for every root's bar before deciding without the missing ones.
    record_every : int
        Bars between ledger checkpoints of the session's run.
    gc_every : int
        Decided bars between full garbage collections, run right after a decision (:mod:`engine.live.gcpolicy`).
    features : bool
        Compute each new bar's catalog features (needed when the query reads ``features_<tf>``).
    feature_workers : int
        Feature families computed side by side per bar (:class:`~warehouse.features.live.LiveFeatures`
        ``workers``): 2 on a 2-core machine halves the features' time when the machine is otherwise idle
        (297 vs 557 ms median, ``bench/bench_features_live.py``); 1 when other work keeps the cores busy.
    feature_trim_every : int, optional
        Bars per root after which the features' in-memory tails are cut back to their bound (~1 s, done after
        a decision, never between a bar's close and its orders); default
        :data:`~warehouse.features.live.TRIM_EVERY` of the timeframe (an hour of 1m bars: the per-bar features
        slow down as the tails grow).
    auto_roll : bool
        Roll a held position when the query's rows name a new front contract (two market orders through the
        broker, see :meth:`engine.kernel.TradingKernel._send_roll`), also a resumed position left in the old
        contract. False: a resumed position in another contract than the front halts the run (``ROLL_NEEDED``)
        and rolls are the operator's.
    roll_timeout_s : float
        Seconds after a roll's legs were sent (session clock) within which both must be filled; else the run
        halts (``ROLL_FAILED``), as it does at once when the broker refuses a leg.
    roll_maintenance : bool
        Once per trading day in CME's daily halt (and on ``qe live rolls``) rebuild the roots' roll table from
        the stored bars, stream the next front and the contract after it, and reload the features of rolled
        roots (:mod:`engine.live.maintenance`); False: the roll table and contracts of the start hold until a
        restart.
    """

    model_config = ConfigDict(extra="forbid")

    roots: list[str] | None = None
    ib_strategy: str | None = None
    bar_wait_s: float = Field(default=5.0, ge=0)
    record_every: int = Field(default=60, ge=1)
    gc_every: int = Field(default=60, ge=1)
    features: bool = True
    feature_workers: int = Field(default=2, ge=1, le=8)
    feature_trim_every: int | None = Field(default=None, ge=1)
    auto_roll: bool = True
    roll_timeout_s: float = Field(default=120.0, gt=0)
    roll_maintenance: bool = True


@dataclass(slots=True)
class BarTiming:
    """Wall-clock moments of one decided bar, seconds (``time.perf_counter``) and counts."""

    ts: datetime
    stored: float  # the last root's bar was stored
    decided: float  # the kernel finished the bar (orders, if any, were sent)
    features_s: float
    query_s: float
    kernel_s: float
    orders: int
    #: when the bar's features began: while the bars were being validated and written
    #: (:meth:`LiveSession.before_stored`), else after they were stored
    featured_from: float = 0.0


@dataclass
class _Pending:
    """The stored bars of one timestamp so far, and when the latest was stored (``time.perf_counter``)."""

    bars: dict[str, FinalBar] = field(default_factory=dict)
    stored: float = 0.0


class LiveSession:
    """One strategy trading bar by bar through a broker's execution handler.

    Parameters
    ----------
    wh : Warehouse
    strategy : Strategy
    query : str
        The backtest query.
    config : BacktestConfig
        Capital, risk limits, instruments and timeframe, as a backtest takes them (``fill`` does not apply:
        the broker fills).
    handler : ExecutionHandler
        Connected before :meth:`run`; its risk manager must be ``risk`` (orders it halts on are refused).
    risk : RiskManager
    roots : list of str
    settings : LiveSettings
    kind : {"paper", "live"}
    run_id : str
    clock : callable, optional
        Now (tz-aware); the broker's time in a replay. Decides when a bar waited long enough.
    directory : Path, optional
        The session's directory (status, commands, checkpoint); with a checkpoint there, the session resumes
        the run it holds (see :mod:`engine.live.checkpoint`).
    """

    def __init__(self, wh, strategy: Strategy, query: str, config: BacktestConfig,  # noqa: ANN001
                 handler: ExecutionHandler, risk: RiskManager, roots: list[str], *, settings: LiveSettings,
                 kind: str, run_id: str, timeframe: str, clock: Callable[[], datetime] | None = None,
                 directory: Path | None = None) -> None:
        if timeframe not in BAR_NS:
            raise QEError(f"unknown timeframe {timeframe!r}; one of {', '.join(BAR_NS)}")
        self.wh = wh
        self.query = query
        self.config = config
        self.settings = settings
        self.kind = kind
        self.run_id = run_id
        self.timeframe = timeframe
        self.roots = list(roots)
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.strategy = strategy
        self.handler = handler
        self._con = wh.new_connection()
        instruments = InstrumentBook(config.instruments)
        recorder = EquityRecorder(config.initial_capital, chunk_points=config.equity_chunk_points,
                                  directory=Path(wh.root) / ".staging", run_id=run_id)
        # rolls: the handler sends both legs as orders (auto_roll); off, check_contracts halts a resumed run whose
        # position is in another contract than the broker's front, and rolling is the operator's
        self.kernel = TradingKernel(strategy, handler, instruments, risk, Portfolio(config.initial_capital), recorder,
                                    bar_ns=BAR_NS[timeframe], slippage=NoSlippage(), rolls=load_rolls(self._con),
                                    roll=settings.auto_roll)
        strategy.engine = self.kernel
        self.strategy_label = strategy_name(strategy)
        self.rows = QueryRows(self._con, query, timeframe)
        self.features: LiveFeatures | None = None
        self.timings: list[BarTiming] = []
        self.decided: list[datetime] = []
        #: bar open time -> wall clock (``time.perf_counter``) when the bar's interval was over: the feed closed the
        #: first root's bar (replays; the latency's start)
        self.closed_at: dict[datetime, float] = {}
        self.last_symbols: list[str] = []
        self.skipped_late: list[FinalBar] = []
        self.started_at = datetime.now(timezone.utc)
        self.directory = directory
        self.operator = None
        #: the roll upkeep between bars (:class:`~engine.live.maintenance.RollMaintenance`), set by the runner
        self.maintenance = None
        self._pending: dict[datetime, _Pending] = {}
        #: (contract, ts) -> root of bars whose features :meth:`before_stored` computed while they were being
        #: validated and written, and per bar time when that began and the seconds it took (counted in the bar's
        #: ``features_s``)
        self._featured: dict[tuple[str, datetime], str] = {}
        self._early: dict[datetime, tuple[float, float]] = {}
        self._feature_error: BaseException | None = None
        #: bars whose features were computed while they were being validated and written (:meth:`before_stored`)
        self.featured_early = 0
        #: times the features' tails were cut back (between bars)
        self.feature_trims = 0
        #: the collector's full passes run between bars, not between a bar's close and its orders
        self.gc = GcPolicy(settings.gc_every)
        self._last_decided: datetime | None = None
        self._started = False
        self._bars_since_record = 0
        self._unbooked = 0  # decided bars not yet checkpointed (after_bars)
        self._deferring = False  # in the run loop: after_bars waits for _TURNS_AFTER_ORDERS turns of the loop
        self.checkpoint_error: str | None = None
        self._catching_up = False
        self.resumed = False
        #: root -> [(valid_from or None, contract)] of the roll table's front segments (see :meth:`front_at`)
        self._fronts: dict[str, list[tuple[datetime | None, str]]] = {}
        state = load_checkpoint(directory / CHECKPOINT_FILE) if directory is not None else None
        if state is not None:
            # the same run again: the kernel as it was after the last decided bar, and the orders it had sent
            restored_params = dict(getattr(state.strategy, "params", {}) or {})
            given_params = dict(getattr(strategy, "params", {}) or {})
            if restored_params != given_params:
                raise QEError(f"run {run_id} was trading with parameters {restored_params}, not {given_params}: "
                              "resume it with the same -p values, or start a new run (qe live --new)")
            restore(self.kernel, state)
            # the configuration given now rules: a restart is how an operator tightens the limits
            self.kernel.risk.replace_limits(config.risk)
            self.strategy = self.kernel.strategy
            self.decided = list(state.decided)
            self._last_decided = self.decided[-1] if self.decided else None
            self._started = True  # on_start ran in the first process
            self.resumed = True
            resume = getattr(handler, "resume", None)
            if resume is not None:  # a real broker's handler: the orders sent and the executions booked before
                resume(self.kernel.orders, state.booked_exec_ids, state.records, state.sent_at)
        handler_risk = getattr(handler, "risk", None)
        if handler_risk is not None:
            handler.risk = self.kernel.risk  # the handler halts the restored risk manager, not the new one
        self.kernel.submission_gate = self._gate
        if hasattr(handler, "clock"):
            handler.clock = self.clock  # send times on the session's clock (bar time in a replay)
        handler.bar_ns = self.kernel.bar_ns  # a bar's fills are those made before it ended

    # -- the loop -----------------------------------------------------------------------------------
    def held_contracts(self) -> dict[str, str]:
        """Root -> the contract each position of the (restored) books is held in."""
        return {root: pos.contract for root, pos in self.kernel.portfolio.positions.items() if pos.contract}

    def load_fronts(self) -> None:
        """Read the roll table's front segments of the session's roots (after the warm-up rebuilt them)."""
        rows = self._con.execute(
            "SELECT symbol, valid_from, contract FROM front_segments WHERE list_contains($roots, symbol) "
            "ORDER BY symbol, valid_from NULLS FIRST", {"roots": self.roots}).fetchall()
        fronts: dict[str, list[tuple[datetime | None, str]]] = {}
        for root, valid_from, contract in rows:
            fronts.setdefault(root, []).append((valid_from, contract))
        self._fronts = fronts

    def refresh_rolls(self) -> None:
        """Read the roll table again after it was rebuilt (roll maintenance): the fronts of :meth:`front_at` and
        the kernel's roll prices. The query's rows read the rebuilt table by themselves (the views read the
        files at each query), so the ``contract`` column changes at the new roll's bar as in a backtest."""
        self.wh.register_tables(self._con, ["rolls", "front_segments", "instruments"])
        self.kernel.rolls = load_rolls(self._con)
        self.load_fronts()

    def query_rows(self, sql: str, roots: list[str]) -> list[tuple]:
        """Rows of ``sql`` (with a ``$roots`` parameter) on the session's warehouse connection."""
        return self._con.execute(sql, {"roots": list(roots)}).fetchall()

    def front_at(self, root: str, ts: datetime) -> str | None:
        """The roll table's front contract of ``root`` for the bar opening at ``ts`` (None: no roll table)."""
        front = None
        for valid_from, contract in self._fronts.get(root, ()):
            if valid_from is None or valid_from <= ts:
                front = contract
        return front

    def is_front(self, root: str, contract: str, ts: datetime) -> bool:
        """Whether a bar of ``contract`` at ``ts`` is the front's (the query's rows are; the next front's bars,
        streamed around a roll, are stored and not decided); True without a roll table."""
        return self.front_at(root, ts) in (None, contract)

    def start(self) -> None:
        """Open the per-bar features (after the warm-up stored every bar up to now), decide the bars stored
        since the last decided one (a resumed run), and call the strategy's ``on_start`` (a new run)."""
        self.load_fronts()
        if self.settings.features and f"features_{self.timeframe}" in self.query and self.features is None:
            if self._last_decided is not None:
                self._catch_up_features()
            self.features = LiveFeatures(self.wh, self.timeframe, self.roots, workers=self.settings.feature_workers,
                                         trim_every=self.settings.feature_trim_every)
        if not self._started:
            self.strategy.on_start()
            self._started = True
        if self._last_decided is not None:
            self.catch_up()
            if not self.kernel.bound:
                # nothing to catch up: the rows' layout all the same, so the operator's commands work before the
                # first new bar (the checkpoint keeps the last bar's rows, not their column positions)
                self.kernel.bind(*self.rows.layout())

    def _catch_up_features(self) -> None:
        """Features of the bars decided before the restart and of those stored since (bounded tails, equal to
        the batch build), for the query's rows of the bars still to decide."""
        from warehouse.features.incremental import compute_tail

        since = self.decided[0] if self.decided else self._last_decided
        rows = compute_tail(self.wh, self.timeframe, self.roots, since)
        self.rows.add_features(rows)

    def _gate(self, order, submitted_ns: int) -> Denial | None:  # noqa: ANN001
        """Market hours (:func:`_market_hours`), and no new order while deciding bars missed during a stop:
        their prices are old; only orders the broker already has (decided again, adopted) pass."""
        if self._catching_up and not getattr(self.handler, "awaits", lambda order: False)(order):
            return Denial("CATCH_UP", f"decided on {datetime.fromtimestamp(submitted_ns / 1e9, timezone.utc):%H:%M} "
                                      "while catching up after a restart: not sent at today's prices")
        return _market_hours(order, submitted_ns)

    def check_contracts(self, traded: dict[str, str]) -> list[str]:
        """Halt the run when a held position is in another contract than the one the broker trades now,
        unless the session rolls it (``auto_roll``).

        A restart after the roll table moved a root's front (``traded``: root -> the contract the handler
        trades) would otherwise send the strategy's orders to the new contract against a position in the old
        one. With ``auto_roll`` the first row naming the new front rolls the position (both legs sent as
        orders, the old contract qualified at connect): nothing halts and the messages are logged. Without it
        the run halts with ``ROLL_NEEDED`` and says which (roll by hand: ``qe live flatten ROOT``, then ``qe
        live reset``). Returns the messages.
        """
        problems = [f"{root}: held {pos.quantity:+d} in {pos.contract}, the broker now trades {traded[root]}"
                    for root, pos in self.kernel.portfolio.positions.items()
                    if root in traded and pos.contract is not None and pos.contract != traded[root]]
        if problems and self.settings.auto_roll:
            log.warning("rolled at the next bar: %s", "; ".join(problems))
            return problems
        if problems:
            message = "; ".join(problems)
            log.error("roll needed: %s", message)
            self.kernel.events.append((self.kernel.now, "risk", "ROLL_NEEDED", None, None, message))
            self.kernel.risk.set_state(RiskState.HALTED, f"ROLL_NEEDED {message}")
        return problems

    def catch_up(self) -> int:
        """Decide, in order, the bars the warehouse holds after the last decided one (a restart's missed bars
        and the bar a crash interrupted); returns how many timestamps."""
        stored = self._con.execute(
            f"SELECT DISTINCT ts FROM bars_{self.timeframe} WHERE list_contains($roots, symbol) AND ts > $after "
            "ORDER BY ts", {"roots": self.roots, "after": self._last_decided}).fetchall()
        for k, (ts,) in enumerate(stored):
            # every missed bar but the newest is decided without new orders (its prices are old)
            self._catching_up = k < len(stored) - 1
            self._decide_rows(ts, time.perf_counter())
        self._catching_up = False
        unclaimed = getattr(self.handler, "release_unclaimed", lambda: [])()
        if unclaimed:
            # orders this run sent that deciding the same bars again did not produce: the books are not the
            # broker's; they count as working from now on (the risk checks see them), and trading stops until
            # the operator looks (qe live status / reset)
            message = f"orders at the broker the resumed run did not decide again: {', '.join(unclaimed)}"
            log.error(message)
            self.kernel.events.append((self.kernel.now, "risk", "RESUME_MISMATCH", None, None, message))
            self.kernel.risk.set_state(RiskState.HALTED, f"RESUME_MISMATCH {message}")
        return len(stored)

    async def run(self, bars: asyncio.Queue, stop: asyncio.Event, *, tick_s: float = 0.05) -> None:
        """Decide bars from ``bars`` (stored :class:`FinalBar`) until ``stop`` is set; between bars, carry
        out the operator's commands."""
        self.gc.start()
        try:
            await self._run(bars, stop, tick_s)
        finally:
            self.gc.stop()
            try:
                self.after_bars()  # stopped (or cancelled) between a decision and its bookkeeping: checkpoint it now
            except Exception:
                log.exception("the checkpoint after the last decided bar failed")

    async def _run(self, bars: asyncio.Queue, stop: asyncio.Event, tick_s: float) -> None:
        while not stop.is_set():
            try:
                bar = await asyncio.wait_for(bars.get(), tick_s)
            except (asyncio.TimeoutError, TimeoutError):
                bar = None
            if bar is not None:
                self.add(bar)
                while not bars.empty():
                    self.add(bars.get_nowait())
            self._deferring = True
            try:
                decided = self.decide_due()
            except BaseException:
                # the kernel may be partway through a bar: no checkpoint now (a restart decides again from the last
                # one, and the journal knows the orders sent)
                self._unbooked = 0
                raise
            finally:
                self._deferring = False
            if decided:
                # the bar's orders were written to the broker's socket: a few turns of the loop for what answers
                # them (and for an in-process gateway to read them) before the bookkeeping
                for _ in range(_TURNS_AFTER_ORDERS):
                    await asyncio.sleep(0)
            self.after_bars()
            for _ in range(decided):
                self.gc.after_bar()
            if (decided and self.features is not None and not self._pending and not self._featured
                    and self.features.trim_due()):
                # once an hour of 1m bars (~1 s): right after a decision, with no bar featured and waiting for its
                # write or its decision (not between a bar's close and its orders)
                self.features.trim()
                self.feature_trims += 1
            if self.kernel.rolling:  # a refused leg halts at once, not at the next bar
                self.check_rolls(timeouts=False)
            if self.operator is not None:
                self.operator.handle_commands()
            maintenance = self.maintenance
            if maintenance is not None and not self._pending and maintenance.due(self.clock()):
                # in the daily halt (no bar arrives) or on the operator's request: between bars, never on a close
                await maintenance.run()

    def check_rolls(self, timeouts: bool = True) -> list[str]:
        """:meth:`TradingKernel.check_rolls` on the session's clock and ``roll_timeout_s`` (``timeouts=False``:
        refused legs only, between bars, when reported fills may still wait to be booked); logs each failure."""
        now = int(self.clock().timestamp() * 1e9)
        problems = self.kernel.check_rolls(now, int(self.settings.roll_timeout_s * 1e9) if timeouts else None)
        for message in problems:
            log.error("roll failed: %s", message)
        return problems

    def add(self, bar: FinalBar) -> None:
        """A stored final bar: held until its timestamp is complete (or waited long enough).

        A bar of another contract than the root's front at its time (the next front, streamed around a roll,
        or the old one just after) is stored and not decided: the query's rows are the front's."""
        if not self.is_front(bar.root, bar.contract, bar.ts):
            return
        if self._last_decided is not None and bar.ts <= self._last_decided:
            # decided without it (it came after the wait, e.g. a spike held for confirmation): stored, not traded
            self.skipped_late.append(bar)
            log.warning("bar %s %s arrived after its time was decided; stored, not traded", bar.root, bar.ts)
            if self.features is not None:  # the root's features still need it (their windows run over every bar)
                self._features_of([bar])
            self._early.pop(bar.ts, None)  # its time was decided: a timing kept by before_stored is not needed
            return
        now = time.perf_counter()
        pending = self._pending.setdefault(bar.ts, _Pending())
        pending.bars[bar.root] = bar
        pending.stored = now

    def decide_due(self) -> int:
        """Decide every complete timestamp (and those waited for long enough), oldest first; return how many."""
        decided = 0
        now = self.clock()
        for ts in sorted(self._pending):
            pending = self._pending[ts]
            complete = all(root in pending.bars for root in self.roots)
            end = max(b.end for b in pending.bars.values())
            if not complete and now < end + timedelta(seconds=self.settings.bar_wait_s):
                break  # later timestamps wait behind this one: bars reach the kernel in time order
            del self._pending[ts]
            self.decide(ts, pending)
            decided += 1
        return decided

    def decide(self, ts: datetime, pending: _Pending) -> None:
        """Features of the bar's rows, then :meth:`_decide_rows`."""
        started = time.perf_counter()
        if self.features is not None:
            self._features_of(list(pending.bars.values()))
        began, early_s = self._early.pop(ts, (started, 0.0))
        self._decide_rows(ts, pending.stored, time.perf_counter() - started + early_s, began)

    def before_stored(self, bars: list[FinalBar]) -> None:
        """The feed's final bars while they are validated and written (``IBBarFeed.on_arrived``; with a suspect
        bar held, once validated: ``on_checked``): their features are computed now, overlapping the validation
        and the write, and :meth:`decide` finds them done; a bar then not stored comes to :meth:`not_stored`.

        Never raises (the feed's store loop calls it): a failure is kept and raised by the next
        :meth:`decide`, where the features would have been computed otherwise. Skipped before :meth:`start`,
        during roll maintenance (which reloads the features) and for another contract than the root's front.
        """
        maintaining = self.maintenance is not None and self.maintenance.running  # it reloads the features
        if self.features is None or maintaining or self._feature_error is not None:
            return
        fronts = [bar for bar in bars if self.is_front(bar.root, bar.contract, bar.ts)]
        if not fronts:
            return
        started = time.perf_counter()
        try:
            self._features_of(fronts)
        except Exception as exc:  # noqa: BLE001 (kept for decide, which raises it)
            log.exception("features of %d bar(s) failed", len(fronts))
            self._feature_error = exc
            return
        self._featured.update(((bar.contract, bar.ts), bar.root) for bar in fronts)
        self.featured_early += len(fronts)
        times = {bar.ts for bar in fronts}
        seconds = (time.perf_counter() - started) / len(times)
        for ts in times:  # a bar time's roots may come in more than one batch: from the first, summed
            began, spent = self._early.get(ts, (started, 0.0))
            self._early[ts] = (began, spent + seconds)

    def not_stored(self, bars: list[FinalBar]) -> None:
        """Bars :meth:`before_stored` saw that the feed did not store (``IBBarFeed.on_not_stored``: quarantined,
        held as a suspect, or the write failed): they are not traded. Their roots' rows from the first such bar on
        are dropped (a later bar of the root featured in the same append had it in its windows) and the roots'
        features loaded again from the warehouse's bars before it; the root's stored bars among the dropped ones
        are featured again, in order, when they are decided. Never raises: a failure is kept and raised by the
        next :meth:`decide`, as in :meth:`before_stored`."""
        first: dict[str, datetime] = {}  # root -> its earliest featured bar not stored
        for bar in bars:
            if (bar.contract, bar.ts) in self._featured:
                first[bar.root] = min(first.get(bar.root, bar.ts), bar.ts)
        if not first or self.features is None:
            return
        try:
            gone = [(key, root) for key, root in self._featured.items() if root in first and key[1] >= first[root]]
            for key, _ in gone:
                del self._featured[key]
            for ts in {key[1] for key, _ in gone} - {key[1] for key in self._featured}:
                self._early.pop(ts, None)  # no root of that time featured early any more
            self.rows.drop_features([(root, key[1]) for key, root in gone])
            roots = sorted(first)
            log.warning("reloading the features of %s: bars featured before they were stored were not stored",
                        ", ".join(roots))
            self.features.reload(roots, before=first)
        except Exception as exc:  # noqa: BLE001 (the feed's store loop calls this: kept for decide, which raises)
            log.exception("dropping the features of bars not stored failed")
            self._feature_error = exc

    def _features_of(self, bars: list[FinalBar]) -> None:
        """Features of ``bars`` not featured yet (:meth:`before_stored`), shown in the query's rows."""
        if self._feature_error is not None:
            error, self._feature_error = self._feature_error, None
            raise QEError(f"the features of a bar failed while it was being stored: {error}") from error
        todo = []
        for bar in bars:
            if (bar.contract, bar.ts) in self._featured:
                del self._featured[(bar.contract, bar.ts)]  # decided (or skipped as late) now: forget it
            else:
                todo.append(bar)
        if todo:
            self.rows.add_features(self.features.append(
                bars_table(todo).sort_by([("symbol", "ascending"), ("ts", "ascending")]), trim=False))

    def _decide_rows(self, ts: datetime, stored: float, features_s: float = 0.0,
                     featured_from: float | None = None) -> None:
        """The broker's fills since the last bar, then the kernel on the query's rows at ``ts``; checkpoint."""
        featured = time.perf_counter()
        # the fills made before this bar ended (a later one waits in the handler, counted as exposure)
        fills = self.handler.drain_fills(before=int(ts.timestamp() * 1e9) + self.kernel.bar_ns)
        columns, n = self.rows.at(ts)
        queried = time.perf_counter()
        orders_before = len(self.kernel.orders)
        if n:
            if not self.kernel.bound:
                self.kernel.bind(self.rows.columns, self.rows.bar_type)
            # the bar's orders go to the broker together: one journal write for all the roots' orders
            with self.handler.one_batch():
                self.kernel.process(columns, n, arrived=fills)
            self.last_symbols = sorted(set(columns[self.rows.columns["symbol"]]))
        else:
            self.kernel.book_fills(fills)
        if self.kernel.rolling:
            self.check_rolls()
        done = time.perf_counter()
        for fill in fills:
            log.info("fill %s %+d %s @ %s (order %d, commission %.2f)", fill.symbol, fill.quantity, fill.contract,
                     fill.price, fill.order_id, fill.commission)
        for order in self.kernel.orders[orders_before:]:
            log.info("order %d %s %+d %s: %s%s", order.order_id, order.symbol, order.quantity, order.order_type.value,
                     order.status.value, f" ({order.detail})" if order.detail else "")
        log.info("bar %s decided: %d row(s), equity %.2f, risk %s", ts.isoformat(), n, self.kernel.portfolio.equity,
                 self.kernel.risk.state.value)
        self._last_decided = ts
        self.decided.append(ts)
        self.timings.append(BarTiming(ts, stored, done, features_s, queried - featured, done - queried,
                                      len(self.kernel.orders) - orders_before, featured if featured_from is None else featured_from))
        self._unbooked += 1
        if not self._deferring:
            self.after_bars()

    @property
    def booked(self) -> bool:
        """Every decided bar is checkpointed (:meth:`after_bars` ran since the last decision)."""
        return self._unbooked == 0

    def after_bars(self) -> None:
        """The bookkeeping after decided bars: the checkpoint, the status, and the ledger's record every
        ``record_every`` bars. In the run loop it follows the loop's turn after a decision (the bar's orders are
        on the wire already; the broker's answers, and an in-process gateway, go first); a crash before it
        decides the bar again from the checkpoint before, and the journal knows its orders."""
        if not self._unbooked:
            return
        self._bars_since_record += self._unbooked
        self._unbooked = 0
        self.checkpoint()
        if self.operator is not None:
            self.operator.publish("halted" if self.kernel.risk.state is RiskState.HALTED else "running")
        if self._bars_since_record >= self.settings.record_every:
            self.record()

    def checkpoint(self) -> None:
        """Save the state after the last decided bar (the session's directory only)."""
        if self.directory is None:
            return
        handler = self.handler
        booked, records = handler.delivered_books() if hasattr(handler, "delivered_books") else (set(), [])
        try:
            save_checkpoint(self.directory / CHECKPOINT_FILE, self.kernel, self.decided, booked, records,
                            dict(getattr(handler, "sent_at", {})))
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            # trading goes on; only a restart could not resume this run (said once, in the log and the status)
            if self.checkpoint_error is None:
                self.checkpoint_error = f"no checkpoint: the strategy's state does not pickle ({exc}); a restart " \
                                        "starts a new run"
                log.warning(self.checkpoint_error)

    # -- the ledger ---------------------------------------------------------------------------------
    def result(self, status: str = "running") -> RunResult:
        """The session so far as a run: the kernel's tables, metrics over its equity points."""
        return kernel_result(self.kernel, self.config, self.query, self.timeframe, timings={}, run_id=self.run_id,
                             status=status, tables={"executions": self.executions_table()})

    def executions_table(self) -> pa.Table:
        """One row per broker execution booked: ids, the bar the order was decided on, when it was sent and
        filled (for the latency of :mod:`engine.live.attribution`), the broker's commission and the fee
        table's estimate."""
        handler = self.handler
        orders = self.kernel.orders
        rows = []
        for record in getattr(handler, "records", ()):
            fill = record.fill
            order = orders[fill.order_id] if 0 <= fill.order_id < len(orders) else None
            rows.append({
                "run_id": None, "order_id": fill.order_id if fill.order_id >= 0 else None,
                "exec_id": record.exec_id, "order_ref": record.order_ref, "symbol": fill.symbol,
                "contract": fill.contract, "decided_ts": _utc_ns(order.ts_submitted) if order else None,
                "sent_at": handler.sent_at.get(record.order_ref), "filled_at": _utc_ns(fill.ts),
                "quantity": fill.quantity, "price": fill.price, "commission": fill.commission,
                "commission_estimate": record.commission_estimate,
            })
        return pa.Table.from_pylist(rows, schema=schemas.RUN_EXECUTIONS)

    def record(self, status: str = "running") -> str:
        """Write the session's run to the ledger (a checkpoint: every table is rewritten whole)."""
        from engine.results.ledger import record_run

        self._bars_since_record = 0
        if self.kernel.recorder.spilled:
            raise QEError("a live session longer than the equity chunk is not recorded yet (raise equity_chunk_points)")
        return record_run(self.wh, self.result(status), kind=self.kind)

    def stop(self) -> str:
        """The strategy's ``on_stop``, the last equity point, and the final ledger record; returns the run id."""
        if self._started:
            self.strategy.on_stop()
        self.kernel.book_fills(self.handler.drain_fills())
        self.kernel.finish(close_at_end=False)
        if self.features is not None:
            self.features.close()
        run_id = self.record("stopped")
        if self.operator is not None:
            self.operator.publish("stopped", "session stopped")
        self._con.close()
        return run_id


def _market_hours(order, submitted_ns: int) -> Denial | None:  # noqa: ANN001
    """No order reaches the broker while its market is closed (the daily halt, a weekend, a holiday): an
    order decided on a session's last bar is refused (``MARKET_CLOSED``); the strategy decides again on the
    next session's first bar."""
    moment = datetime.fromtimestamp(submitted_ns / 1e9, timezone.utc)
    if market_open(order.symbol, moment):
        return None
    return Denial("MARKET_CLOSED", f"{order.symbol} does not trade at {moment:%Y-%m-%d %H:%M:%S} UTC "
                                   "(outside its session)")


def _utc_ns(ns: int | None) -> datetime | None:
    return None if ns is None else datetime.fromtimestamp(ns / 1e9, timezone.utc)


def universe(con, query: str, timeframe: str) -> list[str]:  # noqa: ANN001
    """The symbols ``query`` returns over the latest stored day of ``bars_<tf>``: the roots a session trades."""
    text = query.strip().rstrip(";")
    rows = con.sql(
        f"SELECT DISTINCT symbol FROM ({text}) AS q "
        f"WHERE q.ts >= (SELECT max(ts) FROM bars_{timeframe}) - INTERVAL 1 DAY ORDER BY symbol").fetchall()
    if not rows:
        raise QEError("the live query returns no rows over the latest stored day, so it names no universe; "
                      "list the roots to trade in the config ([live] roots = [\"MES\"])")
    return [r[0] for r in rows]
