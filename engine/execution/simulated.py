"""The simulated broker of backtests: ``BacktestExecutionHandler`` fills orders from the bars.

The kernel talks to one :class:`~engine.execution.base.ExecutionHandler` in every mode; this one simulates
the fills from each bar (the Interactive Brokers handler, :mod:`engine.adapters.ib.handler`, returns the
executions the broker reported).

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
* One-cancels-other groups (``Order.oca_group``; IB ``ocaType`` 2, see :mod:`engine.core.orders`): every working
  leg of a group is priced on the same path and only the leg reached **first** along it trades in that bar
  (position on the path: the leg of the path, then the distance from that leg's start; ties go to the leg
  submitted first). Its fill reduces every other leg by the same contracts, and a leg with nothing left is
  cancelled (``"OCO sibling filled"``) before it can fill, so a group never fills more than one leg's size.
* Brackets (``Order.children``): the children are held, not working, until the entry is done; they then work
  for the contracts the entry filled (cancelled if it filled none). When the entry fills (or its IOC remainder
  is cancelled) inside a bar, the children are priced on the rest of that bar's path, from the entry's fill
  point on (``(fill reference price, the path points after it)``), so an exit can fill in the entry's bar
  only if the price reaches it after the entry. Children released when the entry expires or is cancelled
  between bars work from the next bar.
"""

from __future__ import annotations

import math

from engine.core.instruments import InstrumentBook
from engine.core.orders import Fill, Order, OrderStatus, OrderType, TimeInForce
from engine.execution.base import ExecutionHandler
from engine.execution.slippage import NoSlippage, SlippageModel

__all__ = ["BacktestExecutionHandler"]

_EPS = 1e-9


#: (reference price, whether it slips, path leg): where an order executes on an intrabar path. ``leg`` is the
#: index of the path point the move that reached the price starts from (0 for the open itself).
Found = tuple[float, bool, int]


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
        #: OCO group name -> its working legs (bracket children once released)
        self.groups: dict[str, list[Order]] = {}
        self._capacity: dict[str, tuple[int, float]] = {}  # symbol -> (bar ts, contracts left this bar)
        self.finished: list[Order] = []

    # -- ExecutionHandler -------------------------------------------------------------------------
    def submit(self, order: Order, bar: tuple, close_known: bool = True) -> list[Fill]:
        symbol, ts, open_, high, low, close, volume, trading_day, contract = bar
        order.ts_submitted = ts + self.bar_ns
        order.active_from = order.ts_submitted + self.latency_ns
        order.trading_date = trading_day
        for child in order.children:
            # a bracket's exits: submitted with the entry, held here until it is done (see _release_children)
            child.ts_submitted, child.active_from, child.trading_date = order.ts_submitted, order.active_from, trading_day
            child.oca_group = f"bracket:{order.order_id}"
            child.detail = "held until the bracket entry is done"
        if order.oca_group is not None:
            self._check_group(order)
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
        self._work(order)
        return fills

    def cancel(self, order: Order, ts: int, reason: str = "cancelled") -> bool:
        if order.is_done:
            return False
        # a bracket entry's _finish releases its children for what it filled (or cancels them)
        self._finish(order, OrderStatus.CANCELLED, ts, reason)
        self._unwork(order)
        return True

    def cancel_all(self, ts: int, reason: str, keep_origin: str | None = None) -> None:
        """Cancel every working order (but those of origin ``keep_origin``) and every held bracket child.

        Unlike :meth:`cancel`, a partly filled bracket entry does not release its children: the kill switch
        and the end of a run flatten positions themselves.
        """
        for order in self.working_orders():
            if keep_origin is not None and order.origin == keep_origin:
                continue
            for child in order.children:
                if not child.is_done:
                    self._finish(child, OrderStatus.CANCELLED, ts, reason)
            self.cancel(order, ts, reason)

    def on_bar(self, symbol: str, ts: int, open_: float, high: float, low: float, close: float, volume: int,
               trading_day: int, contract: str | None) -> list[Fill]:
        orders = self.working.get(symbol)
        if not orders:
            return []
        fills: list[Fill] = []
        path = _path(open_, high, low, close, self.adaptive)
        bar = (symbol, ts, volume, trading_day, contract)
        seen: set[str] | None = None  # OCO groups already priced on this bar
        for order in list(orders):
            group = order.oca_group
            if group is None:
                tif = order.tif
                if (tif is TimeInForce.DAY or tif is TimeInForce.GTD) and self._expired(order, ts, trading_day):
                    continue
                if ts >= order.active_from:
                    if order.close_pending_ts is not None and self._fill_pending_close(order, path, bar, fills):
                        continue
                    self._execute(order, self._price(order, path), path, bar, fills)
            elif not order.is_done:  # (a leg cancelled by its sibling earlier in this bar is done)
                if seen is None:
                    seen = set()
                if group not in seen:
                    seen.add(group)
                    self._execute_group(list(self.groups[group]), path, bar, fills)
        # the list may have gained released bracket children or lost cancelled OCO legs meanwhile
        current = self.working.get(symbol, ())
        remaining = [o for o in current if not o.is_done]
        if remaining:
            self.working[symbol] = remaining
        else:
            self.working.pop(symbol, None)
        return fills

    def shift_orders(self, symbol: str, offset: float) -> list[Order]:
        """Move the prices of ``symbol``'s working orders by ``offset`` (on a roll: to the new contract's level)."""
        tick = self.instruments.terms(symbol).tick_size
        moved = []
        # a working bracket entry's held children move with it
        orders = [o for order in self.working.get(symbol, ()) for o in (order, *order.children) if not o.is_done]
        for order in orders:
            if order.limit_price is not None:
                order.limit_price = _on_grid(order.limit_price + offset, tick)
            if order.stop_price is not None:
                order.stop_price = _on_grid(order.stop_price + offset, tick)
            if order.limit_price is not None or order.stop_price is not None:
                moved.append(order)
        return moved

    # -- simulation -------------------------------------------------------------------------------
    def _fill_pending_close(self, order: Order, path: tuple[float, ...], bar: tuple, fills: list[Fill]) -> bool:
        """A signal-close order waiting for its symbol's bar at the decision time (``close_pending_ts``).

        On that bar it fills at the close (True). On a later bar (the symbol had none at the decision time)
        the wait ends and the order is an ordinary market order at this bar's open (False: execute it).
        """
        symbol, ts, volume, trading_day, contract = bar
        pending, order.close_pending_ts = order.close_pending_ts, None
        if ts != pending:
            return False
        fills.extend(self._fill_at_close(order, symbol, ts, path[-1], volume, trading_day, contract))
        return True

    def _expired(self, order: Order, ts: int, trading_day: int) -> bool:
        """Expire ``order`` (DAY past its trading date, GTD at its expiry) and say whether it did."""
        if order.tif is TimeInForce.DAY and trading_day > order.trading_date:
            self._finish(order, OrderStatus.EXPIRED, ts, "end of trading date")
        elif order.tif is TimeInForce.GTD and ts >= order.expire_ts:
            self._finish(order, OrderStatus.EXPIRED, ts, "GTD expiry")
        else:
            return False
        return True

    def _execute(self, order: Order, found: Found | None, path: tuple[float, ...], bar: tuple, fills: list[Fill]) -> None:
        """Fill ``order`` where ``found`` (from :meth:`_price` on ``path``) says, within the bar's volume cap.

        ``bar`` is ``(symbol, ts, volume, trading_day, contract)``. A bracket entry done by this fill releases
        its children, which are then priced on the rest of the path.
        """
        symbol, ts, volume, trading_day, contract = bar
        one_shot = order.tif in (TimeInForce.IOC, TimeInForce.FOK)
        if found is None:
            if one_shot:
                self._finish(order, OrderStatus.CANCELLED, ts, f"{order.tif.value}: not executable on its first bar")
            return
        reference, slips, leg = found
        wanted = order.quantity - order.filled
        quantity = self._take_capacity(symbol, ts, volume, wanted, order.tif is TimeInForce.FOK)
        if quantity == 0:
            if one_shot:
                self._finish(order, OrderStatus.CANCELLED, ts, f"{order.tif.value}: no volume available")
            return
        fills.append(self._fill(order, symbol, ts, reference, slips, quantity, volume, trading_day, contract))
        if order.filled != order.quantity and one_shot:
            self._finish(order, OrderStatus.CANCELLED, ts, "IOC: remainder cancelled")
        if order.children and order.is_done:
            released = [c for c in order.children if not c.is_done]
            if released:
                # the exits exist from the entry's fill point on: the rest of this bar's path starts there
                self._execute_group(released, (reference, *path[leg + 1:]), bar, fills)

    def _execute_group(self, legs: list[Order], path: tuple[float, ...], bar: tuple, fills: list[Fill]) -> None:
        """Price every leg of one OCO group on ``path``; only the leg reached first may trade in this bar."""
        ts, trading_day = bar[1], bar[3]
        priced = [(leg, self._price(leg, path)) for leg in legs
                  if not self._expired(leg, ts, trading_day) and ts >= leg.active_from]
        reached = [(found[2], abs(found[0] - path[found[2]]), k) for k, (_, found) in enumerate(priced)
                   if found is not None]
        first = min(reached)[2] if reached else -1  # ties: the leg submitted first (lowest k)
        for k, (leg, found) in enumerate(priced):
            if k == first or found is None:
                self._execute(leg, found, path, bar, fills)  # (an unreached IOC/FOK leg is cancelled there)
            elif not leg.is_done and leg.tif in (TimeInForce.IOC, TimeInForce.FOK):
                self._finish(leg, OrderStatus.CANCELLED, ts, f"{leg.tif.value}: OCO sibling reached first")

    def _price(self, order: Order, path: tuple[float, ...]) -> Found | None:
        """Reference price, whether it slips and the path leg, or None if the order does not execute on ``path``."""
        buy = order.quantity > 0
        kind = order.order_type
        if kind is OrderType.MARKET:
            return path[0], True, 0
        if kind is OrderType.LIMIT:
            return self._limit(order.limit_price, path, buy)
        if kind is OrderType.STOP:
            hit = _touch(path, order.stop_price, up=buy)
            return None if hit is None else (hit[1], True, max(hit[0], 0))
        if kind is OrderType.MIT:
            hit = _touch(path, order.stop_price, up=not buy)
            return None if hit is None else (hit[1], True, max(hit[0], 0))
        # STOP_LIMIT
        if order.triggered:
            return self._limit(order.limit_price, path, buy)
        hit = _touch(path, order.stop_price, up=buy)
        if hit is None:
            return None
        order.triggered = True
        segment = max(hit[0], 0)
        found = self._limit(order.limit_price, (hit[1], *path[segment + 1:]), buy)
        # leg j of the rest of the path is leg segment + j of the whole path
        return None if found is None else (found[0], False, segment + found[2])

    def _limit(self, limit: float, path: tuple[float, ...], buy: bool) -> Found | None:
        first = path[0]
        slack = -_EPS if self.limit_through else _EPS  # through: the open must be strictly better
        if (first <= limit + slack) if buy else (first >= limit - slack):
            return first, False, 0
        through = self.limit_through
        # cheap rejection first (most bars of a resting limit never reach it), then the leg that reaches it
        if buy:
            level = limit - _EPS if through else limit + _EPS
            if not (min(path) < level if through else min(path) <= level):
                return None
            k = next(k for k in range(1, len(path)) if (path[k] < level if through else path[k] <= level))
        else:
            level = limit + _EPS if through else limit - _EPS
            if not (max(path) > level if through else max(path) >= level):
                return None
            k = next(k for k in range(1, len(path)) if (path[k] > level if through else path[k] >= level))
        return limit, False, k - 1

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
        if order.oca_group is not None:
            self._reduce_siblings(order, abs(quantity), ts)
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
        if order.oca_group is not None:
            legs = self.groups.get(order.oca_group)
            if legs is not None and order in legs:
                legs.remove(order)
                if not legs:
                    del self.groups[order.oca_group]
        if order.children:
            self._release_children(order, ts)

    # -- linked orders ------------------------------------------------------------------------------
    def _work(self, order: Order) -> None:
        """Make ``order`` a working order (and a working leg of its OCO group)."""
        self.working.setdefault(order.symbol, []).append(order)
        if order.oca_group is not None:
            self.groups.setdefault(order.oca_group, []).append(order)

    def _unwork(self, order: Order) -> None:
        orders = self.working.get(order.symbol)
        if orders is not None and order in orders:
            orders.remove(order)
            if not orders:
                del self.working[order.symbol]

    def _check_group(self, order: Order) -> None:
        """A new OCO leg must trade its group's symbol and the contracts its working legs have left."""
        for leg in self.groups.get(order.oca_group, ()):
            if leg.symbol != order.symbol or abs(leg.remaining) != abs(order.remaining):
                raise ValueError(f"OCO group {order.oca_group!r}: a {order.symbol} {order.remaining:+d} leg cannot join "
                                 f"a working {leg.symbol} {leg.remaining:+d} leg (one symbol, one size)")

    def _reduce_siblings(self, order: Order, contracts: int, ts: int) -> None:
        """``order`` (an OCO leg) filled ``contracts``: take them off every other leg (IB ocaType 2)."""
        for leg in list(self.groups.get(order.oca_group, ())):
            if leg is order or leg.is_done:
                continue
            if abs(leg.remaining) <= contracts:
                self._finish(leg, OrderStatus.CANCELLED, ts, "OCO sibling filled")
                self._unwork(leg)
            else:
                leg.quantity -= contracts if leg.quantity > 0 else -contracts
                leg.detail = f"reduced by {contracts}: OCO sibling filled"

    def _release_children(self, parent: Order, ts: int) -> None:
        """A bracket entry is done: its children work for the contracts it filled, or are cancelled if none."""
        for child in parent.children:
            if child.is_done:  # cancelled by the strategy while held
                continue
            if parent.filled == 0:
                self._finish(child, OrderStatus.CANCELLED, ts, f"bracket entry {parent.status.value.lower()} unfilled")
            else:
                child.quantity = -parent.filled
                child.detail = ""
                self._work(child)


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
