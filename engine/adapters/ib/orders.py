"""Engine orders as ib_async orders, and the contracts they trade.

IB's price fields: ``lmtPrice`` is the limit (LMT, STP LMT); ``auxPrice`` is the stop or trigger (STP,
STP LMT, MIT). Quantities are unsigned with ``action`` BUY/SELL. GTD expiries go out in IB's UTC form
``YYYYMMDD-HH:MM:SS``. Every order carries the account it must trade and a deterministic ``orderRef``.

Linked orders: an engine OCO group (``Order.oca_group``; a bracket's exits are ``bracket:<entry id>``) goes
out as ``ocaGroup`` = :func:`oca_name` (``run/strategy/group``: IB's group names are shared by every client
of the account, so the run and strategy keep them apart) with ``ocaType`` = the engine's
:data:`~engine.core.orders.OCA_TYPE`. The bracket's ``parentId`` and ``transmit`` flags are the handler's (they
need IB order ids).
"""

from __future__ import annotations

from datetime import datetime, timezone

from ib_async import Contract, Future
from ib_async import Order as IBOrder

from engine.core.orders import OCA_TYPE, Order, OrderType
from warehouse.contracts import load_specs
from warehouse.errors import ConfigError

__all__ = ["IB_ORDER_TYPES", "order_ref", "oca_name", "to_ib_order", "future_for"]

IB_ORDER_TYPES = {OrderType.MARKET: "MKT", OrderType.LIMIT: "LMT", OrderType.STOP: "STP",
                  OrderType.STOP_LIMIT: "STP LMT", OrderType.MIT: "MIT"}


def order_ref(run_id: str, strategy: str, sequence: int | str) -> str:
    """The deterministic ``orderRef`` ``run/strategy/sequence``: the same order gets the same key after a restart."""
    return f"{run_id}/{strategy}/{sequence}"


def oca_name(run_id: str, strategy: str, group: str) -> str:
    """The IB ``ocaGroup`` of an engine OCO group: ``run/strategy/group`` (unique on the account)."""
    return f"{run_id}/{strategy}/{group}"


def to_ib_order(order: Order, account: str, ref: str, oca_group: str | None = None) -> IBOrder:
    """The ib_async order for an engine order (signed quantity -> action + size).

    ``oca_group`` (from :func:`oca_name`) puts it in that IB OCA group with ``ocaType`` :data:`OCA_TYPE`.
    """
    ib = IBOrder(
        action="BUY" if order.quantity > 0 else "SELL",
        totalQuantity=abs(order.quantity),
        orderType=IB_ORDER_TYPES[order.order_type],
        tif=order.tif.value,
        account=account,
        orderRef=ref,
    )
    if order.order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT):
        ib.lmtPrice = order.limit_price
    if order.order_type in (OrderType.STOP, OrderType.STOP_LIMIT, OrderType.MIT):
        ib.auxPrice = order.stop_price
    if order.expire_ts is not None:
        moment = datetime.fromtimestamp(order.expire_ts / 1e9, timezone.utc)
        ib.goodTillDate = moment.strftime("%Y%m%d-%H:%M:%S")
    if oca_group is not None:
        ib.ocaGroup, ib.ocaType = oca_group, OCA_TYPE
    return ib


def future_for(root: str, contract: str) -> Contract:
    """The IB future to qualify for a contracts-table root.

    Parameters
    ----------
    root : str
        A root of ``contracts.csv`` (``MES``); its IB exchange and currency come from the table.
    contract : str
        ``YYYYMM`` (contract month), ``YYYYMMDD`` (last trading day) or an exchange local symbol (``MESH6``).
    """
    spec = load_specs().get(root)
    if spec is None:
        raise ConfigError(f"{root!r} is not a root of the contracts table ({', '.join(load_specs())})")
    if contract.isdigit():
        return Future(symbol=root, lastTradeDateOrContractMonth=contract, exchange=spec.ib_exchange,
                      currency=spec.currency)
    return Future(symbol=root, localSymbol=contract, exchange=spec.ib_exchange, currency=spec.currency)
