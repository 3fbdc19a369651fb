"""Walk-forward optimisation: choose parameters in sample, trade them out of sample, stitch the results.

The query's bars are cut into windows of CME trading dates (the dates its rows fall on, in order):

* rolling: window ``k`` trains on dates ``[k*test_days, k*test_days + train_days)`` and tests on the next
  ``test_days`` dates;
* anchored: the training part always starts at the first date (``[0, train_days + k*test_days)``); the test
  parts are the same as when rolling.

Only complete windows are formed: trailing dates that cannot fill a whole test part are left out.

For each window every point of the parameter grid runs on the training dates (in parallel worker
processes, each with its own :class:`~warehouse.Warehouse` on the same directory, nothing recorded); the
best point by ``metric`` (higher is better, NaN last, ties to the earlier grid point) then runs on the test
dates with ``close_at_end=True``, so every test window ends flat, starting from the previous test window's
final equity. The test runs are recorded (``kind = 'walkforward_window'``) under the stitched run
(``kind = 'walkforward'``), whose tables are the test windows' tables end to end and whose metrics are
computed over that out-of-sample equity curve.

A window's bars are the user's query wrapped by ``sql/window_filter.sql``: ``ts`` from the session open of
its first date up to the session open of the date after its last.
"""

from __future__ import annotations

import itertools
import json
import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from engine.backtest.run import BacktestConfig, BacktestResult, run_backtest
from engine.data.feed import infer_timeframe, parse_query
from engine.results.ledger import new_run_id, record_run
from engine.results.metrics import METRIC_KEYS, compute_metrics
from engine.runner import load_strategy_class, make_strategy
from warehouse import Warehouse
from warehouse.errors import ConfigError, QEError
from warehouse.templates import render

__all__ = ["WalkForwardResult", "WalkForwardWindow", "grid_points", "plan_windows", "walk_forward", "window_query"]


@dataclass
class WalkForwardWindow:
    """One window: its dates (first and last trading date, both inclusive), the choice and the test run.

    Attributes
    ----------
    index : int
        0-based position of the window.
    train_start, train_end, test_start, test_end : datetime.date
        First and last CME trading date of the training and of the test part (inclusive).
    train_days, test_days : int
        Trading dates in each part.
    params : dict
        The grid point chosen on the training part.
    in_sample : float
        Its ``metric`` on the training part (NaN when undefined).
    scores : list of float
        ``metric`` of every grid point on the training part, in grid order.
    test_run_id : str
        Ledger id of the test run (``kind = 'walkforward_window'``).
    test_metrics : dict
        Metrics of the test run.
    initial_capital, final_equity : float
        Equity the test run started from (the previous window's final equity) and ended with.
    """

    index: int
    train_start: date
    train_end: date
    test_start: date
    test_end: date
    train_days: int
    test_days: int
    params: dict[str, Any] = field(default_factory=dict)
    in_sample: float = math.nan
    scores: list[float] = field(default_factory=list)
    test_run_id: str | None = None
    test_metrics: dict[str, float] = field(default_factory=dict)
    initial_capital: float = math.nan
    final_equity: float = math.nan

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe summary (dates as ISO text, NaN as null) for the ledger's config column."""
        return {
            "index": self.index,
            "train_start": self.train_start.isoformat(),
            "train_end": self.train_end.isoformat(),
            "test_start": self.test_start.isoformat(),
            "test_end": self.test_end.isoformat(),
            "train_days": self.train_days,
            "test_days": self.test_days,
            "params": _json_safe(self.params),
            "in_sample": _finite_or_none(self.in_sample),
            "scores": [_finite_or_none(s) for s in self.scores],
            "test_run_id": self.test_run_id,
            "initial_capital": _finite_or_none(self.initial_capital),
            "final_equity": _finite_or_none(self.final_equity),
        }


@dataclass
class WalkForwardResult:
    """The stitched out-of-sample run and its windows.

    Attributes
    ----------
    run_id : str
        Ledger id of the stitched run (``kind = 'walkforward'``).
    windows : list of WalkForwardWindow
    stitched : BacktestResult
        The test windows end to end: tables with renumbered ids, metrics over the stitched equity.
    metric : str
        The metric the choice maximised.
    grid : list of dict
        Every grid point, in the order they were tried (ties go to the earlier one).
    timings : dict
        ``train_s`` (all training runs), ``test_s`` (test runs and recording), ``total_s``.
    """

    run_id: str
    windows: list[WalkForwardWindow]
    stitched: BacktestResult
    metric: str = "sharpe"
    grid: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, float]:
        return self.stitched.metrics


# -- planning ------------------------------------------------------------------------------------------------
def grid_points(grid: dict[str, list]) -> list[dict[str, Any]]:
    """Every combination of ``grid``'s values (cartesian product, first key slowest), in order.

    An empty grid is one point without parameters.
    """
    if not isinstance(grid, dict):
        raise ConfigError(f"the parameter grid must be a dict of name -> list of values, not {type(grid).__name__}")
    names = list(grid)
    values = []
    for name in names:
        options = grid[name]
        if isinstance(options, (str, bytes)) or not hasattr(options, "__iter__"):
            raise ConfigError(f"grid parameter {name!r} must be a list of values, not {options!r}")
        options = list(options)
        if not options:
            raise ConfigError(f"grid parameter {name!r} has no values")
        values.append(options)
    return [dict(zip(names, combo)) for combo in itertools.product(*values)]


def plan_windows(dates: list[date], train_days: int, test_days: int, anchored: bool = False) -> list[WalkForwardWindow]:
    """The windows over ``dates`` (sorted distinct trading dates); only complete test parts are formed."""
    if train_days < 1 or test_days < 1:
        raise ConfigError(f"train_days and test_days must be >= 1 (got {train_days} and {test_days})")
    if len(dates) < train_days + test_days:
        raise QEError(
            f"walk-forward needs at least train_days + test_days = {train_days + test_days} trading dates; "
            f"the query has {len(dates)}"
        )
    windows = []
    k = 0
    while k * test_days + train_days + test_days <= len(dates):
        test_from = k * test_days + train_days
        train_from = 0 if anchored else k * test_days
        train, test = dates[train_from:test_from], dates[test_from:test_from + test_days]
        windows.append(WalkForwardWindow(k, train[0], train[-1], test[0], test[-1], len(train), len(test)))
        k += 1
    return windows


def window_query(query: str, first: date, last: date) -> str:
    """``query`` restricted to the bars of trading dates ``first`` .. ``last`` (inclusive)."""
    return render("window_filter.sql", query=_clean(query), start=_iso(first), end=_iso(last + timedelta(days=1)),
                  dates=False)


def trading_dates(wh: Warehouse, query: str) -> list[date]:
    """The distinct CME trading dates of the query's rows, ascending."""
    sql = render("window_filter.sql", query=_clean(query), start=None, end=None, dates=True)
    try:
        table = wh.sql(sql)
    except duckdb.Error as exc:  # the user's query is wrong
        raise QEError(f"walk-forward query failed: {str(exc).splitlines()[0]}") from exc
    return [d for d in table.column("trading_date").to_pylist() if d is not None]


# -- the worker side -----------------------------------------------------------------------------------------
_WORKER_WAREHOUSE: Warehouse | None = None


def _init_worker(root: str) -> None:
    """Open this worker process's own warehouse (a DuckDB connection cannot cross a fork)."""
    global _WORKER_WAREHOUSE
    _WORKER_WAREHOUSE = Warehouse(root)


def _train_job(query: str, strategy: str, params: dict[str, Any], config_json: str) -> dict[str, float]:
    """One grid point on one training window, in a worker: its metrics (nothing recorded)."""
    assert _WORKER_WAREHOUSE is not None, "worker not initialised"
    return _train(_WORKER_WAREHOUSE, query, strategy, params, BacktestConfig.model_validate_json(config_json))


def _train(wh: Warehouse, query: str, strategy: str, params: dict[str, Any], config: BacktestConfig) -> dict[str, float]:
    result = run_backtest(wh, query, make_strategy(strategy, params), config, record=False)
    return result.metrics


def _pool_context() -> multiprocessing.context.BaseContext:
    # Never fork a process that holds DuckDB connections and threads: the workers start from a fresh
    # interpreter (forkserver where the platform has it, else spawn).
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


# -- the walk-forward ----------------------------------------------------------------------------------------
def walk_forward(wh: Warehouse, query: str, strategy: str, grid: dict[str, list], *, train_days: int,
                 test_days: int, anchored: bool = False, metric: str = "sharpe",
                 config: BacktestConfig | None = None, processes: int = 2) -> WalkForwardResult:
    """Walk-forward optimise ``strategy`` over ``grid`` on the bars of ``query``.

    Parameters
    ----------
    wh : Warehouse
        Where the query runs and the runs are recorded.
    query : str
        One SELECT returning ``symbol, ts, open, high, low, close`` (as for :func:`run_backtest`).
    strategy : str
        ``module:Class`` (or ``path/to/file.py:Class``), importable by worker processes; each run builds
        ``Class(**params)``.
    grid : dict of str -> list
        Parameter values to try; every combination is a grid point (first key varies slowest).
    train_days, test_days : int
        Trading dates in the training and test part of each window.
    anchored : bool
        Training always starts at the first trading date (expanding window) instead of rolling.
    metric : str
        A key of :data:`engine.results.metrics.METRIC_KEYS`; higher is better, NaN ranks last, ties go to the
        earlier grid point.
    config : BacktestConfig, optional
        For every run; test runs override ``initial_capital`` (carried) and ``close_at_end`` (True).
    processes : int
        Worker processes for the training runs (1 runs them in this process).

    Returns
    -------
    WalkForwardResult

    Raises
    ------
    QEError
        Unknown metric, fewer trading dates than ``train_days + test_days``, a bad grid or strategy.
    """
    started = time.perf_counter()
    if metric not in METRIC_KEYS:
        raise QEError(f"unknown metric {metric!r}; one of {', '.join(METRIC_KEYS)}")
    if processes < 1:
        raise ConfigError(f"processes must be >= 1 (got {processes})")
    config = config or BacktestConfig()
    parse_query(query)  # one clear error for a query that is not a single SELECT
    timeframe = config.timeframe or infer_timeframe(query)
    if timeframe is None:
        raise ConfigError("cannot tell the bar timeframe from the query; give it (BacktestConfig.timeframe)")
    config = config.model_copy(update={"timeframe": timeframe})
    load_strategy_class(strategy)  # fail here, not in a worker, when it cannot be imported
    # every grid point as the strategy's declared types (a point it rejects fails here, once, with its name),
    # so the windows table records the values the runs used
    points = [_checked_params(strategy, params) for params in grid_points(grid)]

    windows = plan_windows(trading_dates(wh, query), train_days, test_days, anchored)

    # 1. Every grid point on every training window: the windows do not depend on each other, so all the
    #    runs go to the pool at once.
    jobs = [(w.index, i, window_query(query, w.train_start, w.train_end), params)
            for w in windows for i, params in enumerate(points)]
    scores: dict[tuple[int, int], float] = {}
    if processes == 1 or len(jobs) == 1:
        for wi, pi, q, params in jobs:
            scores[wi, pi] = _score(_train(wh, q, strategy, params, config), metric)
    else:
        config_json = config.model_dump_json()
        with ProcessPoolExecutor(max_workers=min(processes, len(jobs)), mp_context=_pool_context(),
                                 initializer=_init_worker, initargs=(str(wh.root),)) as pool:
            futures = {(wi, pi): pool.submit(_train_job, q, strategy, params, config_json)
                       for wi, pi, q, params in jobs}
            try:
                for key, future in futures.items():
                    scores[key] = _score(future.result(), metric)
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)  # a failed run stops the rest, not after them
                raise
    train_s = time.perf_counter() - started

    # 2. The best point of each window on its test part, capital carried, flat at the end.
    run_id = new_run_id()
    capital = config.initial_capital
    tests: list[BacktestResult] = []
    for w in windows:
        w.scores = [scores[w.index, i] for i in range(len(points))]
        best = _best(w.scores)
        w.params, w.in_sample = dict(points[best]), w.scores[best]
        test_config = config.model_copy(update={"initial_capital": capital, "close_at_end": True})
        result = run_backtest(wh, window_query(query, w.test_start, w.test_end), make_strategy(strategy, w.params),
                              test_config, record=False)
        w.initial_capital, w.final_equity = capital, result.final_equity
        w.test_metrics = dict(result.metrics)
        w.test_run_id = record_run(wh, result, kind="walkforward_window", parent_run_id=run_id,
                                   extra_config={"walkforward": {"parent_run_id": run_id, "metric": metric,
                                                                 **w.to_json()}})
        if not result.final_equity > 0:
            raise QEError(f"walk-forward window {w.index} ended with equity {result.final_equity:g} <= 0; "
                          "the next window cannot start from it")
        capital = result.final_equity
        tests.append(result)

    # 3. The stitched out-of-sample run, recorded last (its ledger row appears once everything is on disk).
    stitched = _stitch(tests, query=query, strategy=tests[0].strategy, config=config, timeframe=timeframe)
    stitched.run_id = run_id
    record_run(wh, stitched, kind="walkforward", extra_config={"walkforward": {
        "metric": metric, "anchored": anchored, "train_days": train_days, "test_days": test_days,
        "strategy": strategy, "grid": _json_safe(grid), "points": _json_safe(points),
        "windows": [w.to_json() for w in windows],
    }})
    total_s = time.perf_counter() - started
    return WalkForwardResult(run_id, windows, stitched, metric=metric, grid=points,
                             timings={"train_s": train_s, "test_s": total_s - train_s, "total_s": total_s})


def _checked_params(strategy: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` as the strategy's declared types; a point the strategy rejects is one ConfigError."""
    made = make_strategy(strategy, params)
    return {key: made.params.get(key, value) for key, value in params.items()}


def _score(metrics: dict[str, float], metric: str) -> float:
    value = metrics.get(metric, math.nan)
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _best(scores: list[float]) -> int:
    """Index of the highest score; NaN ranks last; ties go to the earlier point; all NaN -> 0."""
    best = 0
    for i, score in enumerate(scores):
        if math.isnan(score):
            continue
        if math.isnan(scores[best]) or score > scores[best]:
            best = i
    return best


# -- stitching -----------------------------------------------------------------------------------------------
def _stitch(results: list[BacktestResult], *, query: str, strategy: str, config: BacktestConfig,
            timeframe: str) -> BacktestResult:
    """The test runs end to end, ids renumbered to stay unique, cumulative columns carried."""
    offsets = {"order": 0, "fill": 0, "trade": 0}
    carried = {"realized": 0.0, "commissions": 0.0, "slippage": 0.0}
    parts: dict[str, list[pa.Table]] = {k: [] for k in results[0].tables}
    for result in results:
        t = result.tables
        parts["orders"].append(_shift(t["orders"], {"order_id": offsets["order"]}))
        parts["fills"].append(_shift(t["fills"], {"fill_id": offsets["fill"], "order_id": offsets["order"],
                                                  "trade_id": offsets["trade"]}))
        parts["trades"].append(_shift(t["trades"], {"trade_id": offsets["trade"]}))
        parts["events"].append(_shift(t["events"], {"order_id": offsets["order"]}))
        parts["positions"].append(t["positions"])
        # realized / commissions / slippage are running totals within a run: continue them across windows.
        # A window long enough to have spilled its equity to disk is read back whole here (the stitched
        # result holds every test point in memory: O(test bars), see BacktestResult.equity_table).
        equity = result.equity_table()
        for name, base in carried.items():
            equity = equity.set_column(equity.column_names.index(name), name, pc.add(equity[name], base))
        parts["equity"].append(equity)
        if equity.num_rows:
            carried = {name: equity[name][-1].as_py() for name in carried}
        offsets["order"] += _next_id(t["orders"], "order_id")
        offsets["fill"] += _next_id(t["fills"], "fill_id")
        offsets["trade"] += _next_id(t["trades"], "trade_id")
    tables = {name: pa.concat_tables(tables) for name, tables in parts.items()}
    metrics = compute_metrics(tables["equity"], tables["trades"], tables["fills"],
                              initial_capital=config.initial_capital, timeframe=timeframe)
    timings = {key: float(sum(r.timings.get(key, 0.0) for r in results)) for key in ("query_s", "feed_s", "loop_s", "bars")}
    starts = [r.data_start for r in results if r.data_start is not None]
    ends = [r.data_end for r in results if r.data_end is not None]
    return BacktestResult(
        config=config.model_copy(update={"close_at_end": True}), strategy=strategy, params={}, query=query,
        timeframe=timeframe, tables=tables, metrics=metrics, timings=timings, final_equity=results[-1].final_equity,
        symbols=sorted({s for r in results for s in r.symbols}),
        data_start=min(starts) if starts else None, data_end=max(ends) if ends else None,
    )


def _shift(table: pa.Table, offsets: dict[str, int]) -> pa.Table:
    for name, offset in offsets.items():
        if offset:
            column = table[name]
            table = table.set_column(table.column_names.index(name), name, pc.add(column, pa.scalar(offset, column.type)))
    return table


def _next_id(table: pa.Table, column: str) -> int:
    """max(id) + 1 (0 for no rows): the offset that keeps the next window's ids after this one's."""
    if table.num_rows == 0:
        return 0
    top = pc.max(table[column]).as_py()
    return 0 if top is None else int(top) + 1


# -- helpers -------------------------------------------------------------------------------------------------
def _clean(query: str) -> str:
    return query.strip().rstrip(";").strip()


def _iso(day: date) -> str:
    if not isinstance(day, date):
        raise QEError(f"window bound must be a date, not {day!r}")
    return day.isoformat()


def _finite_or_none(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _json_safe(value: Any) -> Any:
    """Plain JSON values (NaN/inf as null, anything else unknown as text)."""
    if isinstance(value, float):
        return _finite_or_none(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return json.loads(json.dumps(value, default=str))
