"""The registry is generated from template headers and checked against the rendered SQL."""

from __future__ import annotations

import pytest

from warehouse.errors import QEError
from warehouse.features.registry import build_registry

GOOD = """{#- features
family: demo
category: price action
logret_1 | double | n=1 | first=1 | log return
mom_10   | double | n=10 | first=10 | momentum in price units
hl_ratio | double | n=1 | first=0 | high over close
mod      | int    | n=1 | first=0 | minute of day (ET)
-#}
SELECT symbol, ts, r AS logret_1,
       c - lag(c, 10) OVER w AS mom_10,
       h / nullif(c, 0) AS hl_ratio,
       minute_of_day AS mod
FROM {{ source }}
WINDOW w AS (PARTITION BY symbol ORDER BY ts)
"""

OTHER = """{#- features
family: other
category: volume
log_volume | double | n=1 | first=0 | ln(1 + v)
-#}
SELECT symbol, ts, ln(1 + v) AS log_volume FROM {{ source }}
"""


def test_registry_lists_features_in_order_with_lineage():
    registry = build_registry([("features/01_demo.sql", GOOD), ("features/02_other.sql", OTHER)])
    assert [f.name for f in registry.features] == ["logret_1", "mom_10", "hl_ratio", "mod", "log_volume"]
    # Lineage lists the values a feature reads; ordering by ts inside a window does not count as reading it.
    assert registry.lineage("logret_1") == ["close"]
    assert registry.lineage("mom_10") == ["close"]
    assert registry.lineage("mod") == ["ts"]
    assert registry.lineage("hl_ratio") == ["high", "close"]
    assert registry.lineage("log_volume") == ["volume"]


def test_a_projection_that_disagrees_with_the_header_names_file_column_and_both_values():
    bad = GOOD.replace("AS mom_10", "AS momentum_10")
    with pytest.raises(QEError, match=r"sql/features/01_demo.sql: output column 4 is 'momentum_10' in the query but 'mom_10' in the header"):
        build_registry([("features/01_demo.sql", bad)])


def test_a_missing_output_is_reported():
    bad = GOOD.replace(",\n       minute_of_day AS mod", "")
    with pytest.raises(QEError, match="the header has extra output column"):
        build_registry([("features/01_demo.sql", bad)])


def test_duplicate_names_across_families_are_refused():
    clash = OTHER.replace("log_volume", "mom_10")
    with pytest.raises(QEError, match="'mom_10' is declared by both sql/features/01_demo.sql and sql/features/02_other.sql"):
        build_registry([("features/01_demo.sql", GOOD), ("features/02_other.sql", clash)])


def test_a_template_that_peeks_ahead_is_rejected_at_build_time():
    peek = GOOD.replace("lag(c, 10)", "lead(c, 10)")
    with pytest.raises(QEError, match="look-ahead"):
        build_registry([("features/01_demo.sql", peek)])


def test_bad_header_lines_name_the_line():
    bad = GOOD.replace("mom_10   | double |", "mom_10   | float |")
    with pytest.raises(QEError, match=r"sql/features/01_demo.sql:5: type of mom_10 must be int or double"):
        build_registry([("features/01_demo.sql", bad)])


def test_composed_query_runs_on_real_duckdb_with_declared_types():
    import duckdb
    import numpy as np
    import pandas as pd

    from warehouse.features.registry import feature_query

    registry = build_registry([("features/01_demo.sql", GOOD), ("features/02_other.sql", OTHER)])
    bars = pd.DataFrame({
        "symbol": "ES", "ts": pd.date_range("2024-03-04 14:30", periods=15, freq="min", tz="UTC"),
        "open": 5000.0, "high": 5001.0, "low": 4999.0, "close": 5000.0 + np.arange(15), "volume": np.arange(15),
    })
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("bars", bars)
    out = con.sql(feature_query(registry, "bars")).df()
    assert list(out.columns) == ["symbol", "ts", "logret_1", "mom_10", "hl_ratio", "mod", "log_volume"]
    assert out["mod"].dtype == "int32" and out["mod"].iloc[0] == 9 * 60 + 30
    assert out["mom_10"].iloc[10] == 10.0 and pd.isna(out["mom_10"].iloc[9])
    assert np.isclose(out["log_volume"].iloc[3], np.log(4))
