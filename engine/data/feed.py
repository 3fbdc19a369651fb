"""The bar stream of a backtest: one SQL query, streamed from DuckDB as Arrow record batches.

The query can be anything that returns ``symbol``, ``ts`` (TIMESTAMPTZ bar open time), ``open``, ``high``,
``low`` and ``close`` -- optionally ``volume``, ``contract`` and any feature or signal columns -- for one or
many symbols. Rows reach the event loop in time order (the query is ordered by ``ts, symbol`` unless it has
its own top-level ``ORDER BY``; the loop refuses a stream that goes back in time), a batch at a time, so
memory is bounded by the batch size and not by the length of the history.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import duckdb
import pyarrow as pa
import sqlglot
from sqlglot import exp

from warehouse.errors import QEError
from warehouse.templates import render

__all__ = ["REQUIRED_COLUMNS", "Feed", "open_feed", "first_trading_days", "infer_timeframe", "BAR_NS", "bar_type",
           "batch_columns"]

REQUIRED_COLUMNS = ("symbol", "ts", "open", "high", "low", "close")

#: Bar length in nanoseconds by timeframe name (the suffix of the bar and feature views).
BAR_NS: dict[str, int] = {
    "1s": 1_000_000_000,
    "1m": 60_000_000_000,
    "5m": 300_000_000_000,
    "15m": 900_000_000_000,
    "1h": 3_600_000_000_000,
    "1d": 86_400_000_000_000,
}


@dataclass
class Feed:
    """An open stream: the Arrow reader, the bar type built from its schema and the column positions."""

    reader: pa.RecordBatchReader
    schema: pa.Schema
    bar_type: type
    columns: dict[str, int]
    sql: str

    def batches(self) -> Iterator[tuple[list[list], int]]:
        """Each batch as (one Python list per column, row count)."""
        for batch in self.reader:
            yield batch_columns(batch), batch.num_rows


def batch_columns(batch: pa.RecordBatch | pa.Table) -> list[list]:
    """One Python list per column: the layout the kernel loops over."""
    return [_to_list(batch.column(i)) for i in range(batch.num_columns)]


def _to_list(column: pa.Array) -> list:
    # numpy's tolist is several times faster than to_pylist for numbers; it would turn NULLs into NaN
    # (floats) or fail (ints), so only columns without NULLs take that path.
    if column.null_count == 0 and (pa.types.is_floating(column.type) or pa.types.is_integer(column.type)):
        return column.to_numpy(zero_copy_only=False).tolist()
    return column.to_pylist()


@lru_cache(maxsize=64)
def _bar_type_of(names: tuple[str, ...]) -> type:
    base = namedtuple("BarRow", names, rename=True)
    index = {name: i for i, name in enumerate(names)}

    def get(self, key):  # noqa: ANN001, ANN202
        if isinstance(key, str):
            return tuple.__getitem__(self, index[key])
        return tuple.__getitem__(self, key)

    def reduce(self):  # noqa: ANN202 - pickled as its column names and values (the type is made at run time)
        return _rebuild_bar, (names, tuple(self))

    return type("Bar", (base,), {"__slots__": (), "__getitem__": get, "__reduce__": reduce, "columns": names})


def bar_type(names: list[str]) -> type:
    """The bar row type of a query's columns: a named tuple that also answers ``bar["column"]``.

    One type per list of names in a process, and its bars pickle (a live session's checkpoint holds the bars
    a strategy kept).
    """
    return _bar_type_of(tuple(names))


def _rebuild_bar(names: tuple[str, ...], values: tuple) -> tuple:
    return tuple.__new__(_bar_type_of(names), values)


def parse_query(query: str) -> exp.Query:
    """The user's query as a sqlglot tree; one clear error if it is not a single SELECT."""
    try:
        statements = [s for s in sqlglot.parse(query, read="duckdb") if s is not None]
    except sqlglot.errors.ParseError as exc:
        raise QEError(f"backtest query does not parse: {str(exc).splitlines()[0]}") from exc
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        raise QEError("a backtest query must be exactly one SELECT")
    return statements[0]


def infer_timeframe(query: str) -> str | None:
    """The timeframe named by the views the query reads (``bars_1m``, ``features_1h``, ...), if unambiguous."""
    found = set()
    for table in parse_query(query).find_all(exp.Table):
        name = table.name.lower()
        for prefix in ("bars_", "features_", "contract_bars_"):
            if name.startswith(prefix):
                rest = name[len(prefix):].split("_")[0]
                if rest in BAR_NS:
                    found.add(rest)
        if name == "session_bars_1d":
            found.add("1d")
        if name == "bars_1h_from_1m":
            found.add("1h")
    return found.pop() if len(found) == 1 else None


def _checked_query(con: duckdb.DuckDBPyConnection, query: str) -> tuple[exp.Query, str, list[str]]:
    """The parsed query, its text without a trailing ``;`` and the columns it returns (required ones checked)."""
    tree = parse_query(query)
    query = query.strip().rstrip(";")
    try:
        returned = [c.lower() for c in con.sql(query).columns]
    except duckdb.Error as exc:
        raise QEError(f"backtest query failed: {str(exc).splitlines()[0]}") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in returned]
    if missing:
        raise QEError(f"backtest query must return columns {', '.join(REQUIRED_COLUMNS)}; missing: {', '.join(missing)}")
    return tree, query, returned


def first_trading_days(con: duckdb.DuckDBPyConnection, query: str) -> dict[str, int]:
    """Symbol -> first CME trading date (days since 1970-01-01) of the bars ``query`` returns.

    Run before the stream opens (another query on the connection would end a stream).
    """
    _, query, _ = _checked_query(con, query)
    try:
        return dict(con.sql(render("backtest_span.sql", query=query)).fetchall())
    except duckdb.Error as exc:
        raise QEError(f"backtest query failed: {str(exc).splitlines()[0]}") from exc


def open_feed(con: duckdb.DuckDBPyConnection, query: str, batch_size: int = 65_536) -> Feed:
    """Start streaming ``query`` (see the module docstring for what it must return)."""
    tree, query, returned = _checked_query(con, query)
    sql = render("backtest_feed.sql", query=query, order_by=tree.args.get("order") is None,
                 has_volume="volume" in returned)
    try:
        reader = con.sql(sql).to_arrow_reader(batch_size)
    except duckdb.Error as exc:
        raise QEError(f"backtest query failed: {str(exc).splitlines()[0]}") from exc
    names = reader.schema.names
    return Feed(reader, reader.schema, bar_type(names), {n: i for i, n in enumerate(names)}, sql)
