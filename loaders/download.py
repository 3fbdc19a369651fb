"""Download continuous futures bars from Databento, resumably, then ingest them.

A download is a :class:`DownloadPlan` (roots, date range, schemas, continuous rank and roll rule), split
into chunks of one root × schema × calendar month. :func:`run_download` then

1. asks ``metadata.get_dataset_condition`` for the condition (available / degraded / pending / missing)
   and ``last_modified_date`` of every day of the plan;
2. prices the chunks to fetch with ``metadata.get_cost`` (free) and asks before spending money;
3. stores in the ``data_quality`` table, per root and schema, every day whose *stored* bars are not
   ``available`` (see below);
4. downloads each chunk to fetch to ``<warehouse>/downloads/<ROOT>/<schema>/<YYYY-MM>.dbn.zst`` through a
   temporary file and a rename, with a sidecar ``<YYYY-MM>.dbn.zst.json`` that records the file's SHA-256
   and the condition and ``last_modified_date`` of each of its days in this run; Databento warnings
   become ``data_quality`` flags;
5. ingests every chunk file of the plan that the ingest log does not already hold (definitions first);
   a chunk fetched again keeps its path, so the ingest replaces what the old file loaded;
6. shows progress with rich and returns a :class:`DownloadSummary`.

Resume rule: a chunk is done when its final file exists, its DBN header covers the chunk's symbol and
dates, and no day of the chunk now has a condition or ``last_modified_date`` other than the ones its
sidecar recorded at download time (Databento revises degraded days and bumps ``last_modified_date``; a
month downloaded before its end gains days). A changed chunk is fetched again, priced and confirmed like
any other. The sidecar is written before the chunk's rename, so the chunk file stays the commit point;
a sidecar whose SHA-256 is not the file's (a crash between the two) does not count. A file without a
valid record of its conditions (downloaded while the condition check failed, or a crash) counts as done
unless a day of it was modified on or after the day the file was written; it then adopts the current
conditions. If the condition check itself fails, chunk files count as done (the plain file rule) and
the run says so. A crash mid-chunk leaves only ``*.tmp`` files, which are never mistaken for a chunk
and which the warehouse sweeps when it is next opened; the next run downloads that chunk again.

Data quality: the flags of a day describe the bars actually stored. A chunk on disk with a valid record
is flagged from what its sidecar recorded, so a degraded day stays flagged until its chunk has been
fetched again while the day is ``available``; then the row is gone (only days that are not available
have rows). Days of chunks not (validly) on disk get the current condition, and keep earlier flags that
the current condition does not replace. Warnings of a chunk are replaced when it is fetched again.

Everything that talks to the network sits behind :class:`HistoricalSource`, so tests (and other
vendors) can stand in for :class:`DatabentoClient`. The API key is never printed, logged or put into an
exception message.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from warehouse import schemas
from warehouse.errors import ConfigError, QEError
from warehouse.lock import write_lock
from warehouse.store import (TMP_SUFFIX, file_signature, fsync_dir, sha256_file, write_parquet_atomic,
                             write_text_atomic)
from warehouse.warehouse import Warehouse

DATASET = "GLBX.MDP3"
STYPE_IN = "continuous"
STYPE_OUT = "instrument_id"
#: Schemas a plan may request (the ones :mod:`loaders.dbn` can ingest, minus 1-second bars).
SCHEMAS: tuple[str, ...] = ("ohlcv-1m", "ohlcv-1h", "ohlcv-1d", "definition")
#: Databento continuous roll rules: volume, open interest, calendar.
ROLL_RULES: dict[str, str] = {"v": "volume", "n": "open interest", "c": "calendar"}
#: Dataset conditions that mean the day is complete and final.
AVAILABLE = "available"
API_KEY_ENV = "DATABENTO_API_KEY"

_NS_PER_DAY = 86_400_000_000_000
_EPOCH = date(1970, 1, 1)


# -- the data source seam -----------------------------------------------------------------------------
@runtime_checkable
class HistoricalSource(Protocol):
    """What a download needs from a historical market-data vendor.

    Dates are ``YYYY-MM-DD`` strings in UTC; ``start`` is inclusive and ``end`` exclusive, except in
    :meth:`get_dataset_condition` whose ``end_date`` is inclusive (as Databento defines it).
    """

    def get_cost(self, dataset: str, symbols: list[str], schema: str, start: str, end: str, stype_in: str) -> float:
        """Price of :meth:`get_range` with the same arguments, in USD."""
        ...

    def get_dataset_condition(self, dataset: str, start_date: str, end_date: str) -> list[dict[str, Any]]:
        """One ``{date, condition, last_modified_date}`` per day; condition in available/degraded/pending/missing."""
        ...

    def get_range(
        self,
        dataset: str,
        symbols: list[str],
        schema: str,
        start: str,
        end: str,
        stype_in: str,
        stype_out: str,
        path: Path,
    ) -> None:
        """Write the records as a (zstd-compressed) DBN file at ``path``, which must not exist yet."""
        ...


class DatabentoClient:
    """:class:`HistoricalSource` backed by ``databento.Historical``.

    Parameters
    ----------
    key : str
        Databento API key. It is kept in a private attribute and removed from every error message
        this class lets through; ``repr`` does not show it.

    Raises
    ------
    QEError
        If the key is empty or rejected by the client library.
    """

    def __init__(self, key: str) -> None:
        key = key.strip() if isinstance(key, str) else ""
        if not key:
            raise QEError(_missing_key_message())
        import databento as db

        try:
            historical = db.Historical(key)
        except ValueError:
            # databento's own message quotes the key: replace it, and drop the chained exception.
            raise QEError(f"the Databento API key in {API_KEY_ENV} is not valid") from None
        self.__key = key
        self._historical = historical

    @classmethod
    def from_environment(cls, cwd: Path | None = None) -> DatabentoClient:
        """Client with the key from ``$DATABENTO_API_KEY``, else from ``.env`` in ``cwd`` (default: current dir).

        The environment wins over ``.env``; ``.env`` is read without touching ``os.environ``.

        Raises
        ------
        QEError
            If neither holds a key; the message says how to set one.
        """
        key = os.environ.get(API_KEY_ENV, "").strip()
        if not key:
            from dotenv import dotenv_values

            env_file = (cwd or Path.cwd()) / ".env"
            if env_file.is_file():
                key = (dotenv_values(env_file).get(API_KEY_ENV) or "").strip()
        if not key:
            raise QEError(_missing_key_message())
        return cls(key)

    def __repr__(self) -> str:
        return "DatabentoClient(key=<hidden>)"

    def get_cost(self, dataset: str, symbols: list[str], schema: str, start: str, end: str, stype_in: str) -> float:
        """``metadata.get_cost`` (the call itself is free)."""
        with self._guard():
            cost = self._historical.metadata.get_cost(
                dataset=dataset, symbols=symbols, schema=schema, start=start, end=end, stype_in=stype_in
            )
        return float(cost)

    def get_dataset_condition(self, dataset: str, start_date: str, end_date: str) -> list[dict[str, Any]]:
        """``metadata.get_dataset_condition`` (``end_date`` inclusive)."""
        with self._guard():
            return list(self._historical.metadata.get_dataset_condition(dataset=dataset, start_date=start_date, end_date=end_date))

    def get_range(
        self,
        dataset: str,
        symbols: list[str],
        schema: str,
        start: str,
        end: str,
        stype_in: str,
        stype_out: str,
        path: Path,
    ) -> None:
        """``timeseries.get_range`` streamed to ``path`` (Databento always sends zstd-compressed DBN)."""
        with self._guard():
            self._historical.timeseries.get_range(
                dataset=dataset,
                symbols=symbols,
                schema=schema,
                start=start,
                end=end,
                stype_in=stype_in,
                stype_out=stype_out,
                path=str(path),
            )

    def _guard(self) -> _KeyGuard:
        return _KeyGuard(self.__key)


class _KeyGuard:
    """Context manager: let errors through unchanged unless their text contains the key.

    Databento HTTP errors pass as they are (callers read their status). Any error whose text would show
    the key becomes a :class:`QEError` with the key masked and no chained cause, since a traceback would
    otherwise print the original. Network failures become one readable line.
    """

    def __init__(self, key: str) -> None:
        self._key = key

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False
        text = f"{exc} {exc!r} {' '.join(map(str, exc.args))}"
        if self._key in text:
            raise QEError(f"Databento request failed: {type(exc).__name__}: {_one_line(str(exc).replace(self._key, '***'))}") from None
        import requests

        if isinstance(exc, requests.RequestException):
            raise QEError(f"cannot reach Databento ({type(exc).__name__}: {_one_line(str(exc))})") from None
        return False


def _missing_key_message() -> str:
    return (
        f"no Databento API key: set {API_KEY_ENV} in the environment "
        f"(export {API_KEY_ENV}=db-...) or put the line {API_KEY_ENV}=db-... in a .env file in the current directory"
    )


# -- the plan ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Chunk:
    """One unit of download and resume: one root × schema × calendar month (clipped to the plan).

    Attributes
    ----------
    root : str
        Product root (``ES``).
    schema : str
        Databento schema (``ohlcv-1m``).
    symbol : str
        Continuous symbol requested (``ES.v.0``).
    start, end : date
        UTC dates, ``end`` exclusive.
    """

    root: str
    schema: str
    symbol: str
    start: date
    end: date

    @property
    def month(self) -> str:
        """``YYYY-MM`` of the chunk."""
        return f"{self.start:%Y-%m}"

    def path(self, warehouse_root: Path) -> Path:
        """Final file of the chunk: ``<root>/downloads/<ROOT>/<schema>/<YYYY-MM>.dbn.zst``."""
        return Path(warehouse_root) / "downloads" / self.root / self.schema / f"{self.month}.dbn.zst"

    def describe(self) -> str:
        """``ES.v.0 ohlcv-1m 2024-01-01..2024-02-01`` (for messages)."""
        return f"{self.symbol} {self.schema} {self.start}..{self.end}"


@dataclass(frozen=True)
class DownloadPlan:
    """What to download: continuous ``ROOT.RULE.RANK`` series of GLBX.MDP3 over ``[start, end)``.

    Build it with :meth:`create`, which validates user input; direct construction validates the same
    way. Every invalid value raises :class:`ConfigError` with a one-line message.

    Attributes
    ----------
    roots : tuple of str
        Known roots (``warehouse/data/contracts.csv``), upper case, without duplicates.
    start, end : date
        UTC dates; ``end`` is exclusive and after ``start``.
    schemas : tuple of str
        Subset of :data:`SCHEMAS`.
    rank : int
        Continuous rank, 0 = front contract.
    roll_rule : {"v", "n", "c"}
        Databento's continuous rule: volume, open interest, calendar.
    dataset : str
        Always ``GLBX.MDP3`` (every root in the contract list trades there).
    """

    roots: tuple[str, ...]
    start: date
    end: date
    schemas: tuple[str, ...] = ("ohlcv-1m",)
    rank: int = 0
    roll_rule: str = "v"
    dataset: str = DATASET

    def __post_init__(self) -> None:
        from warehouse.contracts import load_specs

        specs = load_specs()
        if not self.roots:
            raise ConfigError("no roots given; name at least one, e.g. ES")
        unknown = [r for r in self.roots if r not in specs]
        if unknown:
            raise ConfigError(f"unknown root(s) {', '.join(unknown)}; known roots: {', '.join(specs)}")
        elsewhere = [r for r in self.roots if specs[r].databento_dataset != self.dataset]
        if elsewhere:
            raise ConfigError(f"root(s) {', '.join(elsewhere)} are not in Databento dataset {self.dataset}")
        if not self.schemas:
            raise ConfigError(f"no schema given; choose from {', '.join(SCHEMAS)}")
        bad = [s for s in self.schemas if s not in SCHEMAS]
        if bad:
            raise ConfigError(f"unsupported schema(s) {', '.join(bad)}; choose from {', '.join(SCHEMAS)}")
        if not isinstance(self.start, date) or not isinstance(self.end, date):
            raise ConfigError("start and end must be dates (YYYY-MM-DD)")
        if self.start >= self.end:
            raise ConfigError(f"start {self.start} must be before end {self.end} (end is exclusive)")
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 0:
            raise ConfigError(f"rank must be an integer >= 0 (0 = front contract), got {self.rank!r}")
        if self.roll_rule not in ROLL_RULES:
            raise ConfigError(
                f"unknown roll rule {self.roll_rule!r}; choose " + ", ".join(f"{k} ({v})" for k, v in ROLL_RULES.items())
            )

    @classmethod
    def create(
        cls,
        roots: Sequence[str],
        start: str | date,
        end: str | date,
        schemas: Sequence[str] = ("ohlcv-1m",),
        rank: int = 0,
        roll_rule: str = "v",
    ) -> DownloadPlan:
        """Validate and normalize command-line values into a plan.

        Parameters
        ----------
        roots : sequence of str
            Roots such as ``["ES", "NQ"]`` (case-insensitive; duplicates dropped).
        start, end : str or date
            ``YYYY-MM-DD`` (UTC), ``end`` exclusive.
        schemas : sequence of str
            From :data:`SCHEMAS` (duplicates dropped).
        rank : int
            Continuous rank, 0 = front contract.
        roll_rule : {"v", "n", "c"}
            Databento continuous rule (case-insensitive).

        Raises
        ------
        ConfigError
            For any invalid value.
        """
        if isinstance(roots, str):
            roots = [roots]
        names = tuple(dict.fromkeys(str(r).strip().upper() for r in roots if str(r).strip()))
        kinds = tuple(dict.fromkeys(str(s).strip().lower() for s in schemas if str(s).strip()))
        try:
            rank_value = int(rank)
        except (TypeError, ValueError):
            raise ConfigError(f"rank must be an integer >= 0 (0 = front contract), got {rank!r}") from None
        return cls(
            roots=names,
            start=_parse_date("start", start),
            end=_parse_date("end", end),
            schemas=kinds,
            rank=rank_value,
            roll_rule=str(roll_rule).strip().lower(),
        )

    def symbol(self, root: str) -> str:
        """Continuous symbol of ``root`` (``ES.v.0``)."""
        return f"{root}.{self.roll_rule}.{self.rank}"

    @property
    def chunks(self) -> list[Chunk]:
        """Every chunk, ordered by root, schema (definitions first) and month."""
        months: list[tuple[date, date]] = []
        cursor = self.start
        while cursor < self.end:
            next_month = date(cursor.year + cursor.month // 12, cursor.month % 12 + 1, 1)
            months.append((cursor, min(next_month, self.end)))
            cursor = next_month
        ordered_schemas = sorted(self.schemas, key=lambda s: (s != "definition", SCHEMAS.index(s)))
        return [
            Chunk(root, schema, self.symbol(root), first, last)
            for root in self.roots
            for schema in ordered_schemas
            for first, last in months
        ]

    @property
    def key(self) -> str:
        """Stable short hash of the plan; names its ``data_quality`` file."""
        text = "|".join([self.dataset, ",".join(self.roots), ",".join(self.schemas), str(self.start), str(self.end), self.roll_rule, str(self.rank)])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def describe(self) -> str:
        """One line for the console."""
        return (
            f"{', '.join(self.symbol(r) for r in self.roots)} {'/'.join(self.schemas)} "
            f"{self.start}..{self.end} ({self.dataset}, {ROLL_RULES[self.roll_rule]} roll)"
        )


def _parse_date(name: str, value: str | date) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        raise ConfigError(f"{name} must be a date YYYY-MM-DD, got {value!r}") from None


# -- the run -------------------------------------------------------------------------------------------
@dataclass
class DownloadSummary:
    """What :func:`run_download` did.

    Attributes
    ----------
    chunks_total : int
        Chunks in the plan.
    chunks_downloaded : int
        Chunks fetched in this run.
    chunks_skipped : int
        Chunks already on disk and still current (resume).
    chunks_refetched : int
        Chunks on disk that this run chose to fetch again because the dataset condition or
        ``last_modified_date`` of one of their days changed since they were downloaded.
    cost_usd : float
        Estimated price of the chunks fetched in this run.
    files_ingested : int
        Chunk files ingested in this run (files the ingest log already held are not read again).
    rows_loaded : int
        Bar rows new or changed in the warehouse.
    flags_recorded : int
        ``data_quality`` rows written by this run (dataset conditions, warnings, ingest errors).
    conditions_checked : bool
        False when ``get_dataset_condition`` failed and the plain file rule decided what to fetch.
    ingest_errors : list of str
        Chunk files that could not be ingested, with the reason.
    """

    chunks_total: int = 0
    chunks_downloaded: int = 0
    chunks_skipped: int = 0
    chunks_refetched: int = 0
    cost_usd: float = 0.0
    files_ingested: int = 0
    rows_loaded: int = 0
    flags_recorded: int = 0
    conditions_checked: bool = True
    ingest_errors: list[str] = field(default_factory=list)


#: Condition of one day, as recorded: ``{"condition": ..., "last_modified_date": "YYYY-MM-DD" or None}``.
DayCondition = dict[str, Any]


def run_download(
    warehouse: Warehouse,
    source: HistoricalSource,
    plan: DownloadPlan,
    confirm: Callable[[str], bool] | None = None,
    console: Console | None = None,
) -> DownloadSummary:
    """Check, price, download and ingest ``plan``; resume where a previous run stopped.

    Parameters
    ----------
    warehouse : Warehouse
        Destination; chunk files go under ``<root>/downloads/``.
    source : HistoricalSource
        The vendor (:class:`DatabentoClient`, or a stand-in in tests).
    plan : DownloadPlan
        What to fetch.
    confirm : callable, optional
        Asked ``"Download N chunks for $X.XX?"`` before anything is paid for; ``None`` means do not ask.
    console : rich.console.Console, optional
        Where messages and the progress bar go (the bar only when it is a terminal).

    Returns
    -------
    DownloadSummary

    Raises
    ------
    QEError
        If the confirmation is refused (``"download cancelled"``), or Databento answers a cost or
        download request with an HTTP error (status and message in one line; 422 says which symbol and
        period could not be resolved). A failed condition check is not an error: the run falls back
        to the plain file rule and says so.
    """
    console = console or Console(stderr=True)
    root = warehouse.root
    chunks = plan.chunks
    summary = DownloadSummary(chunks_total=len(chunks))
    console.print(f"Plan: {plan.describe()}: {len(chunks)} chunk(s)", highlight=False, markup=False)

    # 1. Conditions first: whether a chunk on disk is still current depends on them.
    current = _dataset_conditions(source, plan, console)
    summary.conditions_checked = current is not None
    hashes: dict[tuple[str, int, int, int], str] = {}
    states = [_assess(c, root, current, hashes) for c in chunks]
    todo = [s.chunk for s in states if not s.done]
    stale = [s for s in states if s.present and s.changes]
    summary.chunks_skipped = len(chunks) - len(todo)
    summary.chunks_refetched = len(stale)

    # 2. Price only what is to fetch, so that resuming a large download asks about the rest only.
    if stale:
        first = stale[0]
        console.print(
            f"{len(stale)} chunk(s) on disk changed at Databento since their download; fetching them again "
            f"(e.g. {first.chunk.describe()}: {'; '.join(first.changes[:3])}{'; ...' if len(first.changes) > 3 else ''})",
            highlight=False, markup=False,
        )
    if todo:
        cost = sum(
            _call(lambda c=c: source.get_cost(plan.dataset, [c.symbol], c.schema, str(c.start), str(c.end), STYPE_IN), "cost estimate", c)
            for c in todo
        )
        summary.cost_usd = float(cost)
        skipped = f" ({summary.chunks_skipped} already downloaded)" if summary.chunks_skipped else ""
        console.print(f"{len(todo)} chunk(s) to download{skipped}; estimated cost ${cost:,.2f}", highlight=False)
        if confirm is not None and not confirm(f"Download {len(todo)} chunks for ${cost:,.2f}?"):
            raise QEError("download cancelled")
    else:
        console.print(f"All {len(chunks)} chunk(s) already downloaded; nothing to pay for", highlight=False)

    # 3. Flags of what is stored now, written at once: a crash later must not lose them.
    quality = _QualityLog(root, plan, current)
    for state in states:
        quality.set_chunk(state.chunk, state.stored if state.present else None)
    quality.write()
    if quality.condition_rows:
        console.print(f"{quality.condition_rows} data-quality flag(s) from the dataset condition (see the data_quality table)", highlight=False)

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    )
    with progress:
        # 4. Download; flags and warnings recorded so far are written even when a chunk fails.
        task = progress.add_task("download", total=len(todo))
        try:
            for chunk in todo:
                progress.update(task, description=f"download {chunk.describe()}")
                stored = _download_chunk(source, plan, chunk, root, quality, current, hashes)
                quality.set_chunk(chunk, stored)
                summary.chunks_downloaded += 1
                progress.advance(task)
        finally:
            quality.write()

        # 5. Ingest every chunk file of the plan not yet in the ingest log (also those of a crashed run, and
        #    chunks fetched again: same path, new bytes, so the ingest replaces what the old file loaded).
        #    Under the write lock (never held while fetching): what is pending is decided by the writer.
        with write_lock(root):
            files = [(c, c.path(root)) for c in chunks if c.path(root).is_file()]
            pending = _not_ingested(warehouse, files, hashes)
            if pending:
                ingest_task = progress.add_task("ingest", total=len(pending))
                _ingest_chunks(warehouse, pending, quality, summary, lambda: progress.advance(ingest_task))
            quality.write()

    summary.flags_recorded = quality.recorded_this_run
    refetched = f" ({summary.chunks_refetched} again)" if summary.chunks_refetched else ""
    console.print(
        f"Downloaded {summary.chunks_downloaded} chunk(s){refetched}, skipped {summary.chunks_skipped} already present; "
        f"ingested {summary.files_ingested} file(s), {summary.rows_loaded:,} row(s) loaded; "
        f"{summary.flags_recorded} data-quality flag(s) recorded",
        highlight=False,
    )
    for error in summary.ingest_errors:
        console.print(f"[yellow]not ingested:[/yellow] {escape(error)}", highlight=False)
    return summary


# -- the resume rule -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _ChunkState:
    """Where a chunk stands before the downloads of a run.

    Attributes
    ----------
    present : bool
        The final file exists and its header is this chunk's request.
    stored : dict or None
        Conditions (by ISO day) the stored file was downloaded under; None when unknown.
    changes : list of str
        Why a present chunk is fetched again (empty: it is not).
    """

    chunk: Chunk
    present: bool
    stored: dict[str, DayCondition] | None = None
    changes: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.present and not self.changes


def _assess(
    chunk: Chunk, root: Path, current: dict[str, DayCondition] | None, hashes: dict[tuple[str, int, int, int], str]
) -> _ChunkState:
    """Apply the resume rule to ``chunk`` given this run's conditions (None: the check failed)."""
    if not _file_is_chunk(chunk, root):
        return _ChunkState(chunk, present=False)
    path = chunk.path(root)
    sha = _sha256(path, hashes)
    record = _read_record(path, sha)
    recorded = record.get("conditions") if record is not None else None
    if current is None:  # the condition check failed: the plain file rule
        return _ChunkState(chunk, present=True, stored=recorded)
    days = _days_of(chunk, current)
    if recorded is not None:
        changes = [f"{day} {_describe(recorded.get(day))} -> {_describe(now)}" for day, now in days.items() if recorded.get(day) != now]
        return _ChunkState(chunk, present=True, stored=recorded, changes=changes)
    # No valid record of the conditions (the check failed when the file was fetched, or a crash came between
    # sidecar and rename): the file still holds the current data if no day was modified since it was written.
    written = _record_time(record) or datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
    changes = [
        f"{day} modified {now['last_modified_date']}, on or after the download on {written.date()}"
        for day, now in days.items()
        if now["last_modified_date"] and now["last_modified_date"] >= written.date().isoformat()
    ]
    if changes:
        return _ChunkState(chunk, present=True, changes=changes)
    _write_record(path, sha, days, written)  # adopt the current conditions: unchanged since the download
    fsync_dir(path.parent)
    return _ChunkState(chunk, present=True, stored=days)


def _file_is_chunk(chunk: Chunk, root: Path) -> bool:
    """The final file exists and its header is this chunk's request.

    The header check matters because the path names neither rank nor roll rule nor exact dates: a file
    from ``ES.c.0``, or from a plan that covered only half the month, must not pass for this chunk.
    """
    path = chunk.path(root)
    if not path.is_file():
        return False
    metadata = _read_header(path)
    if metadata is None:
        return False
    start_ns = (chunk.start - _EPOCH).days * _NS_PER_DAY
    end_ns = (chunk.end - _EPOCH).days * _NS_PER_DAY
    return (
        chunk.symbol in list(metadata.symbols)
        and str(metadata.schema) == chunk.schema
        and str(metadata.stype_in) == STYPE_IN
        and metadata.start <= start_ns
        and (metadata.end is None or metadata.end >= end_ns)
    )


def _days_of(chunk: Chunk, conditions: dict[str, DayCondition]) -> dict[str, DayCondition]:
    low, high = chunk.start.isoformat(), chunk.end.isoformat()
    return {day: value for day, value in sorted(conditions.items()) if low <= day < high}


def _describe(condition: DayCondition | None) -> str:
    if condition is None:
        return "not reported"
    modified = condition.get("last_modified_date")
    return f"{condition['condition']} (modified {modified})" if modified else str(condition["condition"])


# -- the sidecar: conditions a chunk file was downloaded under ---------------------------------------------
def _record_path(chunk_file: Path) -> Path:
    return chunk_file.with_name(f"{chunk_file.name}.json")


def _write_record(chunk_file: Path, sha256: str, conditions: dict[str, DayCondition] | None, downloaded_at: datetime) -> None:
    """Write ``<chunk file>.json`` atomically (temporary file, fsync, rename); the caller fsyncs the directory."""
    record = {
        "version": 1,
        "file": chunk_file.name,
        "sha256": sha256,
        "downloaded_at": downloaded_at.astimezone(timezone.utc).isoformat(),
        "conditions": conditions,
    }
    write_text_atomic(_record_path(chunk_file), json.dumps(record, indent=1, sort_keys=True))


def _read_record(chunk_file: Path, sha256: str) -> dict[str, Any] | None:
    """The sidecar of ``chunk_file`` if it is readable and describes these very bytes, else None."""
    try:
        record = json.loads(_record_path(chunk_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("sha256") != sha256:
        return None
    conditions = record.get("conditions")
    if conditions is not None and not (
        isinstance(conditions, dict) and all(isinstance(v, dict) and "condition" in v for v in conditions.values())
    ):
        return None
    return record


def _record_time(record: dict[str, Any] | None) -> datetime | None:
    try:
        return datetime.fromisoformat(record["downloaded_at"]) if record else None
    except (KeyError, TypeError, ValueError):
        return None


def _sha256(path: Path, cache: dict[tuple[str, int, int, int], str]) -> str:
    """SHA-256 of ``path``, computed once per run for the same file state."""
    key = (str(path), *file_signature(path))
    if key not in cache:
        cache[key] = sha256_file(path)
    return cache[key]


# -- source calls --------------------------------------------------------------------------------------------
def _read_header(path: Path) -> Any | None:
    """DBN metadata of ``path``, or None when it is not a readable DBN file."""
    import databento as db

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return db.DBNStore.from_file(path).metadata
        except Exception:  # any decoder failure means "not a usable chunk", which the caller handles
            return None


def _call(fn: Callable[[], Any], what: str, chunk: Chunk | None = None) -> Any:
    """Run one source call, turning Databento HTTP errors into a one-line :class:`QEError`."""
    from databento.common.error import BentoClientError, BentoHttpError, BentoServerError

    try:
        return fn()
    except (BentoClientError, BentoServerError, BentoHttpError) as exc:
        status = getattr(exc, "http_status", None)
        message = _one_line(getattr(exc, "message", None) or str(exc))
        where = f" for {chunk.describe()}" if chunk is not None else ""
        if status == 422 and chunk is not None and "symbol" in message.lower():
            raise QEError(
                f"Databento could not resolve {chunk.symbol} for {chunk.start}..{chunk.end} ({chunk.schema}): "
                f"HTTP 422: {message}"
            ) from None
        raise QEError(f"Databento {what}{where} failed: HTTP {status}: {message}") from None


def _one_line(text: str) -> str:
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip()) or "<no message>"


def _dataset_conditions(source: HistoricalSource, plan: DownloadPlan, console: Console) -> dict[str, DayCondition] | None:
    """This run's condition of every day of the plan up to today, by ISO day; None (and one line) on failure."""
    # end_date is inclusive; a date past today is refused by the API, and has no condition anyway.
    last = min(plan.end - timedelta(days=1), datetime.now(timezone.utc).date())
    if last < plan.start:
        return {}
    try:
        rows = _call(lambda: source.get_dataset_condition(plan.dataset, str(plan.start), str(last)), "dataset condition check")
    except (QEError, OSError) as exc:  # OSError covers connection errors (requests' included)
        console.print(
            f"[yellow]could not check the dataset condition[/yellow] ({type(exc).__name__}: {escape(_one_line(str(exc)))}); "
            "falling back to the file rule: chunk files on disk count as done, and no condition is recorded this run",
            highlight=False,
        )
        return None
    out: dict[str, DayCondition] = {}
    for row in rows or []:
        day = _parse_date("condition date", row["date"]).isoformat()
        modified = row.get("last_modified_date")
        out[day] = {
            "condition": str(row.get("condition") or "unknown").lower(),
            "last_modified_date": str(modified)[:10] if modified else None,
        }
    return out


def _download_chunk(
    source: HistoricalSource,
    plan: DownloadPlan,
    chunk: Chunk,
    root: Path,
    quality: _QualityLog,
    current: dict[str, DayCondition] | None,
    hashes: dict[tuple[str, int, int, int], str],
) -> dict[str, DayCondition] | None:
    """Fetch one chunk into a temporary file, check it is DBN, record its conditions, rename it into place.

    Returns the conditions recorded for the chunk's days (None when this run could not check them).
    """
    from databento.common.error import BentoWarning

    target = chunk.path(root)
    target.parent.mkdir(parents=True, exist_ok=True)
    # A *.tmp name: never taken for a chunk, and swept by Warehouse() after a crash.
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}{TMP_SUFFIX}")
    messages: list[str] = []
    failure: BaseException | None = None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                _call(
                    lambda: source.get_range(
                        plan.dataset, [chunk.symbol], chunk.schema, str(chunk.start), str(chunk.end), STYPE_IN, STYPE_OUT, tmp
                    ),
                    "download",
                    chunk,
                )
            except BaseException as exc:  # warnings seen before the failure are still worth keeping
                failure = exc
        for warning in caught:
            if issubclass(warning.category, BentoWarning):
                messages.append(str(warning.message))
            else:
                warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        if failure is not None:
            raise failure
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise QEError(f"Databento returned no file for {chunk.describe()}")
        if _read_header(tmp) is None:
            raise QEError(f"the download of {chunk.describe()} is not a readable DBN file")
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        stored = _days_of(chunk, current) if current is not None else None
        # The sidecar goes first: the rename of the chunk file commits both. A crash in between leaves the
        # old file (or none) beside a record whose SHA-256 is not its own, which does not count.
        sha = _sha256(tmp, hashes)
        _write_record(target, sha, stored, datetime.now(timezone.utc))
        os.replace(tmp, target)
        fsync_dir(target.parent)
        hashes[(str(target), *file_signature(target))] = sha  # the ingest check needs it
    except BaseException:
        for message in messages:
            quality.add_warning(chunk, message)
        raise
    finally:
        tmp.unlink(missing_ok=True)
    quality.replace_warnings(chunk, messages)  # the bars they were about are gone
    return stored


def _not_ingested(
    warehouse: Warehouse, files: list[tuple[Chunk, Path]], hashes: dict[tuple[str, int, int, int], str] | None = None
) -> list[tuple[Chunk, Path]]:
    """Chunk files whose current bytes the ingest log does not hold (re-reading them would change nothing)."""
    if not files:
        return []
    hashes = {} if hashes is None else hashes
    prefix = str(warehouse.root / "downloads")
    logged = warehouse.sql("SELECT file, sha256 FROM ingest_log WHERE starts_with(file, $prefix)", {"prefix": prefix})
    seen = set(zip(logged["file"].to_pylist(), logged["sha256"].to_pylist()))
    return [(c, p) for c, p in files if (str(p), _sha256(p, hashes)) not in seen]


def _ingest_chunks(
    warehouse: Warehouse,
    files: list[tuple[Chunk, Path]],
    quality: _QualityLog,
    summary: DownloadSummary,
    advance: Callable[[], None],
) -> None:
    from loaders.ingest import FileReport, ingest

    by_path = {str(p): c for c, p in files}

    def on_file(report: FileReport) -> None:
        advance()
        summary.files_ingested += 1
        summary.rows_loaded += report.rows_loaded
        if report.error:
            chunk = by_path.get(report.path)
            summary.ingest_errors.append(report.error)
            if chunk is not None:
                quality.add_ingest_error(chunk, report.error)

    # Definitions go in a call of their own: ingest orders by file name, and chunk names are months, so
    # only this guarantees that continuous bars find their contracts' names.
    definitions = [str(p) for c, p in files if c.schema == "definition"]
    bars = [str(p) for c, p in files if c.schema != "definition"]
    if definitions:
        ingest(warehouse, definitions, on_file=on_file, build_rolls=False)
    if bars:
        ingest(warehouse, bars, on_file=on_file)


# -- data quality ------------------------------------------------------------------------------------------
class _QualityLog:
    """The plan's rows of ``data_quality``: one Parquet file per plan, rewritten atomically.

    Condition rows are rebuilt on every run, chunk by chunk, to describe the bars stored:

    * a chunk on disk with a valid sidecar: the days its sidecar recorded as not ``available`` (so a
      degraded day stays flagged until the chunk is fetched again while the day is available, and then
      has no row);
    * any other chunk: the days the current condition reports as not available, plus the earlier rows
      of its days that the current condition does not replace (nothing shows those bars were replaced;
      when the check failed, every earlier row of such a chunk stays).

    Warnings accumulate across runs, except that fetching a chunk again replaces its warnings. Ingest
    errors are those of the latest run.
    """

    _EVENTS = ("warning", "ingest_error")

    def __init__(self, root: Path, plan: DownloadPlan, current: dict[str, DayCondition] | None) -> None:
        self.path = root / "data_quality" / f"download-{plan.key}.parquet"
        self.plan = plan
        self.current = current
        previous = pq.read_table(self.path).to_pylist() if self.path.is_file() else []
        self.previous = {
            (r["symbol"], r["schema_name"], r["date"]): r for r in previous if r["condition"] not in self._EVENTS
        }
        self.warnings: list[dict[str, Any]] = [r for r in previous if r["condition"] == "warning"]
        self.by_chunk: dict[Chunk, list[dict[str, Any]]] = {}
        self.ingest_errors: list[dict[str, Any]] = []
        self._events_this_run = 0
        self._recorded_at = datetime.now(timezone.utc)

    @property
    def condition_rows(self) -> int:
        return sum(len(rows) for rows in self.by_chunk.values())

    @property
    def recorded_this_run(self) -> int:
        """Condition rows written, plus warnings and ingest errors new in this run."""
        return self.condition_rows + self._events_this_run

    def _row(self, root: str, schema: str, day: date, condition: str, detail: str) -> dict[str, Any]:
        return {
            "dataset": self.plan.dataset,
            "symbol": root,
            "schema_name": schema,
            "date": day,
            "condition": condition,
            "detail": detail,
            "recorded_at": self._recorded_at,
        }

    def set_chunk(self, chunk: Chunk, stored: dict[str, DayCondition] | None) -> None:
        """Condition rows of ``chunk``'s days: from ``stored`` (its file's record) or, if None, as the class says."""
        rows: list[dict[str, Any]] = []
        symbol, dataset = self.plan.symbol(chunk.root), self.plan.dataset
        day = chunk.start
        while day < chunk.end:
            key = day.isoformat()
            if stored is not None:
                entry = stored.get(key)
                if entry is not None and entry["condition"] != AVAILABLE:
                    detail = f"{symbol}: {dataset} reported {_describe(entry)} when the stored bars were downloaded"
                    rows.append(self._row(chunk.root, chunk.schema, day, entry["condition"], _last_modified(detail, entry)))
            else:
                now = self.current.get(key) if self.current is not None else None
                earlier = self.previous.get((chunk.root, chunk.schema, day))
                if now is not None and now["condition"] != AVAILABLE:
                    detail = f"{symbol}: {dataset} reports {now['condition']}"
                    rows.append(self._row(chunk.root, chunk.schema, day, now["condition"], _last_modified(detail, now)))
                elif earlier is not None:
                    rows.append(earlier)
            day += timedelta(days=1)
        self.by_chunk[chunk] = rows

    def add_warning(self, chunk: Chunk, message: str) -> None:
        """A Databento warning raised while downloading ``chunk``, dated by the chunk's first day."""
        row = self._row(chunk.root, chunk.schema, chunk.start, "warning", f"{chunk.describe()}: {message}")
        if not any(_same(row, other) for other in self.warnings):
            self.warnings.append(row)
            self._events_this_run += 1

    def replace_warnings(self, chunk: Chunk, messages: list[str]) -> None:
        """``chunk`` was fetched (again): its earlier warnings go, ``messages`` take their place."""
        self.warnings = [
            w for w in self.warnings if (w["symbol"], w["schema_name"], w["date"]) != (chunk.root, chunk.schema, chunk.start)
        ]
        for message in messages:
            self.add_warning(chunk, message)

    def add_ingest_error(self, chunk: Chunk, message: str) -> None:
        """A chunk file the ingest could not read."""
        self.ingest_errors.append(self._row(chunk.root, chunk.schema, chunk.start, "ingest_error", message))
        self._events_this_run += 1

    def write(self) -> None:
        """Replace the plan's file (or remove it when there is nothing to say)."""
        rows = [r for chunk_rows in self.by_chunk.values() for r in chunk_rows] + self.warnings + self.ingest_errors
        with write_lock(self.path.parents[1]):  # <root>/data_quality/<file>
            write_parquet_atomic(pa.Table.from_pylist(rows, schema=schemas.DATA_QUALITY), self.path)


def _last_modified(detail: str, condition: DayCondition) -> str:
    modified = condition.get("last_modified_date")
    return f"{detail} (last modified {modified})" if modified and "last modified" not in detail else detail


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("symbol", "schema_name", "date", "condition", "detail")
    return all(a[k] == b[k] for k in keys)
