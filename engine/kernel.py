"""The kernel: the per-bar work of every mode, written once.

For every bar, in time order (several symbols interleaved):

1. a change of front contract under an open position rolls it: out of the old contract and into the new
   one at the roll table's raw prices, with commission and slippage on both legs (the simulated broker), or
   with two market orders whose real fills are booked together when both arrived (a real broker, see
   :meth:`TradingKernel._send_roll`);
2. the execution handler fills the symbol's working orders against the bar (the simulated broker) or hands
   over what the broker reported (a real one);
3. the position is marked to the bar's close, and the loss breakers look at the marked equity;
4. the strategy sees the bar and returns orders, which pass the risk manager before reaching the handler.

After the last bar of each timestamp the account's equity is recorded (marked to the latest close of every
open position) by an :class:`~engine.results.equity.EquityRecorder`, which keeps a bounded number of points in
memory and spills longer runs to Parquet.

Two shells drive it: the backtest (:mod:`engine.backtest.run`) hands :meth:`TradingKernel.process` one Arrow
record batch of the query at a time; the live loop (:mod:`engine.live.loop`) hands it the query's rows of each
bar as the bar closes, and books the fills the broker reports between bars with :meth:`TradingKernel.book_fills`.
Money conventions are in :mod:`engine.core.portfolio`; fill conventions in :mod:`engine.execution.simulated`.
"""

from __future__ import annotations

import math
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from engine.core.instruments import InstrumentBook
from engine.core.orders import Fill, Order, OrderStatus
from engine.core.portfolio import Portfolio
from engine.core.timestamps import iso_utc
from engine.execution.base import ExecutionHandler
from engine.execution.slippage import SlippageModel
from engine.results.equity import EquityRecorder
from engine.risk import Denial, RiskManager, RiskState, is_reducing, volatility_scaled_contracts
from engine.strategy import Strategy
from warehouse.errors import QEError

__all__ = ["TradingKernel", "BAR_FIELDS", "RollInFlight", "ROLL_ORIGINS"]

#: ``Order.origin`` of a roll's two legs (also the ``kind`` of their fills)
ROLL_ORIGINS = ("roll_out", "roll_in")

#: The bar context an order is priced from: (symbol, ts, open, high, low, close, volume, trading_day, contract).
BAR_FIELDS = ("symbol", "ts", "open", "high", "low", "close", "volume", "qe_trading_day", "contract")


@dataclass(slots=True)
class RollInFlight:
    """A roll sent to a real broker whose legs are not both filled yet (see :meth:`TradingKernel._send_roll`).

    The legs' fills wait here and are booked together (:meth:`engine.core.portfolio.Portfolio.roll_legs`)
    once both legs are complete, so the position is never booked half in one contract and half in the other.

    Attributes
    ----------
    symbol, old, new : str
        The root and the contracts it leaves and enters.
    out_id, in_id : int
        The engine order numbers of the ``roll_out`` and ``roll_in`` legs.
    started : int
        When the legs were sent (the roll bar's ts), ns since the epoch.
    out_fills, in_fills : list of Fill
        The legs' executions reported so far.
    later : list of Fill
        Other executions of the symbol in the new contract (the strategy's orders after the roll bar go there)
        reported before the legs were booked: held, and booked after the legs, so that the books never apply a
        new-contract fill to the old contract's position.
    """

    symbol: str
    old: str
    new: str
    out_id: int
    in_id: int
    started: int
    out_fills: list[Fill] = field(default_factory=list)
    in_fills: list[Fill] = field(default_factory=list)
    later: list[Fill] = field(default_factory=list)

    def __setstate__(self, state: dict) -> None:  # a checkpoint written before ``later`` existed
        self.__dict__.update({"later": [], **state})

    def waiting(self) -> list[Fill]:
        """Fills reported but not booked yet (certain changes of the position: both legs, and the held ones)."""
        return self.out_fills + self.in_fills + self.later


class TradingKernel:
    """One run's state: account, broker, risk manager, strategy and the recorded series.

    Strategies reach it as ``self.engine`` (functional strategies get it as their second argument).

    Parameters
    ----------
    strategy : Strategy
    handler : ExecutionHandler
        The simulated broker (backtest) or a real one (live, paper).
    instruments : InstrumentBook
    risk : RiskManager
        Started here with the portfolio's cash.
    portfolio : Portfolio
    recorder : EquityRecorder
    bar_ns : int
        Bar length, nanoseconds: an order decided on a bar is submitted at its close.
    slippage : SlippageModel
        Charged on both legs of a roll (the handler charges it on fills).
    rolls : dict, optional
        ``(symbol, old contract, new contract) -> (out price, in price)`` from the roll table.
    roll : bool
        Roll positions when the front contract changes (the rows must carry ``contract``).
    """

    def __init__(self, strategy: Strategy, handler: ExecutionHandler, instruments: InstrumentBook,
                 risk: RiskManager, portfolio: Portfolio, recorder: EquityRecorder, *, bar_ns: int,
                 slippage: SlippageModel, rolls: dict[tuple[str, str, str], tuple[float, float]] | None = None,
                 roll: bool = True) -> None:
        self.instruments = instruments
        self.portfolio = portfolio
        self.slippage = slippage
        self.handler = handler
        self.bar_ns = bar_ns
        self.risk = risk
        self.strategy = strategy
        self.rolls = rolls or {}
        self.roll_enabled = roll
        #: symbol -> the roll a real broker is executing (its legs' fills wait here until both are complete)
        self.rolling: dict[str, RollInFlight] = {}
        #: symbol -> a roll that failed (:meth:`check_rolls`): its legs' later fills are booked only where the
        #: books can hold them (:meth:`_book_failed_leg`)
        self.failed_rolls: dict[str, RollInFlight] = {}
        #: ``gate(order, submission ns) -> Denial | None`` after the risk check: the live shell's market hours
        #: (a backtest has none: its bars only exist when the market trades and its fills wait for the next one)
        self.submission_gate: Callable[[Order, int], Denial | None] | None = None
        self.orders: list[Order] = []
        self.events: list[tuple[int, str, str, str | None, int | None, str]] = []
        self.histories: dict[str, deque] = {}
        self.now = 0  # ts (ns) of the bar being processed (set when an order or roll needs it)
        self.trading_day = 0
        self._columns: list[list] | None = None  # the batch being processed ...
        self._i = 0  # ... and the row in it
        self._feed_columns: dict[str, int] = {}
        self._bar_type: type = tuple
        self._previous_columns: list[list] | None = None
        self._last_bars: dict[str, tuple] = {}
        # the loop's position in the stream, kept between batches
        self._last_ts = -(2**63)
        self._day: int | None = None
        self._points = 0
        self._last_contract: dict[str, str | None] = {}
        # equity points, one per distinct bar timestamp, buffered (and spilled) by the recorder; the loop
        # appends to its buffers directly. Indices in the marks are positions in the current buffer.
        self.recorder = recorder
        self._eq_ts: array = recorder.ts
        self._eq_unrealized: array = recorder.unrealized
        self._eq_notional: array = recorder.notional
        self._day_marks = recorder.day_marks  # (first equity point index, trading day) at each new day
        # account state after each fill: (equity point index it belongs to, realized, commissions, slippage)
        self._cash_marks = recorder.cash_marks
        # equity-point index of each trade's entry and exit (-1 = not resolved yet, 16 bytes a trade): trades'
        # bars_held once the points have been spilled; _trade_pending lists trades not fully resolved
        self._trade_entry_point = array("q")
        self._trade_exit_point = array("q")
        self._trade_pending: list[int] = []
        self.symbols: set[str] = set()
        self.bars = 0
        self._cash = portfolio.cash
        self.risk.start(portfolio.cash)

    @property
    def bound(self) -> bool:
        """Whether :meth:`bind` has told the kernel the rows' layout (a restored kernel needs it again)."""
        return self._bar_type is not tuple

    def bind(self, columns: dict[str, int], bar_type: type) -> None:
        """The column positions of the rows :meth:`process` will receive, and the bar type built from them."""
        missing = [c for c in BAR_FIELDS if c not in columns and c != "contract"]
        if missing:
            raise QEError(f"the kernel needs columns {', '.join(missing)}")
        self._feed_columns = columns
        self._bar_type = bar_type

    # -- AccountView (what the risk manager reads) -------------------------------------------------
    def position(self, symbol: str) -> int:
        return self.portfolio.position(symbol)

    def working_quantity(self, symbol: str) -> int:
        buys, sells = self.working_buys_sells(symbol)
        return buys - sells

    def working_buys_sells(self, symbol: str) -> tuple[int, int]:
        """The handler's worst-case buys and sells, plus the fills of a roll in flight not booked yet: while a
        roll's legs fill, both count (long 2 rolling: the new contract's +2 filled and the old one's -2 still
        working count as buys 2, sells 2, a worst case of 4 contracts for margin and size)."""
        buys, sells = self.handler.working_buys_sells(symbol)
        roll = self.rolling.get(symbol) if self.rolling else None
        if roll is not None:
            for fill in roll.waiting():
                if fill.quantity > 0:
                    buys += fill.quantity
                else:
                    sells -= fill.quantity
        return buys, sells

    def in_flight_quantity(self, symbol: str) -> int:
        """Signed contracts that will fill for sure: the handler's market orders still to fill plus the roll
        fills waiting to be booked (a roll's legs net to zero once both are done)."""
        roll = self.rolling.get(symbol) if self.rolling else None
        waiting = sum(f.quantity for f in roll.waiting()) if roll is not None else 0
        return self.handler.in_flight_quantity(symbol) + waiting

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
    def kill_switch(self, reason: str = "manual", flatten: bool = True) -> None:
        """Cancel every working order, flatten every position at market, refuse new orders until reset.

        ``flatten=False`` halts and cancels only: the positions were closed elsewhere (the operator's kill at
        the broker), and flattening the books' positions again would open the opposite ones.
        """
        self._refresh_now()
        ts = self.now
        self.events.append((ts, "kill_switch", "KILL_SWITCH", None, None, f"triggered: {reason}"))
        if self.risk.state is not RiskState.HALTED:
            self._event(self.risk.set_state(RiskState.HALTED, f"kill switch: {reason}"))
        if flatten:
            self._flatten("kill_switch")
        else:
            self.handler.cancel_all(self.now, "kill switch")

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
        current = self.portfolio.position(symbol) + self.in_flight_quantity(symbol)
        return self.risk.cap_contracts(symbol, target, self, current)

    def _flatten(self, origin: str) -> None:
        # every working order and every held bracket child (a partly filled entry releases no exits here)
        self.handler.cancel_all(self.now, origin.replace("_", " "), keep_origin=origin)
        for symbol, pos in list(self.portfolio.positions.items()):
            # orders left working net against the position (earlier flattening orders); a broker whose cancels
            # are requests still counts the cancelled ones as working: flatten the position itself there
            pending = self.handler.working_quantity(symbol) if self.handler.cancels_at_once else \
                sum(o.quantity - o.filled for o in self.handler.working_orders(symbol) if o.origin == origin)
            if pos.quantity + pending == 0:
                continue
            order = Order(symbol, -(pos.quantity + pending), tag=origin)
            order.origin = origin
            self._send(order)

    def flatten_symbol(self, symbol: str, origin: str = "operator") -> Order | None:
        """Cancel ``symbol``'s working orders and close its position at market (the operator's flatten).

        Returns the closing order, or None when there was nothing to close.
        """
        self._refresh_now()
        held = self.portfolio.positions.get(symbol)
        traded = getattr(self.handler, "traded_contract", lambda root: None)(symbol)
        if held is not None and traded is not None and held.contract not in (None, traded):
            raise QEError(f"{symbol} is held in {held.contract} but orders now go to {traded}: a flatten here would "
                          f"trade {traded}; close {held.contract} at the broker (qe live kill closes the session's "
                          "contracts by their own symbols)")
        for order in self.handler.working_orders(symbol):
            self.handler.cancel(order, self.now, f"{origin} flatten")
        position = self.portfolio.position(symbol)
        if position == 0:
            return None
        order = Order(symbol, -position, tag=origin)
        order.origin = origin
        return self._send(order)

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
        order.ts_submitted = self.now + self.bar_ns  # decided on this bar, submitted at its close
        self._number_children(order)
        denial = self.risk.check(order, self, self.trading_day)
        if denial is None and self.submission_gate is not None:
            denial = self.submission_gate(order, order.ts_submitted)
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
        try:
            fills = self.handler.submit(order, bar, close_known=close_known)
        except QEError as exc:
            # a real broker refusing now (disconnected, reconciling, halted): the order is denied, the run goes on
            self._deny(order, Denial("BROKER_REFUSED", str(exc)))
            return order
        for fill in fills:
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
        """Book a fill; with ``check`` run the breakers on the new equity (a bar's fills check once, after all).

        A fill of a roll leg in flight waits for the other leg (:meth:`_settle_roll`), and so does any other
        fill of the symbol in the new contract (:attr:`RollInFlight.later`)."""
        if self.rolling or self.failed_rolls:
            roll = self.rolling.get(fill.symbol)
            if roll is not None and fill.order_id in (roll.out_id, roll.in_id):
                fill.kind = self.orders[fill.order_id].origin
                (roll.out_fills if fill.order_id == roll.out_id else roll.in_fills).append(fill)
                self._settle_roll(roll)
                return
            if roll is not None and fill.contract == roll.new:
                roll.later.append(fill)
                return
            failed = self.failed_rolls.get(fill.symbol)
            if failed is not None and fill.order_id in (failed.out_id, failed.in_id):
                fill.kind = self.orders[fill.order_id].origin
                self._book_failed_leg(failed, fill)
                return
        self._after_booking(self.portfolio.apply(fill))
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
        """Roll ``symbol``'s position from contract ``old`` to ``new`` (the rows' front changed under it).

        A simulated broker (``handler.sends_rolls`` False): both legs are booked now at the roll table's raw
        prices (out at the old contract's, in at the new one's), each paying commission and slippage, and
        working orders move by the price gap. A real broker: :meth:`_send_roll`.
        """
        _, ts, open_, _, _, _, volume, day, _ = self._current_bar()
        self.now, self.trading_day = ts, day
        if self.handler.sends_rolls:
            self._send_roll(symbol, old, new)
            return
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
            raw = self.slippage.offset(symbol, reference, qty, volume, terms.tick_size)
            offset = math.ceil(raw / terms.tick_size - 1e-9) * terms.tick_size if raw > 0 else 0.0
            price = reference + offset if qty > 0 else reference - offset
            legs.append(Fill(-1, ts, symbol, contract, qty, price, reference, terms.multiplier, abs(qty) * fee,
                             abs(qty) * offset * terms.multiplier, kind, day))
        self._after_booking(self.portfolio.roll(symbol, legs[0], legs[1], in_price))
        moved = self.handler.shift_orders(symbol, in_price - out_price)
        for order in moved:
            self.events.append((ts, "warning", "ORDER_SHIFTED_ON_ROLL", symbol, order.order_id,
                                f"prices moved by {in_price - out_price:+g} to {new}"))

    def _send_roll(self, symbol: str, old: str, new: str) -> None:
        """Roll through a real broker: two market orders, booked when the broker reports their fills.

        The legs are engine orders numbered like any other (``origin`` ``roll_out`` then ``roll_in``, so
        their orderRefs are deterministic and a restart that decides the roll bar again adopts the legs the
        journal holds instead of sending them twice): ``roll_out`` closes the position in ``old``, ``roll_in``
        opens the same signed quantity in ``new``. They pass no pre-trade check (the net position does not
        change; a house limit must not leave a position in an expiring contract), but while they are in
        flight both count in the worst case (:meth:`working_buys_sells`). The symbol's working orders (in
        ``old``) are cancelled first (a protective stop left in the old contract could fill after the roll
        closed it): the strategy places them again in the new contract. The position keeps its last mark
        until both legs are booked (the rows' closes are the new contract's now). A broker refusing the
        legs halts the run (``ROLL_FAILED``); so does a leg refused or not filled in time
        (:meth:`check_rolls`).
        """
        if symbol in self.rolling:
            return
        quantity = self.portfolio.positions[symbol].quantity
        for order in self.handler.working_orders(symbol):
            if self.handler.cancel(order, self.now, f"roll {old}->{new}"):
                self.events.append((self.now, "warning", "ORDER_CANCELLED_ON_ROLL", symbol, order.order_id,
                                    f"working in {old}; place it again in {new}"))
        legs = []
        for origin, signed in (("roll_out", -quantity), ("roll_in", quantity)):
            order = Order(symbol, signed, tag=f"{origin} {old}->{new}")
            order.origin, order.order_id, order.ts_submitted = origin, len(self.orders), self.now
            self.orders.append(order)
            legs.append(order)
        out, inn = legs
        self.rolling[symbol] = RollInFlight(symbol, old, new, out.order_id, inn.order_id, self.now + self.bar_ns)
        self.events.append((self.now, "roll", "ROLL_SENT", symbol, out.order_id,
                            f"{quantity:+d} {old} -> {new} (orders {out.order_id} out, {inn.order_id} in)"))
        try:
            self.handler.send_roll(out, inn, old, new)
        except QEError as exc:
            for leg in legs:  # the handler checks before it sends: neither leg left
                leg.status, leg.detail, leg.ts_done = OrderStatus.DENIED, f"BROKER_REFUSED: {exc}", self.now
            self._fail_roll(self.rolling[symbol], f"the broker refused the roll's orders ({exc})")

    def check_rolls(self, now: int, timeout_ns: int | None) -> list[str]:
        """Halt the run (``ROLL_FAILED``) for every roll in flight whose leg the broker refused or cancelled,
        or that is not complete ``timeout_ns`` after it was sent (``now``, ns; None: refusals only, for a check
        between bars while reported fills may still wait to be booked). A half-rolled position is the
        dangerous state: what the books can hold is booked (:meth:`_book_failed_leg`), the legs still working
        are cancelled, the message says what the books hold. Returns the messages."""
        problems = []
        for roll in list(self.rolling.values()):
            legs = (self.orders[roll.out_id], self.orders[roll.in_id])
            failed = [o for o in legs if o.is_done and o.status is not OrderStatus.FILLED]
            if failed:
                why = "; ".join(f"{o.origin} {o.status.value}{': ' + o.detail if o.detail else ''}" for o in failed)
            elif timeout_ns is not None and now - roll.started > timeout_ns:
                why = f"not filled {timeout_ns / 1e9:g} s after it was sent"
            else:
                continue
            self.now = max(self.now, now)
            for leg in legs:
                if not leg.is_done:
                    self.handler.cancel(leg, self.now, "roll failed")
            problems.append(self._fail_roll(roll, why))
        return problems

    def _fail_roll(self, roll: RollInFlight, why: str) -> str:
        """Book what the books can hold of a failed roll, halt the run, and say what the books hold."""
        del self.rolling[roll.symbol]
        reported, roll.out_fills, roll.in_fills, roll.later = roll.waiting(), [], [], []
        self.failed_rolls[roll.symbol] = roll
        for fill in reported:
            self._book_failed_leg(roll, fill)
        pos = self.portfolio.positions.get(roll.symbol)
        held = f"{pos.quantity:+d} {pos.contract}" if pos is not None else "flat"
        unbooked = sum(f.quantity for f in roll.in_fills)
        message = f"{roll.symbol} roll {roll.old}->{roll.new} failed: {why}; the books hold {held}" \
                  f"{f' ({unbooked:+d} {roll.new} filled, not booked beside it)' if unbooked else ''}: check the " \
                  f"broker's positions in {roll.old} and {roll.new} and roll or flatten by hand, then qe live reset"
        self.events.append((self.now, "risk", "ROLL_FAILED", roll.symbol, roll.out_id, message))
        self._event(self.risk.set_state(RiskState.HALTED, f"ROLL_FAILED {message}"))
        return message

    def _settle_roll(self, roll: RollInFlight) -> None:
        """Book a roll's legs once both are completely filled: the out-leg executions before the in-leg ones
        (:meth:`Portfolio.roll_legs`: one round trip across the roll, each execution's own commission)."""
        out, inn = self.orders[roll.out_id], self.orders[roll.in_id]
        if sum(f.quantity for f in roll.out_fills) != out.quantity or \
                sum(f.quantity for f in roll.in_fills) != inn.quantity:
            return
        del self.rolling[roll.symbol]
        pos = self.portfolio.positions.get(roll.symbol)
        if pos is not None and pos.contract == roll.old and pos.quantity == -out.quantity:
            booked = self.portfolio.roll_legs(roll.symbol, roll.out_fills, roll.in_fills, None)
            self._after_booking(booked)
            later, roll.later = roll.later, []
            self._book_all(later)  # the new contract's other fills, now that the books hold it
            self.events.append((self.now, "roll", "ROLL_DONE", roll.symbol, roll.out_id,
                                f"{roll.old} -> {roll.new}: out {out.avg_fill_price} x {out.quantity:+d}, "
                                f"in {inn.avg_fill_price} x {inn.quantity:+d}"))
        else:  # the position changed under the roll (an old-contract order filled meanwhile)
            self.rolling[roll.symbol] = roll
            self._fail_roll(roll, f"the position changed while rolling (held {pos.quantity if pos else 0:+d} "
                                  f"{pos.contract if pos else ''})")

    def _book_failed_leg(self, roll: RollInFlight, fill: Fill) -> None:
        """A fill of a failed roll's leg, booked where the books can hold it: an out-leg fill closes the old
        contract (a plain closing fill); an in-leg fill opens the new contract only once the old one is closed
        (the books hold one contract per symbol), else it waits in ``roll.in_fills``, unbooked (the
        ``ROLL_FAILED`` message names it) and is booked when the old contract's position closes."""
        pos = self.portfolio.positions.get(roll.symbol)
        if fill.order_id == roll.out_id or pos is None or pos.contract == roll.new:
            self._after_booking(self.portfolio.apply(fill))
        else:
            roll.in_fills.append(fill)
            return
        pos = self.portfolio.positions.get(roll.symbol)
        if roll.in_fills and (pos is None or pos.contract == roll.new):
            waiting, roll.in_fills = roll.in_fills, []
            self._book_all(waiting)

    def _book_all(self, fills: list[Fill]) -> None:
        """Book fills held back until the books hold their contract, in the order they came."""
        for fill in fills:
            self._after_booking(self.portfolio.apply(fill))

    def _after_booking(self, booked: list[Fill]) -> None:
        """The account's cash mark after fills the portfolio booked, and the strategy's ``on_fill``."""
        self._cash_marks.append((len(self._eq_ts), self.portfolio.realized, self.portfolio.commissions,
                                 self.portfolio.slippage))
        self._cash = self.portfolio.cash
        for fill in booked:
            self.strategy.on_fill(fill)

    # -- the loop -----------------------------------------------------------------------------------------
    def process(self, columns: list[list], n: int, arrived: list[Fill] | None = None) -> None:
        """Process ``n`` bars given as one list per column (positions as :meth:`bind` was told), in time order.

        ``arrived``: fills a real broker reported since the last call (made during the first row's bar); they
        are booked once that bar's timestamp and trading date are entered, before any row is seen, so their
        cash lands on this bar's equity point and in this trading date's loss limits.

        The backtest hands over a record batch of thousands of rows at a time, the live loop the rows of one
        bar's timestamp; the work per bar is the same. The body below runs once per bar, so it is written for
        speed: locals instead of attribute lookups, the bar tuple built in C (``tuple.__new__``), the position
        marked inline, and the current bar's columns kept as (batch, index) so an order's bar context is only
        assembled when an order arrives.
        """
        cols = self._feed_columns
        i_sym, i_ts, i_close, i_day = cols["symbol"], cols["ts"], cols["close"], cols["qe_trading_day"]
        i_open, i_high, i_low, i_vol = cols["open"], cols["high"], cols["low"], cols["volume"]
        i_contract = cols.get("contract") if self.roll_enabled else None
        make_bar = partial(tuple.__new__, self._bar_type)
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
        last_contract = self._last_contract
        rolling = self.rolling
        last_ts, day, points = self._last_ts, self._day, self._points
        if self._columns is not None:
            # the last bar of every symbol in the finished batch, for orders on symbols that trade rarely
            self._previous_columns = self._columns
            for symbol in set(self._columns[i_sym]):
                self._last_bars[symbol] = self._latest_bar_in(self._columns, symbol)
        self._columns = columns
        syms, tss, closes, days = columns[i_sym], columns[i_ts], columns[i_close], columns[i_day]
        contracts = columns[i_contract] if i_contract is not None else None
        self.symbols.update(syms)
        self.bars += n
        try:
            for i, bar in enumerate(map(make_bar, zip(*columns))):
                ts = tss[i]
                if ts != last_ts:
                    if ts < last_ts:
                        raise QEError("bars must arrive in time order (a query ordered by ts): a bar at "
                                      f"{iso_utc(ts)} follows one at {iso_utc(last_ts)}")
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
                    if arrived:
                        self._i = i
                        self.now, self.trading_day = ts, day
                        self.book_fills(arrived)
                        arrived = None
                sym = syms[i]
                self._i = i
                if contracts is not None:
                    contract = contracts[i]
                    if contract != last_contract.get(sym, contract):
                        if sym in positions and contract is not None and last_contract[sym] is not None:
                            self._roll(sym, last_contract[sym], contract)
                        if contract is not None:
                            handler.front_changed(sym, last_contract[sym], contract)
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
                if pos is not None and not (rolling and sym in rolling):  # rolling: the closes are another contract's
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
        finally:
            self._last_ts, self._day, self._points = last_ts, day, points

    def book_fills(self, fills: list[Fill]) -> None:
        """Book fills that arrived between bars (a real broker's), then let the breakers look once."""
        if not fills:
            return
        for fill in fills:
            self.now = max(self.now, fill.ts)
            self._book(fill, check=False)
        self._breakers_after_fills()

    def finish(self, close_at_end: bool = False) -> None:
        """The data ended: optionally close every position at its mark, record the last equity point."""
        last_ts, day, points = self._last_ts, self._day, self._points
        portfolio = self.portfolio
        if points and close_at_end:
            self._close_all_at_mark(last_ts, day, "end of data")
        if points:
            self._eq_ts.append(last_ts)
            self._eq_unrealized.append(portfolio.unrealized)
            self._eq_notional.append(portfolio.gross_notional)
        if self.recorder.spilled:
            self._flush_equity(final=True)
            self.recorder.close()

    def flush_equity_if_full(self) -> None:
        """Spill the buffered equity points once they reach the recorder's chunk (call between batches)."""
        if len(self._eq_ts) >= self.recorder.chunk_points:
            self._flush_equity()

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
