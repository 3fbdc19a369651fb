"""``qe gateway-sim``: the simulator for a person says where it listens, and the real client can connect there."""

from __future__ import annotations

import asyncio

from ib_async import IB, Future, LimitOrder
from typer.testing import CliRunner

from engine.adapters.ib.gateway_sim import GatewaySim
from engine.adapters.ib.gateway_sim.serve import serve
from engine.cli.main import app
from tests.ib.conftest import run, until


def test_serve_prints_where_it_listens_and_accepts_the_real_client(ib_log) -> None:
    lines: list[str] = []

    async def body() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(serve(0, ["DU1234567", "DU7654321"], ready=lines.append, stop=stop))
        while not lines:
            await asyncio.sleep(0.01)
        port = int(lines[0].split("listening on 127.0.0.1:")[1].split(" ")[0])
        ib = IB()
        try:
            await ib.connectAsync("127.0.0.1", port, clientId=5, timeout=5, raiseSyncErrors=True)
            assert ib.managedAccounts() == ["DU1234567", "DU7654321"]
        finally:
            ib.disconnect()
            stop.set()
            await task
    run(body)
    assert "accounts ******567, ******321" in lines[0]  # masked to the last 3 characters
    assert "DU1234567" not in lines[0]


def test_cli_command_is_mounted() -> None:
    result = CliRunner().invoke(app, ["gateway-sim", "--help"])
    assert result.exit_code == 0
    assert "--port" in result.output and "--account" in result.output


def test_replay_of_warehouse_bars_fills_orders_and_feeds_history(tmp_path, ib_log) -> None:
    """Two ESZ3/ESH4 bars written as a warehouse partition are replayed; the simulator's date follows them."""
    from datetime import datetime, timezone

    import pyarrow as pa

    from engine.adapters.ib.gateway_sim.serve import warehouse_bars
    from warehouse import Warehouse
    from warehouse.layout import bar_partition
    from warehouse.schemas import BARS
    from warehouse.store import write_parquet_atomic

    t0 = datetime(2013, 12, 2, 15, 0, tzinfo=timezone.utc)
    t1 = datetime(2013, 12, 2, 15, 1, tzinfo=timezone.utc)
    rows = [
        {"contract": "ESZ3", "instrument_id": 1, "ts": t0, "open": 1800.0, "high": 1801.0, "low": 1799.5,
         "close": 1800.5, "volume": 100, "open_interest": None, "source": "test"},
        {"contract": "ESZ3", "instrument_id": 1, "ts": t1, "open": 1800.5, "high": 1800.75, "low": 1798.0,
         "close": 1798.25, "volume": 120, "open_interest": None, "source": "test"},
        {"contract": "ESH4", "instrument_id": 2, "ts": t1, "open": 1795.0, "high": 1795.5, "low": 1794.0,
         "close": 1794.5, "volume": 10, "open_interest": None, "source": "test"},
    ]
    wh = Warehouse(tmp_path / "qe_data")
    write_parquet_atomic(pa.Table.from_pylist(rows, schema=BARS), bar_partition(wh.root, "1m", "ES", 2013))
    try:
        bars = warehouse_bars(wh, "ES", "1m")
    finally:
        wh.close()
    assert [(b[0], b[1]) for b in bars] == [("ESZ3", t0), ("ESH4", t1), ("ESZ3", t1)]

    async def body() -> None:
        sim = GatewaySim(today=t0.date(), clock=t0)
        async with sim:
            ib = IB()
            await ib.connectAsync("127.0.0.1", sim.port, clientId=5, timeout=5)
            try:
                [esz3] = await ib.qualifyContractsAsync(Future("ES", "201312", "CME"))
                trade = ib.placeOrder(esz3, LimitOrder("BUY", 1, 1798.50))
                await until(lambda: trade.orderStatus.status == "Submitted", what="ack")
                assert await sim.replay(bars) == (3, 0)
                await until(trade.isDone, what="fill during the replay")
                history = await ib.reqHistoricalDataAsync(esz3, "", "1 D", "1 min", "TRADES", False)
            finally:
                ib.disconnect()
        # ESZ3's 15:01 bar (O 1800.50, L 1798.00) reaches the buy limit 1798.50
        assert (trade.orderStatus.status, trade.orderStatus.avgFillPrice) == ("Filled", 1798.50)
        assert [b.close for b in history] == [1800.5, 1798.25]
    run(body)
