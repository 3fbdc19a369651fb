"""What a run produced (a backtest, a walk-forward window, a live or paper session): the ledger tables,
metrics and where its full equity ledger lives."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from engine.results.metrics import compute_metrics, compute_metrics_streaming
from engine.results.tables import run_tables
from engine.strategy import strategy_name
from warehouse import schemas

if TYPE_CHECKING:
    from engine.kernel import TradingKernel

__all__ = ["RunResult", "kernel_result"]


@dataclass
class RunResult:
    """What a run produced.

    Attributes
    ----------
    tables : dict of pyarrow.Table
        ``orders``, ``fills``, ``positions``, ``equity``, ``trades``, ``events`` with the run-ledger schemas
        (without ``run_id`` until recorded); a live or paper run adds ``executions`` (``RUN_EXECUTIONS``: the
        broker's execution reports with their clocks and commissions), which a backtest has not. For a run
        whose equity was spilled to disk (``equity_path`` set), ``tables["equity"]`` is a **daily sample**:
        the last point of each CME trading date (the rows the daily statistics use), not every point; the
        full ledger is the file (:meth:`equity_table`).
    metrics : dict
        Performance metrics (:func:`engine.results.metrics.compute_metrics`, or for a spilled run
        :func:`engine.results.metrics.compute_metrics_streaming`, which gives the same values).
    timings : dict
        ``query_s`` (time to the first batch), ``loop_s`` (event loop), ``bars``.
    equity_path : Path, optional
        The full equity ledger (``RUN_EQUITY`` Parquet, one row per bar timestamp) of a run with more points
        than ``config.equity_chunk_points``; None for an in-memory run. Until the run is recorded it lives in
        a temporary (or warehouse staging) directory removed when the result is garbage-collected;
        :func:`engine.results.ledger.record_run` moves it to ``runs/run_equity/<run_id>.parquet`` and points this at it.
    """

    config: BaseModel
    strategy: str
    params: dict[str, Any]
    query: str
    timeframe: str
    tables: dict[str, pa.Table]
    metrics: dict[str, float]
    timings: dict[str, float]
    final_equity: float
    status: str = "completed"
    run_id: str | None = None
    symbols: list[str] = field(default_factory=list)
    data_start: int | None = None
    data_end: int | None = None
    equity_path: Path | None = None

    @property
    def equity_sampled(self) -> bool:
        """``tables["equity"]`` holds one point per trading date, not every point (see ``equity_path``)."""
        return self.equity_path is not None

    def equity_table(self) -> pa.Table:
        """The full equity ledger: ``tables["equity"]`` for an in-memory run, else the file read whole.

        Reading a spilled run's file costs O(points) memory (about 80 bytes a point); iterate it with
        ``pyarrow.parquet.ParquetFile(result.equity_path).iter_batches()`` to stay bounded.
        """
        if self.equity_path is None:
            return self.tables["equity"]
        return pq.read_table(self.equity_path).cast(schemas.RUN_EQUITY)


def kernel_result(kernel: TradingKernel, config: BaseModel, query: str, timeframe: str, *, timings: dict[str, float],
                  run_id: str | None, status: str = "completed", tables: dict[str, pa.Table] | None = None) -> RunResult:
    """What the kernel's books say a run produced, a backtest's and a live session's alike.

    The ledger tables (:func:`~engine.results.tables.run_tables`, plus ``tables`` a shell adds, such as a live
    session's broker executions), the metrics (streamed from the equity summary when the recorder spilled), the
    data span and the spilled equity file. ``config`` must carry ``initial_capital``.
    """
    run_tables_ = {**run_tables(kernel), **(tables or {})}
    recorder = kernel.recorder
    capital = config.initial_capital  # type: ignore[attr-defined]
    if recorder.spilled:
        metrics = compute_metrics_streaming(recorder.summary, run_tables_["trades"], run_tables_["fills"],
                                            initial_capital=capital, timeframe=timeframe)
    else:
        metrics = compute_metrics(run_tables_["equity"], run_tables_["trades"], run_tables_["fills"],
                                  initial_capital=capital, timeframe=timeframe)
    data_start, data_end = recorder.data_span()
    strategy = kernel.strategy
    return RunResult(
        config=config, strategy=strategy_name(strategy), params=dict(getattr(strategy, "params", {}) or {}),
        query=query, timeframe=timeframe, tables=run_tables_, metrics=metrics,
        timings={**timings, "bars": float(kernel.bars)}, final_equity=kernel.portfolio.equity, status=status,
        run_id=run_id, symbols=sorted(kernel.symbols), data_start=data_start, data_end=data_end,
        equity_path=recorder.path,
    )
