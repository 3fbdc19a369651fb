"""Materialize the features to Parquet per (timeframe, symbol, year), and expose them as ``features_<tf>``.

A symbol is recomputed from its first bar whenever its input bars changed (a fingerprint of the source rows),
so recursive filters (EMA, Wilder) and cumulative features carry their exact state across every partition
boundary. Only the year partitions that can have changed are replaced: features at ``ts`` read only bars with
open time ``<= ts`` (the look-ahead lint enforces it), so a year's partition depends only on the bars up to the
end of that year, and it is kept when the fingerprint of those bars is unchanged (appending a day rewrites the
last year only; recomputed values of older years would differ at most in the last bits of floating-point
sums, which is no reason to rewrite them). Each replacement is atomic (DuckDB writes to a staging directory on
the same file system, then each file is renamed into place). ``--full`` recomputes and rewrites every symbol.

Bounded tail. With the shipped catalog templates, a symbol whose bars changed only from a trading date D on (a
fingerprint per date of every source bar: an appended session, or a corrected bar in the last one) is not recomputed
from its first bar: the rows from D's first bar on are computed from a bounded tail of history
(:func:`warehouse.features.incremental.tail_features`, equal to the full build to the catalog's tolerances),
and only the year partitions from D's year on are rewritten: the stored rows before D plus the new rows,
written to a temporary file and renamed into place.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from warehouse.errors import QEError
from warehouse.features.incremental import shipped_registry, tail_features
from warehouse.features.registry import Registry, StagedQueries, staged_queries
from warehouse.lock import holds_write_lock
from warehouse.store import fsync_dir, sha256_file
from warehouse.templates import render
from warehouse.warehouse import Warehouse

TIMEFRAMES = ("1m", "1h", "1d")


@dataclass
class BuildReport:
    """What a build did, per symbol."""

    timeframe: str
    built: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    partitions_written: int = 0
    partitions_unchanged: int = 0
    rows: int = 0
    #: Symbols whose changed rows were computed from a bounded tail (not from their first bar).
    tail: list[str] = field(default_factory=list)


def features_dir(root: Path, timeframe: str) -> Path:
    return root / "features" / f"timeframe={timeframe}"


@holds_write_lock
def build_features(
    wh: Warehouse,
    timeframe: str = "1m",
    symbols: list[str] | None = None,
    full: bool = False,
    on_symbol: Callable[[str, int, int], None] | None = None,
    registry: Registry | None = None,
) -> BuildReport:
    """Compute and write the features of ``symbols`` (default all) on ``timeframe`` bars.

    Parameters
    ----------
    wh : Warehouse
    timeframe : {"1m", "1h", "1d"}
    symbols : list of str, optional
    full : bool
        Recompute every symbol even when its bars did not change.
    on_symbol : callable, optional
        Progress callback ``(symbol, done, total)``.
    registry : Registry, optional
        Defaults to the shipped family templates.
    """
    if timeframe not in TIMEFRAMES:
        raise QEError(f"features are built on {', '.join(TIMEFRAMES)} bars, not {timeframe!r}")
    # The tail bounds are derived for the shipped templates only (see _is_shipped).
    tail_safe = registry is None or _is_shipped(registry, timeframe)
    registry = registry or shipped_registry(timeframe)
    con = wh.connect()
    con.execute(f"CREATE OR REPLACE TEMP VIEW feature_source AS {render('features/_source.sql', timeframe=timeframe)}")
    available = [r[0] for r in con.sql("SELECT DISTINCT symbol FROM feature_source ORDER BY 1").fetchall()]
    chosen = available if not symbols else [s for s in symbols if s in available]
    missing = sorted(set(symbols or []) - set(available))
    if missing:
        raise QEError(f"no {timeframe} bars for {', '.join(missing)}")
    manifest_path = features_dir(wh.root, timeframe) / "_manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    signature = _registry_signature(registry)
    report = BuildReport(timeframe)
    queries = staged_queries(registry, "symbol_bars", timeframe)
    for i, symbol in enumerate(chosen, start=1):
        years = {year: fp + signature for year, fp in _year_fingerprints(con, symbol).items()}
        days = _day_fingerprints(con, symbol)
        fingerprint = _combine(years)
        previous = manifest.get(symbol)
        previous = previous if isinstance(previous, dict) else {"all": previous, "years": {}}
        changed = sorted(d for d in set(days) | set(previous.get("days", {}))
                         if days.get(d) != previous.get("days", {}).get(d))
        if not full and previous["all"] == fingerprint and not changed and _has_partitions(wh.root, timeframe, symbol):
            report.skipped.append(symbol)
        else:
            # A view cannot take a bound parameter; symbols passed validation (letters, digits, . _ -).
            literal = symbol.replace("'", "''")
            con.execute(f"CREATE OR REPLACE TEMP VIEW symbol_bars AS SELECT * FROM feature_source WHERE symbol = '{literal}'")
            since = _tail_since(changed, days, previous, signature) if tail_safe and not full else None
            if since is not None and _has_partitions(wh.root, timeframe, symbol):
                new = tail_features(con, "symbol_bars", timeframe, since, [symbol], registry)
                written, unchanged, rows = _splice_symbol(wh.root, con, timeframe, symbol, since, new)
                report.tail.append(symbol)
            else:
                keep = set() if full else {f"year={y}" for y, fp in years.items() if previous["years"].get(y) == fp}
                written, unchanged, rows = _write_symbol(wh.root, con, queries, timeframe, symbol, keep)
            report.partitions_written += written
            report.partitions_unchanged += unchanged
            report.rows += rows
            report.built.append(symbol)
            manifest[symbol] = {"all": fingerprint, "years": years, "days": days, "signature": signature}
            _write_manifest(manifest_path, manifest)
        if on_symbol is not None:
            on_symbol(symbol, i, len(chosen))
    wh.refresh()
    return report


def _year_fingerprints(con, symbol: str) -> dict[str, str]:  # noqa: ANN001
    """Per year Y: a fingerprint of every source bar up to the end of Y (what Y's features can depend on)."""
    rows = con.sql(
        "SELECT year(ts) AS y, count(*), min(ts), max(ts), sum(close), sum(high - low), sum(volume) "
        "FROM feature_source WHERE symbol = $s GROUP BY y ORDER BY y",
        params={"s": symbol},
    ).fetchall()
    out: dict[str, str] = {}
    running = hashlib.sha256()
    for row in rows:
        running.update(repr(row).encode())
        out[str(row[0])] = running.copy().hexdigest()[:24]
    return out


def _day_fingerprints(con, symbol: str) -> dict[str, str]:  # noqa: ANN001
    """Per trading date: ``"count:hash sum:first ts"`` of the source bars (``sql/features/_day_fingerprints.sql``)."""
    rows = con.execute(render("features/_day_fingerprints.sql"), {"symbol": symbol}).fetchall()
    return {d: f"{n}:{h}:{first.isoformat()}" for d, n, h, first in rows}


def _tail_since(changed: list[str], days: dict[str, str], previous: dict, signature: str) -> dt.datetime | None:
    """Where the rows to recompute start: the first bar (now or before) of the earliest changed trading date; or
    None for a rebuild from the first bar: no day fingerprints or another registry last time, or the change
    reaches the first date (a back-adjustment after a roll rescales every earlier price, so every date changes)."""
    before = previous.get("days") or {}
    if not changed or previous.get("signature") != signature or not before:
        return None
    if changed[0] <= min([*days, *before]):
        return None
    firsts = [fp.split(":", 2)[2] for fp in (days.get(changed[0]), before.get(changed[0])) if fp]
    return min(dt.datetime.fromisoformat(f) for f in firsts)


def _shipped_signature(timeframe: str) -> str:
    return _registry_signature(shipped_registry(timeframe))


def _is_shipped(registry: Registry, timeframe: str) -> bool:
    """The tail bounds (warehouse/features/tail.py) are derived for the shipped catalog templates only; another
    registry (a user's template, a test's toy) is rebuilt from each symbol's first bar."""
    return _registry_signature(registry) == _shipped_signature(timeframe)


def _splice_symbol(root: Path, con, timeframe: str, symbol: str, since: dt.datetime,  # noqa: ANN001
                   new: pa.Table) -> tuple[int, int, int]:
    """Replace the rows with ``ts >= since`` of one symbol by ``new``; return (written, unchanged, rows).

    Only the year partitions from ``since``'s year on are touched: each becomes its stored rows before ``since``
    plus the new rows of that year, written to a temporary file beside it and renamed into place (atomic)."""
    target_dir = features_dir(root, timeframe) / f"symbol={symbol}"
    name = f"_splice_{uuid.uuid4().hex[:12]}"
    con.register(name, new)
    cut = f"TIMESTAMPTZ '{since.isoformat()}'"
    try:
        new_years = {r[0] for r in con.sql(f"SELECT DISTINCT year(ts) FROM {name}").fetchall()}
        old_years = {int(p.parent.name.split("=", 1)[1]) for p in target_dir.glob("year=*/data.parquet")}
        years = sorted(y for y in new_years | old_years if y >= since.year)
        written = 0
        for year in years:
            target = target_dir / f"year={year}" / "data.parquet"
            parts = [f"SELECT * EXCLUDE (symbol) FROM {name} WHERE year(ts) = {year}"]
            if target.exists():
                parts.insert(0, f"SELECT * FROM read_parquet('{_quote(target)}', hive_partitioning = false) "
                                f"WHERE ts < {cut}")
            count = con.sql(f"SELECT count(*) FROM ({' UNION ALL '.join(parts)})").fetchone()[0]
            if count == 0:
                shutil.rmtree(target.parent, ignore_errors=True)
                written += 1
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".data.{uuid.uuid4().hex}.tmp")
            con.execute(f"COPY ({' UNION ALL '.join(parts)} ORDER BY ts) TO '{_quote(tmp)}' "
                        "(FORMAT parquet, COMPRESSION zstd)")
            os.replace(tmp, target)  # same directory: atomic
            fsync_dir(target.parent)
            written += 1
        return written, len(old_years - set(years)), new.num_rows
    finally:
        con.unregister(name)


def _combine(years: dict[str, str]) -> str:
    return hashlib.sha256(repr(sorted(years.items())).encode()).hexdigest()[:24]


def _registry_signature(registry: Registry) -> str:
    text = "\n".join(f.sql for f in registry.families) + registry.base_sql
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _has_partitions(root: Path, timeframe: str, symbol: str) -> bool:
    return any((features_dir(root, timeframe) / f"symbol={symbol}").glob("*/data.parquet"))


def _write_symbol(root: Path, con, queries: StagedQueries, timeframe: str, symbol: str,  # noqa: ANN001
                  keep: set[str] = frozenset()) -> tuple[int, int, int]:
    """Write one symbol's year partitions, except those in ``keep`` that exist; return (written, unchanged, rows).

    Staged: the base is written once, each family is computed alone over it and written in (symbol, ts) order,
    and the final files put the families side by side by position. One query holding every family's windows
    at once needs the sum of their memory (7.4 GB on 1M bars); staged, the peak is the largest family's.
    """
    staging = root / ".staging" / uuid.uuid4().hex
    stage = staging / "stage"
    stage.mkdir(parents=True)
    try:
        rows = con.sql("SELECT count(*) FROM symbol_bars").fetchone()[0]
        base = stage / "base.parquet"
        con.execute(f"COPY ({queries.base}) TO '{_quote(base)}' (FORMAT parquet, COMPRESSION snappy)")
        con.execute(f"CREATE OR REPLACE TEMP VIEW base AS SELECT * FROM read_parquet('{_quote(base)}')")
        files = []
        for i, family in enumerate(queries.families):
            path = stage / f"family_{i}.parquet"
            con.execute(f"COPY ({family}) TO '{_quote(path)}' (FORMAT parquet, COMPRESSION snappy)")
            files.append(str(path))
        # Side by side by position is only right when every family has exactly the base's rows.
        counts = [con.sql(f"SELECT count(*) FROM read_parquet('{_quote(Path(f))}')").fetchone()[0] for f in [base, *files]]
        if len(set(counts)) != 1:
            raise QEError(f"feature build of {symbol}: families returned {counts[1:]} rows for {counts[0]} bars")
        output = staging / "out"
        con.execute(
            # symbol lives in the directory name (hive style), so it is not written into the files.
            f"COPY (SELECT * EXCLUDE (symbol), year(ts) AS year FROM ({queries.compose(files)})) TO '{_quote(output)}' "
            "(FORMAT parquet, PARTITION_BY (year), COMPRESSION zstd, OVERWRITE_OR_IGNORE)"
        )
        con.execute("DROP VIEW IF EXISTS base")
        target_dir = features_dir(root, timeframe) / f"symbol={symbol}"
        files = sorted(output.glob("year=*/*.parquet"))
        produced = {p.parent.name: p for p in files}
        if len(produced) != len(files):
            raise QEError(f"feature build of {symbol} produced several files for one year partition")
        written = unchanged = 0
        for year_dir, path in sorted(produced.items()):
            target = target_dir / year_dir / "data.parquet"
            if target.exists() and (year_dir in keep or sha256_file(target) == sha256_file(path)):
                unchanged += 1
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)  # same file system: atomic
            fsync_dir(target.parent)
            written += 1
        for stale in target_dir.glob("year=*"):
            if stale.name not in produced:
                shutil.rmtree(stale)
        return written, unchanged, rows
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_manifest(path: Path, manifest: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _quote(path: Path) -> str:
    return str(path).replace("'", "''")
