"""Final live bars into the warehouse: the validation, quarantine and atomic writes of ``qe ingest``.

:func:`append_bars` runs the rows through :func:`loaders.ingest.check_bars` (``sql/validate_bars.sql`` and the
bad-tick rules), with the contract's last stored bars as context so that a price at the wrong scale is seen
against the series it joins; rejected rows go to the quarantine table and are never returned as tradable.

The spike rule needs the *next* bar (a one-bar excursion that comes straight back), which a live bar does not
have yet. A bar that moves from the previous close by more than its root's spike limit is therefore **held**:
not stored, not tradable, returned in :attr:`AppendReport.held`, and judged when the caller passes it again
with the next bar (a spike is quarantined, a real move stored a bar late). Such moves are far beyond exchange
price limits, so in practice only bad ticks wait.

Layout: live bars of one UTC day go to ``live-<day>.parquet`` beside the partition's ``data.parquet``
(:func:`warehouse.layout.live_bar_file`): rewriting a day file of at most 1,440 one-minute rows per contract
per bar costs milliseconds, where rewriting the year partition costs ~0.1-0.5 s (``bench/bench_live_append.py``).
The views read every ``*.parquet`` of a partition; a (contract, ts) key lives in one file only (a bar already
in ``data.parquet`` is merged there, and the next ``qe ingest`` of the partition folds the day files into
``data.parquet``). The warehouse write lock is held only for the read-merge-write of the touched files.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.live.bars import BARS_TABLE
from loaders.ingest import MergeResult, check_bars, merge_partition, quarantine_rows, validation_connection
from loaders.raw import raw_bars_table
from warehouse import bad_ticks, layout, schemas
from warehouse.lock import write_lock
from warehouse.store import StagedWrites, file_signature, files_signature, ts_span
from warehouse.warehouse import Warehouse

__all__ = ["AppendReport", "CheckedBars", "append_bars", "check_live_bars", "write_checked", "last_stored_ts",
           "LIVE_TIMEFRAMES"]

#: Timeframes live bars can be stored in (those the warehouse stores intraday).
LIVE_TIMEFRAMES = ("1m", "1h")
_STORED = "<stored>"


@dataclass
class AppendReport:
    """What one :func:`append_bars` call did.

    Attributes
    ----------
    stored : pyarrow.Table
        The valid bars, now in the warehouse (new, replacing a stored bar, or already held with the same
        values), schema :data:`engine.live.bars.BARS_TABLE`, ordered by (ts, symbol, contract): the ones to
        trade on.
    rows_loaded, rows_unchanged : int
        How many of them were written, and how many the warehouse already held with the same values.
    quarantined : pyarrow.Table
        Rejected rows as written to the ``quarantine`` table (rule, detail, symbol, contract, ts).
    held : pyarrow.Table
        Bars waiting for their next bar (a possible spike); pass them again with the next bars.
    files : list of Path
        Files written or removed.
    views_stale : bool
        The first bar file of the timeframe (or quarantine file) was written and ``refresh`` was False: call
        ``wh.refresh()`` before querying (new files of a table that had some show without it).
    total_ms, locked_ms : float
        Wall time of the call and of the part under the warehouse write lock, in milliseconds.
    """

    stored: pa.Table
    quarantined: pa.Table
    held: pa.Table
    rows_loaded: int = 0
    rows_unchanged: int = 0
    files: list[Path] = field(default_factory=list)
    views_stale: bool = False
    total_ms: float = 0.0
    locked_ms: float = 0.0


def append_bars(
    wh: Warehouse,
    bars: pa.Table,
    *,
    timeframe: str = "1m",
    source: str = "ib:realtime",
    context: int = 32,
    hold_suspects: bool = True,
    lock_timeout: float | None = None,
    refresh: bool = True,
) -> AppendReport:
    """Validate final bars and append the good ones to the warehouse; quarantine the bad ones.

    :func:`check_live_bars` then :func:`write_checked` (a caller that wants to start work on the valid bars
    while they are written calls the two itself).

    Parameters
    ----------
    wh : Warehouse
    bars : pyarrow.Table
        Columns ``symbol`` (root), ``contract`` (exchange code, e.g. ``MESH6``), ``ts`` (open time, tz-aware),
        ``open``, ``high``, ``low``, ``close`` (contract units), ``volume`` (contracts); see
        :func:`engine.live.bars.bars_table`. Bars held by the previous call go first.
    timeframe : {"1m", "1h"}
        The timeframe the bars belong to (their ``ts`` must be on its grid).
    source : str
        Written in the rows' ``source`` column and the quarantine's ``file`` column (``ib:realtime``,
        ``ib:history``).
    context : int
        How many stored bars of each contract, before the first new one, the bad-tick rules see.
    hold_suspects : bool
        Hold the last bar of a contract when it may be a spike (see the module docstring). False stores it.
    lock_timeout : float, optional
        Seconds to wait for the warehouse write lock (default: :func:`warehouse.lock.resolve_timeout`).
    refresh : bool
        Re-register the warehouse's views when the table had no file before (see :attr:`AppendReport.views_stale`);
        False leaves that to the caller (e.g. an event loop calling this from a worker thread).

    Returns
    -------
    AppendReport

    Raises
    ------
    ValueError
        An unknown timeframe or missing columns.
    warehouse.lock.LockTimeout
        Another writer held the lock for ``lock_timeout`` seconds (nothing was written).
    """
    checked = check_live_bars(wh, bars, timeframe=timeframe, source=source, context=context,
                              hold_suspects=hold_suspects)
    return write_checked(wh, checked, lock_timeout=lock_timeout, refresh=refresh)


@dataclass(frozen=True)
class CheckedBars:
    """Live bars through validation, not yet written (:func:`check_live_bars`).

    Attributes
    ----------
    good : pyarrow.Table
        The valid bars to store, as validated rows (ingest's schema plus ``rule``/``_file``).
    held : pyarrow.Table
        Valid bars held for their next bar (possible spikes), schema :data:`engine.live.bars.BARS_TABLE`.
    quarantine : pyarrow.Table
        The rejected rows as they go to the ``quarantine`` table.
    timeframe, source : str
    started : float
        ``time.perf_counter()`` when the check began (the report's ``total_ms`` counts from it).
    ready : pyarrow.Table
        The bars that will be stored and traded on (``good`` as :data:`engine.live.bars.BARS_TABLE`), in the
        order of :attr:`AppendReport.stored`; made with the check, in its worker thread.
    """

    good: pa.Table
    held: pa.Table
    quarantine: pa.Table
    timeframe: str
    source: str
    started: float
    ready: pa.Table


def check_live_bars(wh: Warehouse, bars: pa.Table, *, timeframe: str = "1m", source: str = "ib:realtime",
                    context: int = 32, hold_suspects: bool = True) -> CheckedBars:
    """The validation half of :func:`append_bars` (no lock, nothing written); same parameters."""
    started = time.perf_counter()
    if timeframe not in LIVE_TIMEFRAMES:
        raise ValueError(f"live bars are stored as {' or '.join(LIVE_TIMEFRAMES)}, not {timeframe!r}")
    missing = set(BARS_TABLE.names) - set(bars.column_names)
    if missing:
        raise ValueError(f"bars lack column(s) {', '.join(sorted(missing))}")
    if bars.num_rows == 0:
        return CheckedBars(BARS_TABLE.empty_table(), BARS_TABLE.empty_table(), schemas.QUARANTINE.empty_table(),
                           timeframe, source, started, BARS_TABLE.empty_table())
    bars = bars.select(BARS_TABLE.names).cast(BARS_TABLE)
    stored = _context(wh.root, timeframe, bars, context)
    raw = _raw_rows(bars, stored, source)
    with _connection() as con:
        checked = check_bars(con, raw, timeframe, {})
    new = pc.equal(checked["_file"], source)
    checked_new = checked.filter(new)
    good = checked_new.filter(pc.is_null(checked_new["rule"]))
    bad = checked_new.filter(pc.is_valid(checked_new["rule"]))
    held_mask = _suspects(checked, good) if hold_suspects else np.zeros(good.num_rows, bool)
    held = good.filter(pa.array(held_mask))
    good = good.filter(pa.array(~held_mask))
    ready = _as_bars(good).sort_by([("ts", "ascending"), ("symbol", "ascending"), ("contract", "ascending")])
    return CheckedBars(good, _as_bars(held), quarantine_rows(bad, "bars", timeframe), timeframe, source, started,
                       ready)


def write_checked(wh: Warehouse, checked: CheckedBars, *, lock_timeout: float | None = None,
                  refresh: bool = True) -> AppendReport:
    """The write half of :func:`append_bars`: the good bars and the quarantine, atomically, under the
    warehouse write lock (held only for the read-merge-write of the touched files)."""
    timeframe, good, quarantine = checked.timeframe, checked.good, checked.quarantine
    if good.num_rows == 0 and quarantine.num_rows == 0:  # nothing to write (none given, or all held)
        return AppendReport(checked.ready, quarantine, checked.held,
                            total_ms=(time.perf_counter() - checked.started) * 1000.0)
    files: list[Path] = []
    # The views expand their globs per query, so a new day file shows at once; only a view registered while
    # its table had no file at all (an empty stand-in) must be registered again.
    stale = False
    loaded = unchanged = 0
    locked = time.perf_counter()
    with write_lock(wh.root, timeout=lock_timeout, command="qe live"):
        locked = time.perf_counter()
        stored_bars = checked.ready
        stamps = _CONTEXT.stamps(wh.root, timeframe, stored_bars)  # the files as this append found them
        batch = _KeptWrites()
        with batch:
            for target, rows, also in _targets(wh.root, timeframe, good, checked.source):
                stale |= not any((wh.root / "bars" / f"timeframe={timeframe}").glob("*/*/*.parquet"))
                with _connection() as con:
                    result: MergeResult = merge_partition(batch, target, rows, None, also=also, con=con,
                                                          read=_DAY_FILES.read)
                loaded, unchanged = loaded + result.loaded, unchanged + result.unchanged
            if quarantine.num_rows:
                path = _quarantine_file(wh.root, timeframe, quarantine)
                stale |= not any(path.parent.glob("*.parquet"))
                old = [pq.read_table(path)] if path.exists() else []
                batch.stage(pa.concat_tables(old + [quarantine]), path)
            files = batch.targets
            batch.commit()
            _DAY_FILES.keep(batch.tables)
        _CONTEXT.advance(wh.root, timeframe, stored_bars, stamps)
        locked = (time.perf_counter() - locked) * 1000.0
    if refresh and stale:
        wh.refresh()
    return AppendReport(
        stored=checked.ready, quarantined=quarantine, held=checked.held, rows_loaded=loaded,
        rows_unchanged=unchanged, files=files, views_stale=stale and not refresh,
        total_ms=(time.perf_counter() - checked.started) * 1000.0, locked_ms=locked,
    )


def last_stored_ts(wh: Warehouse, timeframe: str, symbol: str, contract: str) -> datetime | None:
    """Open time (UTC) of the last stored bar of ``contract``, read from the partition files (no views)."""
    newest: datetime | None = None
    directory = wh.root / "bars" / f"timeframe={timeframe}" / f"symbol={symbol}"
    for year_dir in sorted(directory.glob("year=*"), reverse=True):
        for path in year_dir.glob("*.parquet"):
            table = pq.read_table(path, columns=["ts"], filters=[("contract", "=", contract)])
            if table.num_rows:
                top = pc.max(table["ts"]).as_py()
                newest = top if newest is None or top > newest else newest
        if newest is not None:
            return newest
    return None


# -- validation -----------------------------------------------------------------------------------------
_con_guard = threading.Lock()
_con: duckdb.DuckDBPyConnection | None = None


class _connection:
    """The validation connection, made once per process and used by one caller at a time."""

    def __enter__(self) -> duckdb.DuckDBPyConnection:
        global _con
        _con_guard.acquire()
        if _con is None:
            _con = validation_connection()
        return _con

    def __exit__(self, *exc: object) -> None:
        _con_guard.release()


def _context(root: Path, timeframe: str, bars: pa.Table, count: int) -> pa.Table:
    """The last ``count`` stored bars of each contract in ``bars`` before its first new bar (BARS_TABLE)."""
    out: list[pa.Table] = []
    keys = bars.group_by(["symbol", "contract"]).aggregate([("ts", "min")])
    for symbol, contract, first in zip(*(keys[c].to_pylist() for c in ("symbol", "contract", "ts_min"))):
        key = (root, timeframe, symbol, first.year, contract)
        tail = _CONTEXT.get(key, first, count)
        if tail is None:
            stamp = _CONTEXT.stamp(*key[:4])  # before the read: a write meanwhile makes the entry stale, not wrong
            tail = _read_context(root, timeframe, symbol, contract, first, count)
            _CONTEXT.put(key, tail, count, stamp)
        if tail.num_rows:
            out.append(tail.slice(max(tail.num_rows - count, 0)))
    return pa.concat_tables(out) if out else BARS_TABLE.empty_table()


def _read_context(root: Path, timeframe: str, symbol: str, contract: str, first: datetime, count: int) -> pa.Table:
    """:func:`_context` of one contract, read from the partition's files (newest first)."""
    found: list[pa.Table] = []
    rows = 0
    for path in _newest_files_first(root, timeframe, symbol, first.year):
        table = pq.read_table(path, filters=[("contract", "=", contract), ("ts", "<", first)])
        if table.num_rows:
            found.append(table)
            rows += table.num_rows
            if rows >= count and path.name.startswith(layout.LIVE_PREFIX):
                break  # the day files already give enough; do not read the year's data.parquet
    if not found:
        return BARS_TABLE.empty_table()
    tail = pa.concat_tables(found).sort_by("ts").slice(max(rows - count, 0))
    tail = tail.append_column("symbol", pa.array([symbol] * tail.num_rows, pa.string()))
    return tail.select(BARS_TABLE.names).cast(BARS_TABLE)


class _ContextCache:
    """The last stored bars of each contract, kept between the appends of one process.

    Reading them from the partition's files (the day files, early in a day the year's ``data.parquet``) was a
    third of an append's time. An entry is keyed by (warehouse, timeframe, root, year, contract) and stamped
    with the partition directory's files (:func:`~warehouse.store.files_signature`): any write by another process
    (``qe ingest`` folding the day files, a correction) changes the stamp and the entry is read again. The
    session's own appends advance the entries they touch under the write lock (:meth:`advance`), right after
    their commit. An entry answers only for bars after everything it holds (a correction of an earlier bar
    reads the files).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple, tuple[tuple, pa.Table, int]] = {}

    @staticmethod
    def stamp(root: Path, timeframe: str, symbol: str, year: int) -> tuple:
        return files_signature(layout.bar_partition(root, timeframe, symbol, year).parent)

    def get(self, key: tuple, first: datetime, count: int) -> pa.Table | None:
        with self._lock:
            entry = self._entries.get(key)
        if entry is None:
            return None
        stamp, tail, kept = entry
        if kept < count or stamp != self.stamp(*key[:4]):
            return None
        if tail.num_rows and pc.max(tail["ts"]).as_py() >= first:
            return None
        return tail

    def put(self, key: tuple, tail: pa.Table, count: int, stamp: tuple) -> None:
        """Keep ``tail`` as read from the partition files as they were at ``stamp``."""
        with self._lock:
            self._entries[key] = (stamp, tail, count)

    @staticmethod
    def _keys(root: Path, timeframe: str, stored: pa.Table) -> list[tuple]:
        groups = stored.group_by(["symbol", "contract"]).aggregate([("ts", "min")]).to_pylist()
        return [(root, timeframe, g["symbol"], g["ts_min"].year, g["contract"]) for g in groups]

    def stamps(self, root: Path, timeframe: str, stored: pa.Table) -> dict[tuple, tuple]:
        """The stamps of the partitions ``stored`` goes to, taken under the write lock before writing."""
        return {key: self.stamp(*key[:4]) for key in self._keys(root, timeframe, stored)}

    def advance(self, root: Path, timeframe: str, stored: pa.Table, stamps: dict[tuple, tuple]) -> None:
        """After a commit of ``stored`` (BARS_TABLE rows, now in the files): the entries of their contracts,
        if they described the files as the append found them (``stamps``, from :meth:`stamps`)."""
        for key in self._keys(root, timeframe, stored):
            symbol, contract = key[2], key[4]
            with self._lock:
                entry = self._entries.pop(key, None)
            if entry is None or entry[0] != stamps.get(key):
                continue
            _, tail, kept = entry
            mine = stored.filter(pc.and_(pc.equal(stored["symbol"], symbol), pc.equal(stored["contract"], contract)))
            if mine.num_rows == 0 or pc.min(mine["ts"]).as_py().year != key[3] or pc.max(mine["ts"]).as_py().year != key[3]:
                continue
            if tail.num_rows and pc.min(mine["ts"]).as_py() <= pc.max(tail["ts"]).as_py():
                continue  # a replaced bar: read again next time
            both = pa.concat_tables([tail, mine.cast(BARS_TABLE)]).sort_by("ts")
            self.put(key, both.slice(max(both.num_rows - kept, 0)), kept, self.stamp(*key[:4]))  # under the lock


_CONTEXT = _ContextCache()


class _KeptWrites(StagedWrites):
    """Staged writes that remember each table staged, by target (an empty table: the target is removed)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[Path, pa.Table] = {}

    def stage(self, table: pa.Table, path: Path) -> None:
        super().stage(table, path)
        self.tables[path] = table


class _DayFileCache:
    """The live day files (``live-<day>.parquet``) as this process last wrote them.

    Every bar merges its bars into each root's day file, which meant reading the whole file back first (~2-3 ms
    a root, on the thread that competes with the bar's features for the cores). A file is read from memory
    when it is still the one written here (same inode, mtime and size); any other writer (``qe ingest``
    folding the day files, a second session) replaces it by a rename, and it is read from disk again.
    """

    #: day files kept (a session appends to one per root and UTC day)
    LIMIT = 64

    def __init__(self) -> None:
        self._kept: dict[Path, tuple[tuple[int, int, int], pa.Table]] = {}
        self._guard = threading.Lock()

    def read(self, path: Path) -> pa.Table:
        with self._guard:
            kept = self._kept.get(path)
        if kept is not None and kept[0] == file_signature(path):
            return kept[1]
        return pq.read_table(path)

    def keep(self, written: dict[Path, pa.Table]) -> None:
        """After a commit: the day files just written (others, e.g. a year's ``data.parquet``, are not kept)."""
        with self._guard:
            for path, table in written.items():
                self._kept.pop(path, None)
                signature = file_signature(path)
                if path.name.startswith(layout.LIVE_PREFIX) and signature is not None and table.num_rows:
                    self._kept[path] = (signature, table)
            while len(self._kept) > self.LIMIT:
                self._kept.pop(next(iter(self._kept)))


_DAY_FILES = _DayFileCache()


def _newest_files_first(root: Path, timeframe: str, symbol: str, year: int) -> Iterator[Path]:
    directory = layout.bar_partition(root, timeframe, symbol, year).parent
    yield from reversed(layout.live_bar_files(directory))
    data = directory / "data.parquet"
    if data.exists():
        yield data


def _raw_rows(bars: pa.Table, stored: pa.Table, source: str) -> pa.Table:
    """Rows for :func:`check_bars`: the stored context (``_file`` = ``<stored>``) then the new bars."""
    new_keys = set(zip(bars["contract"].to_pylist(), bars["ts"].cast(pa.int64()).to_pylist()))
    keep = [(c, t) not in new_keys for c, t in zip(stored["contract"].to_pylist(), stored["ts"].cast(pa.int64()).to_pylist())]
    stored = stored.filter(pa.array(keep, pa.bool_()))
    both = pa.concat_tables([stored, bars])
    n_stored = stored.num_rows
    files = [_STORED] * n_stored + [source] * bars.num_rows
    rows = list(range(-n_stored, 0)) + list(range(bars.num_rows))
    columns = {name: both[name] for name in BARS_TABLE.names}
    return raw_bars_table({**columns, "instrument_id": pa.nulls(both.num_rows, pa.int64()),
                           "_file": pa.array(files, pa.string()), "_row": pa.array(rows, pa.int64())})


def _suspects(checked: pa.Table, good: pa.Table) -> np.ndarray:
    """Per row of ``good``: the last new bar of its contract moving beyond its root's spike limit.

    The previous close is the contract's accepted bar before it in ``checked`` (stored or new).
    """
    out = np.zeros(good.num_rows, bool)
    if good.num_rows == 0:
        return out
    accepted = checked.filter(pc.is_null(checked["rule"])).select(["symbol", "contract", "ts", "close"])
    limits = dict(zip(bad_ticks.limits_table()["root"].to_pylist(), bad_ticks.limits_table()["spike_log_return"].to_pylist()))
    default = bad_ticks.default_limits().spike_log_return
    series: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for s, c, t, close in zip(*(accepted[k].to_pylist() for k in ("symbol", "contract", "ts", "close"))):
        series.setdefault((s, c), []).append((int(t.timestamp() * 1_000_000), close))
    latest = {}
    for i, (s, c, t) in enumerate(zip(*(good[k].to_pylist() for k in ("symbol", "contract", "ts")))):
        stamp = int(t.timestamp() * 1_000_000)
        if (s, c) not in latest or stamp > latest[(s, c)][1]:
            latest[(s, c)] = (i, stamp)
    for (s, c), (i, stamp) in latest.items():
        points = sorted(series[(s, c)])
        at = [p[0] for p in points].index(stamp)
        if at == len(points) - 1 and at > 0:  # no later bar to tell a spike from a move; one before it
            move = abs(np.log(points[at][1] / points[at - 1][1]))
            out[i] = move > limits.get(s, default)
    return out


# -- writing --------------------------------------------------------------------------------------------
def _targets(root: Path, timeframe: str, good: pa.Table, source: str) -> Iterator[tuple[Path, pa.Table, list[Path]]]:
    """Per (symbol, UTC day): the file its rows merge into, the rows (schemas.BARS) and the files folded in.

    The day's live file, unless ``data.parquet`` may already hold one of the keys (a new bar not after its
    last stored ``ts``): then ``data.parquet``, with the partition's day files folded in (as ``qe ingest``).
    """
    if good.num_rows == 0:
        return
    rows = pa.table({
        "symbol": good["symbol"], "day": pc.cast(good["ts"], pa.date32()), "contract": good["contract"],
        "instrument_id": good["instrument_id"], "ts": good["ts"].cast(schemas.TS), "open": good["open"],
        "high": good["high"], "low": good["low"], "close": good["close"], "volume": good["volume"],
        "open_interest": good["open_interest"], "source": pa.array([source] * good.num_rows, pa.string()),
    })
    for part in rows.group_by(["symbol", "day"]).aggregate([]).to_pylist():
        symbol, day = part["symbol"], part["day"]
        subset = rows.filter(pc.and_(pc.equal(rows["symbol"], symbol), pc.equal(rows["day"], pa.scalar(day, pa.date32()))))
        subset = subset.drop_columns(["symbol", "day"]).cast(schemas.BARS)
        live = layout.live_bar_file(root, timeframe, symbol, day)
        data = live.with_name("data.parquet")
        span = ts_span(data)
        if span is not None and pc.min(subset["ts"]).as_py() <= span[1]:
            yield data, subset, layout.live_bar_files(data.parent)
        else:
            yield live, subset, []


def _quarantine_file(root: Path, timeframe: str, rows: pa.Table) -> Path:
    """One quarantine file per timeframe and UTC day of live appends (``quarantine/source=live-1m-2026-03-02``)."""
    day: date = pc.min(rows["ts"]).as_py().date()
    return layout.table_dir(root, "quarantine") / f"source=live-{timeframe}-{day.isoformat()}.parquet"


def _as_bars(checked: pa.Table) -> pa.Table:
    return checked.select(BARS_TABLE.names).cast(BARS_TABLE)
