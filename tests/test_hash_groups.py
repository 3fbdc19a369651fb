"""Windows partitioned by symbol share one DuckDB hash group and keep every value (warehouse/features/hash_groups.py)."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from warehouse.features.hash_groups import MAX_SYMBOLS, one_hash_group, same_group_keys

SYMBOLS = ["ES", "NQ", "CL", "O'K", "ZN"]

QUERY = """
SELECT symbol, k,
    lag(x, 3) OVER w AS lag3,
    sum(x) OVER (PARTITION BY symbol ORDER BY k ROWS BETWEEN 4 PRECEDING AND CURRENT ROW) AS sum5,
    row_number() OVER (PARTITION BY b.symbol
        ORDER BY k) AS rn,
    sum(x) OVER (PARTITION BY symbol, k % 2 ORDER BY k) AS by_parity
FROM bars AS b
WINDOW w AS (PARTITION BY symbol ORDER BY k)
ORDER BY symbol, k
"""


@pytest.fixture
def con():
    con = duckdb.connect()
    rng = np.random.default_rng(7)
    frame = pd.DataFrame({"symbol": np.repeat(SYMBOLS, 40), "k": np.tile(np.arange(40), len(SYMBOLS)),
                          "x": rng.normal(size=40 * len(SYMBOLS))}).sample(frac=1.0, random_state=3)
    con.register("bars_frame", frame)
    con.execute("CREATE TABLE bars AS SELECT * FROM bars_frame")
    yield con
    con.close()


def test_the_rewritten_windows_give_the_values_of_a_per_symbol_pandas_oracle(con):
    rewritten = one_hash_group(QUERY, SYMBOLS)
    assert rewritten.count("PARTITION BY (CASE") == 3  # the composite key (symbol, k % 2) is left alone
    got = con.sql(rewritten).df()
    frame = con.sql("SELECT * FROM bars ORDER BY symbol, k").df()
    by = frame.groupby("symbol", sort=False)["x"]
    want = pd.DataFrame({
        "symbol": frame.symbol, "k": frame.k,
        "lag3": by.shift(3),
        "sum5": by.transform(lambda s: s.rolling(5, min_periods=1).sum()),
        "rn": frame.groupby("symbol").cumcount() + 1,
        "by_parity": frame.groupby(["symbol", frame.k % 2])["x"].cumsum(),
    })
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True), check_dtype=False,
                                  rtol=1e-12, atol=1e-12)
    assert con.sql(QUERY).df().equals(got)  # and the plain query's values, row for row


def test_a_symbol_outside_the_map_fails_the_query_instead_of_sharing_a_partition(con):
    with pytest.raises(duckdb.Error, match="no window partition key"):
        con.sql(one_hash_group(QUERY, SYMBOLS[:-1])).fetchall()


def test_the_keys_are_distinct_and_share_the_hash_bits_duckdb_partitions_windows_by():
    keys = same_group_keys(15)
    assert len(set(keys)) == 15
    con = duckdb.connect()
    bits = {row[0] for row in con.execute(
        "SELECT (hash(k::BIGINT) >> 40) & 255 FROM unnest($keys) AS t(k)", {"keys": list(keys)}).fetchall()}
    assert len(bits) == 1


def test_one_symbol_or_too_many_symbols_leave_the_sql_as_it_is():
    assert one_hash_group(QUERY, ["ES"]) == QUERY
    assert one_hash_group(QUERY, [f"S{i}" for i in range(MAX_SYMBOLS + 1)]) == QUERY


def test_every_window_of_the_live_per_bar_statements_but_one_is_partitioned_by_symbol_alone():
    """The saving holds only while the per-bar statements partition by symbol alone: a template that adds a
    composite key shows here (the volume family's minute-of-day window is the one left, measured as cheap)."""
    import re

    from warehouse.features.live import RUNNING_ROWS, SESSION_STATE, TOD_STATE
    from warehouse.features.registry import build_registry

    registry = build_registry(timeframe="1m", tod_history=TOD_STATE, session_history=SESSION_STATE,
                              filter_seeds=True, session_seeds=True, running_rows=RUNNING_ROWS)
    left = []
    for family in registry.families:
        rewritten = one_hash_group(family.sql, SYMBOLS)
        assert rewritten.count("PARTITION BY (CASE") >= 1, family.template
        left += [(family.template, key.strip()) for key in re.findall(r"PARTITION BY\s+(?!\(CASE)(.*?)\s+ORDER BY",
                                                                      rewritten, flags=re.S)]
    assert left == [("features/02_volume.sql", "symbol, minute_of_day")]
