"""Order round trip over loopback: our submit -> gateway simulator ack -> fill with commission back.

Two paths in the same run, against the same simulator:

* ``engine``: ``IBExecutionHandler.submit`` of an engine MARKET order (guards, orderRef, optional journal
  write to a temporary warehouse) until the handler booked the engine ``Fill`` with IB's commission;
* ``bare``: ``ib_async.IB.placeOrder`` of a ``MarketOrder`` until its ``commissionReportEvent``.

The simulator fills a market order on the next bar after it arrives; a listener pushes that bar as soon as the
order is acknowledged, so the time measured is protocol + client + handler, not a market wait.

    python bench/bench_ib_roundtrip.py --orders 300 [--journal]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import date, datetime, timezone
from pathlib import Path

from ib_async import IB, Future, MarketOrder

from engine.adapters.ib.gateway_sim import GatewaySim
from engine.adapters.ib.handler import IBExecutionHandler
from engine.adapters.ib.journal import OrderJournal
from engine.adapters.ib.reconnect import ReconnectPolicy
from engine.core.orders import market

CLOCK = datetime(2026, 3, 2, 15, 0, tzinfo=timezone.utc)


def _quantiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


async def _engine(sim: GatewaySim, n: int, journal: OrderJournal | None) -> list[float]:
    handler = IBExecutionHandler("bench", "rt", {"MES": "202603"}, port=sim.port, client_id=11, journal=journal,
                                 reconnect=ReconnectPolicy(heartbeat_s=None))
    await handler.connect()
    done = asyncio.Event()
    handler.fill_listeners.append(lambda fill: done.set())
    samples = []
    try:
        for k in range(n):
            done.clear()
            order = market("MES", 1 if k % 2 == 0 else -1)
            order.order_id = k + 1
            started = time.perf_counter()
            handler.submit(order, None)
            await done.wait()
            samples.append(time.perf_counter() - started)
    finally:
        handler.disconnect()
    return samples


async def _bare(sim: GatewaySim, n: int) -> list[float]:
    ib = IB()
    await ib.connectAsync("127.0.0.1", sim.port, clientId=12, timeout=10)
    [mes] = await ib.qualifyContractsAsync(Future("MES", "202603", "CME"))
    done = asyncio.Event()
    ib.commissionReportEvent += lambda trade, fill, report: done.set()
    samples = []
    try:
        for k in range(n):
            done.clear()
            started = time.perf_counter()
            ib.placeOrder(mes, MarketOrder("BUY" if k % 2 == 0 else "SELL", 1))
            await done.wait()
            samples.append(time.perf_counter() - started)
    finally:
        ib.disconnect()
    return samples


async def main(n: int, with_journal: bool) -> None:
    async with GatewaySim(today=date(2026, 3, 2), clock=CLOCK, commission_per_contract=0.85) as sim:
        loop = asyncio.get_running_loop()
        # fill each order on the bar right after its acknowledgement
        sim.order_listeners.append(lambda order: loop.call_soon(sim.push_price, order.future.local_symbol, 5000.25))
        with tempfile.TemporaryDirectory() as tmp:
            journal = OrderJournal(Path(tmp)) if with_journal else None
            await _bare(sim, 20)  # warm up both paths (imports, calendars, first qualify)
            await _engine(sim, 20, None)
            sim.book.orders.clear()
            bare = await _bare(sim, n)
            engine = await _engine(sim, n, journal)
    for name, samples in (("bare ib_async", bare), ("engine handler", engine)):
        median, p99 = _quantiles(samples)
        print(f"{name:15s} n={len(samples)}  median {median * 1e3:7.3f} ms  p99 {p99 * 1e3:7.3f} ms")
    print(f"engine / bare (median): {_quantiles(engine)[0] / _quantiles(bare)[0]:.2f}"
          + ("  (journal: one fsynced Parquet file per order)" if with_journal else ""))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=300)
    parser.add_argument("--journal", action="store_true", help="journal every order to a temporary warehouse")
    args = parser.parse_args()
    asyncio.run(main(args.orders, args.journal))
