"""Step 5: the order journal and reconciliation on reconnect: no order is ever sent twice, no fill is lost.

MES March 2026 (multiplier 5); the simulator charges 0.85 per contract.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from ib_async import IB, Future, LimitOrder, MarketOrder

from engine.adapters.ib.gateway_sim import GatewaySim
from engine.adapters.ib.gateway_sim.protocol import In
from engine.adapters.ib.handler import IBExecutionHandler
from engine.adapters.ib.journal import JournalEntry, OrderJournal
from engine.adapters.ib.safety import SafetyError
from engine.core.orders import OrderStatus, limit
from tests.ib.conftest import CLOCK, TODAY, run, until
from warehouse import Warehouse

BAR = (5000.25, 5001.00, 4999.50, 5000.75)


def _handler(sim: GatewaySim, journal: OrderJournal, client_id: int = 11) -> IBExecutionHandler:
    return IBExecutionHandler("run1", "sma", {"MES": "202603"}, port=sim.port, client_id=client_id, journal=journal)


def _numbered(order, number: int):
    order.order_id = number
    return order


def test_fill_during_a_gateway_restart_is_recovered_and_nothing_is_sent_twice(tmp_path: Path, ib_log) -> None:
    journal = OrderJournal(tmp_path)

    async def body() -> None:
        async with GatewaySim(today=TODAY, clock=CLOCK, commission_per_contract=0.85) as sim:
            first = _handler(sim, journal)
            await first.connect()
            first.submit(_numbered(limit("MES", 1, 4999.75), 1), None)
            first.submit(_numbered(limit("MES", 1, 4990.00), 2), None)
            await until(lambda: len(sim.placed) == 2, what="orders at the gateway")
            await sim.faults.restart()  # the nightly restart: every client dropped, the books kept
            await until(lambda: not first.ib.isConnected(), what="the client noticed")
            # While nobody is connected, order 1 fills: the low 4999.50 reaches the limit 4999.75.
            sim.push_bar("MESH6", CLOCK + timedelta(minutes=1), *BAR)
            second = _handler(sim, journal)  # a restarted process: only the journal is left
            await second.connect()
            try:
                found = second.reconciliation
                assert found.working == ["run1/sma/2"]
                assert found.done == {"run1/sma/1": "Filled"}
                assert (found.recovered_fills, found.missing, found.external) == (1, [], [])
                [fill] = second.drain_fills()
                assert (fill.quantity, fill.price, fill.commission, fill.contract) == (1, 4999.75, 0.85, "MESH6")
                for number in (1, 2):  # whatever the strategy asks again, the journal says it was sent
                    with pytest.raises(SafetyError, match=f"run1/sma/{number} was already sent"):
                        second.submit(_numbered(limit("MES", 1, 4999.75), number), None)
                [adopted] = second.working_orders()
                assert (adopted.order_id, adopted.limit_price) == (2, 4990.00)
                assert second.cancel(adopted, 0) is True
                await until(lambda: adopted.status is OrderStatus.CANCELLED, what="adopted order cancelled")
            finally:
                second.disconnect()
            assert [f[26] for f in sim.requests_of(In.PLACE_ORDER)] == ["run1/sma/1", "run1/sma/2"]  # once each
            assert sim.book.working() == []
    run(body)


def test_the_journal_is_written_before_the_order_is_sent(tmp_path: Path, ib_log) -> None:
    class Broken(OrderJournal):
        def append(self, entries):  # noqa: ANN001, ANN202 - a disk that fails
            raise OSError("disk full")

    async def body() -> None:
        async with GatewaySim(today=TODAY, clock=CLOCK) as sim:
            broken = _handler(sim, Broken(tmp_path))
            await broken.connect()
            try:
                with pytest.raises(OSError, match="disk full"):
                    broken.submit(_numbered(limit("MES", 1, 4990.00), 1), None)
                good = OrderJournal(tmp_path)
                working = _handler(sim, good, client_id=12)
                await working.connect()
                working.submit(_numbered(limit("MES", -2, 5010.00), 7), None)
                await until(lambda: len(sim.placed) == 1, what="the journaled order at the gateway")
                working.disconnect()
            finally:
                broken.disconnect()
            assert sim.requests_of(In.PLACE_ORDER)[0][26] == "run1/sma/7"  # the failed one never left
    run(body)
    wh = Warehouse(tmp_path)
    try:
        rows = wh.sql("SELECT order_ref, account, contract, quantity, order_type, limit_price FROM order_journal")
    finally:
        wh.close()
    assert rows.to_pylist() == [{"order_ref": "run1/sma/7", "account": "******567", "contract": "MESH6",
                                 "quantity": -2, "order_type": "LIMIT", "limit_price": 5010.0}]


def test_missing_and_external_orders_are_reported_not_touched(tmp_path: Path, ib_log) -> None:
    journal = OrderJournal(tmp_path)
    # A crash between the journal write and the send: journaled, never at IB.
    journal.append([JournalEntry("run1/sma/9", "run1", "sma", "******567", "MESH6",
                                 _numbered(limit("MES", 1, 4980.00), 9))])

    async def body() -> None:
        async with GatewaySim(today=TODAY, clock=CLOCK) as sim:
            manual = IB()  # an order placed by hand (another client, no orderRef)
            await manual.connectAsync("127.0.0.1", sim.port, clientId=99, timeout=5)
            [mes] = await manual.qualifyContractsAsync(Future("MES", "202603", "CME"))
            manual.placeOrder(mes, LimitOrder("SELL", 1, 5050.00, tif="GTC"))
            manual.placeOrder(mes, LimitOrder("BUY", 1, 4950.00, tif="GTC"))
            # ... and a position held by hand in a contract the strategy does not trade (June, not March)
            [june] = await manual.qualifyContractsAsync(Future("MES", "202606", "CME"))
            manual.placeOrder(june, MarketOrder("BUY", 3))
            await until(lambda: len(sim.placed) == 3, what="the manual orders")
            sim.push_bar("MESM6", CLOCK + timedelta(minutes=1), 5050.00, 5050.00, 5050.00, 5050.00)
            await until(lambda: sim.placed[2].status == "Filled", what="the manual position")
            handler = _handler(sim, journal)
            await handler.connect()
            try:
                found = handler.reconciliation
                with pytest.raises(SafetyError, match="run1/sma/9 was already sent"):
                    handler.submit(_numbered(limit("MES", 1, 4980.00), 9), None)
            finally:
                handler.disconnect()
                manual.disconnect()
            assert found.missing == ["run1/sma/9"]
            working = [o for o in sim.placed if o.status == "Submitted"]
            assert found.external == [f"permId {o.perm_id}" for o in working]  # both, though neither has a ref
            assert [o.status for o in sim.placed] == ["Submitted", "Submitted", "Filled"]  # left alone
            assert (found.positions, found.external_positions) == ({"MESM6": 3}, {"MESM6": 3})
            assert len(sim.requests_of(In.PLACE_ORDER)) == 3
    run(body)
