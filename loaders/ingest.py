"""Ingest: read -> validate -> quarantine bad rows -> merge good rows into partitions atomically.

Idempotent by construction: a partition is the union of what it held and the new rows, keyed by
(contract, ts) with the new row winning; a partition whose content would not change is not rewritten,
and a file's quarantine rows replace that file's previous ones. Ingesting the same file twice therefore
leaves every table as it was.

One file lands all-or-nothing: every warehouse file it changes is staged as a temporary first and renamed
into place only once all were written (:class:`warehouse.store.StagedWrites`), so a full disk leaves the
warehouse as it was and the report says "write failed" (``failed_at == "write"``), not "not read".
"""

from __future__ import annotations

import functools
import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from loaders import daily
from loaders.bad_ticks import find_bad_ticks
from loaders.detect import expand_paths, read_file
from loaders.raw import RawFile
from warehouse import layout, schemas
from warehouse.errors import LoadError, QEError, WriteError
from warehouse.lock import holds_write_lock
from warehouse.store import StagedWrites, sha256_file
from warehouse.templates import render
from warehouse.warehouse import Warehouse


@dataclass
class FileReport:
    """What happened to one input file."""

    path: str
    format: str = ""
    rows_read: int = 0
    rows_loaded: int = 0
    rows_unchanged: int = 0
    quarantined: Counter = field(default_factory=Counter)
    partitions_written: int = 0
    symbols: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    #: Where the file failed: "read" (reader or validation), "write" (a warehouse file could not be
    #: written; nothing from the file landed) or None.
    failed_at: str | None = None

    @property
    def rows_quarantined(self) -> int:
        """Rows rejected, over all rules."""
        return sum(self.quarantined.values())


@holds_write_lock  # the read-merge-write of a partition must not interleave with another writer's
def ingest(
    warehouse: Warehouse,
    paths: Iterable[str | Path],
    timeframe: str | None = None,
    fmt: str | None = None,
    on_file: Callable[[FileReport], None] | None = None,
    build_rolls: bool = True,
) -> list[FileReport]:
    """Ingest files (or every bar file under directories) into ``warehouse``.

    Parameters
    ----------
    warehouse : Warehouse
        Destination.
    paths : iterable of path
        Files or directories.
    timeframe : {"1s", "1m", "1h", "1d"}, optional
        Overrides the timeframe the file or its folder implies.
    fmt : {"dbn", "lean", "csv", "parquet"}, optional
        Overrides format detection.
    on_file : callable, optional
        Called with each :class:`FileReport` as soon as its file is done (progress display).
    build_rolls : bool
        Rebuild the roll table and front segments of every futures symbol the files touched.

    Returns
    -------
    list of FileReport
        One per file; a file that could not be read has ``error`` set and wrote nothing.
    """
    if timeframe is not None and timeframe not in layout.TIMEFRAMES:
        raise QEError(f"unknown timeframe {timeframe!r}; choose one of {', '.join(layout.TIMEFRAMES)}")
    files = expand_paths(list(paths))
    if not files:
        raise QEError("no input files found")
    # Definitions first, so that continuous DBN bars can name their contracts.
    files.sort(key=lambda p: (0 if "definition" in p.name else 1, str(p)))
    reports: list[FileReport] = []
    touched: set[str] = set()
    for path in files:
        report = FileReport(path=str(path))
        try:
            raw = read_file(path, fmt, timeframe)
            report.format = raw.format
            report.notes.extend(raw.notes)
            _ingest_raw(warehouse, path, raw, report)
        except LoadError as exc:
            report.error, report.failed_at = str(exc), "read"
        except WriteError as exc:  # staged writes were removed: the warehouse is as it was before this file
            report.error, report.failed_at = f"{path}: {exc} (nothing from this file was written)", "write"
            _forget_counts(report)
        except Exception as exc:  # an unexpected failure still names its file and spares the others
            report.error = f"{path}: unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            report.failed_at = "read"
        reports.append(report)
        touched |= report.symbols
        if on_file is not None:
            on_file(report)
    warehouse.refresh()  # the views pick up the new files
    if build_rolls and touched:
        from warehouse.rolls import build_rolls as rebuild

        rebuild(warehouse, symbols=sorted(touched))
    return reports


def _ingest_raw(warehouse: Warehouse, path: Path, raw: RawFile, report: FileReport) -> None:
    report.rows_read = raw.rows_read
    key = _source_key(path)
    con = validation_connection()
    rejected: list[pa.Table] = []
    staged: list[tuple[Path, pa.Table]] = []
    known = _known_contracts(warehouse, raw)
    daily_symbols: set[str] = set()
    daily_convention = None
    for tf, table in raw.bars.items():
        ts_is_text = pa.types.is_string(table.schema.field("ts").type) or pa.types.is_large_string(table.schema.field("ts").type)
        convention = None
        if tf == "1d":  # UTC days or session bars: one convention per file (loaders/daily.py)
            table, convention, notes = daily.prepare(con, table, ts_is_text)
            daily_convention = convention
            report.notes.extend(notes)
        checked = check_bars(con, table, tf, known, ts_is_text=ts_is_text, daily_convention=convention)
        good = checked.filter(pc.is_null(checked["rule"]))
        bad = checked.filter(pc.is_valid(checked["rule"]))
        if tf == "1d":
            good, clash = daily.split_conflicts(warehouse.root, good, convention)
            bad = pa.concat_tables([bad, clash])
            daily_symbols = set(good["symbol"].to_pylist())
        rejected.append(quarantine_rows(bad, "bars", tf))
        report.notes.extend(_conflict_holes(bad, tf))
        staged.extend(_bar_partitions(warehouse.root, tf, good))
    if raw.open_interest is not None:
        good_oi, bad_oi = _validate_open_interest(con, raw.open_interest)
        rejected.append(bad_oi)
        staged.extend(_oi_partitions(warehouse.root, good_oi))
    # Everything is validated before anything is written: a reader error above leaves no trace. Then every
    # file this source changes (partitions, its quarantine, definitions, log row) is staged as a temporary
    # and renamed into place only once all were written, so a full disk leaves the warehouse as it was.
    batch = StagedWrites()
    with batch:
        _stage_file_writes(batch, warehouse.root, key, path, raw, staged, rejected, report)
        if daily_symbols:
            daily.record(batch, warehouse.root, daily_symbols, daily_convention)
        batch.commit()


def _stage_file_writes(
    batch: StagedWrites,
    root: Path,
    key: str,
    path: Path,
    raw: RawFile,
    partitions: list[tuple[Path, pa.Table]],
    rejected: list[pa.Table],
    report: FileReport,
) -> None:
    """Stage every warehouse file one source file changes, filling ``report`` with the counts."""
    replaced_other = stale = 0
    for target, rows in partitions:
        merged = merge_partition(batch, target, rows, str(path), also=layout.live_bar_files(target.parent))
        report.rows_loaded += merged.loaded
        report.rows_unchanged += merged.unchanged
        report.partitions_written += int(merged.loaded > 0 or merged.stale_removed > 0)
        report.symbols.add(_symbol_of(target))
        replaced_other += merged.replaced_other
        stale += merged.stale_removed
    if replaced_other:
        report.notes.append(f"{replaced_other} row(s) replaced different values loaded earlier from another file")
    if stale:
        report.notes.append(f"{stale} row(s) this file loaded before and no longer holds were removed")
    quarantine = pa.concat_tables(rejected) if rejected else schemas.QUARANTINE.empty_table()
    report.quarantined.update(quarantine.column("rule").to_pylist())
    batch.stage_if_changed(quarantine, root / "quarantine" / f"source={key}.parquet")
    if raw.definitions is not None:
        batch.stage_if_changed(raw.definitions.cast(schemas.DEFINITIONS), root / "definitions" / f"source={key}.parquet")
    if raw.instrument_runs is not None:
        batch.stage_if_changed(
            raw.instrument_runs.cast(schemas.INSTRUMENT_RUNS), root / "instrument_runs" / f"source={key}.parquet"
        )
    batch.stage(_log_entry(path, raw, report), root / "ingest_log" / f"source={key}.parquet")


def _forget_counts(report: FileReport) -> None:
    """Zero what a failed write had counted: none of it landed."""
    report.rows_loaded = report.rows_unchanged = report.partitions_written = 0
    report.quarantined.clear()
    report.symbols.clear()


def check_bars(
    con: duckdb.DuckDBPyConnection,
    table: pa.Table,
    tf: str,
    known: dict[int, str],
    *,
    ts_is_text: bool = False,
    daily_convention: str | None = None,
) -> pa.Table:
    """Validate raw bar rows: ``sql/validate_bars.sql``, then the bad-tick rules (:mod:`loaders.bad_ticks`).

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        From :func:`validation_connection`.
    table : pyarrow.Table
        Raw rows, columns :data:`loaders.raw.RAW_COLUMNS`.
    tf : str
        Their timeframe (``1s``, ``1m``, ``1h``, ``1d``).
    known : dict
        instrument_id -> contract (see :func:`_known_contracts`).
    ts_is_text : bool
        ``ts`` is text to parse.
    daily_convention : str, optional
        ``1d`` only: how the rows stamp their days (:mod:`loaders.daily`).

    Returns
    -------
    pyarrow.Table
        Every row, typed, with ``rule`` (null = accepted) and ``detail``.
    """
    con.register("raw", table)
    con.register("symbol_map", _symbol_map(table, known))
    sql = _rendered(
        "validate_bars.sql",
        tf_us=layout.TIMEFRAMES[tf] * 1_000_000,
        timeframe=tf,
        ts_is_text=ts_is_text,
        daily_convention=daily_convention,
        daily_label=daily.LABELS.get(daily_convention),
    )
    checked = con.execute(sql).to_arrow_table()  # execute: bound once (a relation from con.sql binds twice)
    con.unregister("raw")
    con.unregister("symbol_map")
    return _flag_bad_ticks(checked)


def validation_connection() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB (UTC) with the ``tick_sizes`` relation :func:`check_bars` needs."""
    from warehouse.contracts import specs_table

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("tick_sizes", specs_table().select(["root", "tick_size"]))
    return con


def _flag_bad_ticks(checked: pa.Table) -> pa.Table:
    """Set ``rule``/``detail`` of the rows the bad-tick rules (:mod:`loaders.bad_ticks`) flag among the accepted."""
    found = find_bad_ticks(checked)
    if found.positions.size == 0:
        return checked
    mask = np.zeros(checked.num_rows, dtype=bool)
    mask[found.positions] = True  # positions ascend: the replacements below line up with the mask
    for name, values in (("rule", found.rules), ("detail", found.details)):
        column = checked[name].combine_chunks()
        patched = pc.replace_with_mask(column, pa.array(mask), pa.array(values, column.type))
        checked = checked.set_column(checked.schema.get_field_index(name), name, patched)
    return checked


def _known_contracts(warehouse: Warehouse, raw: RawFile) -> dict[int, str]:
    """instrument_id -> raw symbol from stored definitions and the file's own.

    Reads the definition files directly rather than through the views, so that ingesting many files does
    not rebuild every view once per file.
    """
    known: dict[int, str] = {}
    stored = sorted((warehouse.root / "definitions").glob("*.parquet"))
    if stored:
        table = pa.concat_tables(pq.read_table(p, columns=["instrument_id", "raw_symbol"]) for p in stored)
        known.update(zip(table["instrument_id"].to_pylist(), table["raw_symbol"].to_pylist()))
    if raw.definitions is not None:
        known.update(zip(raw.definitions["instrument_id"].to_pylist(), raw.definitions["raw_symbol"].to_pylist()))
    return known


def _symbol_map(table: pa.Table, known: dict[int, str]) -> pa.Table:
    """For each distinct (symbol, contract, instrument_id): the stored symbol and contract.

    Futures rows get ``symbol`` = root and ``contract`` = the exchange code (``ES`` / ``ESZ3``). A generic file
    may name contracts in ``symbol`` (``ESZ3``); continuous data (``ES.v.0``, or DBN rows already mapped to
    their root) names only an instrument id, which the definitions resolve, else ``<root>#<instrument_id>``.
    Worked out once per distinct key, not per row; validation joins the result.
    """
    from warehouse.contracts import root_of

    keys = table.select(["symbol", "contract", "instrument_id"]).group_by(["symbol", "contract", "instrument_id"]).aggregate([])
    new_symbol, new_contract = [], []
    for sym, con_, iid in zip(*(keys.column(c).to_pylist() for c in ("symbol", "contract", "instrument_id"))):
        sym = None if sym is None else str(sym).strip().upper()  # exchange symbols are upper case: esz3 is ESZ3
        con_ = None if con_ is None else str(con_).strip().upper() or None
        root = root_of(sym) if sym else None
        iid = int(iid) if iid not in (None, "") and str(iid).strip().lstrip("-").isdigit() else None
        if con_ is None and root is not None and iid is not None and (sym == root or "." in sym):
            con_, sym = known.get(iid) or f"{root}#{iid}", root
        elif con_ is None and root is not None and sym != root and "." not in sym:
            con_, sym = sym, root
        elif con_ is not None and sym is not None and sym == con_ and root is not None:
            sym = root
        new_symbol.append(sym)
        new_contract.append(con_)
    return keys.append_column("new_symbol", pa.array(new_symbol, pa.string())).append_column(
        "new_contract", pa.array(new_contract, pa.string())
    )


def quarantine_rows(bad: pa.Table, table_name: str, tf: str | None) -> pa.Table:
    """Rejected rows of :func:`check_bars` (with ``_file``, ``_row``, ``rule``, ``detail``) as quarantine rows."""
    n = bad.num_rows
    return pa.table(
        {
            "file": bad["_file"],
            "row": bad["_row"],
            "table_name": pa.array([table_name] * n, pa.string()),
            "timeframe": pa.array([tf] * n, pa.string()),
            "rule": bad["rule"],
            "detail": bad["detail"],
            "symbol": bad["symbol"],
            "contract": bad["contract"],
            "ts": bad["ts"].cast(schemas.TS),
        },
        schema=schemas.QUARANTINE,
    )


def _conflict_holes(bad: pa.Table, tf: str) -> list[str]:
    """A note naming the bars left out because the file's rows for them disagree (``duplicate_conflict``)."""
    rows = bad.filter(pc.equal(bad["rule"], "duplicate_conflict"))
    if rows.num_rows == 0:
        return []
    keys = rows.select(["symbol", "contract", "ts"]).group_by(["symbol", "contract", "ts"]).aggregate([]).sort_by("ts")
    first = keys.slice(0, 1).to_pylist()[0]
    return [
        f"{keys.num_rows} {tf} bar(s) missing: the file holds different rows for the same (symbol, contract, ts), "
        f"so none was loaded (duplicate_conflict in quarantine; first: {first['contract'] or first['symbol']} "
        f"{first['ts']:%Y-%m-%d %H:%M:%S} UTC)"
    ]


def _bar_partitions(root: Path, tf: str, good: pa.Table) -> list[tuple[Path, pa.Table]]:
    if good.num_rows == 0:
        return []
    rows = pa.table(
        {
            "symbol": good["symbol"],
            "year": pc.year(good["ts"]),
            "contract": good["contract"],
            "instrument_id": good["instrument_id"],
            "ts": good["ts"].cast(schemas.TS),
            "open": good["open"],
            "high": good["high"],
            "low": good["low"],
            "close": good["close"],
            "volume": good["volume"],
            "open_interest": good["open_interest"],
            "source": pc.cast(good["_file"], pa.string()),
        }
    )
    out = []
    for part in rows.group_by(["symbol", "year"]).aggregate([]).to_pylist():
        mask = pc.and_(pc.equal(rows["symbol"], part["symbol"]), pc.equal(rows["year"], part["year"]))
        subset = rows.filter(mask).drop_columns(["symbol", "year"]).cast(schemas.BARS)
        out.append((layout.bar_partition(root, tf, part["symbol"], part["year"]), subset))
    return out


def _validate_open_interest(con: duckdb.DuckDBPyConnection, rows: pa.Table) -> tuple[pa.Table, pa.Table]:
    con.register("raw_oi", rows)
    checked = con.sql(
        """
        SELECT _file, _row, symbol, contract, TRY_CAST(ts AS TIMESTAMPTZ) AS ts,
               TRY_CAST(open_interest AS DOUBLE) AS oi,
               CASE
                   WHEN TRY_CAST(ts AS TIMESTAMPTZ) IS NULL THEN 'unparseable_timestamp'
                   WHEN TRY_CAST(open_interest AS DOUBLE) IS NULL THEN 'unparseable_value'
                   WHEN TRY_CAST(open_interest AS DOUBLE) < 0
                        OR TRY_CAST(open_interest AS DOUBLE) <> floor(TRY_CAST(open_interest AS DOUBLE))
                       THEN 'volume_not_nonneg_integer'
               END AS rule,
               'open_interest=' || coalesce(CAST(open_interest AS VARCHAR), 'NULL') AS detail
        FROM raw_oi
        """
    ).to_arrow_table()
    con.unregister("raw_oi")
    good = checked.filter(pc.is_null(checked["rule"]))
    good = pa.table(
        {
            "symbol": good["symbol"],
            "contract": good["contract"],
            "ts": good["ts"].cast(schemas.TS),
            "open_interest": pc.cast(good["oi"], pa.int64()),
            "source": good["_file"],
        }
    )
    return good, quarantine_rows(checked.filter(pc.is_valid(checked["rule"])), "open_interest", None)


def _oi_partitions(root: Path, rows: pa.Table) -> list[tuple[Path, pa.Table]]:
    out = []
    for symbol in pc.unique(rows["symbol"]).to_pylist():
        subset = rows.filter(pc.equal(rows["symbol"], symbol)).drop_columns(["symbol"]).cast(schemas.OPEN_INTEREST)
        out.append((root / "open_interest" / f"symbol={symbol}" / "data.parquet", subset))
    return out


@dataclass
class MergeResult:
    """Row counts of one partition merge."""

    loaded: int
    unchanged: int
    replaced_other: int = 0
    stale_removed: int = 0


def merge_partition(batch: StagedWrites, target: Path, new: pa.Table, source: str | None,
                    also: Sequence[Path] = (), con: duckdb.DuckDBPyConnection | None = None,
                    read: Callable[[Path], pa.Table] = pq.read_table) -> MergeResult:
    """Merge ``new`` into the partition file ``target`` (see ``sql/merge_partition.sql``).

    Keyed by (contract, ts); a new row replaces a stored one with the same key. With ``source`` (the file
    being ingested) the rows that file loaded before but no longer holds are dropped; with None (an append of
    live bars) no stored row is dropped. ``also``: other files of the same partition (live day files, see
    :func:`warehouse.layout.live_bar_files`) whose rows are folded into ``target`` and which are removed, so
    that a key lives in one file only. The merged partition is staged in ``batch`` (replaced when the batch
    commits), and not at all when nothing changes. ``con``: a UTC connection to use (one per call otherwise;
    a caller merging once per live bar saves its start-up). ``read``: how a stored file is read (the live
    store keeps the day files it wrote, see :mod:`engine.live.store`).
    """
    folded = [p for p in also if p.exists()]
    if not target.exists() and not folded:
        batch.stage(new.sort_by([("contract", "ascending"), ("ts", "ascending")]), target)
        return MergeResult(new.num_rows, 0)
    stored = [read(p).cast(new.schema) for p in ([target] if target.exists() else []) + folded]
    if source is None and not folded and not _ts_overlap(stored, new):
        # A live append of bars after those stored: nothing to compare, replace or drop, so the merge is the
        # union sorted by key -- the rows ``merge_partition.sql`` gives, without a DuckDB round trip per bar.
        batch.stage(pa.concat_tables([new, *stored]).sort_by([("contract", "ascending"), ("ts", "ascending")]),
                    target)
        return MergeResult(new.num_rows, 0)
    own = con is None
    if con is None:
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
    con.register("new_rows", new)
    con.register("old_rows", pa.concat_tables(stored))
    value_columns = [f.name for f in new.schema if f.name not in ("contract", "ts", "source")]
    params = {"source": source} if source is not None else None
    template = {"value_columns": tuple(value_columns), "stale": source is not None}
    unchanged, replaced_other, stale = con.sql(_rendered("merge_partition.sql", mode="stats", **template),
                                               params=params).fetchone()
    result = MergeResult(new.num_rows - unchanged, unchanged, replaced_other, stale)
    if result.loaded > 0 or stale > 0 or folded:
        merged = con.sql(_rendered("merge_partition.sql", mode="rows", **template), params=params)
        batch.stage(merged.to_arrow_table().cast(new.schema), target)
        for path in folded:
            batch.stage(new.schema.empty_table(), path)  # an empty table removes the file at commit
    if own:
        con.close()
    else:
        con.unregister("new_rows")
        con.unregister("old_rows")
    return result


def _ts_overlap(stored: list[pa.Table], new: pa.Table) -> bool:
    """Whether a ``ts`` of ``new`` is also in ``stored``: a superset of a (contract, ts) key in both (another
    contract's bar at the same time only sends the rows through ``merge_partition.sql``, which gives the same
    rows), and cheaper to test per live bar than joined keys."""
    return any(pc.any(pc.is_in(table["ts"], value_set=new["ts"])).as_py() for table in stored if table.num_rows)


def _rendered(name: str, **params: object) -> str:
    """``render(name, **params)``, once per distinct parameters (hashable values): rendering checks the SQL
    with sqlglot, ~25 ms, which a live append once per bar cannot pay every time."""
    return _rendered_cached(name, tuple(sorted(params.items())))


@functools.lru_cache(maxsize=64)
def _rendered_cached(name: str, params: tuple[tuple[str, object], ...]) -> str:
    return render(name, **dict(params))


def _log_entry(path: Path, raw: RawFile, report: FileReport) -> pa.Table:
    return pa.table(
        {
            "file": [str(path)],
            "format": [raw.format],
            "sha256": [sha256_file(path)],
            "rows_read": [report.rows_read],
            "rows_loaded": [report.rows_loaded],
            "rows_unchanged": [report.rows_unchanged],
            "rows_quarantined": [report.rows_quarantined],
            "ingested_at": [datetime.now(timezone.utc)],
        },
        schema=schemas.INGEST_LOG,
    )


def _source_key(path: Path) -> str:
    return hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]



def _symbol_of(partition: Path) -> str:
    for part in partition.parts:
        if part.startswith("symbol="):
            return part.removeprefix("symbol=")
    return ""
