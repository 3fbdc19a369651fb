"""Step 3: orders at the gateway simulator, end to end with the real ib_async client.

Every test uses MES March 2026 (MESH6, multiplier 5, tick 0.25) and, unless it says otherwise, the bar
O 5000.25 / H 5001.00 / L 4999.50 / C 5000.75 pushed after the order arrived. The simulator matches with the
backtest broker's rules (engine/execution/simulated.py): path O -> H -> L -> C.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

import pytest
from ib_async import IB, ExecutionFilter, Future, LimitOrder, MarketOrder, Order, StopLimitOrder, StopOrder

from engine.adapters.ib.gateway_sim import GatewaySim
from tests.ib.conftest import CLOCK, TODAY, run, until

BAR = (5000.25, 5001.00, 4999.50, 5000.75)
COMMISSION = 0.62  # per contract, set on the simulator so that it differs from the fee table


def _order(kind: str, action: str, qty: int) -> Order:
    """BUY orders that all execute on BAR (and SELL mirrors that do not matter here)."""
    if kind == "MKT":
        return MarketOrder(action, qty)
    if kind == "LMT":
        return LimitOrder(action, qty, 4999.75)
    if kind == "STP":
        return StopOrder(action, qty, 5000.75)
    if kind == "STP LMT":
        return StopLimitOrder(action, qty, 5001.00, 5000.75)
    return Order(action=action, totalQuantity=qty, orderType="MIT", auxPrice=4999.75)


# Hand-worked fill prices on BAR for BUY 2:
#   MKT      the open                                                    5000.25
#   LMT      4999.75: open 5000.25 is above it, the low 4999.50 reaches it   4999.75
#   STP      5000.75: rising O 5000.25 -> H 5001.00 crosses it                5000.75
#   STP LMT  stop 5000.75 triggers on O -> H; limit 5001.00, the path from the
#            trigger (5000.75) is already at or below the limit              5000.75
#   MIT      4999.75 (buy below): falling H 5001.00 -> L 4999.50 touches it   4999.75
EXPECTED = {"MKT": 5000.25, "LMT": 4999.75, "STP": 5000.75, "STP LMT": 5000.75, "MIT": 4999.75}


async def _client(sim: GatewaySim, client_id: int = 31, errors: list[int] | None = None) -> IB:
    """A connected ib_async client; ``errors`` collects the codes of the errors the gateway sends it."""
    ib = IB()
    await ib.connectAsync("127.0.0.1", sim.port, clientId=client_id, timeout=5, raiseSyncErrors=True)
    if errors is not None:
        ib.errorEvent += lambda req_id, code, text, contract: errors.append(code)
    return ib


async def _mes(ib: IB) -> Future:
    [mes] = await ib.qualifyContractsAsync(Future("MES", "202603", "CME"))
    return mes


@contextlib.asynccontextmanager
async def _trading(sim: GatewaySim, client_id: int = 31, errors: list[int] | None = None):  # noqa: ANN202
    """A connected client (:func:`_client`) and the MES contract it qualified; disconnected at the end."""
    ib = await _client(sim, client_id, errors)
    try:
        yield ib, await _mes(ib)
    finally:
        ib.disconnect()


@pytest.mark.parametrize("tif", ["DAY", "GTC", "IOC", "FOK", "GTD"])
@pytest.mark.parametrize("kind", ["MKT", "LMT", "STP", "STP LMT", "MIT"])
def test_every_type_and_tif_fills_with_commission_and_position(kind: str, tif: str, ib_log) -> None:
    async def body() -> None:
        async with GatewaySim(today=TODAY, clock=CLOCK, commission_per_contract=COMMISSION) as sim:
            async with _trading(sim) as (ib, mes):
                order = _order(kind, "BUY", 2)
                order.tif = tif
                order.orderRef = f"run1/sma/{kind}-{tif}"
                if tif == "GTD":
                    order.goodTillDate = "20260302-21:00:00"  # UTC form; the bar at 15:00:01 is before it
                reports = []
                ib.commissionReportEvent += lambda trade, fill, report: reports.append(report)
                trade = ib.placeOrder(mes, order)
                await until(lambda: trade.orderStatus.status in ("Submitted", "PreSubmitted"), what="ack")
                sim.push_bar("MESH6", CLOCK + timedelta(minutes=1), *BAR)
                await until(lambda: trade.isDone() and len(reports) == 1, what="fill and commission")
            price = EXPECTED[kind]
            assert trade.orderStatus.status == "Filled"
            assert (trade.orderStatus.filled, trade.orderStatus.remaining) == (2, 0)
            assert trade.orderStatus.avgFillPrice == price
            [fill] = trade.fills
            assert (fill.execution.shares, fill.execution.price, fill.execution.side) == (2, price, "BOT")
            assert fill.execution.orderRef == f"run1/sma/{kind}-{tif}"  # orderRef round-trips
            assert fill.execution.acctNumber == "DU1234567"
            assert fill.commissionReport.commission == pytest.approx(2 * COMMISSION)  # 2 x 0.62 = 1.24
            # the simulator's own books agree
            [position] = sim.book.account_positions()
            assert (position.quantity, position.avg_price, position.avg_cost) == (2, price, price * 5)
    run(body)


def test_partial_fills_by_volume_participation(ib_log) -> None:
    async def body() -> None:
        async with GatewaySim(today=TODAY, clock=CLOCK, participation=0.5, commission_per_contract=COMMISSION) as sim:
            async with _trading(sim) as (ib, mes):
                trade = ib.placeOrder(mes, LimitOrder("SELL", 3, 5000.50, tif="GTC", orderRef="run1/s/1"))
                await until(lambda: trade.orderStatus.status == "Submitted", what="ack")
                # SELL limit 5000.50: the open 5000.25 is below it, H 5001.00 reaches it -> fills at 5000.50,
                # but only floor(0.5 x volume 4) = 2 contracts this bar
                sim.push_bar("MESH6", CLOCK + timedelta(minutes=1), *BAR, volume=4)
                await until(lambda: trade.orderStatus.filled == 2, what="first partial")
                assert (trade.orderStatus.status, trade.orderStatus.remaining) == ("Submitted", 1)
                # next bar opens at 5000.50 = the limit: the last contract fills at the open, 5000.50
                sim.push_bar("MESH6", CLOCK + timedelta(minutes=2), 5000.50, 5000.75, 5000.25, 5000.50, volume=4)
                await until(trade.isDone, what="second fill")
                await until(lambda: all(f.commissionReport.execId for f in trade.fills), what="commissions")
                positions = await ib.reqPositionsAsync()
            assert trade.orderStatus.status == "Filled" and trade.orderStatus.avgFillPrice == 5000.50
            assert [f.execution.shares for f in trade.fills] == [2, 1]
            assert [f.execution.cumQty for f in trade.fills] == [2, 3]
            assert [f.commissionReport.commission for f in trade.fills] == pytest.approx([1.24, 0.62])
            [position] = positions
            assert (position.position, position.avgCost) == (-3, 5000.50 * 5)  # avgCost = price x multiplier
    run(body)


def test_ioc_fills_what_it_can_fok_all_or_nothing(ib_log) -> None:
    async def body() -> None:
        async with GatewaySim(today=TODAY, clock=CLOCK, participation=0.5) as sim:
            async with _trading(sim) as (ib, mes):
                ioc = ib.placeOrder(mes, MarketOrder("BUY", 3, tif="IOC"))
                await until(lambda: ioc.orderStatus.status == "Submitted", what="ack")
                sim.push_bar("MESH6", CLOCK + timedelta(minutes=1), *BAR, volume=4)  # capacity floor(0.5 x 4) = 2
                await until(ioc.isDone, what="IOC done")
                fok = ib.placeOrder(mes, MarketOrder("BUY", 3, tif="FOK"))
                await until(lambda: fok.orderStatus.status == "Submitted", what="ack")
                sim.push_bar("MESH6", CLOCK + timedelta(minutes=2), *BAR, volume=4)  # 2 < 3: nothing fills
                await until(fok.isDone, what="FOK done")
            assert (ioc.orderStatus.status, ioc.orderStatus.filled, ioc.orderStatus.remaining) == ("Cancelled", 2, 1)
            assert (fok.orderStatus.status, fok.orderStatus.filled) == ("Cancelled", 0)
            assert fok.fills == []
    run(body)


def test_day_and_gtd_expire_cancel_by_client(ib_log) -> None:
    async def body() -> None:
        async with GatewaySim(today=TODAY, clock=CLOCK) as sim:
            async with _trading(sim) as (ib, mes):
                day = ib.placeOrder(mes, LimitOrder("BUY", 1, 4990.00, tif="DAY"))
                gtd = ib.placeOrder(mes, LimitOrder("BUY", 1, 4990.00, tif="GTD",
                                                    goodTillDate="20260302 11:00:00 US/Eastern"))  # 16:00 UTC
                gtc = ib.placeOrder(mes, LimitOrder("BUY", 1, 4990.00, tif="GTC"))
                await until(lambda: gtc.orderStatus.status == "Submitted", what="acks")
                sim.push_bar("MESH6", CLOCK + timedelta(minutes=1), *BAR)  # 15:01 UTC: nothing reaches 4990
                sim.push_bar("MESH6", CLOCK + timedelta(hours=1), *BAR)  # 16:00 UTC: GTD (exclusive) expires
                await until(gtd.isDone, what="GTD expiry")
                assert not day.isDone()
                # 23:00 UTC = 18:00 ET: the CME trading date becomes 2026-03-03, the DAY order expires
                sim.push_bar("MESH6", CLOCK + timedelta(hours=8), *BAR)
                await until(day.isDone, what="DAY expiry")
                ib.cancelOrder(gtc.order)
                await until(lambda: gtc.orderStatus.status == "Cancelled", what="cancel")
            assert [t.orderStatus.status for t in (day, gtd, gtc)] == ["Cancelled"] * 3
            assert sim.book.working() == []
    run(body)


def test_rejections_reach_the_client_as_errors(ib_log) -> None:
    errors: list[int] = []

    async def body() -> None:
        async with GatewaySim(today=TODAY, clock=CLOCK) as sim:
            async with _trading(sim, errors=errors) as (ib, mes):
                trail = ib.placeOrder(mes, Order(action="BUY", totalQuantity=1, orderType="TRAIL", auxPrice=5))
                other = ib.placeOrder(mes, MarketOrder("BUY", 1, account="DU7654321"))  # not managed here
                await until(lambda: trail.isDone() and other.isDone(), what="rejections")
            assert errors == [201, 201]
            assert sim.placed == []
    run(body)


def test_an_order_id_not_above_every_id_the_client_used_is_refused_with_103(ib_log) -> None:
    """IB takes a new order's id only above every id the client used before: a lower one is error 103 (a
    handler that numbers a batch's orders out of order is refused here as at IB)."""
    errors: list[int] = []

    async def body() -> None:
        async with GatewaySim(today=TODAY, clock=CLOCK) as sim:
            async with _trading(sim, errors=errors) as (ib, mes):
                first = ib.client.getReqId()
                later = ib.placeOrder(mes, MarketOrder("BUY", 1, orderId=first + 1))
                lower = ib.placeOrder(mes, MarketOrder("BUY", 1, orderId=first))  # a free id, below one used
                await until(lambda: lower.isDone() and later.orderStatus.status == "Submitted",
                            what="the lower id refused")
            assert errors == [103]
            assert [o.request.order_id for o in sim.placed] == [first + 1]
    run(body)


def test_executions_completed_orders_and_positions_from_the_books_after_reconnect(ib_log) -> None:
    async def body() -> None:
        async with GatewaySim(today=TODAY, clock=CLOCK, commission_per_contract=COMMISSION) as sim:
            async with _trading(sim, client_id=41) as (ib, mes):
                buy = ib.placeOrder(mes, MarketOrder("BUY", 2, orderRef="run7/trend/1"))
                rest = ib.placeOrder(mes, LimitOrder("SELL", 1, 5010.00, tif="GTC", orderRef="run7/trend/2"))
                await until(lambda: rest.orderStatus.status == "Submitted", what="acks")
                sim.push_bar("MESH6", CLOCK + timedelta(minutes=1), *BAR)
                await until(buy.isDone, what="fill")
            # A new client session with the same client id rebuilds its state from the gateway.
            again = await _client(sim, client_id=41)
            try:
                completed = await again.reqCompletedOrdersAsync(apiOnly=True)
                fills = await again.reqExecutionsAsync(ExecutionFilter(symbol="MES"))
                open_refs = [t.order.orderRef for t in again.openTrades()]
                positions = again.positions()
                # ib_async keeps the commission on the first Fill object it saw for an execId (the startup
                # reqExecutions), not on the copies a later reqExecutions returns.
                commissions = [f.commissionReport.commission for f in again.fills()]
                next_id = again.client.getReqId()
            finally:
                again.disconnect()
        assert open_refs == ["run7/trend/2"]
        assert [(t.order.orderRef, t.orderStatus.status) for t in completed] == [("run7/trend/1", "Filled")]
        assert [(f.execution.orderRef, f.execution.shares, f.execution.price) for f in fills] == [
            ("run7/trend/1", 2, 5000.25)]
        assert commissions == pytest.approx([1.24])  # 2 x 0.62
        assert [(p.account, p.contract.localSymbol, p.position, p.avgCost) for p in positions] == [
            ("DU1234567", "MESH6", 2.0, 5000.25 * 5)]
        assert next_id > max(buy.order.orderId, rest.order.orderId)  # ids never reused after a reconnect
    run(body)
