"""The kill switch at the broker, checked against the simulator's own books; rejected orders become DENIED.

MES March 2026 (multiplier 5); bars O 5000.25 / H 5001.00 / L 4999.50 / C 5000.75.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from ib_async import IB, Future, LimitOrder

from engine.adapters.ib.gateway_sim import GatewaySim
from engine.adapters.ib.handler import IBExecutionHandler
from engine.adapters.ib.safety import SafetyError
from engine.core.instruments import InstrumentBook
from engine.core.orders import OrderStatus, limit, market, stop
from engine.risk import RiskLimits, RiskManager, RiskState
from tests.ib.conftest import CLOCK, TODAY, run, until

BAR = (5000.25, 5001.00, 4999.50, 5000.75)


def _numbered(order, number: int):
    order.order_id = number
    return order


async def _manual_order(sim: GatewaySim) -> IB:
    """Another client (a person in TWS, say) with a working order on the same account."""
    manual = IB()
    await manual.connectAsync("127.0.0.1", sim.port, clientId=99, timeout=5)
    [mes] = await manual.qualifyContractsAsync(Future("MES", "202603", "CME"))
    manual.placeOrder(mes, LimitOrder("SELL", 1, 5050.00, tif="GTC"))
    return manual


@pytest.mark.parametrize("all_clients", [False, True])
def test_kill_switch_cancels_flattens_and_refuses_until_reset(all_clients: bool, ib_log) -> None:
    async def body() -> None:
        async with GatewaySim(today=TODAY, clock=CLOCK, commission_per_contract=0.85) as sim:
            manual = await _manual_order(sim)
            risk = RiskManager(RiskLimits.off(), InstrumentBook())
            handler = IBExecutionHandler("run1", "sma", {"MES": "202603"}, port=sim.port, client_id=11, risk=risk)
            await handler.connect()
            try:
                handler.submit(_numbered(market("MES", 2), 1), None)
                await until(lambda: len(sim.placed) == 2, what="entry order")
                sim.push_bar("MESH6", CLOCK + timedelta(minutes=1), *BAR)  # long 2 at 5000.25
                await until(lambda: len(handler.records) == 1, what="entry fill")
                handler.submit(_numbered(limit("MES", 1, 4990.00), 2), None)
                handler.submit(_numbered(stop("MES", -2, 4980.00), 3), None)
                await until(lambda: len(sim.book.working()) == 3, what="working orders")

                [flatten] = await handler.kill(all_clients=all_clients)
                # the run's risk manager halts too: the strategy's orders stop before the handler
                assert (risk.state, risk.reason) == (RiskState.HALTED, "KILL_SWITCH (IB handler)")
                with pytest.raises(SafetyError, match=r"trading is halted \(KILL_SWITCH\)"):
                    handler.submit(_numbered(market("MES", 1), 4), None)
                sim.push_bar("MESH6", CLOCK + timedelta(minutes=2), *BAR)  # the flattening SELL 2 fills at the open
                await until(flatten.isDone, what="flattening fill")
                await until(lambda: len(handler.records) == 2, what="flattening commission")
                handler.reset()
                handler.submit(_numbered(limit("MES", 1, 4900.00), 5), None)
                await until(lambda: len(sim.placed) == 6, what="order after reset")
            finally:
                handler.disconnect()
                manual.disconnect()
            # The gateway's own state: this client's earlier orders cancelled, the account flat.
            by_ref = {o.request.order_ref: o.status for o in sim.placed}
            assert by_ref["run1/sma/2"] == by_ref["run1/sma/3"] == "Cancelled"
            assert by_ref["run1/sma/kill-1"] == "Filled"
            [position] = sim.book.account_positions()
            assert position.quantity == 0  # +2 then -2
            manual_status = next(o.status for o in sim.placed if o.client_id == 99)
            assert manual_status == ("Cancelled" if all_clients else "Submitted")  # global cancel reaches it
            flat = handler.records[1]
            assert (flat.order_ref, flat.fill.quantity, flat.fill.price, flat.fill.commission) == (
                "run1/sma/kill-1", -2, 5000.25, 1.70)  # 2 x 0.85
    run(body)


def test_a_rejected_order_becomes_denied(ib_log) -> None:
    async def body() -> None:
        async with GatewaySim(today=TODAY, clock=CLOCK) as sim:
            handler = IBExecutionHandler("run1", "sma", {"MES": "202603"}, port=sim.port, client_id=11)
            await handler.connect()
            try:
                sim.faults.reject_next(201, "Order rejected - reason:margin")
                order = _numbered(market("MES", 1), 1)
                handler.submit(order, None)
                await until(lambda: order.is_done, what="rejection")
            finally:
                handler.disconnect()
            assert order.status is OrderStatus.DENIED and "margin" in order.detail
            assert sim.placed == []
    run(body)
