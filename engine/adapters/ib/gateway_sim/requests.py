"""Client -> server requests the simulator understands, parsed from their fields.

Field positions are those ib_async 2.1.0 writes (``client.py``); a request with no version field says so.
The 12 contract fields of a request are ``conId, symbol, secType, lastTradeDateOrContractMonth, strike,
right, multiplier, exchange, primaryExchange, currency, localSymbol, tradingClass``.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.adapters.ib.gateway_sim.listing import ContractQuery

__all__ = ["PlaceOrder", "contract_at", "parse_place_order", "number"]


def number(text: str) -> float | None:
    """A price field: empty (unset) -> None."""
    return float(text) if text not in ("", "1.7976931348623157E308", "1.7976931348623157e+308") else None


def contract_at(fields: list[str], start: int) -> ContractQuery:
    """The 12 contract fields beginning at ``fields[start]``."""
    f = fields[start:start + 12]
    return ContractQuery(
        con_id=int(f[0] or 0), symbol=f[1], sec_type=f[2], last_trade=f[3], multiplier=f[6], exchange=f[7],
        currency=f[9], local_symbol=f[10], trading_class=f[11],
    )


@dataclass(frozen=True, slots=True)
class PlaceOrder:
    """The fields of a placeOrder request the simulator acts on."""

    order_id: int
    contract: ContractQuery
    action: str
    total_quantity: float
    order_type: str
    lmt_price: float | None
    aux_price: float | None
    tif: str
    oca_group: str
    account: str
    order_ref: str
    transmit: bool
    parent_id: int
    outside_rth: bool
    good_after_time: str
    good_till_date: str
    oca_type: int


def parse_place_order(fields: list[str], server_version: int) -> PlaceOrder:
    """Parse placeOrder (id 3, no version field).

    0-based positions: orderId 1, contract 2-13, action 16, totalQuantity 17, orderType 18, lmtPrice 19,
    auxPrice 20, tif 21, ocaGroup 22, account 23, orderRef 26, transmit 27, parentId 28, outsideRth 33,
    goodAfterTime 37, goodTillDate 38; then faGroup, faMethod, faPercentage, [faProfile below 177], modelCode,
    shortSaleSlot, designatedLocation, exemptCode, ocaType. (Futures are never BAG contracts, so no combo
    legs shift these.)
    """
    oca_type_at = 46 if server_version >= 177 else 47
    return PlaceOrder(
        order_id=int(fields[1]),
        contract=contract_at(fields, 2),
        action=fields[16],
        total_quantity=float(fields[17] or 0),
        order_type=fields[18],
        lmt_price=number(fields[19]),
        aux_price=number(fields[20]),
        tif=fields[21] or "DAY",
        oca_group=fields[22],
        account=fields[23],
        order_ref=fields[26],
        transmit=fields[27] != "0",
        parent_id=int(fields[28] or 0),
        outside_rth=fields[33] == "1",
        good_after_time=fields[37],
        good_till_date=fields[38],
        oca_type=int(fields[oca_type_at] or 0) if len(fields) > oca_type_at else 0,
    )
