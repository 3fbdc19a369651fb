"""Orders and fills: the vocabulary shared by strategies, the risk manager and every execution handler.

Quantities are signed whole contracts (``+`` buys, ``-`` sells); prices are raw contract prices in the
contract's quote units; timestamps are integer nanoseconds since the Unix epoch (UTC) inside the engine
and ``TIMESTAMPTZ`` in the run ledger.

Linked orders
-------------
* **One-cancels-other (OCO) groups**: orders sharing an ``oca_group`` name (same symbol, same absolute
  quantity) are mutually exclusive. Within a bar the simulated broker walks one intrabar path for all legs;
  the leg reached first trades and every other leg is reduced by the contracts it filled (cancelled, detail
  ``"OCO sibling filled"``, once nothing remains). This is Interactive Brokers' ``ocaType = 2`` ("remaining
  orders are proportionately reduced in size, with block"): with equal leg sizes proportional reduction is
  reduction by the filled amount, and "block" (overfill protection) is what makes a double fill impossible.
  IB mapping: ``oca_group`` -> ``Order.ocaGroup``, :data:`OCA_TYPE` -> ``Order.ocaType``. Cancelling one leg
  cancels only that leg (the IB handler must check the broker does the same before relying on it).
* **Brackets**: an entry (the parent) with a take-profit and/or a stop-loss (its children) on the other side.
  Children are held (not working) until the entry is done; they then work for the contracts the entry filled,
  as one OCO group. IB mapping: ``parent_id`` -> ``Order.parentId`` (the entry's IB order id); the entry and
  the first child are sent with ``transmit=False`` and the last child with ``transmit=True``, so the broker
  receives the bracket atomically; the children's group maps to ``ocaGroup`` as above.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

__all__ = ["OrderType", "TimeInForce", "OrderStatus", "Order", "Fill", "market", "limit", "stop", "stop_limit", "mit",
           "oco", "bracket", "OCA_TYPE"]

#: The IB ``ocaType`` the simulated broker emulates for OCO groups and bracket children: 2 = "remaining orders
#: are proportionately reduced in size with block" (no overfill; see the module docstring).
OCA_TYPE = 2


class OrderType(str, Enum):
    """How an order becomes executable.

    MARKET      at the next executable price.
    LIMIT       at ``limit_price`` or better.
    STOP        becomes a market order once the price trades at or through ``stop_price``
                (buy: price >= stop, sell: price <= stop).
    STOP_LIMIT  becomes a limit order at ``limit_price`` once ``stop_price`` trades.
    MIT         market-if-touched: becomes a market order once the price touches ``stop_price`` from the
                favourable side (buy: price <= trigger, sell: price >= trigger).
    """

    MARKET = "MARKET"
    LIMIT = "LIMIT"
    STOP = "STOP"
    STOP_LIMIT = "STOP_LIMIT"
    MIT = "MIT"


class TimeInForce(str, Enum):
    """How long an order works.

    DAY  until the end of the CME trading date (session) it was submitted in.
    GTC  until filled or cancelled.
    IOC  fill what can be filled on the first executable bar, cancel the rest.
    FOK  fill the whole quantity on the first executable bar or cancel all of it.
    GTD  until ``expire_ts`` (exclusive).
    """

    DAY = "DAY"
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"
    GTD = "GTD"


class OrderStatus(str, Enum):
    """Life cycle of an order; the last four are final."""

    OPEN = "OPEN"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"
    DENIED = "DENIED"


FINAL_STATUSES = frozenset({OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.EXPIRED, OrderStatus.DENIED})


@dataclass(eq=False, slots=True)
class Order:
    """An order for one symbol.

    Attributes
    ----------
    symbol : str
        The continuous symbol (root) as it appears in the query, e.g. ``ES``; the engine trades the
        bar's front contract.
    quantity : int
        Signed whole contracts: positive buys, negative sells. Never zero.
    order_type : OrderType
    limit_price, stop_price : float or None
        ``limit_price`` for LIMIT and STOP_LIMIT; ``stop_price`` is the trigger of STOP, STOP_LIMIT and MIT.
    tif : TimeInForce
    expire_ts : int or None
        GTD expiry, ns since epoch (UTC), exclusive.
    tag : str
        Free text carried into the ledger (e.g. the signal that produced the order).
    oca_group : str or None
        One-cancels-other group name (IB ``ocaGroup``); None for an independent order. Bracket children get
        ``"bracket:<entry order_id>"`` from the engine.
    parent_id : int or None
        ``order_id`` of the bracket entry this order belongs to (IB ``parentId``); set by the engine.
    parent : Order or None
        The bracket entry itself (set by :func:`bracket`); a child is held until its parent is done.
    children : tuple of Order
        A bracket entry's take-profit and stop-loss orders (set by :func:`bracket`).
    """

    symbol: str
    quantity: int
    order_type: OrderType = OrderType.MARKET
    limit_price: float | None = None
    stop_price: float | None = None
    tif: TimeInForce = TimeInForce.GTC
    expire_ts: int | None = None
    tag: str = ""
    oca_group: str | None = None
    # references, not shown in repr (a parent's repr would print its children, which print their parent ...)
    parent: Order | None = field(default=None, repr=False)
    children: tuple[Order, ...] = field(default=(), repr=False)
    # -- filled in by the engine -----------------------------------------------------------------
    order_id: int = -1
    parent_id: int | None = None
    ts_submitted: int = 0
    #: earliest bar open time (ns) at which the order may execute (submission + latency)
    active_from: int = 0
    trading_date: int = 0
    status: OrderStatus = OrderStatus.OPEN
    filled: int = 0
    fill_value: float = 0.0  # sum of |qty| * price, for the average fill price
    ts_done: int | None = None
    origin: str = "strategy"
    detail: str = ""
    triggered: bool = False  # STOP_LIMIT: the stop has traded, the order now works as a limit
    fill_at_close: bool = False  # signal-close convention for a MARKET order
    #: signal-close order on another symbol whose bar at the decision time (this ts, ns) was not seen yet:
    #: it fills at that bar's close when it arrives, or at the next bar's open if the symbol has none then
    close_pending_ts: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.quantity, int) or isinstance(self.quantity, bool) or self.quantity == 0:
            raise ValueError(f"order quantity must be a non-zero whole number of contracts, not {self.quantity!r}")
        self.order_type = OrderType(self.order_type)
        self.tif = TimeInForce(self.tif)
        needs_limit = self.order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT)
        needs_stop = self.order_type in (OrderType.STOP, OrderType.STOP_LIMIT, OrderType.MIT)
        if needs_limit and self.limit_price is None:
            raise ValueError(f"{self.order_type.value} order needs limit_price")
        if needs_stop and self.stop_price is None:
            raise ValueError(f"{self.order_type.value} order needs stop_price")
        if self.tif is TimeInForce.GTD and self.expire_ts is None:
            raise ValueError("GTD order needs expire_ts")

    @property
    def remaining(self) -> int:
        """Signed contracts still to fill."""
        return self.quantity - self.filled

    @property
    def is_done(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def avg_fill_price(self) -> float | None:
        return self.fill_value / abs(self.filled) if self.filled else None


@dataclass(slots=True)
class Fill:
    """One execution (a reversal is split by the portfolio into a closing and an opening fill).

    ``price`` includes slippage; ``reference_price`` is the price before slippage; ``slippage`` is the adverse
    cost in currency, ``|quantity| * |price - reference_price| * multiplier``; ``commission`` is the per-side
    fee times ``|quantity|``.
    """

    order_id: int
    ts: int
    symbol: str
    contract: str | None
    quantity: int
    price: float
    reference_price: float
    multiplier: float
    commission: float
    slippage: float
    kind: str = "order"
    trading_date: int = 0
    realized_pnl: float = 0.0
    position_after: int = 0
    trade_id: int = -1
    fill_id: int = -1


def market(symbol: str, quantity: int, tif: TimeInForce | str = TimeInForce.GTC, tag: str = "") -> Order:
    """A market order."""
    return Order(symbol, quantity, OrderType.MARKET, tif=TimeInForce(tif), tag=tag)


def limit(symbol: str, quantity: int, price: float, tif: TimeInForce | str = TimeInForce.GTC, tag: str = "",
          expire_ts: int | None = None) -> Order:
    """A limit order at ``price`` or better."""
    return Order(symbol, quantity, OrderType.LIMIT, limit_price=price, tif=TimeInForce(tif), tag=tag, expire_ts=expire_ts)


def stop(symbol: str, quantity: int, trigger: float, tif: TimeInForce | str = TimeInForce.GTC, tag: str = "",
         expire_ts: int | None = None) -> Order:
    """A stop (market) order triggered at ``trigger``."""
    return Order(symbol, quantity, OrderType.STOP, stop_price=trigger, tif=TimeInForce(tif), tag=tag, expire_ts=expire_ts)


def stop_limit(symbol: str, quantity: int, trigger: float, price: float, tif: TimeInForce | str = TimeInForce.GTC,
               tag: str = "", expire_ts: int | None = None) -> Order:
    """A stop-limit order: triggered at ``trigger``, then a limit at ``price``."""
    return Order(symbol, quantity, OrderType.STOP_LIMIT, limit_price=price, stop_price=trigger, tif=TimeInForce(tif),
                 tag=tag, expire_ts=expire_ts)


def mit(symbol: str, quantity: int, trigger: float, tif: TimeInForce | str = TimeInForce.GTC, tag: str = "",
        expire_ts: int | None = None) -> Order:
    """A market-if-touched order triggered at ``trigger``."""
    return Order(symbol, quantity, OrderType.MIT, stop_price=trigger, tif=TimeInForce(tif), tag=tag, expire_ts=expire_ts)


def oco(*legs: Order, group: str) -> list[Order]:
    """Put ``legs`` in one one-cancels-other group named ``group`` and return them (submit them all).

    The legs must trade one symbol with one absolute quantity (a partial fill of one leg then reduces every
    other leg by the same number of contracts, IB ``ocaType`` 2, see the module docstring). The name is the
    strategy's: a leg submitted later under a name whose legs still work joins that group (as on IB).

    Examples
    --------
    Exits of a long 2: ``oco(limit("ES", -2, 4010.0), stop("ES", -2, 3990.0), group="exit-1")``.
    """
    if len(legs) < 2:
        raise ValueError("an OCO group needs at least two orders")
    if len({leg.symbol for leg in legs}) != 1 or len({abs(leg.quantity) for leg in legs}) != 1:
        raise ValueError("OCO legs must trade one symbol with one absolute quantity, not "
                         + ", ".join(f"{leg.symbol} {leg.quantity:+d}" for leg in legs))
    if any(leg.parent is not None or leg.children for leg in legs):
        raise ValueError("bracket orders carry their own OCO group; they cannot join another")
    for leg in legs:
        leg.oca_group = group
    return list(legs)


def bracket(symbol: str, quantity: int, *, entry: float | None = None, take_profit: float | None = None,
            stop_loss: float | None = None, entry_stop: float | None = None, tif: TimeInForce | str = TimeInForce.GTC,
            exit_tif: TimeInForce | str = TimeInForce.GTC, tag: str = "", expire_ts: int | None = None) -> list[Order]:
    """An entry with a take-profit limit and a stop-loss stop on the other side: ``[entry, take_profit, stop_loss]``.

    Submit the entry (or return the whole list from ``on_bar``): the engine numbers and risk-checks the entry
    and registers the children with it. The children are exits, never risk-checked as added exposure: they are
    held until the entry is done (filled, or cancelled/expired after a partial fill) and then work, as one OCO
    group, for the contracts the entry filled; an entry that ends with nothing filled cancels them.

    Parameters
    ----------
    symbol : str
    quantity : int
        Signed contracts of the entry (+ buys); the children trade the opposite side.
    entry : float, optional
        Entry limit price; None for a market entry (a STOP entry with ``entry_stop`` alone, a STOP_LIMIT
        with both).
    take_profit, stop_loss : float, optional
        Limit price of the take-profit and trigger of the stop-loss (at least one); a long's take-profit
        must be above its stop-loss, a short's below.
    entry_stop : float, optional
        Trigger of a stop (or stop-limit) entry.
    tif : TimeInForce
        Time in force of the entry (``expire_ts`` for GTD).
    exit_tif : TimeInForce
        Time in force of the children (GTC by default: an exit that expires leaves the position unprotected;
        a DAY exit expires with the trading date the bracket was submitted in).
    """
    if take_profit is None and stop_loss is None:
        raise ValueError("a bracket needs a take_profit or a stop_loss")
    sign = 1 if quantity > 0 else -1
    if take_profit is not None and stop_loss is not None and (take_profit - stop_loss) * sign <= 0:
        side = "above" if sign > 0 else "below"
        raise ValueError(f"take_profit {take_profit} must be {side} stop_loss {stop_loss} for a {quantity:+d} entry")
    if entry_stop is not None:
        kind = OrderType.STOP_LIMIT if entry is not None else OrderType.STOP
    else:
        kind = OrderType.LIMIT if entry is not None else OrderType.MARKET
    parent = Order(symbol, quantity, kind, limit_price=entry, stop_price=entry_stop, tif=TimeInForce(tif), tag=tag,
                   expire_ts=expire_ts)
    children = []
    if take_profit is not None:
        children.append(Order(symbol, -quantity, OrderType.LIMIT, limit_price=take_profit, tif=TimeInForce(exit_tif),
                              tag=tag, parent=parent))
    if stop_loss is not None:
        children.append(Order(symbol, -quantity, OrderType.STOP, stop_price=stop_loss, tif=TimeInForce(exit_tif),
                              tag=tag, parent=parent))
    parent.children = tuple(children)
    return [parent, *children]
