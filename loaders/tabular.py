"""Generic CSV and Parquet bars: ``symbol, ts, open, high, low, close, volume``.

Optional columns: ``contract``, ``instrument_id``, ``open_interest``. Column names are matched without
regard to case, and ``timestamp``/``datetime``/``time``/``date`` are accepted for ``ts``. Timestamps may be
naive (read as UTC), zoned (converted to UTC) or integer epochs (10/13/16/19 digits: s/ms/us/ns, chosen per row). Values are
kept as read; validation decides which rows load.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from loaders.raw import RawFile, raw_bars_table
from warehouse.errors import LoadError

REQUIRED = ("symbol", "ts", "open", "high", "low", "close", "volume")
OPTIONAL = ("contract", "instrument_id", "open_interest")
TS_ALIASES = ("ts", "timestamp", "datetime", "time", "date", "ts_event")


def read_csv(path: Path) -> tuple[pa.Table, int]:
    """Read a CSV with every column as text (so one bad value cannot sink the file).

    Returns the table and the file line number of its first data row (the header is line 1).
    """
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            header_line = handle.readline()
    except (OSError, UnicodeDecodeError) as exc:
        raise LoadError(str(path), f"cannot read the file ({exc})") from exc
    if not header_line.strip():
        raise LoadError(str(path), "the file is empty")
    names = next(csv.reader([header_line]))
    try:
        # Blank lines are kept as all-null rows so that row numbers stay line numbers; read_tabular drops them.
        table = pacsv.read_csv(
            path,
            parse_options=pacsv.ParseOptions(ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names}, strings_can_be_null=True),
        )
    except pa.ArrowInvalid as exc:
        raise LoadError(str(path), f"not a readable CSV ({str(exc).splitlines()[0]})") from exc
    return table, 2


def read_parquet(path: Path) -> tuple[pa.Table, int]:
    """Read a Parquet file; a damaged file is a :class:`LoadError`. Rows are numbered from 1."""
    try:
        return pq.read_table(path), 1
    except (pa.ArrowInvalid, OSError) as exc:
        raise LoadError(str(path), f"not a readable Parquet file ({str(exc).splitlines()[0]})") from exc


def read_tabular(path: Path, fmt: str, timeframe: str | None) -> RawFile:
    """Read a generic CSV or Parquet bar file into a :class:`RawFile`.

    Parameters
    ----------
    path : Path
        The file.
    fmt : {"csv", "parquet"}
        Its format.
    timeframe : str or None
        Bar length; ``None`` infers it from the most common spacing of timestamps per symbol.
    """
    table, first_row = read_csv(path) if fmt == "csv" else read_parquet(path)
    if table.num_rows == 0:
        raise LoadError(str(path), "the file has no rows")
    columns = _match_columns(path, table.column_names)
    n = table.num_rows
    data: dict[str, pa.Array] = {}
    for name, source in columns.items():
        column = table.column(source).combine_chunks()
        if name == "ts":
            column = _normalize_ts(column)
        elif name in ("symbol", "contract"):
            column = pc.cast(column, pa.string())
        data[name] = column
    data["_file"] = pa.array([str(path)] * n, pa.string())
    data["_row"] = pa.array(range(first_row, first_row + n), pa.int64())
    blank = _all_null(table)
    if blank is not None:
        data = {k: v.filter(pc.invert(blank)) for k, v in data.items()}
        if len(data["_row"]) == 0:
            raise LoadError(str(path), "the file has no rows")
    raw = RawFile(path=str(path), format=fmt)
    ignored = sorted(set(table.column_names) - set(columns.values()))
    if ignored:
        raw.notes.append(f"ignored columns: {', '.join(ignored)}")
    bars = raw_bars_table(data)
    tf = timeframe or _infer_timeframe(path, bars)
    raw.bars[tf] = bars
    return raw


def _all_null(table: pa.Table) -> pa.Array | None:
    """Mask of rows where every column is null (blank CSV lines), or None when there are none."""
    mask = None
    for column in table.columns:
        nulls = pc.is_null(column.combine_chunks())
        mask = nulls if mask is None else pc.and_(mask, nulls)
    return mask if mask is not None and pc.any(mask).as_py() else None


def _match_columns(path: Path, names: list[str]) -> dict[str, str]:
    lower = {n.strip().lower(): n for n in names}
    found: dict[str, str] = {}
    for alias in TS_ALIASES:
        if alias in lower:
            found["ts"] = lower[alias]
            break
    for name in REQUIRED + OPTIONAL:
        if name != "ts" and name in lower:
            found[name] = lower[name]
    missing = [n for n in REQUIRED if n not in found]
    if missing:
        raise LoadError(
            str(path),
            f"missing required column(s) {', '.join(missing)}; expected {', '.join(REQUIRED)} "
            f"(found {', '.join(names)})",
        )
    return found


def _normalize_ts(column: pa.Array) -> pa.Array:
    """Timestamps to ``timestamp[us, UTC]`` where the type says how; text stays text for SQL to parse."""
    kind = column.type
    if pa.types.is_timestamp(kind):
        if kind.tz is None:
            column = pc.assume_timezone(column, "UTC")
        return pc.cast(column, pa.timestamp("us", tz="UTC"))
    if pa.types.is_date(kind):
        # Bare dates stay text (YYYY-MM-DD): a daily file of dates holds trading dates (loaders/daily.py).
        return pc.cast(column, pa.string())
    if pa.types.is_integer(kind):
        # Epoch integers: as text, the unit is chosen per row from the digit count (see sql/macros.sql).
        return pc.cast(column, pa.string())
    return pc.cast(column, pa.string())


def _infer_timeframe(path: Path, bars: pa.Table) -> str:
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("raw", bars.select(["symbol", "ts"]))
    row = con.sql(
        """
        WITH t AS (SELECT symbol, TRY_CAST(ts AS TIMESTAMPTZ) AS ts FROM raw),
        d AS (
            SELECT epoch(ts - LAG(ts) OVER (PARTITION BY symbol ORDER BY ts)) AS gap FROM t WHERE ts IS NOT NULL
        )
        SELECT gap, count(*) AS n FROM d WHERE gap > 0 GROUP BY gap ORDER BY n DESC, gap LIMIT 1
        """
    ).fetchone()
    con.close()
    by_seconds = {1: "1s", 60: "1m", 3600: "1h", 86400: "1d"}
    if row is None or int(row[0]) not in by_seconds:
        spacing = "no two timestamps" if row is None else f"a spacing of {row[0]:g} s"
        raise LoadError(str(path), f"cannot infer the timeframe ({spacing}); pass --timeframe 1s|1m|1h|1d")
    return by_seconds[int(row[0])]
