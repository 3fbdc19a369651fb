"""Download continuous futures bars from Databento, resumably, then ingest them.

A download is a :class:`DownloadPlan` (roots, date range, schemas, continuous rank and roll rule), split
into chunks of one root × schema × calendar month. :func:`run_download` then

1. prices the chunks not yet on disk with ``metadata.get_cost`` (free) and asks before spending money;
2. stores every day the dataset reports as not ``available`` (degraded / pending / missing) in the
   ``data_quality`` table, per root and schema;
3. downloads each missing chunk to ``<warehouse>/downloads/<ROOT>/<schema>/<YYYY-MM>.dbn.zst`` through a
   temporary file and a rename, turning Databento warnings into ``data_quality`` flags;
4. ingests every chunk file of the plan that the ingest log does not already hold (definitions first);
5. shows progress with rich and returns a :class:`DownloadSummary`.

Resume rule: a chunk whose final file exists (and whose DBN header covers the chunk's symbol and dates) is
done. A crash mid-chunk leaves only a ``*.tmp`` file, which is never mistaken for a chunk and which the
warehouse sweeps when it is next opened; the next run downloads that chunk again.

Everything that talks to the network sits behind :class:`HistoricalSource`, so tests (and other
vendors) can stand in for :class:`DatabentoClient`. The API key is never printed, logged or put into an
exception message.
"""

from __future__ import annotations

import hashlib
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
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from warehouse import schemas
from warehouse.errors import ConfigError, QEError
from warehouse.store import TMP_SUFFIX, fsync_dir, sha256_file, write_parquet_atomic
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
        Chunks already on disk (resume).
    cost_usd : float
        Estimated price of the chunks fetched in this run.
    files_ingested : int
        Chunk files ingested in this run (files the ingest log already held are not read again).
    rows_loaded : int
        Bar rows new or changed in the warehouse.
    flags_recorded : int
        ``data_quality`` rows written by this run (dataset conditions, warnings, ingest errors).
    ingest_errors : list of str
        Chunk files that could not be ingested, with the reason.
    """

    chunks_total: int = 0
    chunks_downloaded: int = 0
    chunks_skipped: int = 0
    cost_usd: float = 0.0
    files_ingested: int = 0
    rows_loaded: int = 0
    flags_recorded: int = 0
    ingest_errors: list[str] = field(default_factory=list)


def run_download(
    warehouse: Warehouse,
    source: HistoricalSource,
    plan: DownloadPlan,
    confirm: Callable[[str], bool] | None = None,
    console: Console | None = None,
) -> DownloadSummary:
    """Price, check, download and ingest ``plan``; resume where a previous run stopped.

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
        If the confirmation is refused (``"download cancelled"``), or Databento answers with an HTTP
        error (status and message in one line; 422 says which symbol and period could not be resolved).
    """
    console = console or Console(stderr=True)
    root = warehouse.root
    chunks = plan.chunks
    summary = DownloadSummary(chunks_total=len(chunks))
    console.print(f"Plan: {plan.describe()}: {len(chunks)} chunk(s)", highlight=False)

    # 1. Price only what is missing, so that resuming a large download asks about the rest only.
    todo = [c for c in chunks if not _chunk_done(c, root)]
    summary.chunks_skipped = len(chunks) - len(todo)
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

    # 2. Dataset conditions first and stored at once: a crash later must not lose them.
    quality = _QualityLog(root, plan)
    quality.set_conditions(_dataset_conditions(source, plan))
    quality.write()
    if quality.conditions:
        console.print(f"{len(quality.conditions)} data-quality flag(s) from the dataset condition (see the data_quality table)", highlight=False)

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    )
    with progress:
        # 3. Download; warnings recorded so far are written even when a chunk fails.
        task = progress.add_task("download", total=len(todo))
        try:
            for chunk in todo:
                progress.update(task, description=f"download {chunk.describe()}")
                _download_chunk(source, plan, chunk, root, quality)
                summary.chunks_downloaded += 1
                progress.advance(task)
        finally:
            quality.write()

        # 4. Ingest every chunk file of the plan not yet in the ingest log (also those of a crashed run).
        pending = _not_ingested(warehouse, [(c, c.path(root)) for c in chunks if c.path(root).is_file()])
        if pending:
            ingest_task = progress.add_task("ingest", total=len(pending))
            _ingest_chunks(warehouse, pending, quality, summary, lambda: progress.advance(ingest_task))
        quality.write()

    summary.flags_recorded = quality.recorded_this_run
    console.print(
        f"Downloaded {summary.chunks_downloaded} chunk(s), skipped {summary.chunks_skipped} already present; "
        f"ingested {summary.files_ingested} file(s), {summary.rows_loaded:,} row(s) loaded; "
        f"{summary.flags_recorded} data-quality flag(s) recorded",
        highlight=False,
    )
    for error in summary.ingest_errors:
        console.print(f"[yellow]not ingested:[/yellow] {error}", highlight=False)
    return summary


def _chunk_done(chunk: Chunk, root: Path) -> bool:
    """The resume rule: the final file exists and its header is this chunk's request.

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


def _dataset_conditions(source: HistoricalSource, plan: DownloadPlan) -> list[dict[str, Any]]:
    # end_date is inclusive; a date past today is refused by the API, and has no condition anyway.
    last = min(plan.end - timedelta(days=1), datetime.now(timezone.utc).date())
    if last < plan.start:
        return []
    rows = _call(lambda: source.get_dataset_condition(plan.dataset, str(plan.start), str(last)), "dataset condition check")
    return [dict(r) for r in rows or []]


def _download_chunk(source: HistoricalSource, plan: DownloadPlan, chunk: Chunk, root: Path, quality: _QualityLog) -> None:
    """Fetch one chunk into a temporary file, check it is DBN, and rename it into place."""
    from databento.common.error import BentoWarning

    target = chunk.path(root)
    target.parent.mkdir(parents=True, exist_ok=True)
    # A *.tmp name: never taken for a chunk, and swept by Warehouse() after a crash.
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}{TMP_SUFFIX}")
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
                quality.add_warning(chunk, str(warning.message))
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
        os.replace(tmp, target)
        fsync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)



def _not_ingested(warehouse: Warehouse, files: list[tuple[Chunk, Path]]) -> list[tuple[Chunk, Path]]:
    """Chunk files whose current bytes the ingest log does not hold (re-reading them would change nothing)."""
    if not files:
        return []
    prefix = str(warehouse.root / "downloads")
    logged = warehouse.sql("SELECT file, sha256 FROM ingest_log WHERE starts_with(file, $prefix)", {"prefix": prefix})
    seen = set(zip(logged["file"].to_pylist(), logged["sha256"].to_pylist()))
    return [(c, p) for c, p in files if (str(p), sha256_file(p)) not in seen]



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


class _QualityLog:
    """The plan's rows of ``data_quality``: one Parquet file per plan, rewritten atomically.

    Dataset conditions are replaced on every run (a pending day may since have become available).
    Warnings accumulate across runs, since a chunk is downloaded, and so warned about, only once.
    Ingest errors are those of the latest run.
    """

    def __init__(self, root: Path, plan: DownloadPlan) -> None:
        self.path = root / "data_quality" / f"download-{plan.key}.parquet"
        self.plan = plan
        self.conditions: list[dict[str, Any]] = []
        self.ingest_errors: list[dict[str, Any]] = []
        self.warnings: list[dict[str, Any]] = self._previous_warnings()
        self.recorded_this_run = 0
        self._recorded_at = datetime.now(timezone.utc)

    def _previous_warnings(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        table = pq.read_table(self.path)
        return [r for r in table.to_pylist() if r["condition"] == "warning"]

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

    def set_conditions(self, days: list[dict[str, Any]]) -> None:
        """One row per root × schema × day whose condition is not ``available``."""
        self.conditions = []
        for day in days:
            condition = str(day.get("condition") or "unknown").lower()
            if condition == AVAILABLE:
                continue
            when = _parse_date("condition date", day["date"])
            modified = day.get("last_modified_date")
            for root in self.plan.roots:
                for schema in self.plan.schemas:
                    detail = f"{self.plan.symbol(root)}: {self.plan.dataset} reports {condition}"
                    if modified:
                        detail += f" (last modified {modified})"
                    self.conditions.append(self._row(root, schema, when, condition, detail))
        self.recorded_this_run += len(self.conditions)

    def add_warning(self, chunk: Chunk, message: str) -> None:
        """A Databento warning raised while downloading ``chunk``, dated by the chunk's first day."""
        row = self._row(chunk.root, chunk.schema, chunk.start, "warning", f"{chunk.describe()}: {message}")
        if not any(_same(row, other) for other in self.warnings):
            self.warnings.append(row)
            self.recorded_this_run += 1

    def add_ingest_error(self, chunk: Chunk, message: str) -> None:
        """A chunk file the ingest could not read."""
        self.ingest_errors.append(self._row(chunk.root, chunk.schema, chunk.start, "ingest_error", message))
        self.recorded_this_run += 1

    def write(self) -> None:
        """Replace the plan's file (or remove it when there is nothing to say)."""
        rows = self.conditions + self.warnings + self.ingest_errors
        write_parquet_atomic(pa.Table.from_pylist(rows, schema=schemas.DATA_QUALITY), self.path)


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("symbol", "schema_name", "date", "condition", "detail")
    return all(a[k] == b[k] for k in keys)
