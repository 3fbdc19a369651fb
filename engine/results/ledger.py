"""The run ledger: every run recorded in the warehouse, queryable with the same SQL as bars.

Layout: ``<warehouse>/runs/<table>/<run_id>.parquet`` for the tables of :data:`warehouse.schemas.RUN_TABLES`
(views ``runs``, ``run_orders``, ``run_fills``, ``run_positions``, ``run_equity``, ``run_trades``,
``run_events``, ``run_metrics``, and for live and paper runs ``run_executions``). Each file is written atomically and the ``runs`` row is written last, so
a run is listed only once all of its tables are on disk; a crash in between leaves files that no ``runs``
row points to. Neither :func:`load_run` nor the views (which keep only run ids present in ``runs``) ever
show them, and the next :func:`record_run` deletes them: recording holds the warehouse write lock, so no
other recording can be halfway through when it looks.

A long backtest's equity ledger is not in memory: the backtester spilled it to a Parquet file
(``RunResult.equity_path``, in the warehouse's ``.staging`` directory when the run is recorded, with
``run_id`` already filled), and :func:`record_run` renames that file into place instead of writing a table.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import uuid
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata, resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from warehouse import schemas
from warehouse.errors import QEError
from warehouse.lock import holds_write_lock
from warehouse.store import atomic_file, fsync_dir, write_parquet_atomic

if TYPE_CHECKING:
    from engine.results.result import RunResult
    from warehouse import Warehouse

__all__ = ["new_run_id", "code_version", "record_run", "load_run", "run_path", "remove_uncommitted", "ledger_table"]

#: result.tables key -> ledger table
_TABLES = {
    "orders": "run_orders",
    "fills": "run_fills",
    "positions": "run_positions",
    "equity": "run_equity",
    "trades": "run_trades",
    "events": "run_events",
    "executions": "run_executions",  # live and paper runs only (broker executions); absent from a backtest
}


def new_run_id() -> str:
    """``YYYYmmddTHHMMSS-xxxxxx`` (UTC time, then 6 random hex digits): sortable and unique."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


@lru_cache(maxsize=1)
def code_version() -> str:
    """Package version plus a short hash of every shipped source and SQL file (works without git)."""
    digest = hashlib.sha256()
    for package in ("engine", "warehouse", "loaders", "sql"):
        root = Path(str(resources.files(package)))
        for path in sorted(root.rglob("*")):
            if path.suffix in (".py", ".sql", ".csv") and "__pycache__" not in path.parts:
                digest.update(path.relative_to(root.parent).as_posix().encode())
                digest.update(path.read_bytes())
    try:
        version = metadata.version("quant-engine")
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    return f"{version}+src.{digest.hexdigest()[:12]}"


def _metric_value(value: Any) -> float | None:
    """A metric as stored: NULL, not NaN, when it is undefined (no trades, one day), so ``ORDER BY value DESC``
    does not rank such runs first (DuckDB orders NaN above every number)."""
    number = float(value)
    return number if math.isfinite(number) else None


def latest_run_id(wh: Warehouse) -> str:
    """The most recent top-level run: a walk-forward's window runs (which have a parent) are parts of it."""
    con = wh.new_connection()  # views registered now: the shared one may predate the first run's files
    try:
        row = con.sql("SELECT run_id FROM runs WHERE parent_run_id IS NULL "
                      "ORDER BY created_at DESC, run_id DESC LIMIT 1").fetchone()
    finally:
        con.close()
    if row is None:
        raise QEError(f"no runs recorded in {wh.root}")
    return row[0]


def run_path(root: Path, table: str, run_id: str) -> Path:
    """File of one ledger table of one run."""
    return root / "runs" / table / f"{run_id}.parquet"


def ledger_table(table: pa.Table, run_id: str, schema: pa.Schema) -> pa.Table:
    """``table`` as ledger table ``schema`` of run ``run_id``: columns it lacks NULL, ``run_id`` set on every row."""
    return _with_run_id(_conform(table, schema), run_id, schema)


def _with_run_id(table: pa.Table, run_id: str, schema: pa.Schema) -> pa.Table:
    column = pa.array([run_id] * table.num_rows, pa.string())
    if "run_id" in table.column_names:
        table = table.set_column(table.column_names.index("run_id"), "run_id", column)
    else:
        table = table.add_column(0, "run_id", column)
    return table.select(schema.names).cast(schema)


def _ts_or_none(ns: int | None) -> datetime | None:
    if ns is None:
        return None
    return datetime.fromtimestamp(ns // 1_000_000_000, tz=timezone.utc).replace(microsecond=(ns // 1000) % 1_000_000)


@holds_write_lock
def record_run(wh: Warehouse, result: RunResult, *, kind: str = "backtest", parent_run_id: str | None = None,
               extra_config: dict[str, Any] | None = None) -> str:
    """Write every table of ``result`` and its ``runs`` row; sets and returns ``result.run_id``.

    A result with an ``equity_path`` (a spilled equity ledger) has that file moved (renamed, atomically) to
    ``runs/run_equity/<run_id>.parquet`` -- rewritten a row group at a time when its ``run_id`` column does not
    hold ``run_id`` yet or it is on another file system -- and ``result.equity_path`` then points at it;
    ``tables["equity"]`` (a daily sample) is not written.
    """
    run_id = result.run_id or new_run_id()
    result.run_id = run_id
    equity_path = getattr(result, "equity_path", None)
    remove_uncommitted(wh.root, keep={Path(equity_path).resolve()} if equity_path is not None else set())
    for key, name in _TABLES.items():
        if key == "equity" and equity_path is not None:
            result.equity_path = _place_equity_file(Path(equity_path), run_path(wh.root, name, run_id), run_id)
            continue
        table = result.tables.get(key)
        if table is not None:
            write_parquet_atomic(_with_run_id(table, run_id, schemas.RUN_TABLES[name]), run_path(wh.root, name, run_id))
    metrics = pa.table(
        {"run_id": [run_id] * len(result.metrics), "name": list(result.metrics),
         "value": [_metric_value(v) for v in result.metrics.values()]},
        schema=schemas.RUN_METRICS,
    )
    write_parquet_atomic(metrics, run_path(wh.root, "run_metrics", run_id))
    config = result.config.model_dump(mode="json")
    if extra_config:
        config.update(extra_config)
    row = {
        "run_id": run_id,
        "created_at": datetime.now(timezone.utc),
        "kind": kind,
        "strategy": result.strategy,
        "params": json.dumps(result.params, sort_keys=True, default=str),
        "query": result.query,
        "config": json.dumps(config, sort_keys=True),
        "timeframe": result.timeframe,
        "data_start": _ts_or_none(result.data_start),
        "data_end": _ts_or_none(result.data_end),
        "bars": int(result.timings.get("bars", 0)),
        "symbols": ",".join(result.symbols),
        "code_version": code_version(),
        "initial_capital": result.config.initial_capital,
        "final_equity": result.final_equity,
        "status": result.status,
        "parent_run_id": parent_run_id,
    }
    write_parquet_atomic(pa.Table.from_pylist([row], schema=schemas.RUNS), run_path(wh.root, "runs", run_id))
    wh.refresh()
    return run_id


def remove_uncommitted(root: Path, keep: set[Path] = frozenset()) -> int:
    """Delete the ledger files of runs that have no ``runs`` row (a recording that crashed); return how many.

    Call it only while holding the warehouse write lock: every recording holds it, so a run without its
    ``runs`` row is then never one being recorded right now. Files in ``keep`` (resolved paths) stay.
    """
    committed = {p.stem for p in (root / "runs" / "runs").glob("*.parquet")}
    removed = 0
    for name in schemas.RUN_TABLES:
        if name == "runs":
            continue
        for path in (root / "runs" / name).glob("*.parquet"):
            if path.stem not in committed and path.resolve() not in keep:
                path.unlink(missing_ok=True)
                removed += 1
    return removed


def _place_equity_file(source: Path, target: Path, run_id: str) -> Path:
    """Put a spilled equity ledger at ``target`` atomically, its ``run_id`` column set; returns ``target``.

    A file the backtester spilled for this run (``run_id`` filled, same file system) is renamed; any other
    (recorded after the run, in a temporary directory, or already some run's ledger file, which is left in
    place) is copied a row group at a time with ``run_id`` rewritten, so memory stays bounded by a row group.
    """
    if source.resolve() == target.resolve():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    is_ledger_file = source.parent.name == "run_equity" and source.parent.parent.name == "runs"
    same_device = os.stat(source).st_dev == os.stat(target.parent).st_dev
    if not is_ledger_file and same_device and _holds_run_id(source, run_id):
        with open(source, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(source, target)
        fsync_dir(target.parent)
        return target
    schema = schemas.RUN_EQUITY
    parquet = pq.ParquetFile(source)
    with atomic_file(target) as sink, pq.ParquetWriter(sink, schema, compression="zstd") as writer:
        for i in range(parquet.num_row_groups):
            group = parquet.read_row_group(i)
            writer.write_table(_with_run_id(group, run_id, schema), row_group_size=max(group.num_rows, 1))
    if not is_ledger_file:
        source.unlink(missing_ok=True)
    return target


def _holds_run_id(path: Path, run_id: str) -> bool:
    """Every row group of ``path`` has ``run_id`` (min = max = run_id, no NULL) in its ``run_id`` column."""
    metadata = pq.ParquetFile(path).metadata
    column = metadata.schema.names.index("run_id") if "run_id" in metadata.schema.names else None
    if column is None:
        return False
    for i in range(metadata.num_row_groups):
        group = metadata.row_group(i)
        if group.num_rows == 0:
            continue
        stats = group.column(column).statistics
        if stats is None or not stats.has_min_max or stats.null_count != 0 or stats.min != run_id or stats.max != run_id:
            return False
    return True


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with ``schema``: columns a run recorded before they existed (nullable additions) are NULL."""
    for column in schema:
        if column.name not in table.column_names:
            table = table.append_column(column.name, pa.nulls(table.num_rows, column.type))
    return table.select(schema.names).cast(schema)


def load_run(wh: Warehouse, run_id: str) -> tuple[dict[str, Any], dict[str, pa.Table], dict[str, float]]:
    """The ``runs`` row, the tables (keys as in :class:`~engine.results.result.RunResult`) and the metrics.

    Every table is read whole, the equity ledger included: fine for reports of normal runs, but a very long
    run's ``run_equity`` file (one row per bar timestamp, ~80 bytes a row in memory) costs O(history) memory
    here; read ``runs/run_equity/<run_id>.parquet`` a row group at a time (or query the ``run_equity`` view
    with SQL) for those.
    """
    if run_id == "latest":
        run_id = latest_run_id(wh)
    head = run_path(wh.root, "runs", run_id)
    if not head.exists():
        raise QEError(f"unknown run {run_id!r} in {wh.root} (list them with: qe runs)")
    run = pq.read_table(head).to_pylist()[0]
    tables = {}
    for key, name in _TABLES.items():
        path = run_path(wh.root, name, run_id)
        schema = schemas.RUN_TABLES[name]
        tables[key] = _conform(pq.read_table(path), schema) if path.exists() else schema.empty_table()
    path = run_path(wh.root, "run_metrics", run_id)
    metrics = {}
    if path.exists():
        m = pq.read_table(path)
        metrics = dict(zip(m.column("name").to_pylist(), m.column("value").to_pylist()))
    return run, tables, metrics
