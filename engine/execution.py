"""The execution seam: ``ExecutionHandler`` and the simulated broker of backtests.

The event loop talks to one handler in every mode: it submits and cancels orders and, for each bar, asks
the handler for the fills that happened. ``BacktestExecutionHandler`` simulates them from the bar;
the Interactive Brokers handler (live/paper) returns the executions the broker reported.

Fill conventions of the simulated broker
----------------------------------------
* An order decided on a bar is submitted at that bar's close (``ts + bar length``) and may execute from the
  first bar whose open time is ``>= submission + latency``; with no latency that is the next bar's open.
  The ``signal_close`` convention (``fill="signal_close"``, latency 0) fills MARKET orders at the signal bar's
  close instead; other order types still start on the next bar. A MARKET order on another symbol fills at
  that symbol's own close at the decision time: at once when its bar of that timestamp has been seen,
  else when it arrives (or, if the symbol has no bar then, at its next bar's open), never at an older close.
* Inside a bar, price travels along a path: ``O -> H -> L -> C`` (``intrabar="ohlc"``) or, adaptively, ``O -> L
  -> H -> C`` when the open is nearer the low (``intrabar="adaptive"``). Orders are checked along it:
  - MARKET: the open.
  - LIMIT: the open if it is already at or better than the limit, else the limit price if the path reaches
    it (``limit_through=True`` requires trading through it, not just touching; an open exactly at the limit
    is a touch too).
  - STOP and MIT: the open if the bar gapped through the trigger, else the trigger; both plus slippage.
  - STOP_LIMIT: triggered like a stop, then a limit on the rest of the path (or on later bars).
* Slippage applies to market-like fills (MARKET, STOP, MIT) and is rounded up to whole ticks.
* Volume participation: with ``participation=p`` at most ``floor(p * V)`` contracts fill per bar and symbol
  (all orders together); the rest keeps working (IOC cancels it, FOK fills all or nothing).
* Time in force: DAY expires at the end of its CME trading date, GTD at ``expire_ts``, IOC/FOK after their
  first executable bar.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

from engine.instruments import InstrumentBook
from engine.orders import Fill, Order, OrderStatus, OrderType, TimeInForce
from engine.slippage import NoSlippage, SlippageModel

__all__ = ["ExecutionHandler", "BacktestExecutionHandler"]

_EPS = 1e-9


class ExecutionHandler(ABC):
    """Where orders go and fills come from; one interface for the simulated broker and a real one."""

    @abstractmethod
    def submit(self, order: Order, bar: tuple, close_known: bool = True) -> list[Fill]:
        """Accept ``order`` (already numbered and risk-checked) decided on ``bar``; return immediate fills.

        ``close_known`` is False when ``bar`` carries the symbol's latest prices but its bar at the decision
        time has not been seen yet (an order on another symbol than the one whose bar is being processed).
        """

    @abstractmethod
    def cancel(self, order: Order, ts: int, reason: str = "cancelled") -> bool:
        """Cancel a working order; False if it was already done."""

    @abstractmethod
    def on_bar(self, symbol: str, ts: int, open_: float, high: float, low: float, close: float, volume: int,
               trading_day: int, contract: str | None) -> list[Fill]:
        """Fills of ``symbol``'s working orders during this bar."""

    @abstractmethod
    def working_orders(self, symbol: str | None = None) -> list[Order]:
        """Orders still working (all symbols, or one)."""


class BacktestExecutionHandler(ExecutionHandler):
    """The simulated broker (see the module docstring for every convention).

    Parameters
    ----------
    instruments : InstrumentBook
        Ticks, multipliers and fees.
    bar_ns : int
        Bar length in nanoseconds (an order is submitted at its bar's close).
    fill : {"next_open", "signal_close"}
    intrabar : {"ohlc", "adaptive"}
    slippage : SlippageModel
    participation : float or None
        Maximum share of a bar's volume one symbol's orders may take; None for no cap.
    latency_ns : int
        Delay from submission to the earliest execution.
    limit_through : bool
        Require limit prices to trade through, not only touch.
    """

    def __init__(self, instruments: InstrumentBook, bar_ns: int, *, fill: str = "next_open", intrabar: str = "ohlc",
                 slippage: SlippageModel | None = None, participation: float | None = None, latency_ns: int = 0,
                 limit_through: bool = False) -> None:
        if fill not in ("next_open", "signal_close"):
            raise ValueError(f"fill convention must be next_open or signal_close, not {fill!r}")
        if intrabar not in ("ohlc", "adaptive"):
            raise ValueError(f"intrabar path must be ohlc or adaptive, not {intrabar!r}")
        self.instruments = instruments
        self.bar_ns = bar_ns
        self.fill_at_close = fill == "signal_close" and latency_ns == 0
        self.adaptive = intrabar == "adaptive"
        self.slippage = slippage or NoSlippage()
        self.participation = participation
        self.latency_ns = latency_ns
        self.limit_through = limit_through
        #: symbol -> working orders in submission order; a symbol is absent when it has none (fast check).
        self.working: dict[str, list[Order]] = {}
        self._capacity: dict[str, tuple[int, float]] = {}  # symbol -> (bar ts, contracts left this bar)
        self.finished: list[Order] = []

    # -- ExecutionHandler -------------------------------------------------------------------------
    def submit(self, order: Order, bar: tuple, close_known: bool = True) -> list[Fill]:
        symbol, ts, open_, high, low, close, volume, trading_day, contract = bar
        order.ts_submitted = ts + self.bar_ns
        order.active_from = order.ts_submitted + self.latency_ns
        order.trading_date = trading_day
        if self.fill_at_close and order.order_type is OrderType.MARKET and not close_known:
            # the symbol's close at the decision time is not known yet: wait for its bar of that timestamp
            order.fill_at_close = True
            order.close_pending_ts = order.active_from = ts
            fills = []
        elif self.fill_at_close and order.order_type is OrderType.MARKET:
            order.fill_at_close = True
            fills = self._fill_at_close(order, symbol, ts, close, volume, trading_day, contract)
            if order.is_done:
                return fills
        else:
            fills = []
        self.working.setdefault(symbol, []).append(order)
        return fills

    def cancel(self, order: Order, ts: int, reason: str = "cancelled") -> bool:
        if order.is_done:
            return False
        self._finish(order, OrderStatus.CANCELLED, ts, reason)
        orders = self.working.get(order.symbol)
        if orders is not None and order in orders:
            orders.remove(order)
            if not orders:
                del self.working[order.symbol]
        return True

    def working_orders(self, symbol: str | None = None) -> list[Order]:
        if symbol is not None:
            return list(self.working.get(symbol, ()))
        return [o for orders in self.working.values() for o in orders]

    def working_quantity(self, symbol: str) -> int:
        """Signed contracts still working for ``symbol``."""
        return sum(o.quantity - o.filled for o in self.working.get(symbol, ()))

    def in_flight_quantity(self, symbol: str) -> int:
        """Signed contracts still to fill on ``symbol``'s working MARKET orders: what will fill for sure.

        Resting LIMIT/STOP/MIT orders are not counted: they may never fill (a protective stop does not
        make the position it protects smaller).
        """
        return sum(o.quantity - o.filled for o in self.working.get(symbol, ()) if o.order_type is OrderType.MARKET)

    def working_buys_sells(self, symbol: str) -> tuple[int, int]:
        """Contracts still to fill on ``symbol``'s working buys and working sells, both ``>= 0``."""
        buys = sells = 0
        for order in self.working.get(symbol, ()):
            remaining = order.quantity - order.filled
            if remaining > 0:
                buys += remaining
            else:
                sells -= remaining
        return buys, sells

    def on_bar(self, symbol: str, ts: int, open_: float, high: float, low: float, close: float, volume: int,
               trading_day: int, contract: str | None) -> list[Fill]:
        orders = self.working.get(symbol)
        if not orders:
            return []
        fills: list[Fill] = []
        path = _path(open_, high, low, close, self.adaptive)
        for order in list(orders):
            if order.tif is TimeInForce.DAY and trading_day > order.trading_date:
                self._finish(order, OrderStatus.EXPIRED, ts, "end of trading date")
            elif order.tif is TimeInForce.GTD and ts >= order.expire_ts:
                self._finish(order, OrderStatus.EXPIRED, ts, "GTD expiry")
            elif ts >= order.active_from:
                self._execute(order, path, symbol, ts, volume, trading_day, contract, fills)
        remaining = [o for o in orders if not o.is_done]
        if remaining:
            self.working[symbol] = remaining
        else:
            del self.working[symbol]
        return fills

    def shift_orders(self, symbol: str, offset: float) -> list[Order]:
        """Move the prices of ``symbol``'s working orders by ``offset`` (on a roll: to the new contract's level)."""
        tick = self.instruments.terms(symbol).tick_size
        moved = []
        for order in self.working.get(symbol, ()):
            if order.limit_price is not None:
                order.limit_price = _on_grid(order.limit_price + offset, tick)
            if order.stop_price is not None:
                order.stop_price = _on_grid(order.stop_price + offset, tick)
            if order.limit_price is not None or order.stop_price is not None:
                moved.append(order)
        return moved

    # -- simulation -------------------------------------------------------------------------------
    def _execute(self, order: Order, path: tuple[float, float, float, float], symbol: str, ts: int, volume: int,
                 trading_day: int, contract: str | None, fills: list[Fill]) -> None:
        if order.close_pending_ts is not None:
            pending, order.close_pending_ts = order.close_pending_ts, None
            if ts == pending:  # the symbol's own bar at the decision time: its close
                fills.extend(self._fill_at_close(order, symbol, ts, path[3], volume, trading_day, contract))
                return
            # the symbol had no bar at the decision time: a market order at this (later) bar's open
        found = self._price(order, path)
        one_shot = order.tif in (TimeInForce.IOC, TimeInForce.FOK)
        if found is None:
            if one_shot:
                self._finish(order, OrderStatus.CANCELLED, ts, f"{order.tif.value}: not executable on its first bar")
            return
        reference, slips = found
        wanted = order.quantity - order.filled
        quantity = self._take_capacity(symbol, ts, volume, wanted, order.tif is TimeInForce.FOK)
        if quantity == 0:
            if one_shot:
                self._finish(order, OrderStatus.CANCELLED, ts, f"{order.tif.value}: no volume available")
            return
        fills.append(self._fill(order, symbol, ts, reference, slips, quantity, volume, trading_day, contract))
        if order.filled != order.quantity and one_shot:
            self._finish(order, OrderStatus.CANCELLED, ts, "IOC: remainder cancelled")

    def _price(self, order: Order, path: tuple[float, float, float, float]) -> tuple[float, bool] | None:
        """Reference price and whether it slips, or None if the order does not execute on this path."""
        buy = order.quantity > 0
        kind = order.order_type
        if kind is OrderType.MARKET:
            return path[0], True
        if kind is OrderType.LIMIT:
            return self._limit(order.limit_price, path, buy)
        if kind is OrderType.STOP:
            hit = _touch(path, order.stop_price, up=buy)
            return None if hit is None else (hit[1], True)
        if kind is OrderType.MIT:
            hit = _touch(path, order.stop_price, up=not buy)
            return None if hit is None else (hit[1], True)
        # STOP_LIMIT
        if order.triggered:
            return self._limit(order.limit_price, path, buy)
        hit = _touch(path, order.stop_price, up=buy)
        if hit is None:
            return None
        order.triggered = True
        segment, price = hit
        rest = (price, *path[segment + 1:])
        return self._limit(order.limit_price, rest, buy)

    def _limit(self, limit: float, path: tuple[float, ...], buy: bool) -> tuple[float, bool] | None:
        first = path[0]
        slack = -_EPS if self.limit_through else _EPS  # through: the open must be strictly better
        if (first <= limit + slack) if buy else (first >= limit - slack):
            return first, False
        if buy:
            low = min(path)
            reached = low < limit - _EPS if self.limit_through else low <= limit + _EPS
        else:
            high = max(path)
            reached = high > limit + _EPS if self.limit_through else high >= limit - _EPS
        return (limit, False) if reached else None

    def _take_capacity(self, symbol: str, ts: int, volume: int, wanted: int, all_or_none: bool) -> int:
        if self.participation is None:
            return wanted
        bar_ts, left = self._capacity.get(symbol, (None, 0.0))
        if bar_ts != ts:
            left = math.floor(self.participation * volume + _EPS)
        size = min(abs(wanted), int(left))
        if all_or_none and size < abs(wanted):
            size = 0
        self._capacity[symbol] = (ts, left - size)
        return size if wanted > 0 else -size

    def _fill(self, order: Order, symbol: str, ts: int, reference: float, slips: bool, quantity: int, volume: int,
              trading_day: int, contract: str | None) -> Fill:
        terms = self.instruments.terms(symbol)
        price = reference
        slip_cost = 0.0
        if slips:
            offset = self.slippage.offset(symbol, reference, quantity, volume, terms.tick_size)
            if offset > 0:
                ticks = math.ceil(offset / terms.tick_size - _EPS)
                offset = ticks * terms.tick_size
                price = reference + offset if quantity > 0 else reference - offset
                slip_cost = abs(quantity) * offset * terms.multiplier
        commission = abs(quantity) * self.instruments.fee_per_side(symbol, trading_day)
        order.filled += quantity
        order.fill_value += abs(quantity) * price
        if order.filled == order.quantity:
            self._finish(order, OrderStatus.FILLED, ts, "")
        else:
            order.status = OrderStatus.PARTIALLY_FILLED
        return Fill(order.order_id, ts, symbol, contract, quantity, price, reference, terms.multiplier, commission,
                    slip_cost, "order", trading_day)

    def fill_now(self, order: Order, symbol: str, ts: int, price: float, trading_day: int, contract: str | None,
                 volume: int = 0) -> Fill:
        """Fill ``order`` completely at ``price`` (plus slippage) now: liquidations at the end of data.

        ``volume`` is the bar volume the slippage model sees (give the last bar's; 0 means unknown).
        """
        return self._fill(order, symbol, ts, price, True, order.quantity, volume, trading_day, contract)

    def _fill_at_close(self, order: Order, symbol: str, ts: int, close: float, volume: int, trading_day: int,
                       contract: str | None) -> list[Fill]:
        quantity = self._take_capacity(symbol, ts, volume, order.quantity, order.tif is TimeInForce.FOK)
        closed = ts + self.bar_ns  # the signal bar's close: when the fill (or its cancellation) happens
        if quantity == 0:
            if order.tif in (TimeInForce.IOC, TimeInForce.FOK):
                self._finish(order, OrderStatus.CANCELLED, closed, f"{order.tif.value}: no volume available")
            return []
        fill = self._fill(order, symbol, closed, close, True, quantity, volume, trading_day, contract)
        if not order.is_done and order.tif in (TimeInForce.IOC, TimeInForce.FOK):
            self._finish(order, OrderStatus.CANCELLED, closed, "IOC: remainder cancelled")
        return [fill]

    def _finish(self, order: Order, status: OrderStatus, ts: int, detail: str) -> None:
        order.status = status
        order.ts_done = ts
        if detail:
            order.detail = detail
        self.finished.append(order)


def _path(open_: float, high: float, low: float, close: float, adaptive: bool) -> tuple[float, float, float, float]:
    """Intrabar price path: O-H-L-C, or O-L-H-C when adaptive and the open is nearer the low."""
    if adaptive and (open_ - low) < (high - open_):
        return (open_, low, high, close)
    return (open_, high, low, close)


def _touch(path: tuple[float, ...], level: float, up: bool) -> tuple[int, float] | None:
    """Where the path first reaches ``level`` (rising to it if ``up``, else falling to it).

    Returns ``(segment, price)``: ``segment`` is the index of the path point the move starts from
    (``-1`` when the open is already through the level, i.e. a gap, priced at the open), and ``price`` the
    execution reference: the open on a gap, else the level itself.
    """
    first = path[0]
    if (first >= level - _EPS) if up else (first <= level + _EPS):
        return -1, first
    for k in range(1, len(path)):
        if (path[k] >= level - _EPS) if up else (path[k] <= level + _EPS):
            return k - 1, level
    return None


def _on_grid(price: float, tick: float) -> float:
    return round(round(price / tick) * tick, 10)
