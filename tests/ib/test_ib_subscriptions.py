"""Data subscriptions survive IB's data-lost notice (1101) and reconnects; 1102 keeps them as they are.

The simulator ends a session's bar subscriptions on 1101 (as IB does) and, of course, on a dropped socket;
a handler that did not ask again would receive no more bars.
"""

from __future__ import annotations

from datetime import timedelta

from engine.adapters.ib.gateway_sim import GatewaySim
from engine.adapters.ib.gateway_sim.protocol import In
from engine.adapters.ib.handler import IBExecutionHandler
from engine.adapters.ib.reconnect import ReconnectPolicy
from tests.ib.conftest import CLOCK, TODAY, run, until

FAST = ReconnectPolicy(initial_s=0.05, factor=2.0, max_s=0.2, jitter_s=0.02, halt_after_s=30.0, heartbeat_s=None,
                       seed=7)


def test_subscriptions_are_renewed_after_1101_and_reconnect_not_1102(ib_log) -> None:
    async def body() -> None:
        async with GatewaySim(today=TODAY, clock=CLOCK) as sim:
            for k in range(3):  # history: 15:00, 15:01, 15:02
                sim.push_bar("MESH6", CLOCK + timedelta(minutes=k), 5000.00 + k, 5000.50 + k, 4999.75 + k,
                             5000.25 + k, 10)
            handler = IBExecutionHandler("run1", "sma", {"MES": "202603"}, port=sim.port, client_id=11,
                                         reconnect=FAST)
            await handler.connect()
            seen: list[tuple[str, float]] = []
            try:
                history = await handler.subscribe_bars("MES", "1 min", "600 S")
                live = await handler.subscribe_realtime_bars("MES")
                for sub in (history, live):
                    sub.listeners.append(lambda s, new: seen.append((s.kind, s.bars[-1].close)))
                assert [b.close for b in history.bars] == [5000.25, 5001.25, 5002.25]

                def asked() -> tuple[int, int]:
                    return len(sim.requests_of(In.REQ_HISTORICAL_DATA)), len(sim.requests_of(In.REQ_REAL_TIME_BARS))

                async def bar_reaches_both(minute: int, close: float) -> None:
                    seen.clear()
                    sim.push_bar("MESH6", CLOCK + timedelta(minutes=minute), close, close, close, close, 1)
                    await until(lambda: sorted(seen) == [("history", close), ("realtime", close)],
                                what=f"the {close} bar through both subscriptions")

                # real-time bars have no acknowledgement: wait until the request reached the gateway
                await until(lambda: asked() == (1, 1), what="both requests at the gateway")
                await bar_reaches_both(3, 5003.00)

                sim.faults.notify(1102)  # restored, data maintained: nothing to do
                await until(lambda: handler.connection.connectivity == "restored", what="1102")
                await bar_reaches_both(4, 5004.00)
                assert asked() == (1, 1)

                sim.faults.notify(1101)  # restored, data lost: the gateway dropped both subscriptions
                await until(lambda: asked() == (2, 2) and handler.subscriptions.renewals == 1, what="renewal after 1101")
                await bar_reaches_both(5, 5005.00)

                sim.faults.drop_connections()
                await until(lambda: handler.connection.reconnects == 1 and asked() == (3, 3),
                            what="reconnect and renewal")
                assert handler.subscriptions.renewals == 2
                await bar_reaches_both(6, 5006.00)
                # the renewed history holds every bar up to now, the last one pushed last
                assert [b.close for b in history.bars][-4:] == [5003.00, 5004.00, 5005.00, 5006.00]
                assert (history.requests, live.requests) == (3, 3)
                # each session holds exactly the two live subscriptions (the old ones were cancelled or dropped)
                [session] = sim.sessions.values()
                assert sorted(kind for kind, *_ in session.subscriptions.values()) == ["history", "realtime"]
            finally:
                handler.disconnect()
    run(body)
