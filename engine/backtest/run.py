"""The event loop: one SQL query in, a recorded futures backtest out.

For every bar, in time order (several symbols interleaved):

1. a change of front contract under an open position rolls it (out of the old contract and into the new
   one at the roll table's raw prices, with commission and slippage on both legs);
2. the execution handler fills the symbol's working orders against the bar;
3. the position is marked to the bar's close;
4. the strategy sees the bar and returns orders, which pass the risk manager before reaching the handler.

After the last bar of each timestamp the account's equity is recorded (marked to the latest close of every
open position) by an :class:`~engine.results.equity.EquityRecorder`, which keeps at most
``BacktestConfig.equity_chunk_points`` points (plus one record batch) in memory and spills longer runs to a
Parquet file a chunk at a time, so a run's memory is bounded by the batch and chunk sizes, not by the length
of the history. Money conventions are in :mod:`engine.core.portfolio`; fill conventions in
:mod:`engine.execution.simulated`.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
import weakref
from array import array
from collections import deque
from functools import partial
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from engine.results.equity import DEFAULT_CHUNK_POINTS, EquityRecorder
from engine.execution.simulated import BacktestExecutionHandler
from engine.data.feed import BAR_NS, Feed, first_trading_days, infer_timeframe, open_feed
from engine.core.instruments import EPOCH, InstrumentBook, InstrumentOverride
from engine.core.orders import Fill, Order, OrderStatus
from engine.core.portfolio import Portfolio
from engine.risk import Denial, RiskLimits, RiskManager, RiskState, is_reducing, volatility_scaled_contracts
from engine.execution.slippage import SlippageConfig, make_slippage
from engine.strategy import FunctionStrategy, Strategy
from warehouse import schemas
from warehouse.errors import ConfigError, QEError

__all__ = ["BacktestConfig", "BacktestResult", "Backtester", "run_backtest"]


class BacktestConfig(BaseModel):
    """Everything that shapes a run besides the query and the strategy (strict: unknown keys are errors).

    Attributes
    ----------
    initial_capital : float
        Starting cash, account currency.
    timeframe : str, optional
        Bar length (``1m``, ``1h``, ``1d`` ...); inferred from the views the query reads when omitted.
    fill : {"next_open", "signal_close"}
        Fill convention of market orders (see :mod:`engine.execution.simulated`).
    intrabar : {"ohlc", "adaptive"}
        Intrabar price path for limit/stop orders.
    slippage : SlippageConfig
    participation : float, optional
        Volume participation cap per bar and symbol (0 < p <= 1); None for no cap.
    latency_ms : float
        Submission-to-execution delay, milliseconds.
    limit_through : bool
        Limit orders need the price to trade through the limit, not only touch it.
    risk : RiskLimits
    instruments : dict
        Per-symbol overrides of multiplier, tick size, fee and margin.
    roll : bool
        Roll open positions when the front contract changes (the query must return ``contract``).
    close_at_end : bool
        Cancel working orders and close every position at the last bar's close (plus slippage and
        commission) when the data ends, so the run ends flat (walk-forward test windows use it).
    batch_size : int
        Rows per Arrow record batch streamed from DuckDB.
    equity_chunk_points : int
        Equity points held in memory before they are spilled to a Parquet file (checked between record
        batches). A run with more points than this records its equity ledger in ``BacktestResult.equity_path``
        instead of memory (see :class:`BacktestResult`); shorter runs are unaffected.
    """

    model_config = ConfigDict(extra="forbid")

    initial_capital: float = Field(default=1_000_000.0, gt=0)
    timeframe: str | None = None
    fill: Literal["next_open", "signal_close"] = "next_open"
    intrabar: Literal["ohlc", "adaptive"] = "ohlc"
    slippage: SlippageConfig = SlippageConfig()
    participation: float | None = Field(default=None, gt=0, le=1)
    latency_ms: float = Field(default=0.0, ge=0)
    limit_through: bool = False
    risk: RiskLimits = RiskLimits()
    instruments: dict[str, InstrumentOverride] = Field(default_factory=dict)
    roll: bool = True
    close_at_end: bool = False
    batch_size: int = Field(default=65_536, ge=1)
    equity_chunk_points: int = Field(default=DEFAULT_CHUNK_POINTS, ge=1)


@dataclass
class BacktestResult:
    """What a run produced.

    Attributes
    ----------
    tables : dict of pyarrow.Table
        ``orders``, ``fills``, ``positions``, ``equity``, ``trades``, ``events`` with the run-ledger schemas
        (without ``run_id`` until recorded). For a run whose equity was spilled to disk (``equity_path`` set),
        ``tables["equity"]`` is a **daily sample**: the last point of each CME trading date (the rows the
        daily statistics use), not every point; the full ledger is the file (:meth:`equity_table`).
    metrics : dict
        Performance metrics (:func:`engine.results.metrics.compute_metrics`, or for a spilled run
        :func:`engine.results.metrics.compute_metrics_streaming`, which gives the same values).
    timings : dict
        ``query_s`` (time to the first batch), ``loop_s`` (event loop), ``bars``.
    equity_path : Path, optional
        The full equity ledger (``RUN_EQUITY`` Parquet, one row per bar timestamp) of a run with more points
        than ``config.equity_chunk_points``; None for an in-memory run. Until the run is recorded it lives in
        a temporary (or warehouse staging) directory removed when the result is garbage-collected;
        :func:`engine.results.ledger.record_run` moves it to ``runs/run_equity/<run_id>.parquet`` and points this at it.
    """

    config: BacktestConfig
    strategy: str
    params: dict[str, Any]
    query: str
    timeframe: str
    tables: dict[str, pa.Table]
    metrics: dict[str, float]
    timings: dict[str, float]
    final_equity: float
    status: str = "completed"
    run_id: str | None = None
    symbols: list[str] = field(default_factory=list)
    data_start: int | None = None
    data_end: int | None = None
    equity_path: Path | None = None

    @property
    def equity_sampled(self) -> bool:
        """``tables["equity"]`` holds one point per trading date, not every point (see ``equity_path``)."""
        return self.equity_path is not None

    def equity_table(self) -> pa.Table:
        """The full equity ledger: ``tables["equity"]`` for an in-memory run, else the file read whole.

        Reading a spilled run's file costs O(points) memory (about 80 bytes a point); iterate it with
        ``pyarrow.parquet.ParquetFile(result.equity_path).iter_batches()`` to stay bounded.
        """
        if self.equity_path is None:
            return self.tables["equity"]
        return pq.read_table(self.equity_path).cast(schemas.RUN_EQUITY)


class Backtester:
    """One run's state: account, simulated broker, risk manager, strategy and the recorded series.

    Strategies reach it as ``self.engine`` (functional strategies get it as their second argument).
    """

    def __init__(self, strategy: Strategy, config: BacktestConfig, timeframe: str,
                 rolls: dict[tuple[str, str, str], tuple[float, float]] | None = None, *,
                 equity_dir: Path | None = None, run_id: str | None = None) -> None:
        if timeframe not in BAR_NS:
            raise ConfigError(f"unknown timeframe {timeframe!r}; one of {', '.join(BAR_NS)}")
        self.config = config
        self.timeframe = timeframe
        self.instruments = InstrumentBook(config.instruments)
        self.portfolio = Portfolio(config.initial_capital)
        self.slippage = make_slippage(config.slippage)
        self.handler = BacktestExecutionHandler(
            self.instruments, BAR_NS[timeframe], fill=config.fill, intrabar=config.intrabar, slippage=self.slippage,
            participation=config.participation, latency_ns=int(config.latency_ms * 1_000_000),
            limit_through=config.limit_through,
        )
        self.risk = RiskManager(config.risk, self.instruments)
        self.strategy = strategy
        self.rolls = rolls or {}
        self.orders: list[Order] = []
        self.events: list[tuple[int, str, str, str | None, int | None, str]] = []
        self.histories: dict[str, deque] = {}
        self.now = 0  # ts (ns) of the bar being processed (set when an order or roll needs it)
        self.trading_day = 0
        self._columns: list[list] | None = None  # the batch being processed ...
        self._i = 0  # ... and the row in it
        self._feed_columns: dict[str, int] = {}
        self._previous_columns: list[list] | None = None
        self._last_bars: dict[str, tuple] = {}
        self.feed_s = 0.0
        # equity points, one per distinct bar timestamp, buffered (and spilled) by the recorder; the loop
        # appends to its buffers directly. Indices in the marks are positions in the current buffer.
        self.recorder = EquityRecorder(config.initial_capital, chunk_points=config.equity_chunk_points,
                                       directory=equity_dir, run_id=run_id)
        self._eq_ts: array = self.recorder.ts
        self._eq_unrealized: array = self.recorder.unrealized
        self._eq_notional: array = self.recorder.notional
        self._day_marks = self.recorder.day_marks  # (first equity point index, trading day) at each new day
        # account state after each fill: (equity point index it belongs to, realized, commissions, slippage)
        self._cash_marks = self.recorder.cash_marks
        # equity-point index of each trade's entry and exit (-1 = not resolved yet, 16 bytes a trade): trades'
        # bars_held once the points have been spilled; _trade_pending lists trades not fully resolved
        self._trade_entry_point = array("q")
        self._trade_exit_point = array("q")
        self._trade_pending: list[int] = []
        self.symbols: set[str] = set()
        self.bars = 0
        self._cash = config.initial_capital
        self.risk.start(config.initial_capital)

    # -- AccountView (what the risk manager reads) -------------------------------------------------
    def position(self, symbol: str) -> int:
        return self.portfolio.position(symbol)

    def working_quantity(self, symbol: str) -> int:
        return self.handler.working_quantity(symbol)

    def working_buys_sells(self, symbol: str) -> tuple[int, int]:
        return self.handler.working_buys_sells(symbol)

    def symbols_at_risk(self) -> set[str]:
        """Symbols with a position or a working order."""
        return self.portfolio.positions.keys() | self.handler.working.keys()

    @property
    def equity(self) -> float:
        return self.portfolio.equity

    def price(self, symbol: str) -> float | None:
        """Latest price of ``symbol``: the position's mark, else the close of its latest bar."""
        pos = self.portfolio.positions.get(symbol)
        if pos is not None:
            return pos.mark
        bar = self._latest_bar(symbol) if self._columns is not None else None
        return None if bar is None else bar[5]

    # -- risk ---------------------------------------------------------------------------------------------
    def kill_switch(self, reason: str = "manual") -> None:
        """Cancel every working order, flatten every position at market, refuse new orders until reset."""
        self._refresh_now()
        ts = self.now
        self.events.append((ts, "kill_switch", "KILL_SWITCH", None, None, f"triggered: {reason}"))
        if self.risk.state is not RiskState.HALTED:
            self._event(self.risk.set_state(RiskState.HALTED, f"kill switch: {reason}"))
        self._flatten("kill_switch")

    def reset_kill_switch(self) -> None:
        """Explicitly clear the kill switch: new orders are accepted again."""
        self._refresh_now()
        self._event(self.risk.reset(self.portfolio.equity))

    def _refresh_now(self) -> None:
        """Stamp what happens next with the bar being processed (strategy calls arrive between bars' bookkeeping)."""
        if self._columns is not None:
            current = self._current_bar()
            self.now, self.trading_day = current[1], current[7]

    def sized_target(self, symbol: str, signal: float, instrument_vol: float | None = None) -> int:
        """Contracts for ``signal`` in [-1, 1]: volatility-scaled (if on), then capped by every limit.

        See :func:`engine.risk.volatility_scaled_contracts`; with scaling off, ``signal * max_position_size``.
        """
        limits = self.risk.limits
        price = self.price(symbol)
        if price is None or not signal:
            return 0
        if limits.volatility_scaling:
            target = volatility_scaled_contracts(signal, self.portfolio.equity, price,
                                                 self.instruments.terms(symbol).multiplier, instrument_vol,
                                                 limits.target_vol, limits.min_vol_scale, limits.max_vol_scale)
        else:
            target = int(round(signal * (limits.max_position_size or 1)))
        # from where market orders already in flight take the position (resting exits do not move it)
        current = self.portfolio.position(symbol) + self.handler.in_flight_quantity(symbol)
        return self.risk.cap_contracts(symbol, target, self, current)

    def _flatten(self, origin: str) -> None:
        # every working order and every held bracket child (a partly filled entry releases no exits here)
        self.handler.cancel_all(self.now, origin.replace("_", " "), keep_origin=origin)
        for symbol, pos in list(self.portfolio.positions.items()):
            pending = self.handler.working_quantity(symbol)
            if pos.quantity + pending == 0:
                continue
            order = Order(symbol, -(pos.quantity + pending), tag=origin)
            order.origin = origin
            self._send(order)

    def _cancel_risk_adding(self, reason: str) -> None:
        """Cancel every working order that could add risk in the worst case (REDUCING state).

        Per symbol, orders on the side of the position (or any order when flat) are cancelled; orders
        against it are kept in submission order while, together, they cannot take the position past flat.
        The legs of a one-cancels-other group can fill only once between them: the group counts once, and
        every leg on one side shares the first leg's fate.
        """
        for symbol in list(self.handler.working):
            held = self.portfolio.position(symbol)
            reducing = 0
            kept: dict[tuple[str, bool], bool] = {}  # (OCO group, buys?) -> kept
            for order in self.handler.working_orders(symbol):
                remaining = order.quantity - order.filled
                side = (order.oca_group, remaining > 0) if order.oca_group is not None else None
                keep = kept.get(side) if side is not None else None
                if keep is None:
                    keep = is_reducing(held, remaining, reducing)
                    if keep:
                        reducing += abs(remaining)
                    if side is not None:
                        kept[side] = keep
                if not keep:
                    self.handler.cancel(order, self.now, reason)

    def _check_breakers(self, equity: float) -> None:
        code = self.risk.on_equity(equity)
        if code is None:
            return
        self._event(self.risk.trip(code, equity))
        self._event(("state", self.risk.state.value, self.risk.reason))
        if code == "MAX_DRAWDOWN":
            self.kill_switch(code)
        elif self.risk.limits.flatten_on_loss_limit:
            self._flatten("loss_limit")
        else:
            self._cancel_risk_adding(code)

    def _event(self, event: tuple[str, str, str]) -> None:
        kind, code, message = event
        self.events.append((self.now, kind, code, None, None, message))

    # -- orders ----------------------------------------------------------------------------------------
    def submit(self, order: Order) -> Order:
        """Number ``order``, check it, and hand it to the broker (or record its denial)."""
        if self._columns is None:
            raise QEError("orders can only be submitted while a bar is being processed")
        if order.parent is not None:  # a bracket child goes in with its entry (a list from bracket() lists both)
            if order.order_id >= 0:
                return order
            raise QEError("a bracket's take-profit and stop-loss are submitted with their entry: submit the entry")
        current = self._current_bar()
        self.now, self.trading_day = current[1], current[7]
        order.order_id = len(self.orders)
        self.orders.append(order)
        order.ts_submitted = self.now + self.handler.bar_ns  # decided on this bar, submitted at its close
        self._number_children(order)
        denial = self.risk.check(order, self, self.trading_day)
        if denial is not None:
            self._deny(order, denial)
            return order
        return self._route(order, current)

    def _send(self, order: Order) -> Order:
        """Engine-generated orders (kill switch, flattening): numbered and sent without pre-trade checks."""
        order.order_id = len(self.orders)
        self.orders.append(order)
        order.ts_submitted = self.now
        return self._route(order, self._current_bar())

    def _route(self, order: Order, current: tuple) -> Order:
        """Hand a numbered, accepted ``order`` decided on bar ``current`` to the broker and book its fills.

        The order trades its own symbol's bar (a strategy may order NQ while seeing an ES bar). When that
        symbol's bar of the same timestamp has not been seen yet, its latest known bar is older than the
        decision: the broker is told the close is not known (``close_known=False``) so a signal-close fill
        waits for the symbol's own bar at the decision time (or the next open), never an older close.
        """
        bar = current if order.symbol == current[0] else self._latest_bar(order.symbol)
        if bar is None:
            self._deny(order, Denial("NO_MARKET_DATA", f"no bar of {order.symbol} seen yet"))
            return order
        close_known = True
        if bar is not current:
            close_known = bar[1] == current[1]
            # submitted now (at the current bar's close), priced from the symbol's own latest bar
            bar = (bar[0], current[1], *bar[2:7], current[7], bar[8])
        for fill in self.handler.submit(order, bar, close_known=close_known):
            self._book(fill)
        return order

    def cancel(self, order: Order) -> bool:
        """Cancel a working order."""
        self._refresh_now()
        return self.handler.cancel(order, self.now, "cancelled by strategy")

    def _deny(self, order: Order, denial: Denial) -> None:
        order.status = OrderStatus.DENIED
        order.detail = str(denial)
        order.ts_done = self.now
        self.events.append((self.now, "denial", denial.code, order.symbol, order.order_id, denial.message))
        for child in order.children:  # a denied bracket entry takes its exits with it
            child.status, child.detail, child.ts_done = OrderStatus.DENIED, f"bracket entry denied: {denial}", self.now

    def _number_children(self, order: Order) -> None:
        """Number a bracket entry's take-profit and stop-loss right after it (the entry is checked for risk; its
        exits never add risk: they only work once the entry is done, for what it filled)."""
        for child in order.children:
            child.order_id = len(self.orders)
            child.parent_id = order.order_id
            child.ts_submitted = order.ts_submitted
            self.orders.append(child)

    def _book(self, fill: Fill, check: bool = True) -> None:
        """Book a fill; with ``check`` run the breakers on the new equity (a bar's fills check once, after all)."""
        for booked in self.portfolio.apply(fill):
            self.strategy.on_fill(booked)
        self._cash_marks.append((len(self._eq_ts), self.portfolio.realized, self.portfolio.commissions,
                                 self.portfolio.slippage))
        self._cash = self.portfolio.cash
        if check:
            self._breakers_after_fills()

    def _breakers_after_fills(self) -> None:
        equity = self._cash + self.portfolio.unrealized
        if equity <= self.risk.floor or equity > self.risk.peak:
            self._check_breakers(equity)

    def _take(self, out: Any) -> None:
        if isinstance(out, Order):
            self.submit(out)
        else:
            for order in out:
                if order is not None:
                    self.submit(order)

    # -- rolls ------------------------------------------------------------------------------------------
    def _roll(self, symbol: str, old: str, new: str) -> None:
        _, ts, open_, _, _, _, volume, day, _ = self._current_bar()
        self.now, self.trading_day = ts, day
        pos = self.portfolio.positions[symbol]
        prices = self.rolls.get((symbol, old, new))
        if prices is None:
            # No roll-table row (e.g. a plain query without the warehouse): the old contract's last mark and
            # the new contract's first open, recorded as a warning.
            prices = (pos.mark, open_)
            self.events.append((ts, "warning", "ROLL_PRICE_FALLBACK", symbol, None,
                                f"no roll table row for {old}->{new}; rolled at last mark {pos.mark} / open {open_}"))
        out_price, in_price = prices
        terms = self.instruments.terms(symbol)
        fee = self.instruments.fee_per_side(symbol, day)
        quantity = pos.quantity
        legs = []
        for kind, contract, qty, reference in (("roll_out", old, -quantity, out_price), ("roll_in", new, quantity, in_price)):
            offset = 0.0
            if self.config.slippage.model != "none":
                raw = self.slippage.offset(symbol, reference, qty, volume, terms.tick_size)
                offset = math.ceil(raw / terms.tick_size - 1e-9) * terms.tick_size if raw > 0 else 0.0
            price = reference + offset if qty > 0 else reference - offset
            legs.append(Fill(-1, ts, symbol, contract, qty, price, reference, terms.multiplier, abs(qty) * fee,
                             abs(qty) * offset * terms.multiplier, kind, day))
        booked = self.portfolio.roll(symbol, legs[0], legs[1], in_price)
        self._cash_marks.append((len(self._eq_ts), self.portfolio.realized, self.portfolio.commissions,
                                 self.portfolio.slippage))
        self._cash = self.portfolio.cash
        for fill in booked:
            self.strategy.on_fill(fill)
        moved = self.handler.shift_orders(symbol, in_price - out_price)
        for order in moved:
            self.events.append((ts, "warning", "ORDER_SHIFTED_ON_ROLL", symbol, order.order_id,
                                f"prices moved by {in_price - out_price:+g} to {new}"))

    # -- the loop -----------------------------------------------------------------------------------------
    def run(self, feed: Feed) -> None:
        """Process every bar of ``feed``.

        The body below runs once per bar, so it is written for speed: locals instead of attribute lookups,
        the bar tuple built in C (``tuple.__new__``), the position marked inline, and the current bar's
        columns kept as (batch, index) so an order's bar context is only assembled when an order arrives.
        """
        cols = feed.columns
        i_sym, i_ts, i_open, i_high, i_low, i_close = (cols[c] for c in ("symbol", "ts", "open", "high", "low", "close"))
        i_vol, i_day = cols["volume"], cols["qe_trading_day"]
        i_contract = cols.get("contract") if self.config.roll else None
        make_bar = partial(tuple.__new__, feed.bar_type)
        on_bar = self.strategy.on_bar
        portfolio = self.portfolio
        positions = portfolio.positions
        handler = self.handler
        working = handler.working
        risk = self.risk
        keep = max(int(getattr(self.strategy, "history_size", 0) or 0), 0)
        histories = self.histories
        observe = self.slippage.observes_bars
        eq_ts, eq_unreal, eq_notional = self._eq_ts, self._eq_unrealized, self._eq_notional
        day_marks = self._day_marks
        chunk_points = self.recorder.chunk_points
        last_contract: dict[str, str | None] = {}
        last_ts = -(2**63)
        day = None
        bars = 0
        points = 0
        feed_s = 0.0
        clock = time.perf_counter
        batches = feed.batches()
        while True:
            started = clock()
            item = next(batches, None)
            feed_s += clock() - started
            if item is None:
                break
            columns, n = item
            if len(eq_ts) >= chunk_points:
                self._flush_equity()  # between batches: equity memory stays bounded by chunk + batch
            if self._columns is not None:
                # the last bar of every symbol in the finished batch, for orders on symbols that trade rarely
                self._previous_columns = self._columns
                for symbol in set(self._columns[i_sym]):
                    self._last_bars[symbol] = self._latest_bar_in(self._columns, symbol)
            self._columns = columns
            syms, tss, closes, days = columns[i_sym], columns[i_ts], columns[i_close], columns[i_day]
            contracts = columns[i_contract] if i_contract is not None else None
            self.symbols.update(syms)
            bars += n
            for i, bar in enumerate(map(make_bar, zip(*columns))):
                ts = tss[i]
                if ts != last_ts:
                    if ts < last_ts:
                        raise QEError("backtest query must be ordered by ts: a bar at "
                                      f"{_iso(ts)} follows one at {_iso(last_ts)}")
                    if points:
                        eq_ts.append(last_ts)
                        eq_unreal.append(portfolio.unrealized)
                        eq_notional.append(portfolio.gross_notional)
                    points += 1
                    last_ts = ts
                    if days[i] != day:
                        day = days[i]
                        day_marks.append((len(eq_ts), day))  # the point of this ts comes next
                        self.now, self.trading_day = ts, day
                        for event in risk.new_day(day, portfolio.equity):
                            self._event(event)
                sym = syms[i]
                self._i = i
                if contracts is not None:
                    contract = contracts[i]
                    if contract != last_contract.get(sym, contract):
                        if sym in positions and contract is not None and last_contract[sym] is not None:
                            self._roll(sym, last_contract[sym], contract)
                    last_contract[sym] = contract
                if sym in working:
                    fills = handler.on_bar(sym, ts, columns[i_open][i], columns[i_high][i], columns[i_low][i],
                                           closes[i], columns[i_vol][i], day,
                                           contracts[i] if contracts is not None else None)
                    if fills:
                        # every fill of the bar is booked before the breakers look (a kill switch flattens the
                        # whole position, not the part booked so far)
                        self.now, self.trading_day = ts, day
                        for fill in fills:
                            self._book(fill, check=False)
                        self._breakers_after_fills()
                pos = positions.get(sym)
                if pos is not None:
                    # inline Portfolio.mark: equity follows every close of a held symbol
                    close = closes[i]
                    move = close - pos.mark
                    if move:
                        portfolio.unrealized += pos.quantity * pos.multiplier * move
                        portfolio.gross_notional += abs(pos.quantity) * pos.multiplier * move
                        pos.mark = close
                        # loss breakers see equity marked to market on every bar of a held symbol
                        equity = self._cash + portfolio.unrealized
                        if equity <= risk.floor or equity > risk.peak:
                            self.now, self.trading_day = ts, day
                            self._check_breakers(equity)
                if observe:
                    self.slippage.observe(sym, closes[i])
                if keep:
                    history = histories.get(sym)
                    if history is None:
                        history = histories[sym] = deque(maxlen=keep)
                    history.append(bar)
                out = on_bar(bar)
                if out is not None:
                    self._take(out)
        if points and self.config.close_at_end:
            self._close_all_at_mark(last_ts, day, "end of data")
        if points:
            eq_ts.append(last_ts)
            eq_unreal.append(portfolio.unrealized)
            eq_notional.append(portfolio.gross_notional)
        self.bars = bars
        self.feed_s = feed_s
        if self.recorder.spilled:
            self._flush_equity(final=True)
            self.recorder.close()

    def _flush_equity(self, final: bool = False) -> None:
        """Spill the buffered equity points and resolve the trades' entry/exit point indices they cover."""
        chunk_ts, base = self.recorder.flush()
        trades = self.portfolio.trades
        entry_point, exit_point = self._trade_entry_point, self._trade_exit_point
        new = len(trades) - len(entry_point)
        self._trade_pending.extend(range(len(entry_point), len(trades)))
        entry_point.extend([-1] * new)
        exit_point.extend([-1] * new)
        # Fills are stamped with the ts of the bar being processed, which is after every spilled point, so a
        # trade's entry and exit fall in the chunk being flushed or a later one (or after the last point).
        hi = int(chunk_ts[-1]) if len(chunk_ts) else None
        slots: list[tuple[array, int]] = []
        queries: list[int] = []
        pending = []
        for k in self._trade_pending:
            trade = trades[k]
            done = True
            if entry_point[k] < 0:
                if final or (hi is not None and trade.entry_ts <= hi):
                    slots.append((entry_point, k))
                    queries.append(trade.entry_ts)
                else:
                    done = False
            if exit_point[k] < 0:
                exit_ts = trade.exit_ts
                if exit_ts is not None and (final or (hi is not None and exit_ts <= hi)):
                    slots.append((exit_point, k))
                    queries.append(exit_ts)
                elif final:  # still open: held up to the last point
                    exit_point[k] = base + len(chunk_ts)
                else:
                    done = False
            if not done:
                pending.append(k)
        self._trade_pending = pending
        if queries:
            ranks = np.searchsorted(chunk_ts, np.array(queries, dtype=np.int64), side="left") + base
            for (points, k), rank in zip(slots, ranks.tolist()):
                points[k] = rank

    def _close_all_at_mark(self, ts: int, day: int, reason: str) -> None:
        """Cancel every working order and close every position at its latest mark (slippage and fees apply)."""
        self.handler.cancel_all(ts, reason)
        for symbol, pos in list(self.portfolio.positions.items()):
            order = Order(symbol, -pos.quantity, tag=reason)
            order.order_id, order.ts_submitted, order.origin = len(self.orders), ts, "end_of_run"
            self.orders.append(order)
            last = self._latest_bar(symbol)
            fill = self.handler.fill_now(order, symbol, ts, pos.mark, day, pos.contract, volume=last[6] if last else 0)
            self._book(fill)

    def _latest_bar(self, symbol: str) -> tuple | None:
        """The latest bar of ``symbol`` seen so far (searched back through this batch and the previous one)."""
        for columns, end in ((self._columns, self._i + 1), (self._previous_columns, None)):
            if columns is not None:
                bar = self._latest_bar_in(columns, symbol, end)
                if bar is not None:
                    return bar
        return self._last_bars.get(symbol)

    def _latest_bar_in(self, columns: list[list], symbol: str, end: int | None = None) -> tuple | None:
        """The last row of ``symbol`` in a batch before row ``end`` (default: the whole batch)."""
        k = self._feed_columns
        symbols = columns[k["symbol"]]
        stop = len(symbols) if end is None else end
        for i in range(stop - 1, -1, -1):
            if symbols[i] == symbol:
                contract = columns[k["contract"]][i] if "contract" in k else None
                return (symbol, columns[k["ts"]][i], columns[k["open"]][i], columns[k["high"]][i], columns[k["low"]][i],
                        columns[k["close"]][i], columns[k["volume"]][i], columns[k["qe_trading_day"]][i], contract)
        return None

    def _current_bar(self) -> tuple:
        """(symbol, ts, open, high, low, close, volume, trading_day, contract) of the bar being processed."""
        c, i, k = self._columns, self._i, self._feed_columns
        contract = c[k["contract"]][i] if "contract" in k else None
        return (c[k["symbol"]][i], c[k["ts"]][i], c[k["open"]][i], c[k["high"]][i], c[k["low"]][i], c[k["close"]][i],
                c[k["volume"]][i], c[k["qe_trading_day"]][i], contract)

    # -- results --------------------------------------------------------------------------------------
    def tables(self) -> dict[str, pa.Table]:
        """The run's audit trail as Arrow tables with the ledger schemas (``run_id`` NULL until recorded)."""
        return {
            "orders": self._orders_table(),
            "fills": self._fills_table(),
            "positions": self._positions_table(),
            # a spilled run's full ledger is its file; the result carries the last point of each trading date
            "equity": self.recorder.summary.daily_table() if self.recorder.spilled else self._equity_table(),
            "trades": self._trades_table(),
            "events": self._events_table(),
        }

    def _equity_table(self) -> pa.Table:
        """The in-memory equity ledger (every point; a run that never spilled)."""
        return self.recorder.table()

    def _orders_table(self) -> pa.Table:
        rows = self.orders
        return pa.table(
            {
                "run_id": pa.nulls(len(rows), pa.string()),
                "order_id": [o.order_id for o in rows],
                "ts_submitted": _ts([o.ts_submitted for o in rows]),
                "symbol": [o.symbol for o in rows],
                "quantity": [o.quantity for o in rows],
                "order_type": [o.order_type.value for o in rows],
                "tif": [o.tif.value for o in rows],
                "limit_price": [o.limit_price for o in rows],
                "stop_price": [o.stop_price for o in rows],
                "expire_ts": _ts([o.expire_ts for o in rows]),
                "status": [o.status.value if o.status is not OrderStatus.PARTIALLY_FILLED else "OPEN" for o in rows],
                "filled_quantity": [o.filled for o in rows],
                "avg_fill_price": [o.avg_fill_price for o in rows],
                "ts_done": _ts([o.ts_done for o in rows]),
                "origin": [o.origin for o in rows],
                "tag": [o.tag for o in rows],
                "detail": [o.detail for o in rows],
                "parent_id": [o.parent_id for o in rows],
                "oca_group": [o.oca_group for o in rows],
            },
            schema=schemas.RUN_ORDERS,
        )

    def _fills_table(self) -> pa.Table:
        rows = self.portfolio.fills
        return pa.table(
            {
                "run_id": pa.nulls(len(rows), pa.string()),
                "fill_id": [f.fill_id for f in rows],
                "order_id": [f.order_id if f.order_id >= 0 else None for f in rows],
                "ts": _ts([f.ts for f in rows]),
                "trading_date": [EPOCH + timedelta(days=f.trading_date) for f in rows],
                "symbol": [f.symbol for f in rows],
                "contract": [f.contract for f in rows],
                "quantity": [f.quantity for f in rows],
                "price": [f.price for f in rows],
                "reference_price": [f.reference_price for f in rows],
                "multiplier": [f.multiplier for f in rows],
                "commission": [f.commission for f in rows],
                "slippage": [f.slippage for f in rows],
                "realized_pnl": [f.realized_pnl for f in rows],
                "position_after": [f.position_after for f in rows],
                "trade_id": [f.trade_id for f in rows],
                "kind": [f.kind for f in rows],
            },
            schema=schemas.RUN_FILLS,
        )

    def _positions_table(self) -> pa.Table:
        rows = self.portfolio.position_changes
        return pa.table(
            {
                "run_id": pa.nulls(len(rows), pa.string()),
                "ts": _ts([r[0] for r in rows]),
                "symbol": [r[1] for r in rows],
                "contract": [r[2] for r in rows],
                "quantity": [r[3] for r in rows],
                "avg_price": [r[4] for r in rows],
            },
            schema=schemas.RUN_POSITIONS,
        )

    def _trades_table(self) -> pa.Table:
        rows = self.portfolio.trades
        if self.recorder.spilled:
            # index of the exit (or one past the last point) minus index of the entry, resolved while spilling;
            # a trade opened after the last point (in on_stop) holds 0 points
            total = self.recorder.points
            resolved = len(self._trade_entry_point)
            held = [(self._trade_exit_point[k] if k < resolved and self._trade_exit_point[k] >= 0 else total)
                    - (self._trade_entry_point[k] if k < resolved and self._trade_entry_point[k] >= 0 else total)
                    for k in range(len(rows))]
        else:
            eq_ts = np.frombuffer(self._eq_ts, dtype=np.int64) if len(self._eq_ts) else np.zeros(0, np.int64)
            last = int(eq_ts[-1]) if len(eq_ts) else 0
            held = [int(np.searchsorted(eq_ts, t.exit_ts if t.exit_ts is not None else last + 1)
                        - np.searchsorted(eq_ts, t.entry_ts)) for t in rows]
        return pa.table(
            {
                "run_id": pa.nulls(len(rows), pa.string()),
                "trade_id": [t.trade_id for t in rows],
                "symbol": [t.symbol for t in rows],
                "direction": pa.array([t.direction for t in rows], pa.int8()),
                "max_quantity": [t.max_quantity for t in rows],
                "entry_ts": _ts([t.entry_ts for t in rows]),
                "exit_ts": _ts([t.exit_ts for t in rows]),
                "entry_price": [t.entry_value / t.entry_quantity if t.entry_quantity else None for t in rows],
                "exit_price": [t.exit_value / t.exit_quantity if t.exit_quantity else None for t in rows],
                "gross_pnl": [t.gross_pnl for t in rows],
                "commission": [t.commission for t in rows],
                "slippage": [t.slippage for t in rows],
                "pnl": [t.gross_pnl - t.commission for t in rows],
                "rolls": [t.rolls for t in rows],
                "bars_held": held,
            },
            schema=schemas.RUN_TRADES,
        )

    def _events_table(self) -> pa.Table:
        rows = self.events
        return pa.table(
            {
                "run_id": pa.nulls(len(rows), pa.string()),
                "ts": _ts([r[0] for r in rows]),
                "kind": [r[1] for r in rows],
                "code": [r[2] for r in rows],
                "symbol": [r[3] for r in rows],
                "order_id": [r[4] for r in rows],
                "message": [r[5] for r in rows],
            },
            schema=schemas.RUN_EVENTS,
        )


def _ts(values: list[int | None]) -> pa.Array:
    """Integer ns (or None) to the ledger's microsecond TIMESTAMPTZ."""
    return pa.array(values, pa.int64()).cast(pa.timestamp("ns", tz="UTC")).cast(schemas.TS, safe=False)


def _iso(ns: int) -> str:
    return np.datetime64(ns, "ns").astype(str) + "Z"


def _load_rolls(con: duckdb.DuckDBPyConnection, symbols: list[str] | None = None) -> dict[tuple[str, str, str], tuple[float, float]]:
    try:
        rows = con.sql("SELECT symbol, from_contract, to_contract, from_price, to_price FROM rolls").fetchall()
    except duckdb.Error:
        return {}
    # float(): a roll table built from SQL literals may hold DECIMALs
    return {(s, f, t): (float(fp), float(tp)) for s, f, t, fp, tp in rows if fp is not None and tp is not None}


def strategy_name(strategy: Strategy) -> str:
    """``module:Class`` or ``/path/to/file.py:Class`` (or the function's name) for the run ledger."""
    if isinstance(strategy, FunctionStrategy):
        return f"{_module_label(getattr(strategy.fn, '__module__', '?'))}:{strategy.name}"
    cls = type(strategy)
    return f"{_module_label(cls.__module__)}:{cls.__qualname__}"


def _module_label(module_name: str) -> str:
    """The module's name, or the file a strategy was loaded from (``file.py:Name`` on the command line)."""
    return getattr(sys.modules.get(module_name), "__qe_strategy_file__", module_name)


def run_backtest(source: Any, query: str, strategy: Strategy | Any, config: BacktestConfig | None = None,
                 *, record: bool | None = None) -> BacktestResult:
    """Run ``strategy`` over the bars ``query`` returns.

    Parameters
    ----------
    source : Warehouse or duckdb.DuckDBPyConnection
        Where the query runs. With a :class:`~warehouse.Warehouse`, roll prices come from its roll table and
        the run is recorded in its ledger (unless ``record=False``).
    query : str
        One SELECT returning ``symbol, ts, open, high, low, close`` (+ ``volume``, ``contract``, features...).
    strategy : Strategy or callable
        A :class:`~engine.strategy.Strategy`, or ``fn(bar, backtester) -> Optional[Order]``.
    config : BacktestConfig, optional

    Returns
    -------
    BacktestResult
        A run with more equity points than ``config.equity_chunk_points`` has its equity ledger in
        ``result.equity_path`` and a daily sample in ``result.tables["equity"]`` (see :class:`BacktestResult`).
    """
    from engine.results.metrics import compute_metrics, compute_metrics_streaming
    from warehouse import Warehouse

    config = config or BacktestConfig()
    if not isinstance(strategy, Strategy):
        if not callable(strategy):
            raise ConfigError(f"strategy must be a Strategy or a callable, not {type(strategy).__name__}")
        strategy = FunctionStrategy(strategy)
    warehouse = source if isinstance(source, Warehouse) else None
    con = warehouse.connect() if warehouse is not None else source
    timeframe = config.timeframe or infer_timeframe(query)
    if timeframe is None:
        raise ConfigError("cannot tell the bar timeframe from the query; give it (--timeframe / BacktestConfig.timeframe)")
    # The roll table and the date span are read before the stream opens: another query on the connection
    # would end the stream. Fees (and margins, when checked) must cover every date before the first bar.
    rolls = _load_rolls(con)
    InstrumentBook(config.instruments).check_coverage(first_trading_days(con, query),
                                                      margins=config.risk.check_margin)
    recording = warehouse is not None and record is not False
    run_id = None
    if recording:
        from engine.results.ledger import new_run_id

        # known from the start, so spilled equity chunks carry it and recording only renames the file
        run_id = new_run_id()
    started = time.perf_counter()
    feed = open_feed(con, query, config.batch_size)
    engine = Backtester(strategy, config, timeframe, rolls=rolls, run_id=run_id,
                        equity_dir=Path(warehouse.root) / ".staging" if recording else None)
    engine._feed_columns = feed.columns
    strategy.engine = engine
    query_s = time.perf_counter() - started
    loop_started = time.perf_counter()
    try:
        strategy.on_start()
        engine.run(feed)
        strategy.on_stop()
    except BaseException:
        engine.recorder.abort()
        raise
    loop_s = time.perf_counter() - loop_started
    tables = engine.tables()
    recorder = engine.recorder
    if recorder.spilled:
        metrics = compute_metrics_streaming(recorder.summary, tables["trades"], tables["fills"],
                                            initial_capital=config.initial_capital,
                                            timeframe=_metrics_timeframe(timeframe))
    else:
        metrics = compute_metrics(tables["equity"], tables["trades"], tables["fills"],
                                  initial_capital=config.initial_capital, timeframe=_metrics_timeframe(timeframe))
    data_start, data_end = recorder.data_span()
    result = BacktestResult(
        config=config, strategy=strategy_name(strategy), params=dict(getattr(strategy, "params", {}) or {}),
        query=query, timeframe=timeframe, tables=tables, metrics=metrics,
        timings={"query_s": query_s, "feed_s": engine.feed_s, "loop_s": loop_s - engine.feed_s,
                 "bars": float(engine.bars)},
        final_equity=engine.portfolio.equity, symbols=sorted(engine.symbols),
        data_start=data_start, data_end=data_end, run_id=run_id, equity_path=recorder.path,
    )
    if recorder.spill_dir is not None:
        # the spilled file lives as long as the result (recording moves it into the ledger first)
        weakref.finalize(result, shutil.rmtree, str(recorder.spill_dir), True)
    if recording:
        from engine.results.ledger import record_run

        record_run(warehouse, result)
    return result


def _metrics_timeframe(timeframe: str) -> str:
    """The timeframe name :func:`engine.results.metrics.bars_per_year` annualizes (every feed timeframe is one)."""
    return timeframe

