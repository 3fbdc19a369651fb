"""The simulator's order book: IB orders matched by the backtest broker against bars the caller pushes.

Matching is delegated to :class:`engine.execution.simulated.BacktestExecutionHandler`, so every convention is the
backtest's (see ``engine/execution/simulated.py``): an order may execute from the first bar pushed after it arrived;
MARKET fills at that bar's open; LIMIT at the open or the limit; STOP and MIT at the open on a gap, else at
the trigger; STOP_LIMIT triggers like a stop, then works as a limit; DAY expires when the CME trading date
changes, GTD at ``goodTillDate``; IOC/FOK after their first executable bar. Partial fills come from volume
participation: with ``participation=p`` at most ``floor(p * volume)`` contracts fill per bar and contract.

IB's view is kept beside it: IB statuses, permIds, executions (``execId``), positions per account and
contract with IB's futures ``avgCost`` (average price times multiplier; commissions are not folded in).
Realized P&L is not computed (the commission report sends it unset).

Linked orders are the backtest broker's too (``engine/core/orders.py``):

* ``transmit=False`` stages an order at the gateway (IB shows it, nothing works) until an order of the same
  client with ``transmit=True`` sends it: a bracket's last child sends its parent and every staged sibling
  at once, so a half-built bracket never works.
* ``parentId`` makes a bracket: the children are held (PreSubmitted) until the parent is done, then work
  for the contracts the parent filled, as one OCA group (cancelled if it filled none).
* ``ocaGroup`` with ``ocaType`` 2 (the engine's :data:`~engine.core.orders.OCA_TYPE`): the leg reached first
  fills, every other leg is reduced by what it filled and cancelled once nothing is left; never two filled.
  Other ocaTypes are refused (201): the simulator models only the engine's.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from engine.adapters.ib.gateway_sim.listing import ListedFuture
from engine.adapters.ib.gateway_sim.requests import PlaceOrder
from engine.execution.simulated import BacktestExecutionHandler
from engine.core.instruments import EPOCH, InstrumentBook
from engine.core.orders import OCA_TYPE, Fill, Order, OrderStatus, OrderType, TimeInForce
from warehouse.sessions import trading_date

__all__ = ["Rejected", "SimOrder", "SimExecution", "SimPosition", "Book", "ORDER_TYPES", "TIFS"]

#: IB orderType -> engine order type (the five the engine trades)
ORDER_TYPES = {"MKT": OrderType.MARKET, "LMT": OrderType.LIMIT, "STP": OrderType.STOP,
               "STP LMT": OrderType.STOP_LIMIT, "MIT": OrderType.MIT}
TIFS = {t.value: t for t in TimeInForce}
#: order types IB holds in PreSubmitted until their trigger trades
_TRIGGERED = {"STP", "STP LMT", "MIT"}


class Rejected(Exception):
    """An order the gateway refuses: IB error ``code`` with ``text`` (201 is "Order rejected")."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


@dataclass(eq=False, slots=True)
class SimOrder:
    """An order at the simulated gateway, in IB's terms (quantities unsigned, ``action`` BUY/SELL)."""

    order_id: int
    client_id: int
    perm_id: int
    account: str
    future: ListedFuture
    request: PlaceOrder
    matching: Order
    status: str = "Submitted"
    filled: int = 0
    avg_fill_price: float = 0.0
    last_fill_price: float = 0.0
    completed_time: str = ""
    completed_status: str = ""

    @property
    def total_quantity(self) -> int:
        return abs(self.matching.quantity)

    @property
    def remaining(self) -> int:
        return self.total_quantity - self.filled

    @property
    def is_done(self) -> bool:
        return self.status in ("Filled", "Cancelled", "ApiCancelled", "Inactive")


@dataclass(frozen=True, slots=True)
class SimExecution:
    """One execution as execDetails and commissionReport describe it."""

    exec_id: str
    order: SimOrder
    time: datetime
    shares: int
    price: float
    cum_qty: int
    avg_price: float
    commission: float

    @property
    def side(self) -> str:
        return "BOT" if self.order.request.action == "BUY" else "SLD"


@dataclass(slots=True)
class SimPosition:
    """Net position of one account in one contract; ``avg_price`` in price units."""

    account: str
    future: ListedFuture
    quantity: int = 0
    avg_price: float = 0.0

    @property
    def avg_cost(self) -> float:
        """IB's futures avgCost: average price times multiplier."""
        return self.avg_price * self.future.multiplier

    def apply(self, signed: int, price: float) -> None:
        """Add a fill: average in when the position grows, keep the average when it shrinks, reset on a flip."""
        new = self.quantity + signed
        if self.quantity == 0 or (self.quantity > 0) == (signed > 0):
            self.avg_price = (self.avg_price * abs(self.quantity) + price * abs(signed)) / abs(new)
        elif new != 0 and (new > 0) != (self.quantity > 0):
            self.avg_price = price  # flipped through zero: the rest opened at this fill's price
        elif new == 0:
            self.avg_price = 0.0
        self.quantity = new


@dataclass(slots=True)
class BookEvents:
    """What one book operation changed, in the order the gateway reports it."""

    executions: list[SimExecution] = field(default_factory=list)
    updated: list[SimOrder] = field(default_factory=list)

    def touch(self, order: SimOrder) -> None:
        if order not in self.updated:
            self.updated.append(order)


class Book:
    """Orders, executions and positions of the simulated gateway.

    Parameters
    ----------
    participation : float or None
        Share of a bar's volume the orders of one contract may take (partial fills); None for no cap.
    commission_per_contract : float or None
        What commission reports charge per contract; None uses the fee table (``fees.csv``), like the backtest.
    instruments : InstrumentBook, optional
        The terms (fee table with a run's overrides) the matching and commissions use; default the tables'.
    """

    def __init__(self, *, participation: float | None = None, commission_per_contract: float | None = None,
                 instruments: InstrumentBook | None = None) -> None:
        self.matcher = BacktestExecutionHandler(instruments or InstrumentBook(), bar_ns=0, participation=participation)
        self.commission_per_contract = commission_per_contract
        self.orders: dict[tuple[int, int], SimOrder] = {}
        self._highest_id: dict[int, int] = {}  # client id -> the highest order id it has placed
        self.executions: list[SimExecution] = []
        self.positions: dict[tuple[str, int], SimPosition] = {}
        self._perm_ids = itertools.count(1_000_001)
        self._exec_seq = itertools.count(1)
        self.now = datetime.now(timezone.utc)
        self._by_perm: dict[int, SimOrder] = {}
        #: orders sent with ``transmit=False``, waiting for the order that transmits them
        self.staged: dict[tuple[int, int], SimOrder] = {}

    # -- orders -----------------------------------------------------------------------------------
    def place(self, request: PlaceOrder, client_id: int, account: str, future: ListedFuture) -> list[SimOrder]:
        """Accept a new order (validated here; the caller resolved contract and account).

        Returns the orders that started working now: none for a staged order (``transmit=False``), else the
        order with every staged order it transmits (a bracket's parent first, then its children).

        Raises
        ------
        Rejected
            Unsupported type, TIF or ocaType, missing prices, fractional or zero quantity, a bad goodTillDate,
            an order id not above every id this client used before (IB error 103), or a parentId that names no staged order.
        """
        highest = self._highest_id.get(client_id)
        if highest is not None and request.order_id <= highest:
            # IB takes a new order's id only above every id the client used before (a lower one is refused too)
            raise Rejected(103, f"Duplicate order id {request.order_id}")
        if request.oca_group and request.oca_type != OCA_TYPE:
            raise Rejected(201, f"Order rejected - reason:ocaType {request.oca_type} is not simulated "
                                f"(only {OCA_TYPE}: reduce the other legs, with block)")
        if request.parent_id and (client_id, request.parent_id) not in self.staged:
            raise Rejected(201, f"Order rejected - reason:parent order {request.parent_id} is not waiting for its "
                                "children (send the parent with transmit=False first)")
        matching = _matching_order(request, future)
        if request.oca_group and not request.parent_id:  # OCA names are per account at IB
            matching.oca_group = f"{account}|{request.oca_group}"
        staged = SimOrder(request.order_id, client_id, 0, account, future, request, matching, "PreSubmitted")
        self.staged[(client_id, request.order_id)] = staged
        self._highest_id[client_id] = request.order_id
        if not request.transmit:
            return []
        root = request.parent_id or request.order_id
        group = [o for key, o in self.staged.items()
                 if key[0] == client_id and (key[1] == root or o.request.parent_id == root)]
        for order in group:
            del self.staged[(client_id, order.order_id)]
        parent = next(o for o in group if o.order_id == root)
        children = [o for o in group if o is not parent]
        try:
            self._link(parent, children)
            for order in group:
                # The matcher numbers orders by permId: IB order ids repeat across clients, permIds do not.
                order.perm_id = order.matching.order_id = next(self._perm_ids)
            for child in children:
                child.matching.parent_id = parent.perm_id
            # Submitted "on" the current instant; the order may execute from the next pushed bar on.
            self.matcher.submit(parent.matching,
                                (future.local_symbol, 0, 0.0, 0.0, 0.0, 0.0, 0, self._trading_day(), None))
        except ValueError as exc:
            raise Rejected(201, f"Order rejected - reason:{exc}") from exc
        parent.matching.active_from = 0
        for order in group:
            if order is parent:
                order.status = "PreSubmitted" if order.request.order_type in _TRIGGERED else "Submitted"
            self.orders[(client_id, order.order_id)] = order
            self._by_perm[order.perm_id] = order
        return [parent, *children]

    @staticmethod
    def _link(parent: SimOrder, children: list[SimOrder]) -> None:
        """Make ``children`` the parent's bracket exits in the matcher (held until the parent is done)."""
        for child in children:
            if child.future.con_id != parent.future.con_id:
                raise ValueError("a bracket's children must trade the parent's contract")
            if (child.matching.quantity > 0) == (parent.matching.quantity > 0):
                raise ValueError("a bracket's children must trade the other side of the parent")
            child.matching.parent = parent.matching
        parent.matching.children = tuple(c.matching for c in children)

    def cancel(self, client_id: int, order_id: int) -> list[SimOrder]:
        """Cancel a working (or staged) order; returns it and every order the cancel ended with it (the held
        children of a bracket parent that filled nothing).

        Raises
        ------
        Rejected
            10147 unknown order id, 161 the order is already done.
        """
        staged = self.staged.pop((client_id, order_id), None)
        if staged is not None:
            self._close(staged, "Cancelled")
            return [staged]
        order = self.orders.get((client_id, order_id))
        if order is None:
            raise Rejected(10147, f"OrderId {order_id} that needs to be cancelled is not found.")
        if order.is_done:
            raise Rejected(161, f"Cancel attempted when order is not in a cancellable state. Order permId ={order.perm_id}")
        done_before = len(self.matcher.finished)
        self.matcher.cancel(order.matching, _ns(self.now), "cancelled by the client")
        events = BookEvents()
        self._settle(done_before, events)
        return events.updated

    def working(self, client_id: int | None = None) -> list[SimOrder]:
        """Orders still working (one client's, or all)."""
        return [o for o in self.orders.values() if not o.is_done and client_id in (None, o.client_id)]

    def completed(self) -> list[SimOrder]:
        """Orders that are done, in placement order."""
        return [o for o in self.orders.values() if o.is_done]

    # -- prices -----------------------------------------------------------------------------------
    def push_bar(self, future: ListedFuture, ts: datetime, open_: float, high: float, low: float, close: float,
                 volume: int) -> BookEvents:
        """Match the working orders of ``future`` against one bar opening at ``ts`` (tz-aware)."""
        self.now = ts
        events = BookEvents()
        done_before = len(self.matcher.finished)
        # sizes before the bar: OCA reductions and released bracket children change them without a fill
        sizes = {id(o): o.matching.quantity for o in self.working() if o.future.con_id == future.con_id}
        fills = self.matcher.on_bar(future.local_symbol, _ns(ts), open_, high, low, close, volume,
                                    self._trading_day(), future.local_symbol)
        for fill in fills:
            order = self._by_perm[fill.order_id]
            events.executions.append(self._execute(order, fill))
            events.touch(order)
        self._settle(done_before, events)
        for order in self.working():
            if order.future.con_id == future.con_id and sizes.get(id(order)) != order.matching.quantity:
                events.touch(order)
        for order in events.updated:
            if not order.is_done and order.status == "PreSubmitted" and (
                    order.filled or order.request.order_type not in _TRIGGERED):
                order.status = "Submitted"  # filling, or a released bracket child that needs no trigger
        return events

    def _settle(self, done_before: int, events: BookEvents) -> None:
        """Close the orders the matcher finished since ``done_before`` and release the children it released."""
        for matching in self.matcher.finished[done_before:]:
            order = self._by_perm[matching.order_id]
            self._close(order, "Filled" if matching.status is OrderStatus.FILLED else "Cancelled")
            events.touch(order)
            for child in matching.children:
                if not child.is_done:  # released: working now, for the contracts the parent filled
                    events.touch(self._by_perm[child.order_id])

    def _execute(self, order: SimOrder, fill: Fill) -> SimExecution:
        shares = abs(fill.quantity)
        order.avg_fill_price = (order.avg_fill_price * order.filled + fill.price * shares) / (order.filled + shares)
        order.filled += shares
        order.last_fill_price = fill.price
        per_contract = self.commission_per_contract
        commission = fill.commission if per_contract is None else per_contract * shares
        key = (order.account, order.future.con_id)
        position = self.positions.setdefault(key, SimPosition(order.account, order.future))
        position.apply(fill.quantity, fill.price)
        execution = SimExecution(
            exec_id=f"0000e0d5.{order.perm_id:08x}.{next(self._exec_seq):02d}.01",
            order=order, time=self.now, shares=shares, price=fill.price, cum_qty=order.filled,
            avg_price=order.avg_fill_price, commission=commission,
        )
        self.executions.append(execution)
        return execution

    def _close(self, order: SimOrder, status: str) -> None:
        order.status = status
        order.completed_time = self.now.strftime("%Y%m%d %H:%M:%S") + " UTC"
        order.completed_status = status

    def _trading_day(self) -> int:
        return (trading_date(self.now) - EPOCH).days

    def account_positions(self) -> Iterator[SimPosition]:
        """Every position ever held (flat ones too: IB reports a closed position as 0 for the session)."""
        return iter(self.positions.values())


def _ns(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1_000


def _matching_order(request: PlaceOrder, future: ListedFuture) -> Order:
    """The engine order the backtest matcher works for an IB request (signed quantity, engine enums)."""
    kind = ORDER_TYPES.get(request.order_type)
    if kind is None:
        raise Rejected(201, f"Order rejected - reason:order type {request.order_type!r} is not supported by the simulator")
    tif = TIFS.get(request.tif)
    if tif is None:
        raise Rejected(201, f"Order rejected - reason:time in force {request.tif!r} is not supported by the simulator")
    quantity = request.total_quantity
    if quantity <= 0 or not float(quantity).is_integer():
        raise Rejected(201, f"Order rejected - reason:quantity {quantity} is not a positive whole number of contracts")
    if request.action not in ("BUY", "SELL"):
        raise Rejected(201, f"Order rejected - reason:action {request.action!r} is not BUY or SELL")
    signed = int(quantity) if request.action == "BUY" else -int(quantity)
    # IB's price fields: lmtPrice is the limit, auxPrice the stop/trigger.
    limit = request.lmt_price if kind in (OrderType.LIMIT, OrderType.STOP_LIMIT) else None
    trigger = request.aux_price if kind in (OrderType.STOP, OrderType.STOP_LIMIT, OrderType.MIT) else None
    expire = _gtd_ns(request.good_till_date) if tif is TimeInForce.GTD else None
    try:
        return Order(future.local_symbol, signed, kind, limit_price=limit, stop_price=trigger, tif=tif,
                     expire_ts=expire, tag=request.order_ref)
    except ValueError as exc:
        raise Rejected(201, f"Order rejected - reason:{exc}") from exc


def _gtd_ns(text: str) -> int:
    """``goodTillDate`` as ns since the epoch: ``YYYYMMDD-HH:MM:SS`` (UTC) or ``YYYYMMDD HH:MM:SS <zone>``."""
    if not text:
        raise Rejected(201, "Order rejected - reason:a GTD order needs goodTillDate")
    try:
        if "-" in text[:9]:
            moment = datetime.strptime(text, "%Y%m%d-%H:%M:%S").replace(tzinfo=timezone.utc)
        else:
            day, clock, *zone = text.split(" ", 2)
            tz = ZoneInfo(zone[0]) if zone else timezone.utc
            moment = datetime.strptime(day + clock, "%Y%m%d%H:%M:%S").replace(tzinfo=tz)
    except (ValueError, ZoneInfoNotFoundError) as exc:
        raise Rejected(201, f"Order rejected - reason:goodTillDate {text!r} is not 'YYYYMMDD HH:MM:SS zone' "
                            "or 'YYYYMMDD-HH:MM:SS'") from exc
    return _ns(moment)
