"""Step 1: the real ib_async client completes connectAsync against the gateway simulator."""

from __future__ import annotations

import time

from ib_async import IB

from engine.adapters.ib.gateway_sim import GatewaySim
from engine.adapters.ib.gateway_sim.protocol import In
from tests.ib.conftest import CLOCK, TODAY, run


def test_connect_completes_with_every_startup_request_answered(ib_log) -> None:
    async def body() -> None:
        async with GatewaySim(["DU1234567"], today=TODAY, clock=CLOCK, first_order_id=7) as sim:
            ib = IB()
            started = time.perf_counter()
            await ib.connectAsync("127.0.0.1", sim.port, clientId=11, timeout=5, raiseSyncErrors=True)
            elapsed = time.perf_counter() - started
            try:
                assert ib.isConnected()
                assert ib.client.serverVersion() == 178  # min(ib_async's max 178, our cap 178)
                assert ib.managedAccounts() == ["DU1234567"]
                assert ib.client.getReqId() >= 7  # nextValidId seeded the request/order id counter
                assert ib.positions() == [] and ib.openTrades() == [] and ib.fills() == []
                values = {v.tag: v.value for v in ib.accountValues() if v.currency == "USD"}
                assert values["NetLiquidation"] == "1000000.00"
                # every startup request arrived: positions, open orders, completed orders, account updates,
                # account updates multi, executions
                kinds = {int(f[0]) for f in sim.received}
                assert {In.START_API, In.REQ_POSITIONS, In.REQ_OPEN_ORDERS, In.REQ_COMPLETED_ORDERS,
                        In.REQ_ACCOUNT_UPDATES, In.REQ_ACCOUNT_UPDATES_MULTI, In.REQ_EXECUTIONS} <= kinds
                assert elapsed < 2.0, f"connectAsync took {elapsed:.2f}s: some startup request was not answered"
            finally:
                ib.disconnect()
    run(body)
    assert ib_log.errors("ib_async.ib") == []  # no "... request timed out"


def test_several_accounts_and_duplicate_client_id(ib_log) -> None:
    async def body() -> None:
        async with GatewaySim(["DU1111111", "DU2222222"], today=TODAY, clock=CLOCK) as sim:
            first, second = IB(), IB()
            await first.connectAsync("127.0.0.1", sim.port, clientId=3, timeout=5, raiseSyncErrors=True)
            try:
                assert first.managedAccounts() == ["DU1111111", "DU2222222"]
                summary = await first.accountSummaryAsync()
                assert {(v.account, v.tag, v.value) for v in summary if v.tag == "NetLiquidation"} == {
                    ("DU1111111", "NetLiquidation", "1000000.00"), ("DU2222222", "NetLiquidation", "1000000.00")}
                # IB refuses a second connection with a client id in use (error 326) and closes the socket.
                try:
                    await second.connectAsync("127.0.0.1", sim.port, clientId=3, timeout=1)
                except (ConnectionError, TimeoutError):
                    pass
                else:  # pragma: no cover - a gateway that accepts it is wrong
                    raise AssertionError("a duplicate client id was accepted")
                assert not second.isConnected()
                assert first.isConnected()
            finally:
                first.disconnect()
                second.disconnect()
    run(body)
