"""QueryRows.at: the query's rows at one bar, run again when a file it listed was replaced before it was read."""

from __future__ import annotations

from datetime import datetime, timezone

import duckdb
import pytest

from engine.live.rows import QueryRows
from warehouse.errors import QEError

T = datetime(2024, 3, 4, 15, 30, tzinfo=timezone.utc)


class _Replaced:
    """A real DuckDB connection whose next ``failures`` bar queries meet a vanished file (as when another process
    swaps a partition between the query's file listing and its reads)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, failures: int) -> None:
        self._con, self.failures, self.calls = con, failures, 0

    def execute(self, sql, params=None):  # noqa: ANN001, ANN201
        if params is not None and "ts" in params:
            self.calls += 1
            if self.failures:
                self.failures -= 1
                raise duckdb.IOException("IO Error: Cannot open file \"year=2024/tail.parquet\": No such file")
        return self._con.execute(sql, params)

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self._con, name)


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("CREATE TABLE bars_1m AS SELECT * FROM (VALUES ('ES', TIMESTAMPTZ '2024-03-04 15:30:00+00', "
                "5100.0, 5101.0, 5099.5, 5100.5, 120), ('NQ', TIMESTAMPTZ '2024-03-04 15:30:00+00', 18000.0, "
                "18010.0, 17990.0, 18005.0, 80), ('ES', TIMESTAMPTZ '2024-03-04 15:29:00+00', 5099.0, 5100.0, "
                "5098.0, 5100.0, 90)) AS t(symbol, ts, open, high, low, close, volume)")
    return con


def test_a_vanished_file_is_queried_again_and_gives_the_same_rows(con):
    want_columns, want_n = QueryRows(con, "SELECT * FROM bars_1m", "1m").at(T)
    flaky = _Replaced(con, failures=2)
    columns, n = QueryRows(flaky, "SELECT * FROM bars_1m", "1m").at(T)
    assert (n, columns) == (want_n, want_columns) and n == 2 and flaky.calls == 3
    assert columns[0] == ["ES", "NQ"] and columns[5] == [5100.5, 18005.0]


def test_a_file_that_stays_missing_is_one_clear_error(con):
    flaky = _Replaced(con, failures=5)
    with pytest.raises(QEError, match="live query failed at 2024-03-04T15:30:00\\+00:00: IO Error: Cannot open"):
        QueryRows(flaky, "SELECT * FROM bars_1m", "1m").at(T)
    assert flaky.calls == 3


def test_other_query_errors_are_not_retried(con):
    flaky = _Replaced(con, failures=0)
    rows = QueryRows(flaky, "SELECT *, CASE WHEN close > 0 THEN error('boom') END AS boom FROM bars_1m", "1m")
    with pytest.raises(QEError, match="live query failed at .*boom"):
        rows.at(T)
    assert flaky.calls == 1


def test_live_feature_rows_shadow_the_stored_ones_and_stay_two_record_batches():
    """Feature rows added bar by bar are what the query sees from the first one on (the stored rows of those
    times are hidden), in the order added, and they are kept as at most two record batches however many bars
    came (DuckDB converts every batch of a registered Arrow table on each scan)."""
    import pyarrow as pa

    from engine.live import rows as rows_module

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    minutes = 700
    con.execute(f"CREATE TABLE bars_1m AS SELECT 'ES' AS symbol, TIMESTAMPTZ '2024-03-04 00:00:00+00' + "
                f"INTERVAL (i) MINUTE AS ts, 1.0 AS open, 1.0 AS high, 1.0 AS low, 1.0 AS close, 1 AS volume "
                f"FROM range({minutes}) AS r(i)")
    con.execute("CREATE TABLE features_1m AS SELECT symbol, ts, -1.0 AS x FROM bars_1m")  # the stored rows
    rows = QueryRows(con, "SELECT b.*, f.x FROM bars_1m AS b JOIN features_1m AS f USING (symbol, ts)", "1m")
    times = [r[0] for r in con.sql("SELECT ts FROM bars_1m ORDER BY ts").fetchall()]
    live_from = 100
    for k in range(live_from, minutes):
        rows.add_features(pa.table({"symbol": ["ES"], "ts": pa.array([times[k]], pa.timestamp("us", tz="UTC")),
                                    "x": [float(k)]}))
        assert len(rows.live_features().to_batches()) <= 2
    assert minutes - live_from > 2 * rows_module._RECENT_ROWS  # the recent rows were merged more than once
    assert rows.live_features()["x"].to_pylist() == [float(k) for k in range(live_from, minutes)]
    for k in (live_from - 1, live_from, 357, minutes - 1):
        columns, n = rows.at(times[k])
        assert n == 1 and columns[rows.columns["x"]] == [float(k) if k >= live_from else -1.0]
    rows.drop_features([("ES", times[357])])
    assert rows.at(times[357])[1] == 0 and rows.at(times[358])[0][rows.columns["x"]] == [358.0]
    assert len(rows.live_features()) == minutes - live_from - 1
