"""Staying connected: reconnect with backoff after drops, halt when away too long, 326, notices, heartbeat.

Backoff in these tests is tens of milliseconds so that each test ends in seconds.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from ib_async import IB

from engine.adapters.ib.connection import TEMPORARY_ID_OFFSET
from engine.adapters.ib.gateway_sim import GatewaySim
from engine.adapters.ib.gateway_sim.protocol import In
from engine.adapters.ib.handler import IBExecutionHandler
from engine.adapters.ib.reconnect import HALT_DISCONNECTED, ReconnectPolicy
from engine.adapters.ib.safety import SafetyError
from engine.core.orders import OrderStatus, limit
from tests.ib.conftest import CLOCK, TODAY, run, until

BAR = (5000.25, 5001.00, 4999.50, 5000.75)
FAST = ReconnectPolicy(initial_s=0.05, factor=2.0, max_s=0.2, jitter_s=0.02, halt_after_s=30.0, heartbeat_s=None,
                       seed=7)


def _handler(sim: GatewaySim, policy: ReconnectPolicy = FAST, client_id: int = 11) -> IBExecutionHandler:
    return IBExecutionHandler("run1", "sma", {"MES": "202603"}, port=sim.port, client_id=client_id, reconnect=policy)


def _numbered(order, number: int):
    order.order_id = number
    return order


def test_backoff_is_capped_exponential_with_jitter() -> None:
    policy = ReconnectPolicy(initial_s=1.0, factor=2.0, max_s=8.0, jitter_s=0.5, seed=3)
    delays = [d for d, _ in zip(policy.delays(), range(6))]
    # 1, 2, 4, 8, 8, 8 seconds, each plus a jitter in [0, 0.5)
    for delay, base in zip(delays, [1, 2, 4, 8, 8, 8]):
        assert base <= delay < base + 0.5
    assert delays == [d for d, _ in zip(policy.delays(), range(6))]  # seeded: reproducible


def test_reconnects_after_a_drop_and_books_the_fill_made_while_away(ib_log) -> None:
    async def body() -> None:
        async with GatewaySim(today=TODAY, clock=CLOCK, commission_per_contract=0.85) as sim:
            handler = _handler(sim)
            restored: list[str] = []
            handler.connection.on_restored.append(restored.append)
            await handler.connect()
            try:
                handler.submit(_numbered(limit("MES", 1, 4999.75), 1), None)
                working = _numbered(limit("MES", 1, 4990.00), 2)
                handler.submit(working, None)
                await until(lambda: len(sim.placed) == 2, what="orders at the gateway")
                sim.faults.drop_connections()
                sim.push_bar("MESH6", CLOCK + timedelta(minutes=1), *BAR)  # order 1 fills while the client is away
                await until(lambda: handler.connection.reconnects == 1 and handler.account is not None,
                            what="reconnected")
                [fill] = handler.drain_fills()
                assert (fill.quantity, fill.price, fill.commission) == (1, 4999.75, 0.85)
                assert handler.reconciliation.recovered_fills == 1
                assert handler.reconciliation.working == ["run1/sma/2"]
                assert restored == ["reconnect"]
                assert handler.cancel(working, 0) is True  # the order is still ours after the reconnect
                await until(lambda: working.status is OrderStatus.CANCELLED, what="cancel")
            finally:
                handler.disconnect()
            assert len(sim.requests_of(In.PLACE_ORDER)) == 2  # nothing re-sent
    run(body)


def test_halts_when_away_too_long_and_stays_halted_until_reset(ib_log) -> None:
    policy = ReconnectPolicy(initial_s=0.05, factor=1.0, max_s=0.05, jitter_s=0.0, halt_after_s=0.3, heartbeat_s=None)

    async def body() -> None:
        async with GatewaySim(today=TODAY, clock=CLOCK) as sim:
            handler = _handler(sim, policy)
            await handler.connect()
            try:
                await sim.stop()  # nobody listens any more
                await until(lambda: handler.halted, timeout=3.0, what="halt")
                assert handler.halt_reason == HALT_DISCONNECTED
                await sim.start()  # same port, books kept
                await until(lambda: handler.connection.reconnects == 1 and handler.account is not None,
                            timeout=3.0, what="reconnected")
                with pytest.raises(SafetyError, match=r"halted \(DISCONNECTED\)"):
                    handler.submit(_numbered(limit("MES", 1, 4990.00), 1), None)
                handler.reset()
                handler.submit(_numbered(limit("MES", 1, 4990.00), 1), None)
                await until(lambda: len(sim.placed) == 1, what="order after reset")
            finally:
                handler.disconnect()
    run(body)


def test_client_id_in_use_falls_back_to_a_temporary_id(ib_log) -> None:
    async def body() -> None:
        async with GatewaySim(today=TODAY, clock=CLOCK) as sim:
            stale = IB()  # e.g. the previous process, still holding client id 11
            await stale.connectAsync("127.0.0.1", sim.port, clientId=11, timeout=5)
            handler = _handler(sim)
            loop = asyncio.get_running_loop()
            started = loop.time()
            await handler.connect(timeout=5)
            try:
                assert loop.time() - started < 3.0  # 326 noticed, not waited out
                assert handler.connection.active_client_id == 11 + TEMPORARY_ID_OFFSET
                handler.submit(_numbered(limit("MES", 1, 4990.00), 1), None)
                await until(lambda: len(sim.placed) == 1, what="order")
            finally:
                handler.disconnect()
                stale.disconnect()
            assert sim.placed[0].client_id == 1011
    run(body)


def test_connectivity_notices_and_restored_hooks(ib_log) -> None:
    async def body() -> None:
        async with GatewaySim(today=TODAY, clock=CLOCK) as sim:
            handler = _handler(sim)
            restored: list[str] = []
            handler.connection.on_restored.append(restored.append)
            await handler.connect()
            try:
                sim.faults.notify(1100)
                await until(lambda: handler.connection.connectivity == "lost", what="1100")
                sim.faults.notify(1101)
                await until(lambda: handler.connection.connectivity == "restored, data lost", what="1101")
                sim.faults.notify(1102)
                await until(lambda: handler.connection.connectivity == "restored", what="1102")
            finally:
                handler.disconnect()
            assert restored == ["1101", "1102"]  # re-subscribe market data after each
    run(body)


def test_heartbeat_notices_a_silent_socket_and_reconnects(ib_log) -> None:
    policy = ReconnectPolicy(initial_s=0.05, factor=1.0, max_s=0.05, jitter_s=0.0, halt_after_s=30.0, heartbeat_s=0.2)

    async def body() -> None:
        async with GatewaySim(today=TODAY, clock=CLOCK) as sim:
            handler = _handler(sim, policy)
            await handler.connect()
            try:
                assert sim.faults.freeze() == 1  # the socket stays open, nothing answers
                await until(lambda: handler.connection.reconnects == 1 and handler.account is not None,
                            timeout=5.0, what="heartbeat reconnect")
                assert not handler.halted
            finally:
                handler.disconnect()
    run(body)
