"""Bounded-memory equity recording (engine/results/equity.py): a long run spills its equity ledger to Parquet a chunk
at a time and computes its metrics from running statistics.

The reference is the in-memory path (``compute_metrics`` on the whole table), which has its own tests against
hand-worked numbers and an independent oracle (tests/test_metrics.py, tests/test_backtest_engine.py): the same
backtest run with a small chunk size must produce the same ledger rows, the same trades and the same metrics.
"""

from __future__ import annotations

import gc
import math
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.backtest.run import BacktestConfig, run_backtest
from engine.results.equity import EquityRecorder, summarize_equity
from engine.results.ledger import load_run, record_run
from engine.results.metrics import METRIC_KEYS, compute_metrics, compute_metrics_streaming
from engine.core.orders import limit
from engine.risk import RiskLimits
from engine.strategies.sma_cross import SmaCross
from tests.backtest_oracle import random_walk_bars
from warehouse import Warehouse
from warehouse.schemas import RUN_EQUITY

CAPITAL = 1_000_000.0
SMALL_CHUNK = 10_000
BATCH = 4_096


def _bars_file(path: Path) -> Path:
    """~200k one-minute bars of ES (with a roll ESH4 -> ESM4) and NQ (starting later, with gaps), as Parquet."""
    es = random_walk_bars(110_000, seed=3)
    # a slow swing on top of ES's random walk: the crossover makes new highs now and then, so the run has
    # many drawdown episodes (not one from the first bar to the last)
    swing = np.rint(300.0 * np.sin(np.arange(110_000) * 2 * np.pi / 15_000) / 0.25) * 0.25
    for k in ("open", "high", "low", "close"):
        es[k] = es[k] + swing
    nq = random_walk_bars(100_000, seed=4, start_price=15_000.0)
    rng = np.random.default_rng(5)
    keep = np.sort(rng.choice(100_000, 90_000, replace=False))  # NQ misses bars: timestamps differ per symbol
    nq_ts = nq["ts"][keep] + 37 * 60_000_000_000 + 30_000_000_000  # half a minute off ES: distinct timestamps
    tables = [
        pa.table({
            "symbol": ["ES"] * len(es["ts"]),
            "contract": ["ESH4"] * 60_000 + ["ESM4"] * (len(es["ts"]) - 60_000),
            "ts": pa.array(es["ts"]).cast(pa.timestamp("ns", tz="UTC")),
            **{k: es[k] for k in ("open", "high", "low", "close", "volume")},
        }),
        pa.table({
            "symbol": ["NQ"] * len(keep),
            "contract": ["NQH4"] * len(keep),
            "ts": pa.array(nq_ts).cast(pa.timestamp("ns", tz="UTC")),
            **{k: nq[k][keep] for k in ("open", "high", "low", "close", "volume")},
        }),
    ]
    pq.write_table(pa.concat_tables(tables), path)
    return path


class Busy(SmaCross):
    """SMA crossover on both symbols, plus a resting limit order now and then (more fills, partial states)."""

    def __init__(self) -> None:
        super().__init__(fast=10, slow=40)
        self.seen = 0

    def on_bar(self, bar):
        self.seen += 1
        out = super().on_bar(bar)
        if out is None and self.seen % 5_003 == 0:
            return limit(bar.symbol, 1 if self.seen % 2 else -1, bar.close - 0.5 if self.seen % 2 else bar.close + 0.5)
        return out


def _config(chunk: int, **extra) -> BacktestConfig:
    return BacktestConfig(timeframe="1m", risk=RiskLimits.off(), batch_size=BATCH, equity_chunk_points=chunk,
                          slippage={"model": "fixed", "ticks": 1}, **extra)


def _query(path: Path) -> str:
    return f"SELECT * FROM read_parquet('{path}')"


def _con() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con


@pytest.fixture(scope="module")
def bars_path(tmp_path_factory) -> Path:
    return _bars_file(tmp_path_factory.mktemp("bars") / "bars.parquet")


def _same_metrics(got: dict[str, float], expected: dict[str, float]) -> None:
    assert list(got) == list(METRIC_KEYS) == list(expected)
    for key in METRIC_KEYS:
        a, b = got[key], expected[key]
        if math.isnan(b):
            assert math.isnan(a), key
        else:
            assert a == pytest.approx(b, rel=1e-9, abs=0.0), key


@pytest.mark.parametrize("close_at_end", [False, True])
def test_a_spilled_run_has_the_same_ledger_trades_and_metrics_as_an_in_memory_run(bars_path, close_at_end) -> None:
    memory = run_backtest(_con(), _query(bars_path), Busy(), _config(10**9, close_at_end=close_at_end))
    spilled = run_backtest(_con(), _query(bars_path), Busy(), _config(SMALL_CHUNK, close_at_end=close_at_end))

    full = memory.tables["equity"]
    assert memory.equity_path is None and not memory.equity_sampled
    assert full.num_rows > 150_000  # distinct timestamps of two symbols
    assert memory.tables["trades"].num_rows > 1_000
    kinds = set(memory.tables["fills"].column("kind").to_pylist())
    assert {"order", "roll_out", "roll_in"} <= kinds

    # the ledger file holds exactly the in-memory rows, in several bounded row groups
    assert spilled.equity_path is not None and spilled.equity_sampled
    parquet = pq.ParquetFile(spilled.equity_path)
    assert parquet.metadata.num_row_groups >= 10
    assert max(parquet.metadata.row_group(i).num_rows for i in range(parquet.metadata.num_row_groups)) \
        <= SMALL_CHUNK + BATCH
    on_disk = parquet.read().cast(RUN_EQUITY)
    assert on_disk.equals(full)
    assert spilled.equity_table().equals(full)

    # every other table, the final equity and the data span are unchanged (bars_held resolved while spilling)
    for name in ("orders", "fills", "positions", "trades", "events"):
        assert spilled.tables[name].equals(memory.tables[name]), name
    assert spilled.final_equity == memory.final_equity
    assert (spilled.data_start, spilled.data_end) == (memory.data_start, memory.data_end)
    assert spilled.timings["bars"] == memory.timings["bars"] == 200_000

    # tables["equity"] of a spilled run: the last point of each trading date
    daily = spilled.tables["equity"]
    dates = full.column("trading_date").cast(pa.int32()).to_numpy()
    last_of_day = np.flatnonzero(np.append(dates[1:] != dates[:-1], True))
    assert daily.equals(full.take(pa.array(last_of_day)))

    _same_metrics(spilled.metrics, memory.metrics)
    # several drawdown episodes, the longest neither the whole run nor inside one chunk
    assert memory.metrics["max_drawdown"] > 0
    assert SMALL_CHUNK / 2 < memory.metrics["max_drawdown_duration_bars"] < full.num_rows / 4


def test_summary_of_the_full_table_gives_compute_metrics(bars_path) -> None:
    result = run_backtest(_con(), _query(bars_path), Busy(), _config(10**9))
    t = result.tables
    expected = compute_metrics(t["equity"], t["trades"], t["fills"], initial_capital=CAPITAL, timeframe="1m")
    for chunk in (1_000, 65_536, 10**9):
        summary = summarize_equity(t["equity"], CAPITAL, chunk_points=chunk)
        got = compute_metrics_streaming(summary, t["trades"], t["fills"], initial_capital=CAPITAL, timeframe="1m")
        _same_metrics(got, expected)


def test_a_recorded_spilled_run_renames_its_file_into_the_ledger(tmp_path, bars_path) -> None:
    wh = Warehouse(tmp_path / "wh")
    memory = run_backtest(_con(), _query(bars_path), Busy(), _config(10**9))
    result = run_backtest(wh, _query(bars_path), Busy(), _config(SMALL_CHUNK))
    target = tmp_path / "wh" / "runs" / "run_equity" / f"{result.run_id}.parquet"
    assert result.equity_path == target and target.exists()
    assert not list((tmp_path / "wh" / ".staging").glob("*/*.parquet"))  # nothing left in staging
    assert not list((tmp_path / "wh" / "runs").rglob("*.tmp"))

    run, tables, metrics = load_run(wh, result.run_id)
    assert run["final_equity"] == memory.final_equity
    assert pc.all(pc.equal(tables["equity"].column("run_id"), result.run_id)).as_py()
    assert tables["equity"].drop_columns(["run_id"]).equals(memory.tables["equity"].drop_columns(["run_id"]))
    assert metrics == result.metrics
    n = wh.sql(f"SELECT count(*) AS n FROM run_equity WHERE run_id = '{result.run_id}'").column("n")[0].as_py()
    assert n == memory.tables["equity"].num_rows
    wh.close()


def test_recording_a_spilled_run_afterwards_rewrites_the_run_id(tmp_path, bars_path) -> None:
    result = run_backtest(_con(), _query(bars_path), Busy(), _config(SMALL_CHUNK))
    spilled = result.equity_path
    assert spilled is not None and spilled.exists()
    assert pq.read_table(spilled, columns=["run_id"]).column("run_id").null_count == pq.ParquetFile(spilled).metadata.num_rows
    wh = Warehouse(tmp_path / "wh")
    run_id = record_run(wh, result)
    assert result.equity_path == tmp_path / "wh" / "runs" / "run_equity" / f"{run_id}.parquet"
    assert not spilled.exists()
    _, tables, _ = load_run(wh, run_id)
    assert pc.all(pc.equal(tables["equity"].column("run_id"), run_id)).as_py()
    assert tables["equity"].num_rows == pq.ParquetFile(result.equity_path).metadata.num_rows
    wh.close()


def test_the_temporary_file_of_an_unrecorded_run_goes_with_the_result(bars_path) -> None:
    result = run_backtest(_con(), _query(bars_path), Busy(), _config(50_000))
    directory = result.equity_path.parent
    assert directory.exists()
    del result
    gc.collect()
    assert not directory.exists()


def test_a_failing_run_leaves_no_spilled_file(bars_path) -> None:
    made: list[Path] = []

    class Boom(SmaCross):
        def on_bar(self, bar):
            if self.engine.recorder.spill_dir is not None and not made:
                made.append(self.engine.recorder.spill_dir)
            if self.engine.recorder.flushed > 30_000:
                raise RuntimeError("boom")
            return super().on_bar(bar)

    with pytest.raises(RuntimeError, match="boom"):
        run_backtest(_con(), _query(bars_path), Boom(), _config(SMALL_CHUNK))
    assert made and not made[0].exists()


def test_a_short_run_is_unchanged(bars_path) -> None:
    # fewer points than the chunk: no file, the in-memory table and compute_metrics, exactly as before
    result = run_backtest(_con(), _query(bars_path) + " WHERE ts < TIMESTAMPTZ '2020-01-05'", Busy(), _config(SMALL_CHUNK))
    assert result.equity_path is None
    t = result.tables
    assert 0 < t["equity"].num_rows <= SMALL_CHUNK
    assert result.metrics == compute_metrics(t["equity"], t["trades"], t["fills"], initial_capital=CAPITAL,
                                             timeframe="1m")


# -- the summary against compute_metrics on synthetic series (drawdown episodes across chunk boundaries) ----------


def _table(values: list[float], minutes: list[int], notional: list[float]) -> pa.Table:
    start = datetime(2024, 3, 1, 14, 0, tzinfo=UTC)
    ts = [start + timedelta(minutes=m) for m in minutes]
    # CME trading date: the session opening at 22:00 UTC belongs to the next date (close enough for a test)
    days = [(t + timedelta(hours=2)).date() for t in ts]
    n = len(values)
    return pa.table({
        "run_id": [None] * n, "ts": ts, "trading_date": days, "equity": values, "cash": values,
        "unrealized": [0.0] * n, "realized": [0.0] * n, "commissions": [0.0] * n, "slippage": [0.0] * n,
        "gross_notional": notional,
    }, schema=RUN_EQUITY)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(st.integers(-3, 3), min_size=0, max_size=60),
    gaps=st.lists(st.integers(1, 900), min_size=60, max_size=60),
    chunk=st.integers(1, 13),
    start=st.integers(-2, 2),
    timeframe=st.sampled_from(["1m", "1h", "1d"]),
)
def test_streaming_metrics_equal_compute_metrics_on_any_series(steps, gaps, chunk, start, timeframe) -> None:
    # integer steps make exact ties with the peak (equity back at its high) frequent
    values = list(CAPITAL + 1_000.0 * (start + np.cumsum(steps))) if steps else []
    minutes = list(np.cumsum(gaps[: len(values)])) if values else []
    notional = [float(abs(s) % 2) * 1e5 for s in steps]
    table = _table([float(v) for v in values], [int(m) for m in minutes], notional)
    expected = compute_metrics(table, None, None, initial_capital=CAPITAL, timeframe=timeframe)
    summary = summarize_equity(table, CAPITAL, chunk_points=chunk)
    _same_metrics(compute_metrics_streaming(summary, None, None, initial_capital=CAPITAL, timeframe=timeframe),
                  expected)


def test_drawdown_from_the_initial_capital_that_never_recovers_spans_chunks() -> None:
    values = [CAPITAL - 10.0 * (i + 1) for i in range(25)]
    table = _table(values, list(range(0, 25 * 30, 30)), [0.0] * 25)
    expected = compute_metrics(table, None, None, initial_capital=CAPITAL, timeframe="1m")
    # 25 points under the initial capital: episode from one bar before the first point to the last one
    assert expected["max_drawdown_duration_bars"] == 25.0
    assert expected["max_drawdown_duration_days"] == pytest.approx((24 * 30 + 1) / 1440)
    for chunk in (1, 4, 25):
        got = compute_metrics_streaming(summarize_equity(table, CAPITAL, chunk_points=chunk), None, None,
                                        initial_capital=CAPITAL, timeframe="1m")
        _same_metrics(got, expected)


def test_recorder_carries_fill_state_and_trading_day_across_flushes(tmp_path) -> None:
    # points 0..5; a fill on point 1 and one on point 4 (the flush after point 2 keeps point 3's day mark)
    rec = EquityRecorder(100.0, chunk_points=3, directory=tmp_path)
    rec.day_marks.append((0, 19_700))
    for i, ts in enumerate((10, 20, 30)):
        if i == 1:
            rec.cash_marks.append((1, 5.0, 1.0, 0.5))
        rec.ts.append(ts * 60_000_000_000)
        rec.unrealized.append(float(i))
        rec.notional.append(0.0)
    rec.day_marks.append((3, 19_701))  # the point in progress starts a new day
    rec.cash_marks.append((3, 7.0, 2.0, 0.5))  # and has a fill before it is recorded
    reference = EquityRecorder(100.0, chunk_points=10**9)
    reference.day_marks.extend([(0, 19_700), (3, 19_701)])
    reference.cash_marks.extend([(1, 5.0, 1.0, 0.5), (3, 7.0, 2.0, 0.5), (4, 9.0, 3.0, 1.0)])
    for i, ts in enumerate((10, 20, 30, 40, 50, 60)):
        reference.ts.append(ts * 60_000_000_000)
        reference.unrealized.append(float(i))
        reference.notional.append(0.0)
    rec.flush()
    assert rec.cash_marks == [(0, 7.0, 2.0, 0.5)] and rec.day_marks == [(0, 19_701)]
    for i, ts in enumerate((40, 50, 60), start=3):
        if i == 4:
            rec.cash_marks.append((1, 9.0, 3.0, 1.0))
        rec.ts.append(ts * 60_000_000_000)
        rec.unrealized.append(float(i))
        rec.notional.append(0.0)
    rec.close()
    assert pq.read_table(rec.path).equals(reference.table())
    day = date(1970, 1, 1) + timedelta(days=19_700)
    assert pq.read_table(rec.path).column("trading_date").to_pylist() == [day] * 3 + [day + timedelta(days=1)] * 3


def test_walk_forward_stitches_windows_whose_equity_spilled(tmp_path) -> None:
    from engine.backtest.walkforward import walk_forward
    from tests.test_walkforward import GRID, MECHANICS, QUERY, STRATEGY, new_warehouse

    wh = new_warehouse(tmp_path)
    args = {"train_days": 10, "test_days": 5, "processes": 1}
    reference = walk_forward(wh, QUERY, STRATEGY, GRID, config=MECHANICS, **args)
    # 115 points per test window, flushed every 8-row batch once 20 are buffered: every window spills
    spilled = walk_forward(wh, QUERY, STRATEGY, GRID, **args,
                           config=MECHANICS.model_copy(update={"batch_size": 8, "equity_chunk_points": 20}))
    assert spilled.stitched.equity_path is None  # the stitched run holds its (test-window) points in memory
    equity = spilled.stitched.tables["equity"]
    assert equity.num_rows == 4 * 5 * 23
    assert equity.drop_columns(["run_id"]).equals(reference.stitched.tables["equity"].drop_columns(["run_id"]))
    _same_metrics(spilled.metrics, reference.metrics)
    for a, b in zip(spilled.windows, reference.windows):
        _same_metrics(a.test_metrics, b.test_metrics)
        _, tables, _ = load_run(wh, a.test_run_id)
        assert tables["equity"].num_rows == 5 * 23
        assert pc.all(pc.equal(tables["equity"].column("run_id"), a.test_run_id)).as_py()
    wh.close()
