"""Server -> client messages, field for field as ib_async 2.1.0's ``decoder.py`` reads them at server version 157-178.

Each function returns one framed message. Unused order attributes go out empty (ib_async turns an empty
number into the attribute's default); counts (combo legs, conditions, ...) go out as ``0``, because the
decoder converts them with ``int()``. Messages whose decoder unpacks a fixed number of fields
(``position``, ``updatePortfolio``, ``commissionReport``) must have exactly that many.
"""

from __future__ import annotations

from engine.adapters.ib.gateway_sim.bars import Bar
from engine.adapters.ib.gateway_sim.book import SimExecution, SimOrder, SimPosition
from engine.adapters.ib.gateway_sim.listing import ListedFuture
from engine.adapters.ib.gateway_sim.protocol import Out, frame, ib_time

__all__ = [
    "managed_accounts", "next_valid_id", "error", "contract_details", "contract_details_end", "order_status",
    "open_order", "open_order_end", "completed_order", "completed_orders_end", "exec_details", "exec_details_end",
    "commission_report", "position", "position_end", "account_value", "portfolio_value", "account_time",
    "account_download_end", "account_update_multi", "account_update_multi_end", "current_time",
    "historical_data", "historical_data_update", "realtime_bar", "account_summary", "account_summary_end",
]

_NO_REQUEST = -1
#: IB's time zone ids per exchange (CME Group's Chicago venues vs the New York ones)
_ZONES = {"CME": "US/Central", "CBOT": "US/Central", "NYMEX": "US/Eastern", "COMEX": "US/Eastern"}
_ORDER_TYPES = "ACTIVETIM,ADJUST,ALERT,ALLOC,AVGCOST,BASKET,DAY,DEACT,DEACTDIS,DEACTEOD,GAT,GTC,GTD,GTT,HID,IOC,LIT,LMT,MIT,MKT,NONALGO,OCA,SCALE,SCALERST,STP,STPLMT,TRAIL,TRAILLIT,TRAILLMT,TRAILMIT,WHATIF"


def _c11(f: ListedFuture) -> tuple[object, ...]:
    """The 11 contract fields of openOrder, execDetails and position (no primaryExchange)."""
    return (f.con_id, f.root, "FUT", f.last_trade_date, "", "", f.multiplier, f.exchange, f.currency,
            f.local_symbol, f.root)


def managed_accounts(accounts: list[str]) -> bytes:
    return frame(Out.MANAGED_ACCTS, 1, ",".join(accounts))


def next_valid_id(order_id: int) -> bytes:
    return frame(Out.NEXT_VALID_ID, 1, order_id)


def error(req_id: int, code: int, text: str) -> bytes:
    """``4, 2, reqId, code, text, advancedOrderRejectJson`` (server versions 166-193)."""
    return frame(Out.ERR_MSG, 2, req_id, code, text, "")


def current_time(epoch: int) -> bytes:
    return frame(Out.CURRENT_TIME, 1, epoch)


# -- contracts ------------------------------------------------------------------------------------


def contract_details(req_id: int, f: ListedFuture) -> bytes:
    """contractDetails without a version field (sv >= 164)."""
    return frame(
        Out.CONTRACT_DATA, req_id, f.root, "FUT", f.last_trade_date, "", "", f.exchange, f.currency,
        f.local_symbol, f.root, f.root, f.con_id, f.spec.tick_size, f.multiplier, _ORDER_TYPES, f.exchange,
        1, 0, f.spec.description, "", f.contract_month, "", "", "", _ZONES[f.exchange], "", "", "", "",
        0,  # secIdList count
        0, f.root, "IND", "", f.last_trade_date, "", 1, 1, 1,  # aggGroup .. suggestedSizeIncrement
    )


def contract_details_end(req_id: int) -> bytes:
    return frame(Out.CONTRACT_DATA_END, 1, req_id)


# -- orders ---------------------------------------------------------------------------------------


def order_status(o: SimOrder) -> bytes:
    """orderStatus without a version field (sv >= 131)."""
    return frame(Out.ORDER_STATUS, o.order_id, o.status, o.filled, o.remaining, o.avg_fill_price, o.perm_id,
                 o.request.parent_id, o.last_fill_price, o.client_id, "", "")


def _head(o: SimOrder) -> tuple[object, ...]:
    r = o.request
    return (r.action, o.total_quantity, r.order_type, r.lmt_price, r.aux_price, r.tif, r.oca_group, o.account,
            "", 0, r.order_ref)


def open_order(o: SimOrder, server_version: int) -> bytes:
    """openOrder without a version field; the layout of ``Decoder.openOrder`` for sv 157-178."""
    r = o.request
    fields: list[object] = [
        Out.OPEN_ORDER, o.order_id, *_c11(o.future), *_head(o), o.client_id, o.perm_id, r.outside_rth, False,
        "", r.good_after_time, "", "", "", "",  # discretionaryAmt, goodAfterTime, sharesAllocation, fa x3
    ]
    if server_version < 177:
        fields.append("")  # faProfile
    fields += [
        "", r.good_till_date, "", "", "", 0, "", "",  # modelCode .. exemptCode
        0, "", "", "", "", "",  # auctionStrategy, startingPrice, stockRefPrice, delta, stockRange x2
        0, False, False, False, "", r.oca_type, False, False, "",  # displaySize .. nbboPriceCap
        r.parent_id, 0, "", 0, "", "",  # parentId, triggerMethod, volatility, volatilityType, deltaNeutral x2
        False, 0, "", "", "", "", "",  # continuousUpdate .. comboLegsDescrip
        0, 0, 0,  # comboLegs, orderComboLegs, smartComboRoutingParams
        "", "", "",  # scaleInitLevelSize, scaleSubsLevelSize, scalePriceIncrement
        "",  # hedgeType
        False, "", "", False, 0,  # optOutSmartRouting, clearingAccount, clearingIntent, notHeld, deltaNeutral
        "",  # algoStrategy
        False, False, o.status, "", "", "", "", "", "", "", "", "", "", "", "", "", "", False, False,
        0,  # conditions
        "", "", "", "", "", "", "", 0, "", "", "", "", False, False, "", False,  # adjustedOrderType .. usePriceMgmtAlgo
        "", False, False,  # duration, postToAts, autoCancelParent
        "", "", "", "", "",  # minTradeQty .. midOffsetAtHalf
    ]
    return frame(*fields)


def open_order_end() -> bytes:
    return frame(Out.OPEN_ORDER_END, 1)


def completed_order(o: SimOrder, server_version: int) -> bytes:
    """completedOrder (no orderId, no clientId); the layout of ``Decoder.completedOrder``."""
    r = o.request
    fields: list[object] = [
        Out.COMPLETED_ORDER, *_c11(o.future), *_head(o), o.perm_id, r.outside_rth, False, "", r.good_after_time,
        "", "", "",
    ]
    if server_version < 177:
        fields.append("")
    fields += [
        "", r.good_till_date, "", "", "", 0, "", "",  # modelCode .. exemptCode
        "", "", "", "", "", 0, False, False, "", r.oca_type, 0, "", 0, "", "",  # startingPrice .. deltaNeutral x2
        False, 0, "", "", "",  # continuousUpdate .. comboLegsDescrip
        0, 0, 0,
        "", "", "",
        "",  # hedgeType
        "", "", False, 0,  # clearingAccount, clearingIntent, notHeld, deltaNeutral
        "",  # algoStrategy
        False, o.status, False, False,  # solicited, status, randomizeSize, randomizePrice
        0,  # conditions
        "", "", "", False, False, "", o.filled, 0, False, "", False, False, 0,  # trailStopPrice .. parentPermId
        o.completed_time, o.completed_status,
        "", "", "", "", "",
    ]
    return frame(*fields)


def completed_orders_end() -> bytes:
    return frame(Out.COMPLETED_ORDERS_END)


# -- executions -----------------------------------------------------------------------------------


def exec_details(req_id: int, e: SimExecution, server_version: int) -> bytes:
    """execDetails; ``req_id`` -1 for a live fill, the request's id when answering reqExecutions."""
    o = e.order
    fields: list[object] = [
        Out.EXECUTION_DATA, req_id, o.order_id, *_c11(o.future), e.exec_id, ib_time(e.time), o.account,
        o.future.exchange, e.side, e.shares, e.price, o.perm_id, o.client_id, 0, e.cum_qty, e.avg_price,
        o.request.order_ref, "", "", "", 0,
    ]
    if server_version >= 178:
        fields.append(False)  # pendingPriceRevision
    return frame(*fields)


def exec_details_end(req_id: int) -> bytes:
    return frame(Out.EXECUTION_DATA_END, 1, req_id)


def commission_report(e: SimExecution) -> bytes:
    """``59, 1, execId, commission, currency, realizedPNL, yield, yieldRedemptionDate`` (exactly 8 fields)."""
    return frame(Out.COMMISSION_REPORT, 1, e.exec_id, e.commission, e.order.future.currency, "", "", "")


def live_fill(e: SimExecution, server_version: int) -> bytes:
    """A live execution as a real gateway reports it: execDetails(-1), then the commission report follows."""
    return exec_details(_NO_REQUEST, e, server_version)


# -- positions and account ------------------------------------------------------------------------


def position(p: SimPosition) -> bytes:
    """``61, 3, account, C11, position, avgCost`` (exactly 16 fields)."""
    return frame(Out.POSITION_DATA, 3, p.account, *_c11(p.future), p.quantity, p.avg_cost)


def position_end() -> bytes:
    return frame(Out.POSITION_END, 1)


def account_value(key: str, value: str, currency: str, account: str) -> bytes:
    return frame(Out.ACCT_VALUE, 2, key, value, currency, account)


def portfolio_value(p: SimPosition, market_price: float) -> bytes:
    """updatePortfolio (exactly 20 fields; its contract block has primaryExchange, not exchange)."""
    f = p.future
    value = p.quantity * market_price * f.multiplier
    unrealized = p.quantity * (market_price - p.avg_price) * f.multiplier
    return frame(Out.PORTFOLIO_VALUE, 8, f.con_id, f.root, "FUT", f.last_trade_date, "", "", f.multiplier, "",
                 f.currency, f.local_symbol, f.root, p.quantity, market_price, value, p.avg_cost, unrealized, 0.0,
                 p.account)


def account_time(hhmm: str) -> bytes:
    return frame(Out.ACCT_UPDATE_TIME, 1, hhmm)


def account_download_end(account: str) -> bytes:
    return frame(Out.ACCT_DOWNLOAD_END, 1, account)


def account_update_multi(req_id: int, account: str, key: str, value: str, currency: str) -> bytes:
    return frame(Out.ACCOUNT_UPDATE_MULTI, 1, req_id, account, "", key, value, currency)


def account_update_multi_end(req_id: int) -> bytes:
    return frame(Out.ACCOUNT_UPDATE_MULTI_END, 1, req_id)


def account_summary(req_id: int, account: str, tag: str, value: str, currency: str) -> bytes:
    return frame(Out.ACCOUNT_SUMMARY, 1, req_id, account, tag, value, currency)


def account_summary_end(req_id: int) -> bytes:
    return frame(Out.ACCOUNT_SUMMARY_END, 1, req_id)


# -- bars -----------------------------------------------------------------------------------------


def _bar_date(bar: Bar, size_s: int, format_date: int) -> str:
    """formatDate 2: epoch seconds; 1: ``YYYYMMDD`` for daily bars, else ``YYYYMMDD HH:MM:SS UTC``."""
    if format_date == 2:
        return str(int(bar.ts.timestamp()))
    return bar.ts.strftime("%Y%m%d") if size_s >= 86400 else ib_time(bar.ts)


def historical_data(req_id: int, start: str, end: str, bars: list[Bar], size_s: int, format_date: int) -> bytes:
    """``17, reqId, start, end, count, (date, open, high, low, close, volume, wap, barCount) x count``.

    One message carries every bar and ends the request (sv < 196 has no separate end message). The wap is
    the bar's (H + L + C) / 3, as no trades are simulated inside a bar.
    """
    fields: list[object] = [17, req_id, start, end, len(bars)]
    for b in bars:
        fields += [_bar_date(b, size_s, format_date), b.open, b.high, b.low, b.close, b.volume,
                   round((b.high + b.low + b.close) / 3, 10), 1]
    return frame(*fields)


def historical_data_update(req_id: int, bar: Bar, size_s: int, format_date: int) -> bytes:
    """keepUpToDate: ``90, reqId, barCount, date, open, close, high, low, wap, volume`` (note the order)."""
    return frame(90, req_id, 1, _bar_date(bar, size_s, format_date), bar.open, bar.close, bar.high, bar.low,
                 round((bar.high + bar.low + bar.close) / 3, 10), bar.volume)


def realtime_bar(req_id: int, bar: Bar) -> bytes:
    """``50, 3, reqId, time (epoch s, bar start), open, high, low, close, volume, wap, count``."""
    return frame(50, 3, req_id, int(bar.ts.timestamp()), bar.open, bar.high, bar.low, bar.close, bar.volume,
                 round((bar.high + bar.low + bar.close) / 3, 10), 1)
