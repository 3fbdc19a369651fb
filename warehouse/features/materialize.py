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
(:func:`warehouse.features.incremental.tail_features`, equal to the full build to the catalog's tolerances).
The symbols whose changes start within :data:`TAIL_GROUP_SPAN` of each other (a day appended to every root) are
computed in one pass, so the family queries' fixed cost is paid once, not per symbol. Only the year partitions
from D's year on are touched, and of those only the small ``tail.parquet`` beside the year's ``data.parquet``
while the change is after the data file's last row (:func:`_splice_symbol`), so an append costs the rows of the
tail, not of the year.

Segmented build. A long symbol rebuilt from its first bar (shipped templates, more than :data:`SEGMENT_ROWS`
bars, or ``segments=``) is cut into segments at cut times T_1 < ... < T_{K-1} (session opens at equal row counts).
Segment k holds the rows with T_k <= ts < T_{k+1} and is computed, like the incremental rebuild, from the bounded
tail before T_k (:func:`warehouse.features.incremental.tail_starts`): the same staged templates over only the bars
from its tail start to T_{k+1} (features at ``ts`` read no later bar). Segments run concurrently, each on its own
DuckDB connection (:data:`SEGMENT_WORKERS` at a time), so one long symbol keeps every core busy and the memory of a
segment's windows is bounded by its rows, not the history's; their staged rows are composed in time order into the
year files and installed atomically like an unsegmented build's.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import math
import multiprocessing
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from warehouse.errors import QEError
from warehouse.features.incremental import is_shipped, registry_signature, shipped_registry, tail_features, tail_starts
from warehouse.features.registry import Registry, StagedQueries, staged_queries
from warehouse.features.tail import TailNeeds, family_needs
from warehouse.lock import holds_write_lock
from warehouse.store import exchange_paths, fsync_dir, sha256_file, ts_span
from warehouse.templates import render
from warehouse.warehouse import Warehouse, configure_connection

TIMEFRAMES = ("1m", "1h", "1d")
#: A symbol rebuilt from its first bar with more source bars than this is cut into segments of about this many
#: rows (shipped templates only; see the module docstring). Measured in bench/README.md ("Segmented build").
SEGMENT_ROWS = 250_000
#: Segments computed at the same time, and DuckDB threads per segment connection.
SEGMENT_WORKERS = max(1, os.cpu_count() or 1)
SEGMENT_THREADS = 1
#: Run the segments in spawned processes instead of threads (measured: bench/README.md, "Segmented build").
SEGMENT_PROCESSES = False
#: Rows per composed batch and Parquet row group of a segmented build: the composition runs beside the segments,
#: and its batches of 150 columns are most of its memory (1M bars, 4 segments: peak RSS 1,395 MB at 131,072 rows,
#: 1,037 MB at 32,768).
SEGMENT_COMPOSE_ROWS = 32_768
#: Symbols whose changed rows start within this span of each other are computed from their tails in one pass.
TAIL_GROUP_SPAN = dt.timedelta(days=4)
#: A year partition is ``data.parquet`` plus, after incremental builds, ``tail.parquet``: the rows appended
#: since ``data.parquet`` was written. An append rewrites only the tail file; once it would hold more than this
#: many rows (about six weeks of 1-minute bars) it is folded into ``data.parquet``.
TAIL_FILE_ROWS = 60_000


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
    #: Symbols built in segments (each from the bounded tail before its cut): symbol -> number of segments.
    segments: dict[str, int] = field(default_factory=dict)


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
    segments: int | Sequence[dt.datetime] | None = None,
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
    segments : int or sequence of datetime, optional
        How a symbol rebuilt from its first bar is cut (shipped templates only; another registry is never cut):
        ``None`` (default) one segment per :data:`SEGMENT_ROWS` bars, cut at session opens; an int K, K segments
        of about equal rows, cut at session opens (1: unsegmented); or the cut times themselves (any bar times).
    """
    if timeframe not in TIMEFRAMES:
        raise QEError(f"features are built on {', '.join(TIMEFRAMES)} bars, not {timeframe!r}")
    # The tail bounds are derived for the shipped templates only (see incremental.is_shipped).
    tail_safe = registry is None or is_shipped(registry, timeframe)
    registry = registry or shipped_registry(timeframe)
    con = wh.connect()
    con.execute(f"CREATE OR REPLACE TEMP VIEW feature_source AS {render('features/_source.sql', timeframe=timeframe)}")
    # One scan gives the symbols with source bars and every trading date's fingerprint (what changed since the
    # last build).
    all_days = _day_fingerprints(con, list(symbols) if symbols else None)
    available = sorted(all_days)
    chosen = available if not symbols else [s for s in symbols if s in all_days]
    missing = sorted(set(symbols or []) - set(available))
    if missing:
        raise QEError(f"no {timeframe} bars for {', '.join(missing)}")
    manifest_path = features_dir(wh.root, timeframe) / "_manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    signature = registry_signature(registry)
    for tail in sorted(features_dir(wh.root, timeframe).glob(f"symbol=*/year=*/{TAIL_FILE}")):
        _drop_stale_tail(tail.parent)  # a fold cut short by a crash (see _replace_partition)
    for leftover in features_dir(wh.root, timeframe).glob(f"symbol=*/.year=*{NEXT_SUFFIX}"):
        shutil.rmtree(leftover, ignore_errors=True)  # a swap cut short by a crash: never read
    report = BuildReport(timeframe)
    queries = staged_queries(registry, "symbol_bars", timeframe)
    # Decide first what each symbol needs: nothing, its rows from a date on (bounded tails, all such symbols in
    # one pass), or a rebuild from its first bar.
    plans: list[_SymbolPlan] = []
    for symbol in chosen:
        days = all_days[symbol]
        years = {year: fp + signature for year, fp in _year_fingerprints(days).items()}
        previous = manifest.get(symbol)
        previous = previous if isinstance(previous, dict) else {"years": {}}  # the oldest manifests: a string
        changed = sorted(d for d in set(days) | set(previous.get("days", {}))
                         if days.get(d) != previous.get("days", {}).get(d))
        entry = {"years": years, "days": days, "signature": signature}
        stored = _has_partitions(wh.root, timeframe, symbol)
        # Unchanged: every trading date's bars and the templates as last built (the day fingerprints are exact).
        if not full and not changed and previous.get("signature") == signature and previous.get("days") and stored:
            plans.append(_SymbolPlan(symbol, entry, previous, skip=True))
            continue
        since = _tail_since(changed, days, previous, signature) if tail_safe and not full and stored else None
        plans.append(_SymbolPlan(symbol, entry, previous, since=since))
    done = 0

    def progress(symbol: str) -> None:
        nonlocal done
        done += 1
        if on_symbol is not None:
            on_symbol(symbol, done, len(chosen))

    def record(plan: _SymbolPlan, written: int, unchanged: int, rows: int) -> None:
        report.partitions_written += written
        report.partitions_unchanged += unchanged
        report.rows += rows
        report.built.append(plan.symbol)
        manifest[plan.symbol] = plan.entry
        _write_manifest(manifest_path, manifest)
        progress(plan.symbol)

    for plan in plans:
        if plan.skip:
            report.skipped.append(plan.symbol)
            progress(plan.symbol)
    for group in _tail_groups([p for p in plans if not p.skip and p.since is not None]):
        # One bounded-tail pass for the group (its earliest date on: a few more rows than some symbols need, all
        # equal to a full build's): the fixed cost of the family queries is paid once, not per symbol.
        since = min(p.since for p in group)
        new = tail_features(con, "feature_source", timeframe, since, [p.symbol for p in group], registry)
        for plan in group:
            rows = new.filter(pc.equal(new["symbol"], plan.symbol))
            report.tail.append(plan.symbol)
            record(plan, *_splice_symbol(wh.root, con, timeframe, plan.symbol, since, rows))
    # A rebuilt symbol's composition (pyarrow: Parquet encoding, mostly outside the GIL) runs on this thread while
    # DuckDB computes the next symbol's families, so the build keeps both cores busy; its report and manifest entry
    # are recorded when it is done, in symbol order.
    pending: list[tuple[Future, _SymbolPlan]] = []

    def settle() -> None:
        while pending:
            future, done_plan = pending.pop(0)
            record(done_plan, *future.result())

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="features-compose") as composer:
        try:
            for plan in plans:
                if plan.skip or plan.since is not None:
                    continue
                symbol = plan.symbol
                # A view cannot take a bound parameter; symbols passed validation (letters, digits, . _ -).
                literal = symbol.replace("'", "''")
                con.execute(f"CREATE OR REPLACE TEMP VIEW symbol_bars AS SELECT * FROM feature_source WHERE symbol = '{literal}'")
                keep = set() if full else {f"year={y}" for y, fp in plan.entry["years"].items()
                                           if plan.previous["years"].get(y) == fp}
                cuts = segment_cuts(plan.entry["days"], segments) if tail_safe else []
                if cuts:
                    # The previous symbol's composition goes on beside this one's segments.
                    staging = wh.root / ".staging" / uuid.uuid4().hex
                    try:
                        rows, produced, k = build_segmented(con, timeframe, symbol, queries, registry, cuts,
                                                            staging, wh.root)
                        result = _install_produced(wh.root, timeframe, symbol, keep, produced)
                    finally:
                        shutil.rmtree(staging, ignore_errors=True)
                    settle()
                    report.segments[symbol] = k
                    record(plan, *result, rows)
                    continue
                staging, rows, files = _stage_symbol(wh.root, con, queries)
                future = composer.submit(_install_symbol, wh.root, timeframe, symbol, keep, staging, rows, files,
                                         queries.features)
                settle()
                pending.append((future, plan))
            settle()
        finally:
            # On an error, wait for a composition still running (its staging directory is removed either way).
            for future, _ in pending:
                future.exception()
    wh.refresh()
    return report


@dataclass
class _SymbolPlan:
    """What one symbol of a build needs: nothing (``skip``), its rows from ``since`` on (bounded tails), or a
    rebuild from its first bar (``since`` None); ``entry`` is its manifest entry once built."""

    symbol: str
    entry: dict
    previous: dict
    since: dt.datetime | None = None
    skip: bool = False


def _tail_groups(plans: list[_SymbolPlan]) -> list[list[_SymbolPlan]]:
    """The bounded-tail symbols in groups computed in one pass each: sorted by ``since``, a group spans at most
    :data:`TAIL_GROUP_SPAN` (a day appended to every root is one group; a correction weeks back in one symbol
    gets its own, so the others do not recompute weeks of rows for it)."""
    groups: list[list[_SymbolPlan]] = []
    for plan in sorted(plans, key=lambda p: p.since):
        if groups and plan.since - groups[-1][0].since <= TAIL_GROUP_SPAN:
            groups[-1].append(plan)
        else:
            groups.append([plan])
    return groups


def _day_fingerprints(con, symbols: list[str] | None) -> dict[str, dict[str, str]]:  # noqa: ANN001
    """Per symbol with source bars (of ``symbols``; None: all) and trading date: ``"count:hash sum:first ts"``, for
    every symbol in one scan (``sql/features/_day_fingerprints.sql``; the hash sums are exact integers, so a
    fingerprint never changes unless the bars do)."""
    out: dict[str, dict[str, str]] = {}
    for symbol, day, n, h, first in con.execute(render("features/_day_fingerprints.sql"), {"symbols": symbols}).fetchall():
        out.setdefault(symbol, {})[day] = f"{n}:{h}:{first.isoformat()}"
    return out


def _year_fingerprints(days: dict[str, str]) -> dict[str, str]:
    """Per UTC year Y of the bars: a fingerprint of every trading date with a bar at or before the end of Y (its
    first bar's year <= Y), which is everything a year's partition depends on (features read no later bar).
    Built from the day fingerprints (exact integer hash sums), not from a second scan."""
    first_year = {day: int(fp.split(":", 2)[2][:4]) for day, fp in days.items()}
    years = set(first_year.values()) | {int(day[:4]) for day in days}  # a session may open in the year before
    out: dict[str, str] = {}
    for year in sorted(years):
        running = hashlib.sha256()
        for day in sorted(days):
            if first_year[day] <= year:
                running.update(f"{day}={days[day]};".encode())
        out[str(year)] = running.hexdigest()[:24]
    return out


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


def _splice_symbol(root: Path, con, timeframe: str, symbol: str, since: dt.datetime,  # noqa: ANN001
                   new: pa.Table) -> tuple[int, int, int]:
    """Replace the rows with ``ts >= since`` of one symbol by ``new``; return (written, unchanged, rows).

    Only the year partitions from ``since``'s year on are touched. Where the partition's ``data.parquet`` ends
    before ``since`` (an appended day; a corrected bar of a day appended since the file was written), only its
    ``tail.parquet`` is rewritten: its rows before ``since`` plus the new rows (folded into ``data.parquet`` once
    more than :data:`TAIL_FILE_ROWS`), so an append costs the size of the tail, not of the year. Where the change
    reaches ``data.parquet``, the partition becomes one ``data.parquet`` of its stored rows before ``since`` plus
    the new rows. Each file is written to a temporary beside it; a change of one file is one rename (atomic), and
    one that replaces ``data.parquet`` and removes the tail swaps the whole partition directory in one step
    (:func:`_replace_partition`), so a reader never sees the tail's rows twice or not at all.
    """
    target_dir = features_dir(root, timeframe) / f"symbol={symbol}"
    name = f"_splice_{uuid.uuid4().hex[:12]}"
    con.register(name, new)
    cut = f"TIMESTAMPTZ '{since.isoformat()}'"
    try:
        new_years = {r[0] for r in con.sql(f"SELECT DISTINCT year(ts) FROM {name}").fetchall()}
        old_years = {int(d.name.split("=", 1)[1]) for d in target_dir.glob("year=*") if any(d.glob("*.parquet"))}
        years = sorted(y for y in new_years | old_years if y >= since.year)
        for year in years:
            directory = target_dir / f"year={year}"
            data, tail = directory / DATA_FILE, directory / TAIL_FILE
            # (a stale tail a crash left was removed at the start of the build, under the same lock)
            fresh = f"SELECT * EXCLUDE (symbol) FROM {name} WHERE year(ts) = {year}"
            kept_tail = [_rows_before(tail, cut)] if tail.exists() else []
            span = ts_span(data)
            if span is not None and span[1] >= since:
                # The change reaches data.parquet's rows: the partition becomes one file again.
                staged, _ = _stage_rows(con, [_rows_before(data, cut), *kept_tail, fresh], directory)
                _replace_partition(directory, {DATA_FILE: staged})
            else:
                staged, rows = _stage_rows(con, [*kept_tail, fresh], directory)
                if rows > TAIL_FILE_ROWS:  # folded: the whole partition into data.parquet
                    whole = [f"SELECT * FROM read_parquet('{_quote(path)}', hive_partitioning = false)"
                             for path in ((data, staged) if span else (staged,))]
                    try:
                        folded, _ = _stage_rows(con, whole, directory)
                    finally:
                        staged.unlink()
                    _replace_partition(directory, {DATA_FILE: folded})
                elif staged is not None:
                    os.replace(staged, tail)  # one file: atomic
                else:
                    tail.unlink(missing_ok=True)
            if directory.exists() and not any(directory.glob("*.parquet")):
                shutil.rmtree(directory, ignore_errors=True)
            elif directory.exists():
                fsync_dir(directory)
        return len(years), len(old_years - set(years)), new.num_rows
    finally:
        con.unregister(name)


#: The files of a year partition of the features (see :data:`TAIL_FILE_ROWS`).
DATA_FILE = "data.parquet"
TAIL_FILE = "tail.parquet"


def _rows_before(path: Path, cut: str) -> str:
    return f"SELECT * FROM read_parquet('{_quote(path)}', hive_partitioning = false) WHERE ts < {cut}"


def _stage_rows(con, parts: list[str], directory: Path) -> tuple[Path | None, int]:  # noqa: ANN001
    """``parts`` (SELECTs of one partition's rows) in ts order to a temporary file in ``directory``: (the file,
    its rows); (None, 0) and no file when they hold no rows."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".part.{uuid.uuid4().hex}.tmp"
    try:
        rows = con.execute(f"COPY ({' UNION ALL BY NAME '.join(parts)} ORDER BY ts) TO '{_quote(tmp)}' "
                           "(FORMAT parquet, COMPRESSION zstd)").fetchone()[0]
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if rows == 0:
        tmp.unlink(missing_ok=True)
        return None, 0
    return tmp, rows


def _replace_partition(directory: Path, files: dict[str, Path | None]) -> None:
    """Make the year partition ``directory`` hold exactly ``files`` (name -> a complete file on the same file
    system, or None for no such file), so that a reader never sees half of the change.

    One file changing (no other file in the partition): one rename, atomic. Otherwise the new partition is put
    together in a hidden sibling directory (``.year=Y.<id>.next``, which the views' ``year=*`` glob does not
    match) and swapped with the partition in one step (:func:`warehouse.store.exchange_paths`); a reader that
    listed a file of the old partition but had not opened it yet gets a clear file error, never doubled or
    missing rows. Where the swap is not available, the files are renamed in and the others removed after (new
    data first: a tail left by a crash there is recognised and removed by :func:`_drop_stale_tail`).
    """
    files = {name: path for name, path in files.items() if path is not None}
    others = [p for p in directory.glob("*.parquet") if p.name not in files] if directory.exists() else []
    if not others and len(files) <= 1:
        for name, path in files.items():
            directory.mkdir(parents=True, exist_ok=True)
            os.replace(path, directory / name)
        if directory.exists():
            fsync_dir(directory)
        return
    swap = directory.with_name(f".{directory.name}.{uuid.uuid4().hex[:12]}{NEXT_SUFFIX}")
    swap.mkdir()
    try:
        for name, path in files.items():
            os.replace(path, swap / name)
        fsync_dir(swap)
        if exchange_paths(swap, directory):
            fsync_dir(directory.parent)
            return  # the old partition is in ``swap`` now, removed below
        for name in files:  # no swap here: new data in first, then what it supersedes out
            os.replace(swap / name, directory / name)
        for path in others:
            path.unlink(missing_ok=True)
        fsync_dir(directory)
    finally:
        shutil.rmtree(swap, ignore_errors=True)


#: Suffix of the hidden directory a partition is put together in before it is swapped in (a crash leftover is
#: removed at the start of the next build).
NEXT_SUFFIX = ".next"


def _drop_stale_tail(directory: Path) -> bool:
    """Remove a partition's ``tail.parquet`` whose rows are not all after ``data.parquet``'s: what a crash
    between a fold's rename and its removal of the tail leaves (its rows are in ``data.parquet`` already).
    In every other state a tail's rows start after the data file's last row. Returns True if one was removed."""
    tail, data = directory / TAIL_FILE, directory / DATA_FILE
    data_span, tail_span = ts_span(data), ts_span(tail)
    if data_span is None or tail_span is None or tail_span[0] > data_span[1]:
        return False
    tail.unlink()
    fsync_dir(directory)
    return True


def _has_partitions(root: Path, timeframe: str, symbol: str) -> bool:
    return any((features_dir(root, timeframe) / f"symbol={symbol}").glob("year=*/*.parquet"))


def _stage_symbol(root: Path, con, queries: StagedQueries) -> tuple[Path, int, list[Path]]:  # noqa: ANN001
    """Run the base and family queries of ``symbol_bars`` into a new staging directory: (staging, rows, files).

    Staged (:func:`stage_families`; :func:`_install_symbol` composes): the base is stored once and each family
    is computed alone over it. One query holding every family's windows at once needs the sum of their memory
    (7.4 GB on 1M bars); staged, the peak is the largest family's.
    """
    staging = root / ".staging" / uuid.uuid4().hex
    stage = staging / "stage"
    stage.mkdir(parents=True)
    try:
        rows, files = stage_families(con, queries, stage)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging, rows, files


def _install_symbol(root: Path, timeframe: str, symbol: str, keep: set[str], staging: Path, rows: int,
                    files: list[Path], features: list) -> tuple[int, int, int]:
    """Compose the staged families into year files and rename each into place unless unchanged (or in
    ``keep``); remove the staging directory. Returns (written, unchanged, rows)."""
    try:
        produced = compose_years(files, features, staging / "out")
        return (*_install_produced(root, timeframe, symbol, keep, produced), rows)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _install_produced(root: Path, timeframe: str, symbol: str, keep: set[str],
                      produced: dict[str, Path]) -> tuple[int, int]:
    """Rename each composed year file into place unless unchanged (or in ``keep``), remove the symbol's years
    that were not produced; return (written, unchanged)."""
    target_dir = features_dir(root, timeframe) / f"symbol={symbol}"
    written = unchanged = 0
    for year_dir, path in sorted(produced.items()):
        target = target_dir / year_dir / DATA_FILE
        tail = target.with_name(TAIL_FILE)
        # A kept year is current with its tail file; a data file equal to the produced year is only if no tail
        # file adds rows to it.
        if target.exists() and (year_dir in keep or (not tail.exists() and sha256_file(target) == sha256_file(path))):
            unchanged += 1
            continue
        # The produced year replaces data.parquet and any tail.parquet (its rows are in the year) in one step.
        _replace_partition(target.parent, {DATA_FILE: path})
        written += 1
    for stale in target_dir.glob("year=*"):
        if stale.name not in produced:
            shutil.rmtree(stale)
    return written, unchanged


def segment_cuts(days: dict[str, str], segments: int | Sequence[dt.datetime] | None) -> list[dt.datetime]:
    """The cut times of a segmented build of one symbol, from its day fingerprints (``"n:hash:first ts"`` per
    trading date, :func:`_day_fingerprints`): empty for an unsegmented build.

    ``None``: one segment per :data:`SEGMENT_ROWS` bars; an int K: K segments. Either way each cut is the open
    (first bar) of the first trading date at or after an equal share of the rows. Explicit cut times are kept
    as given when they fall after the first bar and at or before the last one.
    """
    sessions = [(int(fp.split(":", 1)[0]), dt.datetime.fromisoformat(fp.split(":", 2)[2]))
                for _, fp in sorted(days.items())]
    total = sum(n for n, _ in sessions)
    if not sessions:
        return []
    first = sessions[0][1]
    if segments is not None and not isinstance(segments, int):
        # The last bar is at or after the last date's first bar; a cut later than that yields no rows: dropped there.
        return sorted({c for c in segments if c > first})
    k = math.ceil(total / SEGMENT_ROWS) if segments is None else segments
    cuts, seen, share = [], 0, 1
    for n, opens in sessions:
        if share < k and seen >= total * share / k and opens > first:
            cuts.append(opens)
            while share < k and seen >= total * share / k:
                share += 1
        seen += n
    return cuts


def build_segmented(con, timeframe: str, symbol: str, queries: StagedQueries, registry: Registry,  # noqa: ANN001
                    cuts: Sequence[dt.datetime], staging: Path,
                    root: Path | None = None) -> tuple[int, dict[str, Path], int]:
    """The features of one symbol (the relation ``symbol_bars`` of ``con``), computed in segments cut at ``cuts``,
    composed into one zstd Parquet file per year under ``staging / "out"``: (rows, ``{"year=Y": path}``, segments).

    The symbol's bars are stored once (``staging / "bars.parquet"``, in ts order); each cut's tail start is the one
    :func:`~warehouse.features.incremental.tail_starts` finds for the union of the families' needs (a longer tail
    than a family needs is exact too: it only reads more history). Each segment runs the staged families
    (:func:`stage_families`) on its own connection over the bars from its tail start to the next cut and keeps the
    rows from its cut on; :data:`SEGMENT_WORKERS` segments run at once while this thread composes the finished
    ones, in time order, into the year files.
    """
    staging.mkdir(parents=True, exist_ok=True)
    bars = staging / "bars.parquet"
    con.execute(f"COPY (SELECT * FROM symbol_bars ORDER BY ts) TO '{_quote(bars)}' (FORMAT parquet, COMPRESSION snappy)")
    view = f"_segment_bars_{uuid.uuid4().hex[:12]}"
    con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT * FROM read_parquet('{_quote(bars)}')")
    try:
        needs = functools.reduce(TailNeeds.merge, (family_needs(f) for f in registry.families), TailNeeds(0))
        bounds: list[tuple[dt.datetime | None, dt.datetime | None]] = [(None, None)]  # (tail start, cut)
        for cut in sorted(cuts):
            start = tail_starts(con, view, timeframe, needs, [symbol], cut).get(symbol)
            if start is not None:  # no bar at or after the cut: nothing to compute there
                bounds.append((start, cut))
    finally:
        con.execute(f"DROP VIEW IF EXISTS {view}")
    segments = [(start, since, bounds[k + 1][1] if k + 1 < len(bounds) else None)
                for k, (start, since) in enumerate(bounds)]
    if SEGMENT_PROCESSES:
        pool = ProcessPoolExecutor(max_workers=SEGMENT_WORKERS, mp_context=multiprocessing.get_context("spawn"))
    else:
        pool = ThreadPoolExecutor(max_workers=SEGMENT_WORKERS, thread_name_prefix="features-segment")
    with pool:
        futures = [pool.submit(_stage_segment, bars, queries, staging / f"segment_{k}", start, since, until,
                               SEGMENT_THREADS, root) for k, (start, since, until) in enumerate(segments)]
        try:
            rows = 0
            with _YearFiles(staging / "out") as out:
                for future in futures:
                    count, files = future.result()
                    rows += count
                    for table in _composed(files, queries.features, SEGMENT_COMPOSE_ROWS):
                        out.write(table)
                    shutil.rmtree(files[0].parent, ignore_errors=True)
            return rows, out.paths, len(segments)
        finally:
            for future in futures:
                future.cancel()
            for future in futures:
                if not future.cancelled():
                    future.exception()


def _stage_segment(bars: Path, queries: StagedQueries, stage: Path, start: dt.datetime | None,
                   since: dt.datetime | None, until: dt.datetime | None, threads: int,
                   root: Path | None) -> tuple[int, list[Path]]:
    """One segment on its own connection (``threads`` DuckDB threads): the staged families over the bars in
    [start, until) of the stored bars file, keeping the rows from ``since`` on; (rows kept, one Arrow IPC file per
    family)."""
    con = duckdb.connect(config={"threads": threads})
    try:
        if root is not None:  # its own database: the memory cap is split among the segments running side by side
            configure_connection(con, root, share=SEGMENT_WORKERS)
        else:
            con.execute("SET TimeZone = 'UTC'")
        bounds = [f"ts >= {_timestamp(start)}"] if start is not None else []
        if until is not None:
            bounds.append(f"ts < {_timestamp(until)}")
        where = " AND ".join(bounds) or "TRUE"
        con.execute(f"CREATE TEMP VIEW symbol_bars AS SELECT * FROM read_parquet('{_quote(bars)}') WHERE {where}")
        stage.mkdir(parents=True)
        return stage_families(con, queries, stage, since=since)
    finally:
        con.close()


def _timestamp(value: dt.datetime) -> str:
    return f"TIMESTAMPTZ '{value.isoformat()}'"


#: Rows per Arrow batch of the staged families and per Parquet row group of the composed files.
BATCH_ROWS = 131_072


def stage_families(con, queries: StagedQueries, stage: Path,  # noqa: ANN001
                   since: dt.datetime | None = None) -> tuple[int, list[Path]]:
    """Compute the base once and every family over it; return (rows, one Arrow IPC file per family).

    With ``since``, only the rows with ``ts >= since`` are kept (a segment of a segmented build: the bars before
    it are its bounded tail).

    The base is a snappy Parquet file in ``stage``, in no particular order (the families order their windows
    themselves): each family reads only the columns it needs from it, where a temporary table kept all of them
    resident (~480 MB more peak RSS on 1M bars). Each family's result streams to an uncompressed Arrow
    IPC file (a copy; the snappy Parquet intermediates it replaces cost ~1 s of encoding per family) and is put
    in (symbol, ts) order there (:func:`_stream_family`).
    """
    # A streamed result (to_arrow_reader) draws DuckDB's progress bar on stdout after 2 s; a build prints its own.
    con.execute("SET enable_progress_bar = false")
    base = stage / "base.parquet"
    con.execute(f"COPY ({queries.base}) TO '{_quote(base)}' (FORMAT parquet, COMPRESSION snappy)")
    con.execute(f"CREATE OR REPLACE TEMP VIEW base AS SELECT * FROM read_parquet('{_quote(base)}')")
    keep = "TRUE" if since is None else f"ts >= {_timestamp(since)}"
    try:
        rows = con.sql(f"SELECT count(*) FROM base WHERE {keep}").fetchone()[0]
        files = []
        for i, family in enumerate(queries.families):
            path = stage / f"family_{i}.arrow"
            count = _stream_family(con, family if since is None else f"SELECT * FROM ({family}) AS f WHERE {keep}", path)
            if count != rows:
                raise QEError(f"feature family {i} returned {count} rows for {rows} bars")
            files.append(path)
        return rows, files
    finally:
        con.execute("DROP VIEW IF EXISTS base")


def _stream_family(con, sql: str, path: Path) -> int:  # noqa: ANN001
    """Stream the rows of one family query to the IPC file ``path`` in (symbol, ts) order; return the row count.

    DuckDB's window operators emit a partition's rows in a few sorted runs whose order depends on the threads
    (measured on 1M bars: 0-37 descents per family). An ORDER BY in the query sorts every wide row inside DuckDB
    (0.4-1.5 s per family); here the batches are written as they come, and only a family whose rows arrived out
    of order is read back and sorted in Arrow (by ts alone for one symbol: one 8-byte key).
    """
    reader = con.sql(sql).to_arrow_reader(BATCH_ROWS)
    rows, ordered, last_ts, last_symbol = 0, True, None, None
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, reader.schema) as writer:
        for batch in reader:
            if batch.num_rows == 0:
                continue
            ts, symbol = batch.column("ts"), batch.column("symbol")
            if ordered:
                ordered = (pc.all(pc.equal(symbol, symbol[0])).as_py()
                           and (last_ts is None or (symbol[0].as_py() == last_symbol and ts[0].as_py() > last_ts))
                           and (batch.num_rows < 2 or pc.all(pc.greater(ts.slice(1), ts.slice(0, batch.num_rows - 1))).as_py()))
            last_ts, last_symbol = ts[batch.num_rows - 1].as_py(), symbol[batch.num_rows - 1].as_py()
            writer.write_batch(batch)
            rows += batch.num_rows
    if not ordered:
        # Sorted batch by batch from a memory map (file pages, not a second copy of the family in memory).
        unsorted = path.with_suffix(".unsorted")
        os.replace(path, unsorted)
        with pa.memory_map(str(unsorted), "r") as source:
            table = pa.ipc.open_file(source).read_all()
            one_symbol = pc.count_distinct(table.column("symbol")).as_py() <= 1
            keys = [("ts", "ascending")] if one_symbol else [("symbol", "ascending"), ("ts", "ascending")]
            order = pc.sort_indices(table.select([k for k, _ in keys]), sort_keys=keys)
            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
                for start in range(0, rows, BATCH_ROWS):
                    writer.write_table(table.take(order.slice(start, BATCH_ROWS)))
            del table
        unsorted.unlink()
    return rows


def _chunks(path: Path, size: int):  # noqa: ANN202
    """The rows of the IPC file ``path`` as consecutive tables of exactly ``size`` rows (the last: the rest), so
    that files written with different batch boundaries line up row for row."""
    with pa.OSFile(str(path), "rb") as source:
        reader = pa.ipc.open_file(source)
        pending: list[pa.RecordBatch] = []
        have = 0
        for k in range(reader.num_record_batches):
            batch = reader.get_batch(k)
            pending.append(batch)
            have += batch.num_rows
            while have >= size:
                table = pa.Table.from_batches(pending, schema=reader.schema)
                yield table.slice(0, size)
                pending, have = table.slice(size).to_batches(), have - size
        if have:
            yield pa.Table.from_batches(pending, schema=reader.schema)


def compose_years(files: list[Path], features: list, output: Path) -> dict[str, Path]:
    """Put the staged families side by side and write one zstd Parquet file per year: ``{"year=Y": path}``.

    Row k of every family file is the same bar (:func:`stage_families`). The columns are ``ts`` and the features
    in catalog order with their declared types (``int`` INTEGER, ``double`` DOUBLE with non-finite values as
    NULL: the projection of ``sql/features/_project.sql``); ``symbol`` lives in the directory name (hive style).
    Written with pyarrow batch by batch (bounded memory): DuckDB's Parquet writer took ~7 s of one core for the
    150 columns of 1M rows, pyarrow ~3 s, mostly because dictionary encoding is tried on every double column
    (random-walk doubles never fit a dictionary; it stays on for the integer columns).
    """
    with _YearFiles(output) as out:
        for table in _composed(files, features):
            out.write(table)
    return out.paths


def _composed(files: list[Path], features: list, size: int = BATCH_ROWS) -> Iterator[pa.Table]:
    """The staged families side by side, ``size`` rows at a time: ``ts`` and the features in catalog order with
    their declared types."""
    first = pa.ipc.open_file(pa.OSFile(str(files[0]), "rb")).schema
    schema = pa.schema([pa.field("ts", first.field("ts").type)]
                       + [pa.field(f.name, pa.int32() if f.type == "int" else pa.float64()) for f in features])
    for parts in zip(*(_chunks(path, size) for path in files)):
        ts = parts[0].column("ts")
        columns = [ts] + [_project(parts[f.family_index].column(f.name), f.type) for f in features]
        yield pa.Table.from_arrays(columns, schema=schema)


class _YearFiles:
    """Composed tables in ts order, appended to one zstd Parquet file per UTC year (``output/year=Y/data.parquet``;
    dictionary encoding on the integer columns only): ``paths`` = ``{"year=Y": path}``, complete once closed."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.paths: dict[str, Path] = {}
        self._writers: dict[str, pq.ParquetWriter] = {}

    def write(self, table: pa.Table) -> None:
        years = pc.year(table.column("ts"))
        for year in pc.unique(years).to_pylist():
            key = f"year={year}"
            if key not in self._writers:
                self.paths[key] = self.output / key / "data.parquet"
                self.paths[key].parent.mkdir(parents=True, exist_ok=True)
                dictionary = [f.name for f in table.schema if f.type == pa.int32()]
                self._writers[key] = pq.ParquetWriter(self.paths[key], table.schema, compression="zstd",
                                                      use_dictionary=dictionary)
            self._writers[key].write_table(table.filter(pc.equal(years, year)), row_group_size=BATCH_ROWS)

    def __enter__(self) -> _YearFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        for writer in self._writers.values():
            writer.close()


def _project(column: pa.Array, kind: str) -> pa.Array:
    """A family's output column as its declared type: INTEGER, or DOUBLE with NaN and +-inf as NULL."""
    if kind == "int":
        return pc.cast(column, pa.int32())
    column = pc.cast(column, pa.float64())
    return pc.if_else(pc.is_finite(column), column, pa.scalar(None, pa.float64()))


def _write_manifest(path: Path, manifest: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _quote(path: Path) -> str:
    return str(path).replace("'", "''")
