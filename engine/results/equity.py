"""The equity series of a run, recorded in memory bounded by a chunk size, not by the length of the history.

The kernel (:meth:`engine.kernel.TradingKernel.process`) appends one equity point per distinct bar timestamp
to plain :class:`array.array` buffers of an :class:`EquityRecorder` (the cheapest append Python has), and the
account state after each fill to ``cash_marks``. Between record batches the loop asks the recorder to
:meth:`~EquityRecorder.flush` once its buffer holds ``chunk_points`` points or more: the buffered points
become one chunk of the ledger table (:data:`warehouse.schemas.RUN_EQUITY`, exactly the rows the in-memory
table would hold), the chunk is appended to a Parquet file with :class:`pyarrow.parquet.ParquetWriter`, and
:class:`EquitySummary` folds it into the running statistics that
:func:`engine.results.metrics.compute_metrics_streaming` turns into the same metrics :func:`engine.results.metrics.compute_metrics`
computes from the whole table. The buffers are then emptied, so a run holds at most ``chunk_points`` plus one
record batch of points, whatever its length.

A run whose points never reach ``chunk_points`` at a batch boundary never writes a file: its equity table is
built in memory once at the end (:meth:`EquityRecorder.table`), as before.

Memory per point while buffered: 24 bytes in the buffers; a flush of ``n`` points allocates the chunk table
(10 columns, ~80 bytes a point) and a few numpy temporaries of the same size, released right after. The
summary keeps one row per CME trading date (the daily sample) and a few scalars.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import weakref
from array import array
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from warehouse import schemas
from warehouse.store import ClaimedDirectory

__all__ = ["DEFAULT_CHUNK_POINTS", "EquityRecorder", "EquitySummary", "summarize_equity"]

#: Points buffered before they are written out (~25 MB of buffers, ~100 MB transient at a flush).
DEFAULT_CHUNK_POINTS = 1_048_576

#: Name of the spilled equity file inside its directory.
EQUITY_FILE = "equity.parquet"


class EquitySummary:
    """Running statistics of an equity series, fed in time order one ``RUN_EQUITY`` chunk at a time.

    Everything :func:`engine.results.metrics.compute_metrics` derives from the equity table, kept in O(1) memory
    (plus one row per trading date):

    * ``points``, ``first_ts`` / ``last_ts`` (microseconds since the epoch, UTC, as stored in the ledger),
      ``last_equity`` (``E_end``), ``equity_sum`` (for the mean equity of turnover), ``exposed`` (points with
      ``gross_notional > 0``);
    * per-bar returns ``r_t = E_t / E_{t-1} - 1`` (the first against the initial capital): ``returns_count``,
      ``returns_mean``, ``returns_m2`` (sum of squared deviations; chunks merged with Chan's parallel formula,
      numerically stable) and ``returns_absmax`` (``max |r_t|``, NaN-propagating like ``np.max``);
    * ``peak`` (running maximum, the initial capital the first peak) and ``max_drawdown`` (``max(1 - E / peak)``
      over the points so far, ``None`` before the first point);
    * the drawdown episodes of :func:`engine.results.metrics._longest_drawdown`: ``dd_peak_i`` / ``dd_peak_ts`` (index
      and ts of the point that set the current peak; ``-1`` / ``None`` while it is still the initial capital),
      ``dd_best`` (the longest finished episode that started at a point, as the (calendar days, points) tuple
      compared like the reference) and ``dd_initial_end`` ((ts, index) of the point that ended the episode
      starting at the initial capital, if equity fell below it and recovered). The episode starting at the
      initial capital, and the one still open at the end, need the bar length of the run's timeframe and are
      resolved by :func:`engine.results.metrics.compute_metrics_streaming`;
    * the last point of each CME trading date (:meth:`daily_table`), from which daily returns are computed.
    """

    def __init__(self, initial_capital: float) -> None:
        self.initial_capital = float(initial_capital)
        self.points = 0
        self.first_ts: int | None = None
        self.last_ts: int | None = None
        self.last_equity: float | None = None
        self.equity_sum = 0.0
        self.exposed = 0
        self.returns_count = 0
        self.returns_mean = 0.0
        self.returns_m2 = 0.0
        self.returns_absmax = 0.0
        self.peak = self.initial_capital
        self.max_drawdown: float | None = None
        self.dd_peak_i = -1
        self.dd_peak_ts: int | None = None
        self.dd_best: tuple[float, float] = (0.0, 0.0)
        self.dd_initial_end: tuple[int, int] | None = None
        self._daily_parts: list[pa.Table] = []
        self._daily: pa.Table | None = None

    def update(self, chunk: pa.Table) -> None:
        """Fold the next ``RUN_EQUITY`` rows (sorted by ``ts``, after every row seen so far) into the statistics."""
        n = chunk.num_rows
        if n == 0:
            return
        ts = np.asarray(chunk.column("ts").cast(pa.int64()).to_numpy(), dtype=np.int64)  # µs, as stored
        days = np.asarray(chunk.column("trading_date").cast(pa.int32()).to_numpy(), dtype=np.int32)
        e = np.asarray(chunk.column("equity").to_numpy(), dtype=np.float64)
        notional = np.asarray(chunk.column("gross_notional").to_numpy(), dtype=np.float64)
        base = self.points

        # per-bar returns: chunk moments, merged (Chan et al.)
        previous = np.concatenate(([self.initial_capital if self.last_equity is None else self.last_equity], e[:-1]))
        with np.errstate(divide="ignore", invalid="ignore"):
            r = e / previous - 1.0
            mean_b = float(np.mean(r))
            m2_b = float(np.sum((r - mean_b) ** 2))
        count_a, count = self.returns_count, self.returns_count + n
        delta = mean_b - self.returns_mean
        with np.errstate(invalid="ignore", over="ignore"):
            self.returns_mean = self.returns_mean + delta * (n / count)
            self.returns_m2 = self.returns_m2 + m2_b + delta * delta * (count_a * n / count)
        self.returns_count = count
        self.returns_absmax = float(np.maximum(self.returns_absmax, np.max(np.abs(r))))

        # running peak (initial capital first) and drawdown
        running = np.maximum.accumulate(np.concatenate(([self.peak], e)))
        before, at = running[:-1], running[1:]
        with np.errstate(divide="ignore", invalid="ignore"):
            chunk_dd = float(np.max(1.0 - e / at))
        self.max_drawdown = chunk_dd if self.max_drawdown is None else float(np.maximum(self.max_drawdown, chunk_dd))
        self.peak = float(running[-1])

        # drawdown episodes: a point at or above the running peak ends the episode under the previous peak
        # point (if any point lay between them) and becomes the new peak point
        sets = np.flatnonzero(e >= before)
        if len(sets):
            index = sets + base
            set_ts = ts[sets]
            prev_i = np.concatenate(([self.dd_peak_i], index[:-1]))
            prev_ts = np.concatenate(([0 if self.dd_peak_ts is None else self.dd_peak_ts], set_ts[:-1]))
            episode = index - prev_i > 1
            if prev_i[0] == -1 and episode[0]:
                self.dd_initial_end = (int(set_ts[0]), int(index[0]))
            episode[0] &= prev_i[0] != -1
            if episode.any():
                delta_s = (set_ts[episode] - prev_ts[episode]).astype("m8[us]") / np.timedelta64(1, "s")
                days_len = delta_s / 86_400.0
                bars_len = (index[episode] - prev_i[episode]).astype(np.float64)
                longest = days_len.max()
                candidate = (float(longest), float(bars_len[days_len == longest].max()))
                self.dd_best = max(self.dd_best, candidate)
            self.dd_peak_i = int(index[-1])
            self.dd_peak_ts = int(set_ts[-1])

        # the last point of each trading date (dates follow ts, a later chunk overrides a date it continues)
        _, first_reversed = np.unique(days[::-1], return_index=True)
        self._daily_parts.append(chunk.take(pa.array(n - 1 - first_reversed)))
        self._daily = None

        self.points += n
        if self.first_ts is None:
            self.first_ts = int(ts[0])
        self.last_ts = int(ts[-1])
        self.last_equity = float(e[-1])
        self.equity_sum += float(np.sum(e))
        self.exposed += int(np.count_nonzero(notional > 0))

    def daily_table(self) -> pa.Table:
        """``RUN_EQUITY`` rows of the last point of each trading date, sorted by date (one row a date)."""
        if self._daily is None:
            if not self._daily_parts:
                self._daily = schemas.RUN_EQUITY.empty_table()
            else:
                table = pa.concat_tables(self._daily_parts)
                days = np.asarray(table.column("trading_date").cast(pa.int32()).to_numpy(), dtype=np.int32)
                _, first_reversed = np.unique(days[::-1], return_index=True)
                self._daily = table.take(pa.array(len(days) - 1 - first_reversed))
                self._daily_parts = [self._daily]
        return self._daily

    def daily_equity(self) -> np.ndarray:
        """``E_d`` (equity at the end of each trading date), sorted by date."""
        return np.asarray(self.daily_table().column("equity").to_numpy(), dtype=np.float64)

    @property
    def mean_equity(self) -> float:
        return self.equity_sum / self.points if self.points else math.nan


def summarize_equity(source: pa.Table | str | Path, initial_capital: float,
                     chunk_points: int = DEFAULT_CHUNK_POINTS) -> EquitySummary:
    """An :class:`EquitySummary` of a whole ``RUN_EQUITY`` table or Parquet file, read a chunk at a time."""
    summary = EquitySummary(initial_capital)
    if isinstance(source, pa.Table):
        for start in range(0, source.num_rows, chunk_points):
            summary.update(source.slice(start, chunk_points))
        return summary
    parquet = pq.ParquetFile(source)
    for batch in parquet.iter_batches(batch_size=chunk_points):
        summary.update(pa.Table.from_batches([batch]).cast(schemas.RUN_EQUITY))
    return summary


class EquityRecorder:
    """Equity points of one run: buffered by the event loop, spilled to Parquet a chunk at a time.

    The loop appends to ``ts`` (bar ts, ns), ``unrealized`` and ``notional`` (gross notional) -- one entry per
    distinct bar timestamp, after its last bar -- to ``day_marks`` ((buffer index of the first point, trading
    day) at each new trading date) and to ``cash_marks`` ((buffer index of the point the fill belongs to,
    realized, commissions, slippage) after each fill). Indices are positions in the current buffer; a flush
    rebases what it keeps. The account state after a fill holds from the point of the bar that produced it
    onwards, carried across chunks.

    Parameters
    ----------
    initial_capital : float
    chunk_points : int
        Flush threshold, points.
    directory : Path, optional
        Where the spilled file goes (a fresh subdirectory is created in it at the first flush; the
        warehouse's ``.staging`` when the run will be recorded, so the final rename stays on one file
        system; claimed while this recorder lives, so a writer's sweep of ``.staging`` leaves it alone);
        None: a new temporary directory. The caller owns :attr:`spill_dir` (the backtester ties its removal to
        the result's lifetime; :meth:`abort` removes it).
    run_id : str, optional
        Written in the ``run_id`` column of spilled chunks (NULL without one; the in-memory table always
        has NULL until recorded).
    """

    def __init__(self, initial_capital: float, *, chunk_points: int = DEFAULT_CHUNK_POINTS,
                 directory: Path | None = None, run_id: str | None = None) -> None:
        if chunk_points < 1:
            raise ValueError(f"chunk_points must be >= 1, not {chunk_points}")
        self.initial_capital = float(initial_capital)
        self.chunk_points = int(chunk_points)
        self.directory = Path(directory) if directory is not None else None
        self.run_id = run_id
        self.ts = array("q")
        self.unrealized = array("d")
        self.notional = array("d")
        self.day_marks: list[tuple[int, int]] = []
        self.cash_marks: list[tuple[int, float, float, float]] = []
        self.flushed = 0  # points written to the file
        self.summary = EquitySummary(initial_capital)
        self.path: Path | None = None  # the spilled file, once there is one
        self.spill_dir: Path | None = None  # the directory this recorder created for it
        self._writer: pq.ParquetWriter | None = None
        self._claim: ClaimedDirectory | None = None
        self._carry = (0.0, 0.0, 0.0)  # realized, commissions, slippage before the buffer's first point
        self._carry_day = 0  # trading day of the point before the buffer's first one
        self.first_ts_ns: int | None = None
        self.last_ts_ns: int | None = None

    @property
    def spilled(self) -> bool:
        """Points went to the file (then the file, not :meth:`table`, holds the ledger)."""
        return self.path is not None

    @property
    def points(self) -> int:
        return self.flushed + len(self.ts)

    def data_span(self) -> tuple[int | None, int | None]:
        """(first, last) point ts in ns, or (None, None) without a point."""
        first = self.first_ts_ns if self.first_ts_ns is not None else (self.ts[0] if len(self.ts) else None)
        last = self.ts[-1] if len(self.ts) else self.last_ts_ns
        return first, last

    # -- building ------------------------------------------------------------------------------------------------
    def table(self, n: int | None = None, run_id: str | None = None, copy: bool = False) -> pa.Table:
        """The first ``n`` buffered points (all by default) as ``RUN_EQUITY`` rows (``run_id`` NULL unless given).

        Without ``copy`` the ``unrealized`` and ``gross_notional`` columns share the buffers' memory (the
        buffers cannot grow while the table lives: fine once the run is over).
        """
        n = len(self.ts) if n is None else n
        ts = np.frombuffer(self.ts, dtype=np.int64)[:n] if n else np.zeros(0, np.int64)
        unrealized = np.frombuffer(self.unrealized, dtype=np.float64)[:n] if n else np.zeros(0)
        notional = np.frombuffer(self.notional, dtype=np.float64)[:n] if n else np.zeros(0)
        if copy:
            unrealized, notional = unrealized.copy(), notional.copy()
        points = np.arange(n)
        # Each point takes the last fill mark whose point index is <= its own (the carried state before any).
        marks = np.array(self.cash_marks, dtype=np.float64).reshape(-1, 4)
        last = np.searchsorted(marks[:, 0], points, side="right")
        realized = np.concatenate(([self._carry[0]], marks[:, 1]))[last]
        commissions = np.concatenate(([self._carry[1]], marks[:, 2]))[last]
        slippage = np.concatenate(([self._carry[2]], marks[:, 3]))[last]
        cash = self.initial_capital + realized - commissions
        marks_days = np.array(self.day_marks, dtype=np.int64).reshape(-1, 2)
        which = np.searchsorted(marks_days[:, 0], points, side="right")
        days = np.concatenate(([self._carry_day], marks_days[:, 1]))[which].astype(np.int32)
        return pa.table(
            {
                "run_id": pa.nulls(n, pa.string()) if run_id is None else pa.repeat(pa.scalar(run_id, pa.string()), n),
                "ts": pa.array(ts, pa.int64()).cast(pa.timestamp("ns", tz="UTC")).cast(schemas.TS, safe=False),
                "trading_date": pa.array(days, pa.int32()).cast(pa.date32()),
                "equity": cash + unrealized,
                "cash": cash,
                "unrealized": unrealized,
                "realized": realized,
                "commissions": commissions,
                "slippage": slippage,
                "gross_notional": notional,
            },
            schema=schemas.RUN_EQUITY,
        )

    # -- spilling --------------------------------------------------------------------------------------------------
    def flush(self) -> tuple[np.ndarray, int]:
        """Write every buffered point as one chunk, fold it into :attr:`summary`, empty the buffers.

        Marks of the point still in progress (index = buffer length) are kept, rebased to index 0.
        Returns the chunk's point timestamps (ns) and the index of its first point in the run.
        """
        n = len(self.ts)
        base = self.flushed
        ts_ns = np.frombuffer(self.ts, dtype=np.int64)[:n].copy()
        if n == 0:
            return ts_ns, base
        chunk = self.table(n, run_id=self.run_id, copy=True)
        if self._writer is None:
            self._open()
        self._writer.write_table(chunk, row_group_size=max(n, 1))
        self.summary.update(chunk)
        del chunk
        # carry the account state and the trading day into the next chunk; rebase what belongs to it
        kept_cash = []
        for mark in self.cash_marks:
            if mark[0] < n:
                self._carry = mark[1:]
            else:
                kept_cash.append((mark[0] - n, *mark[1:]))
        kept_days = []
        for index, day in self.day_marks:
            if index < n:
                self._carry_day = day
            else:
                kept_days.append((index - n, day))
        self.cash_marks[:] = kept_cash
        self.day_marks[:] = kept_days
        if self.first_ts_ns is None:
            self.first_ts_ns = int(ts_ns[0])
        self.last_ts_ns = int(ts_ns[-1])
        del self.ts[:], self.unrealized[:], self.notional[:]
        self.flushed += n
        return ts_ns, base

    def _open(self) -> None:
        if self.directory is not None:
            # Claimed for as long as this recorder lives: a writer sweeping the warehouse's staging
            # directory (under the write lock) leaves a running backtest's spill alone, a dead one's not.
            claim = ClaimedDirectory(self.directory, "equity-")
            weakref.finalize(self, claim.release)
            self._claim = claim
            self.spill_dir = claim.path
        else:
            self.spill_dir = Path(tempfile.mkdtemp(prefix="qe-equity-"))
        self.path = self.spill_dir / EQUITY_FILE
        self._writer = pq.ParquetWriter(self.path, schemas.RUN_EQUITY, compression="zstd")

    def close(self) -> None:
        """Finish the file (a spilled run flushes its last points first); no-op for an in-memory run."""
        if self._writer is not None:
            if len(self.ts):
                self.flush()
            self._writer.close()
            self._writer = None

    def abort(self) -> None:
        """Drop the file and its directory (a run that failed)."""
        if self._writer is not None:
            try:
                self._writer.close()
            finally:
                self._writer = None
        if self.spill_dir is not None:
            shutil.rmtree(self.spill_dir, ignore_errors=True)
        if self._claim is not None:
            self._claim.release()
        self.path = None
