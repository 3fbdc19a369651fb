"""Historical and real-time bars at the simulator, read by the real ib_async client.

Six one-minute MESH6 bars from 15:00 UTC (hand-picked values below). Five-minute buckets start at multiples
of 300 s since the epoch, so 15:00 opens one: bars 15:00-15:04 make the first, 15:05 the second.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

from ib_async import IB, Future

from engine.adapters.ib.gateway_sim import GatewaySim
from engine.adapters.ib.gateway_sim.protocol import In
from tests.ib.conftest import CLOCK, TODAY, run, until

MINUTES = [  # open, high, low, close, volume
    (5000.00, 5001.00, 4999.50, 5000.50, 10),
    (5000.50, 5002.00, 5000.25, 5001.75, 20),
    (5001.75, 5001.75, 4998.00, 4998.50, 30),
    (4998.50, 4999.00, 4997.25, 4998.75, 5),
    (4998.75, 5000.00, 4998.50, 4999.75, 15),
    (4999.75, 5000.25, 4999.00, 5000.00, 8),
]


async def _setup(sim: GatewaySim) -> tuple[IB, Future]:
    for k, bar in enumerate(MINUTES):
        sim.push_bar("MESH6", CLOCK + timedelta(minutes=k), *bar)
    ib = IB()
    await ib.connectAsync("127.0.0.1", sim.port, clientId=51, timeout=5, raiseSyncErrors=True)
    [mes] = await ib.qualifyContractsAsync(Future("MES", "202603", "CME"))
    return ib, mes


def test_historical_bars_as_stored_and_aggregated(ib_log) -> None:
    async def body() -> None:
        async with GatewaySim(today=TODAY, clock=CLOCK) as sim:
            ib, mes = await _setup(sim)
            try:
                minute = await ib.reqHistoricalDataAsync(mes, "", "3600 S", "1 min", "TRADES", False)
                five = await ib.reqHistoricalDataAsync(mes, "", "1 D", "5 mins", "TRADES", False, formatDate=2)
                before = await ib.reqHistoricalDataAsync(mes, "20260302 15:03:00 UTC", "120 S", "1 min", "TRADES",
                                                         False)
                bad = await ib.reqHistoricalDataAsync(mes, "", "1 D", "7 fortnights", "TRADES", False)
            finally:
                ib.disconnect()
        assert [(b.date, b.open, b.high, b.low, b.close, b.volume) for b in minute] == [
            (CLOCK + timedelta(minutes=k), *bar) for k, bar in enumerate(MINUTES)]
        # 15:00 bucket: O first 5000.00, H max 5002.00, L min 4997.25, C last 4999.75, V 10+20+30+5+15 = 80
        assert [(b.date, b.open, b.high, b.low, b.close, b.volume) for b in five] == [
            (CLOCK, 5000.00, 5002.00, 4997.25, 4999.75, 80),
            (CLOCK + timedelta(minutes=5), 4999.75, 5000.25, 4999.00, 5000.00, 8)]
        # [15:01, 15:03): the bars opening at 15:01 and 15:02
        assert [b.date.minute for b in before] == [1, 2]
        assert list(bad) == []  # error 162 ended the request
    run(body)
    [error] = ib_log.errors("ib_async.wrapper")
    assert "Error 162" in error and "bar size '7 fortnights'" in error


def test_real_time_bars_and_keep_up_to_date(ib_log) -> None:
    async def body() -> None:
        async with GatewaySim(today=TODAY, clock=CLOCK) as sim:
            ib, mes = await _setup(sim)
            try:
                live = ib.reqRealTimeBars(mes, 5, "TRADES", False)
                kept = await ib.reqHistoricalDataAsync(mes, "", "600 S", "1 min", "TRADES", False, keepUpToDate=True)
                assert len(kept) == 6
                sim.push_bar("MESH6", CLOCK + timedelta(minutes=6), 5000.00, 5000.75, 4999.75, 5000.50, 12)
                await until(lambda: len(live) == 1 and len(kept) == 7, what="bar updates")
                ib.cancelRealTimeBars(live)
            finally:
                ib.disconnect()
        bar = live[0]
        assert (bar.time, bar.open_, bar.high, bar.low, bar.close, bar.volume) == (
            datetime(2026, 3, 2, 15, 6, tzinfo=timezone.utc), 5000.00, 5000.75, 4999.75, 5000.50, 12)
        assert (kept[-1].open, kept[-1].close, kept[-1].volume) == (5000.00, 5000.50, 12)
    run(body)


def test_pacing_violation_and_slow_answers(ib_log) -> None:
    async def body() -> None:
        async with GatewaySim(today=TODAY, clock=CLOCK) as sim:
            ib, mes = await _setup(sim)
            errors: list[int] = []
            ib.errorEvent += lambda req_id, code, text, contract: errors.append(code)
            try:
                sim.faults.pace_next_history()
                paced = await ib.reqHistoricalDataAsync(mes, "", "3600 S", "1 min", "TRADES", False)
                sim.faults.slow(0.3)
                loop = asyncio.get_running_loop()
                started = loop.time()
                slow = await ib.reqHistoricalDataAsync(mes, "", "3600 S", "1 min", "TRADES", False)
                waited = loop.time() - started
                sim.faults.slow(0.0)
            finally:
                ib.disconnect()
            assert (list(paced), errors) == ([], [162])
            assert len(slow) == 6 and waited >= 0.3
    run(body)


def test_bars_of_several_contracts_stream_their_5_second_parts_interleaved(ib_log) -> None:
    """IB sends each 5-second interval of every subscription once it ended: a minute pushed for two contracts
    reaches the client as MES 0 s, MNQ 0 s, MES 5 s, MNQ 5 s, ..., not one contract's whole minute first."""
    async def body() -> None:
        async with GatewaySim(today=TODAY, clock=CLOCK) as sim:
            ib, mes = await _setup(sim)
            try:
                [mnq] = await ib.qualifyContractsAsync(Future("MNQ", "202603", "CME"))
                arrived: list[tuple[str, datetime]] = []
                for contract in (mes, mnq):
                    bars = ib.reqRealTimeBars(contract, 5, "TRADES", False)
                    bars.updateEvent += lambda bars, new, name=contract.localSymbol: arrived.append((name, bars[-1].time))
                await until(lambda: len(sim.requests_of(In.REQ_REAL_TIME_BARS)) == 2, what="the subscriptions")
                start = CLOCK + timedelta(minutes=6)
                sim.push_bars([("MESH6", start, 5000.00, 5000.75, 4999.75, 5000.50, 24),
                               (mnq.localSymbol, start, 18000.0, 18002.0, 17999.0, 18001.0, 36)], as_5s=True)
                await until(lambda: len(arrived) == 24, what="24 five-second bars")
            finally:
                ib.disconnect()
        expected = [(name, start + timedelta(seconds=5 * k)) for k in range(12) for name in ("MESH6", mnq.localSymbol)]
        assert arrived == expected
    run(body)
