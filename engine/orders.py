"""Orders and fills: the vocabulary shared by strategies, the risk manager and every execution handler.

Quantities are signed whole contracts (``+`` buys, ``-`` sells); prices are raw contract prices in the
contract's quote units; timestamps are integer nanoseconds since the Unix epoch (UTC) inside the engine
and ``TIMESTAMPTZ`` in the run ledger.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = ["OrderType", "TimeInForce", "OrderStatus", "Order", "Fill", "market", "limit", "stop", "stop_limit", "mit"]


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
    """

    symbol: str
    quantity: int
    order_type: OrderType = OrderType.MARKET
    limit_price: float | None = None
    stop_price: float | None = None
    tif: TimeInForce = TimeInForce.GTC
    expire_ts: int | None = None
    tag: str = ""
    # -- filled in by the engine -----------------------------------------------------------------
    order_id: int = -1
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
