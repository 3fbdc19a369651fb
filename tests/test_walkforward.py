"""Walk-forward optimisation on a real warehouse: windows, choices, carried capital, ledger, processes, errors.

The data: 33 CME trading dates of 1-hour ES bars (23 a session, 18:00-17:00 ET) that rise steadily with
a small zigzag, so a long position wins every window, a short one loses and a flat one has no Sharpe ratio.
"""

from __future__ import annotations

import json
import math
import os
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.risk import RiskLimits
from engine.backtest.run import BacktestConfig

#: Walk-forward mechanics are tested with the risk limits off (the house defaults would refuse 1 ES of 1M).
MECHANICS = BacktestConfig(risk=RiskLimits.off())
from engine.results.ledger import load_run
from engine.results.metrics import compute_metrics
from engine.backtest.walkforward import (
    _best,
    grid_points,
    plan_windows,
    walk_forward,
    window_query,
)
from loaders.ingest import ingest
from warehouse import Warehouse
from warehouse.errors import QEError

QUERY = "SELECT * FROM bars_1h WHERE symbol = 'ES'"
STRATEGY = "tests.walkforward_strategies:Direction"
GRID = {"direction": [0, -1, 1]}
FIRST = date(2024, 1, 2)
DAYS = 33


def trading_days(first: date, n: int) -> list[date]:
    days, d = [], first
    while len(days) < n:
        if d.weekday() < 5:
            days.append(d)
        d += timedelta(days=1)
    return days


def write_bars(path: Path) -> Path:
    """Hourly bars for DAYS weekday trading dates: session D runs 18:00 ET on D-1 to 17:00 ET on D."""
    stamps = []
    for d in trading_days(FIRST, DAYS):
        open_et = pd.Timestamp(d - timedelta(days=1)).tz_localize("America/New_York") + pd.Timedelta(hours=18)
        stamps.extend(open_et + pd.Timedelta(hours=h) for h in range(23))
    ts = pd.DatetimeIndex(stamps).tz_convert("UTC")
    t = np.arange(len(ts))
    close = 5000.0 + 0.5 * t + 0.25 * ((t * 7) % 5 - 2)  # trend + zigzag, on the 0.25 tick grid
    open_ = np.concatenate([[close[0]], close[:-1]])
    table = pa.table({
        "symbol": ["ESH4"] * len(t),
        "ts": pa.array(ts.as_unit("us")),
        "open": open_,
        "high": np.maximum(open_, close) + 0.25,
        "low": np.minimum(open_, close) - 0.25,
        "close": close,
        "volume": np.full(len(t), 1000, dtype=np.int64),
    })
    pq.write_table(table, path)
    return path


def new_warehouse(tmp: Path) -> Warehouse:
    wh = Warehouse(tmp / "qe_data")
    [report] = ingest(wh, [write_bars(tmp / "es.parquet")], timeframe="1h")
    assert report.error is None and report.rows_loaded == DAYS * 23
    return wh


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Warehouse:
    wh = new_warehouse(tmp_path_factory.mktemp("wf"))
    yield wh
    wh.close()


@pytest.fixture(scope="module")
def rolling(shared):
    """One rolling walk-forward in this process, shared by the tests that only read it."""
    return walk_forward(shared, QUERY, STRATEGY, GRID, train_days=10, test_days=5, processes=1, config=MECHANICS)


def test_plan_rolling_and_anchored():
    days = trading_days(FIRST, 23)
    roll = plan_windows(days, 10, 5)
    # 10 + 5k + 5 <= 23 -> k = 0, 1: the 3 trailing dates cannot fill a test part
    assert [(w.train_start, w.train_end, w.test_start, w.test_end) for w in roll] == [
        (days[0], days[9], days[10], days[14]),
        (days[5], days[14], days[15], days[19]),
    ]
    assert [(w.train_days, w.test_days) for w in roll] == [(10, 5), (10, 5)]
    anchored = plan_windows(days, 10, 5, anchored=True)
    assert [(w.train_start, w.train_end, w.test_start, w.test_end) for w in anchored] == [
        (days[0], days[9], days[10], days[14]),
        (days[0], days[14], days[15], days[19]),
    ]
    assert [w.train_days for w in anchored] == [10, 15]
    assert len(plan_windows(days, 3, 4)) == 5  # 3 + 4*5 = 23 exactly


def test_grid_and_choice_rules():
    assert grid_points({"a": [1, 2], "b": ["x", "y"]}) == [
        {"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]
    assert grid_points({}) == [{}]
    nan = math.nan
    assert _best([nan, -1.0, 2.0]) == 2  # NaN ranks last
    assert _best([nan, 3.0, 3.0, 1.0]) == 1  # ties go to the earlier point
    assert _best([nan, nan]) == 0
    assert _best([-5.0, nan, -7.0]) == 0


def test_window_query_keeps_exactly_the_trading_dates(shared):
    days = trading_days(FIRST, DAYS)
    sql = window_query(QUERY, days[3], days[7])
    got = shared.sql(
        f"SELECT DISTINCT CAST(timezone('America/New_York', ts) + INTERVAL 6 HOUR AS DATE) AS d "
        f"FROM ({sql}) ORDER BY d")
    assert got.column("d").to_pylist() == days[3:8]
    assert shared.sql(f"SELECT count(*) AS n FROM ({sql})").column("n")[0].as_py() == 5 * 23


def test_rolling_windows_choices_and_carried_capital(shared, rolling):
    days = trading_days(FIRST, DAYS)
    wf = rolling
    # 33 dates, train 10, test 5: tests start at 10, 15, 20, 25 (30 + 5 > 33)
    assert [(w.train_start, w.train_end, w.test_start, w.test_end) for w in wf.windows] == [
        (days[5 * k], days[5 * k + 9], days[5 * k + 10], days[5 * k + 14]) for k in range(4)]
    for w in wf.windows:
        flat, short, long_ = w.scores
        assert math.isnan(flat) and short < 0 < long_
        assert w.params == {"direction": 1} and w.in_sample == long_
        assert w.test_metrics["total_return"] > 0
    # capital carried: each test run starts from the previous one's final equity, and ends flat
    assert wf.windows[0].initial_capital == 1_000_000.0
    for prev, w in zip(wf.windows, wf.windows[1:]):
        assert w.initial_capital == prev.final_equity
    eq = wf.stitched.tables["equity"].to_pandas()
    assert eq["ts"].is_monotonic_increasing and len(eq) == 4 * 5 * 23
    assert eq["trading_date"].min() == days[10] and eq["trading_date"].max() == days[29]
    assert np.allclose(eq["cash"], 1_000_000.0 + eq["realized"] - eq["commissions"])  # running totals carried
    firsts = eq.groupby("trading_date").head(1)
    for w, prev in zip(wf.windows[1:], wf.windows):
        row = eq[eq["trading_date"] == w.test_start].iloc[0]
        assert row["equity"] == prev.final_equity  # flat on the first bar: nothing lost between windows
        assert eq[eq["trading_date"] == prev.test_end].iloc[-1]["unrealized"] == 0.0  # flat at the end
    assert len(firsts) == 20
    assert wf.stitched.final_equity == wf.windows[-1].final_equity == eq["equity"].iloc[-1]
    # stitched metrics: over the stitched curve from the first capital
    expected = compute_metrics(wf.stitched.tables["equity"], wf.stitched.tables["trades"], wf.stitched.tables["fills"],
                               initial_capital=1_000_000.0, timeframe="1h")
    assert wf.metrics["total_return"] == pytest.approx(eq["equity"].iloc[-1] / 1_000_000.0 - 1)
    assert wf.metrics == pytest.approx(expected, nan_ok=True)
    # ids renumbered: unique across windows, fills point at their orders and trades
    orders, fills, trades = (wf.stitched.tables[k].to_pandas() for k in ("orders", "fills", "trades"))
    assert orders["order_id"].is_unique and fills["fill_id"].is_unique and trades["trade_id"].is_unique
    assert len(trades) == 4 and (trades["direction"] == 1).all() and trades["exit_ts"].notna().all()
    assert set(fills["order_id"]) <= set(orders["order_id"]) and set(fills["trade_id"]) == set(trades["trade_id"])


def test_ledger_rows(shared, rolling):
    wf = rolling
    runs = shared.sql(f"SELECT run_id, kind, parent_run_id, initial_capital, final_equity, config FROM runs "
                      f"WHERE run_id = '{wf.run_id}' OR parent_run_id = '{wf.run_id}' "
                      f"ORDER BY kind = 'walkforward', data_start").to_pylist()
    assert [r["kind"] for r in runs] == ["walkforward_window"] * 4 + ["walkforward"]
    children = runs[:4]
    assert [r["run_id"] for r in children] == [w.test_run_id for w in wf.windows]
    assert {r["parent_run_id"] for r in children} == {wf.run_id} and runs[4]["parent_run_id"] is None
    assert [r["initial_capital"] for r in children] == [w.initial_capital for w in wf.windows]
    assert json.loads(children[0]["config"])["close_at_end"] is True
    config = json.loads(runs[4]["config"])["walkforward"]
    assert config["grid"] == GRID and config["metric"] == "sharpe" and config["anchored"] is False
    assert [w["params"] for w in config["windows"]] == [{"direction": 1}] * 4
    assert [w["in_sample"] for w in config["windows"]] == pytest.approx([w.in_sample for w in wf.windows])
    assert config["windows"][0]["scores"][0] is None  # NaN stored as null
    assert config["windows"][1]["test_start"] == wf.windows[1].test_start.isoformat()
    run, tables, metrics = load_run(shared, wf.run_id)
    assert run["final_equity"] == wf.stitched.final_equity
    assert tables["equity"].num_rows == wf.stitched.tables["equity"].num_rows
    assert metrics["total_return"] == pytest.approx(wf.metrics["total_return"])
    assert tables["orders"]["order_id"].to_pylist() == wf.stitched.tables["orders"]["order_id"].to_pylist()


def test_anchored_two_processes_match_one(tmp_path):
    wh = new_warehouse(tmp_path)
    days = trading_days(FIRST, DAYS)
    config = BacktestConfig(initial_capital=500_000.0, risk=RiskLimits.off())
    kw = {"train_days": 12, "test_days": 7, "anchored": True, "metric": "total_return", "config": config}
    one = walk_forward(wh, QUERY, STRATEGY, GRID, processes=1, **kw)
    two = walk_forward(wh, QUERY, STRATEGY, GRID, processes=2, **kw)
    # anchored: training always from the first date; tests at 12, 19, 26 (33 exactly)
    assert [(w.train_start, w.train_end, w.test_start, w.test_end) for w in one.windows] == [
        (days[0], days[12 + 7 * k - 1], days[12 + 7 * k], days[12 + 7 * k + 6]) for k in range(3)]
    assert [w.train_days for w in one.windows] == [12, 19, 26]
    assert [w.params for w in one.windows] == [{"direction": 1}] * 3
    for a, b in zip(one.windows, two.windows):
        assert (a.params, a.scores, a.in_sample, a.final_equity) == (b.params, b.scores, b.in_sample, b.final_equity)
        assert a.test_metrics == pytest.approx(b.test_metrics, nan_ok=True)
        assert a.scores[0] == 0.0  # flat: total return 0 (defined, unlike the Sharpe ratio)
    assert one.windows[0].initial_capital == 500_000.0
    for name in ("equity", "fills", "trades", "orders"):
        assert one.stitched.tables[name].drop(["run_id"]).equals(two.stitched.tables[name].drop(["run_id"]))
    assert one.metrics == pytest.approx(two.metrics, nan_ok=True)
    rows = wh.sql("SELECT kind, count(*) AS n FROM runs GROUP BY kind").to_pylist()
    counts = {r["kind"]: r["n"] for r in rows}
    assert counts == {"walkforward": 2, "walkforward_window": 6}  # training runs are never recorded
    wh.close()


def test_training_runs_in_worker_processes(shared, tmp_path):
    probe = tmp_path / "pids"
    probe.mkdir()
    wf = walk_forward(shared, QUERY, "tests.walkforward_strategies:PidProbe", {"direction": [-1, 1], "probe": [str(probe)]},
                      train_days=10, test_days=10, processes=2, config=MECHANICS)
    assert [w.params["direction"] for w in wf.windows] == [1, 1]  # 10 + 10 + 10 <= 33 < 10 + 20 + 10
    pids = {int(p.name) for p in probe.iterdir()}
    workers = pids - {os.getpid()}
    assert os.getpid() in pids  # the test runs
    assert 1 <= len(workers) <= 2  # the 4 training runs, in at most `processes` other processes


def test_a_failing_worker_run_is_reported(shared):
    before = shared.sql("SELECT count(*) AS n FROM runs").column("n")[0].as_py()
    with pytest.raises(RuntimeError, match="broken on purpose"):
        walk_forward(shared, QUERY, "tests.walkforward_strategies:Broken", {"fail": [False, True]},
                     train_days=10, test_days=5, processes=2)
    assert shared.sql("SELECT count(*) AS n FROM runs").column("n")[0].as_py() == before  # nothing recorded


def test_errors(shared):
    before = shared.sql("SELECT count(*) AS n FROM runs").column("n")[0].as_py()
    with pytest.raises(QEError, match="unknown metric 'sharp'"):
        walk_forward(shared, QUERY, STRATEGY, GRID, train_days=10, test_days=5, metric="sharp")
    with pytest.raises(QEError, match=r"at least train_days \+ test_days = 34 trading dates; the query has 33"):
        walk_forward(shared, QUERY, STRATEGY, GRID, train_days=30, test_days=4)
    with pytest.raises(QEError, match="has 0"):
        walk_forward(shared, "SELECT * FROM bars_1h WHERE symbol = 'NQ'", STRATEGY, GRID, train_days=1, test_days=1)
    with pytest.raises(QEError, match="no values"):
        walk_forward(shared, QUERY, STRATEGY, {"direction": []}, train_days=10, test_days=5)
    with pytest.raises(QEError, match="cannot import"):
        walk_forward(shared, QUERY, "tests.no_such_module:X", GRID, train_days=10, test_days=5)
    with pytest.raises(QEError, match="direction must be"):
        walk_forward(shared, QUERY, STRATEGY, {"direction": [1, 2]}, train_days=10, test_days=5)
    with pytest.raises(QEError, match="train_days and test_days must be >= 1"):
        walk_forward(shared, QUERY, STRATEGY, GRID, train_days=0, test_days=5)
    # nothing was recorded by the failed calls
    assert shared.sql("SELECT count(*) AS n FROM runs").column("n")[0].as_py() == before
