"""The query's rows of one bar, as the kernel takes them: the same SQL a backtest streams, at one timestamp.

A backtest streams ``backtest_feed.sql`` over the user's query once; live, the same template runs over the
query restricted to the bar that just closed (``WHERE ts = T``), so the strategy sees exactly the row a
backtest would show it for that bar. Features of the new bars are computed per bar (in memory) and put in
front of the stored ones under the view's own name: a temporary view ``features_<tf>`` shadows the
warehouse's view in this connection only, so the user's query is not rewritten.
"""

from __future__ import annotations

import logging
from datetime import datetime

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from engine.data.feed import REQUIRED_COLUMNS, bar_type, batch_columns
from warehouse.errors import QEError
from warehouse.templates import render

__all__ = ["QueryRows"]

#: Rows of the newest record batch of the live feature rows before it is merged into the older rows' batch.
#: Every scan of a registered Arrow table converts each of its record batches anew (152 columns: ~1.2 ms a
#: batch; 35 batches of 10k rows took 44 ms against 6 ms for one), so the rows are kept as at most two batches:
#: the older rows and the recent ones, and a bar copies only the recent ones.
_RECENT_ROWS = 256
#: Times a bar's query runs again after a file it listed vanished before it was read (a partition replaced).
_FILE_RETRIES = 2

log = logging.getLogger(__name__)


class QueryRows:
    """The rows of ``query`` at one bar timestamp, in the kernel's column layout.

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        The session's connection to the warehouse (its temporary views are this session's).
    query : str
        The backtest query (one SELECT returning symbol, ts, open, high, low, close, ...).
    timeframe : str
        The bar views' suffix (``1m``): names the features view the new rows shadow.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, query: str, timeframe: str) -> None:
        self.con = con
        self.query = query.strip().rstrip(";")
        self.timeframe = timeframe
        try:
            returned = [c.lower() for c in con.sql(f"SELECT * FROM ({self.query}) LIMIT 0").columns]
        except duckdb.Error as exc:
            raise QEError(f"live query failed: {str(exc).splitlines()[0]}") from exc
        missing = [c for c in REQUIRED_COLUMNS if c not in returned]
        if missing:
            raise QEError(f"the query must return columns {', '.join(REQUIRED_COLUMNS)}; missing: {', '.join(missing)}")
        self._has_volume = "volume" in returned
        # rendered (and checked) once: each bar only binds its time
        self._at_sql = render("backtest_feed.sql", query=f"SELECT * FROM ({self.query}) AS live_q WHERE live_q.ts = $ts",
                              order_by=True, has_volume=self._has_volume)
        self.columns: dict[str, int] | None = None
        self.bar_type: type | None = None
        self._cutoff: datetime | None = None  # the first live row's time: stored rows from it on are hidden
        self._live: pa.Table | None = None  # _older's and _recent's batches, in the order the rows came
        self._older: pa.Table | None = None  # one record batch each
        self._recent: pa.Table | None = None
        self._live_name = f"_live_features_{timeframe}"  # the live rows' registered name, read by the view

    def add_features(self, rows: pa.Table) -> None:
        """Feature rows of new bars (the catalog's columns), shown through ``features_<tf>`` from now on.

        Stored rows at or after the first live row's time are hidden behind them, so a features build that
        ran meanwhile never doubles a row. The rows are an Arrow table registered under one name; the shadowing
        view over it is made once (again only when rows older than its cut arrive), not per bar (replacing a
        view of ~150 columns cost ~5-10 ms a bar; inserting the rows into a DuckDB table costs more).
        """
        if rows.num_rows == 0:
            return
        if self._recent is None:
            self._recent = rows.combine_chunks()
        else:
            self._recent = pa.concat_tables([self._recent, rows.cast(self._recent.schema)]).combine_chunks()
        if self._recent.num_rows > _RECENT_ROWS:
            self._older = self._recent if self._older is None else pa.concat_tables(
                [self._older, self._recent]).combine_chunks()
            self._recent = self._recent.slice(0, 0)
        self._live = self._recent if self._older is None else pa.concat_tables([self._older, self._recent])
        name = f"features_{self.timeframe}"
        self.con.register(self._live_name, self._live)  # the view reads the name: it sees the new rows
        first = pc.min(rows["ts"]).as_py()
        if self._cutoff is not None and first >= self._cutoff:
            return
        self._cutoff = first
        # qualified with the database: an unqualified (or main.) name inside the temporary view is the view itself
        database = self.con.sql("SELECT current_database()").fetchone()[0]
        self.con.execute(
            f'CREATE OR REPLACE TEMP VIEW {name} AS SELECT * FROM "{database}".main.{name} '
            f"WHERE ts < TIMESTAMPTZ '{first.isoformat()}' UNION ALL BY NAME SELECT * FROM {self._live_name}")

    def drop_features(self, keys: list[tuple[str, datetime]]) -> None:
        """Forget the feature rows of these (symbol, ts): bars featured before they were stored that were then
        not stored (quarantined, held, a failed write: not traded), or whose features are computed again (their
        rows come again). The rows left become the recent batch (the next bar copies them once)."""
        if self._live is None or not keys:
            return
        gone = {(symbol, ts) for symbol, ts in keys}
        keep = [key not in gone for key in zip(self._live["symbol"].to_pylist(), self._live["ts"].to_pylist())]
        self._live = self._live.filter(pa.array(keep)).combine_chunks()  # rare: the order of the rows is kept
        self._older, self._recent = None, self._live
        self.con.register(self._live_name, self._live)

    def live_features(self) -> pa.Table:
        """The feature rows computed live so far (in the order they were added)."""
        return self._live if self._live is not None else pa.table({})

    def layout(self) -> tuple[dict[str, int], type]:
        """The rows' column positions and bar type, from the query's columns (no row needed)."""
        sql = render("backtest_feed.sql", query=f"SELECT * FROM ({self.query}) AS live_q LIMIT 0", order_by=False,
                     has_volume=self._has_volume)
        names = self.con.sql(sql).columns
        if self.columns is None:
            self.columns, self.bar_type = {n: i for i, n in enumerate(names)}, bar_type(names)
        return self.columns, self.bar_type

    def at(self, ts: datetime) -> tuple[list[list], int]:
        """The query's rows at bar time ``ts`` (ordered by symbol), as one list per column and a count."""
        for attempt in range(_FILE_RETRIES + 1):
            try:
                table = self.con.execute(self._at_sql, {"ts": ts}).arrow()
                break
            except duckdb.Error as exc:
                first = str(exc).splitlines()[0]
                # A writer in another process (a features build, an ingest) replaced a partition between this
                # query's listing of the files and its reading them: the query again lists the files as they are.
                vanished = isinstance(exc, duckdb.IOException) and any(
                    words in first for words in ("No such file", "No files found"))
                if not vanished or attempt == _FILE_RETRIES:
                    raise QEError(f"live query failed at {ts.isoformat()}: {first}") from exc
                log.warning("live query at %s met a file being replaced (%s); querying again", ts.isoformat(), first)
        if isinstance(table, pa.RecordBatchReader):
            table = table.read_all()
        names = table.schema.names
        if self.columns is None:
            self.columns = {n: i for i, n in enumerate(names)}
            self.bar_type = bar_type(names)
        elif list(self.columns) != names:
            if set(self.columns) != set(names):
                raise QEError("the live query's columns changed between bars: "
                              f"{sorted(set(names) ^ set(self.columns))}")
            # the same columns in another order (the shadowing features view lists them by name): the bound order
            table = table.select(list(self.columns))
        return batch_columns(table), table.num_rows
