"""The live session on hourly bars: real ES hours (LEAN) replayed through the gateway simulator as IB streams them
(720 five-second bars an hour), folded back into hours on the CME session clock and traded bar by bar; the oracle
is the backtest of the same strategy and query over the same stored bars."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.backtest.run import BacktestConfig, run_backtest
from engine.core.orders import Order
from engine.live.replay import replay_paper
from engine.live.session import LiveSettings
from engine.strategy import Strategy
from loaders.ingest import ingest
from tests.conftest import LEAN
from warehouse import Warehouse
from warehouse.rolls import build_rolls

HOURS = 6
QUERY = "SELECT symbol, ts, open, high, low, close, volume, contract FROM bars_1h WHERE symbol = 'ES' AND ts >= TIMESTAMPTZ '{start}'"


class Alternate(Strategy):
    """Long one contract, then short one, on every other bar."""

    history_size = 0

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def on_bar(self, bar) -> Order | None:  # noqa: ANN001
        self.seen += 1
        return self.target_position(bar.symbol, 1 if self.seen % 4 < 2 else -1)


def test_hourly_bars_are_decided_once_each_and_trade_as_the_backtest(tmp_path: Path) -> None:
    full = Warehouse(tmp_path / "full")
    ingest(full, [LEAN / "hour"])  # the LEAN loader reads the timeframe from the folder's name
    build_rolls(full, ["ES"])
    last_day = full.sql("SELECT max(ts) AS t FROM contract_bars_1h")["t"][0].as_py()
    bars = full.sql("SELECT symbol, contract, ts, open, high, low, close, volume FROM bars_1h WHERE symbol = 'ES' "
                    "AND ts <= $last ORDER BY ts DESC LIMIT $n", {"last": last_day, "n": HOURS}).sort_by("ts")
    first = bars["ts"][0].as_py()
    history = tmp_path / "history.parquet"
    import pyarrow.parquet as pq
    pq.write_table(full.sql("SELECT symbol, contract, ts, open, high, low, close, volume FROM contract_bars_1h "
                            "WHERE ts < $first ORDER BY ts", {"first": first}), history)
    full.close()
    wh = Warehouse(tmp_path / "wh")
    ingest(wh, [history], timeframe="1h")
    build_rolls(wh, ["ES"])
    query = QUERY.format(start=first.isoformat())
    config = BacktestConfig(timeframe="1h", initial_capital=2_000_000.0)
    session = asyncio.run(asyncio.wait_for(replay_paper(
        wh, Alternate(), query, config, bars, run_id="live-hourly", timeframe="1h",
        settings=LiveSettings(bar_wait_s=0.0, roots=["ES"], features=False)), 240))
    assert session.decided == [t.as_py() for t in bars["ts"]]
    stored = wh.sql("SELECT ts, open, high, low, close, volume FROM contract_bars_1h WHERE ts >= $first ORDER BY ts",
                    {"first": first})
    assert stored.to_pylist() == bars.select(["ts", "open", "high", "low", "close", "volume"]).to_pylist()
    backtest = run_backtest(wh, query, Alternate(), config, record=False)
    keys = ["order_id", "ts_submitted", "symbol", "quantity", "order_type"]
    live = session.result().tables
    assert live["orders"].select(keys).to_pylist() == backtest.tables["orders"].select(keys).to_pylist()
    assert len(live["orders"]) >= 3
    fill_keys = ["order_id", "contract", "quantity", "price", "commission"]
    assert live["fills"].select(fill_keys).to_pylist() == backtest.tables["fills"].select(fill_keys).to_pylist()
    wh.close()
