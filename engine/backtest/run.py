"""The backtest shell: one SQL query in, a recorded futures backtest out.

:func:`run_backtest` streams the query from DuckDB as Arrow record batches into a :class:`Backtester`: the
kernel (:mod:`engine.kernel`, the per-bar work shared with the live loop) with the simulated broker
(:mod:`engine.execution.simulated`). Memory is bounded by the batch size and the equity recorder's chunk,
not by the length of the history.
"""

from __future__ import annotations

import shutil
import time
import weakref
from pathlib import Path
from typing import Any, Literal

import duckdb
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from engine.core.instruments import InstrumentBook, InstrumentOverride
from engine.core.portfolio import Portfolio
from engine.data.feed import BAR_NS, Feed, first_trading_days, infer_timeframe, open_feed
from engine.execution.simulated import BacktestExecutionHandler
from engine.execution.slippage import SlippageConfig, make_slippage
from engine.kernel import TradingKernel
from engine.results.equity import DEFAULT_CHUNK_POINTS, EquityRecorder
from engine.results.result import RunResult, kernel_result
from engine.results.tables import run_tables
from engine.risk import RiskLimits, RiskManager
from engine.strategy import FunctionStrategy, Strategy
from warehouse.errors import ConfigError

__all__ = ["BacktestConfig", "BacktestResult", "Backtester", "run_backtest"]

#: A backtest's result is a :class:`~engine.results.result.RunResult` (the name backtests have always used).
BacktestResult = RunResult


class BacktestConfig(BaseModel):
    """Everything that shapes a run besides the query and the strategy (strict: unknown keys are errors).

    Attributes
    ----------
    initial_capital : float
        Starting cash, account currency.
    timeframe : str, optional
        Bar length (``1m``, ``1h``, ``1d`` ...); inferred from the views the query reads when omitted.
    fill : {"next_open", "signal_close"}
        Fill convention of market orders (see :mod:`engine.execution.simulated`).
    intrabar : {"ohlc", "adaptive"}
        Intrabar price path for limit/stop orders.
    slippage : SlippageConfig
    participation : float, optional
        Volume participation cap per bar and symbol (0 < p <= 1); None for no cap.
    latency_ms : float
        Submission-to-execution delay, milliseconds.
    limit_through : bool
        Limit orders need the price to trade through the limit, not only touch it.
    risk : RiskLimits
    instruments : dict
        Per-symbol overrides of multiplier, tick size, fee and margin.
    roll : bool
        Roll open positions when the front contract changes (the query must return ``contract``).
    close_at_end : bool
        Cancel working orders and close every position at the last bar's close (plus slippage and
        commission) when the data ends, so the run ends flat (walk-forward test windows use it).
    batch_size : int
        Rows per Arrow record batch streamed from DuckDB.
    equity_chunk_points : int
        Equity points held in memory before they are spilled to a Parquet file (checked between record
        batches). A run with more points than this records its equity ledger in ``BacktestResult.equity_path``
        instead of memory (see :class:`BacktestResult`); shorter runs are unaffected.
    """

    model_config = ConfigDict(extra="forbid")

    initial_capital: float = Field(default=1_000_000.0, gt=0)
    timeframe: str | None = None
    fill: Literal["next_open", "signal_close"] = "next_open"
    intrabar: Literal["ohlc", "adaptive"] = "ohlc"
    slippage: SlippageConfig = SlippageConfig()
    participation: float | None = Field(default=None, gt=0, le=1)
    latency_ms: float = Field(default=0.0, ge=0)
    limit_through: bool = False
    risk: RiskLimits = RiskLimits()
    instruments: dict[str, InstrumentOverride] = Field(default_factory=dict)
    roll: bool = True
    close_at_end: bool = False
    batch_size: int = Field(default=65_536, ge=1)
    equity_chunk_points: int = Field(default=DEFAULT_CHUNK_POINTS, ge=1)


class Backtester(TradingKernel):
    """The backtest shell's kernel: the simulated broker, built from a :class:`BacktestConfig`, fed an Arrow stream.

    Strategies reach it as ``self.engine`` (functional strategies get it as their second argument); everything
    they call is the kernel's (:class:`~engine.kernel.TradingKernel`).
    """

    def __init__(self, strategy: Strategy, config: BacktestConfig, timeframe: str,
                 rolls: dict[tuple[str, str, str], tuple[float, float]] | None = None, *,
                 equity_dir: Path | None = None, run_id: str | None = None) -> None:
        if timeframe not in BAR_NS:
            raise ConfigError(f"unknown timeframe {timeframe!r}; one of {', '.join(BAR_NS)}")
        self.config = config
        self.timeframe = timeframe
        instruments = InstrumentBook(config.instruments)
        slippage = make_slippage(config.slippage)
        handler = BacktestExecutionHandler(
            instruments, BAR_NS[timeframe], fill=config.fill, intrabar=config.intrabar, slippage=slippage,
            participation=config.participation, latency_ns=int(config.latency_ms * 1_000_000),
            limit_through=config.limit_through,
        )
        recorder = EquityRecorder(config.initial_capital, chunk_points=config.equity_chunk_points,
                                  directory=equity_dir, run_id=run_id)
        super().__init__(strategy, handler, instruments, RiskManager(config.risk, instruments),
                         Portfolio(config.initial_capital), recorder, bar_ns=BAR_NS[timeframe], slippage=slippage,
                         rolls=rolls, roll=config.roll)
        self.feed_s = 0.0

    def run(self, feed: Feed) -> None:
        """Process every bar of ``feed``, a record batch at a time (equity spilled between batches)."""
        self.bind(feed.columns, feed.bar_type)
        clock = time.perf_counter
        feed_s = 0.0
        batches = feed.batches()
        while True:
            started = clock()
            item = next(batches, None)
            feed_s += clock() - started
            if item is None:
                break
            self.flush_equity_if_full()  # between batches: equity memory stays bounded by chunk + batch
            self.process(*item)
        self.feed_s = feed_s
        self.finish(self.config.close_at_end)

    def tables(self) -> dict[str, pa.Table]:
        """The run's audit trail as Arrow tables with the ledger schemas (``run_id`` NULL until recorded)."""
        return run_tables(self)


def load_rolls(con: duckdb.DuckDBPyConnection, symbols: list[str] | None = None) -> dict[tuple[str, str, str], tuple[float, float]]:
    try:
        rows = con.sql("SELECT symbol, from_contract, to_contract, from_price, to_price FROM rolls").fetchall()
    except duckdb.Error:
        return {}
    # float(): a roll table built from SQL literals may hold DECIMALs
    return {(s, f, t): (float(fp), float(tp)) for s, f, t, fp, tp in rows if fp is not None and tp is not None}


def run_backtest(source: Any, query: str, strategy: Strategy | Any, config: BacktestConfig | None = None,
                 *, record: bool | None = None) -> BacktestResult:
    """Run ``strategy`` over the bars ``query`` returns.

    Parameters
    ----------
    source : Warehouse or duckdb.DuckDBPyConnection
        Where the query runs. With a :class:`~warehouse.Warehouse`, roll prices come from its roll table and
        the run is recorded in its ledger (unless ``record=False``).
    query : str
        One SELECT returning ``symbol, ts, open, high, low, close`` (+ ``volume``, ``contract``, features...).
    strategy : Strategy or callable
        A :class:`~engine.strategy.Strategy`, or ``fn(bar, backtester) -> Optional[Order]``.
    config : BacktestConfig, optional

    Returns
    -------
    BacktestResult
        A run with more equity points than ``config.equity_chunk_points`` has its equity ledger in
        ``result.equity_path`` and a daily sample in ``result.tables["equity"]`` (see :class:`BacktestResult`).
    """
    from warehouse import Warehouse

    config = config or BacktestConfig()
    if not isinstance(strategy, Strategy):
        if not callable(strategy):
            raise ConfigError(f"strategy must be a Strategy or a callable, not {type(strategy).__name__}")
        strategy = FunctionStrategy(strategy)
    warehouse = source if isinstance(source, Warehouse) else None
    con = warehouse.connect() if warehouse is not None else source
    timeframe = config.timeframe or infer_timeframe(query)
    if timeframe is None:
        raise ConfigError("cannot tell the bar timeframe from the query; give it (--timeframe / BacktestConfig.timeframe)")
    # The roll table and the date span are read before the stream opens: another query on the connection
    # would end the stream. Fees (and margins, when checked) must cover every date before the first bar.
    rolls = load_rolls(con)
    InstrumentBook(config.instruments).check_coverage(first_trading_days(con, query),
                                                      margins=config.risk.check_margin)
    recording = warehouse is not None and record is not False
    run_id = None
    if recording:
        from engine.results.ledger import new_run_id

        # known from the start, so spilled equity chunks carry it and recording only renames the file
        run_id = new_run_id()
    started = time.perf_counter()
    feed = open_feed(con, query, config.batch_size)
    engine = Backtester(strategy, config, timeframe, rolls=rolls, run_id=run_id,
                        equity_dir=Path(warehouse.root) / ".staging" if recording else None)
    strategy.engine = engine
    query_s = time.perf_counter() - started
    loop_started = time.perf_counter()
    try:
        strategy.on_start()
        engine.run(feed)
        strategy.on_stop()
    except BaseException:
        engine.recorder.abort()
        raise
    loop_s = time.perf_counter() - loop_started
    result = kernel_result(engine, config, query, timeframe, run_id=run_id,
                           timings={"query_s": query_s, "feed_s": engine.feed_s, "loop_s": loop_s - engine.feed_s})
    recorder = engine.recorder
    if recorder.spill_dir is not None:
        # the spilled file lives as long as the result (recording moves it into the ledger first)
        weakref.finalize(result, shutil.rmtree, str(recorder.spill_dir), True)
    if recording:
        from engine.results.ledger import record_run

        record_run(warehouse, result)
    return result
