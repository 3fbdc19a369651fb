"""Exact recursive filters in SQL (block method) against the oracle's recursion and TA-Lib."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest
import talib

from tests.features_oracle.common import ema, wilder
from warehouse.templates import render_string

QUERY = """
{% import 'features/_filters.sql' as f %}
WITH {{ f.ema('e', 'src', 'x', n) }}, {{ f.wilder('w', 'src', 'x', n) }}
SELECT s.symbol, s.ts, e.value AS ema, w.value AS wilder
FROM src AS s LEFT JOIN e USING (symbol, ts) LEFT JOIN w USING (symbol, ts)
ORDER BY s.symbol, s.ts
"""


def _run(frame: pd.DataFrame, n: int) -> pd.DataFrame:
    con = duckdb.connect()
    con.register("src", frame)
    out = con.sql(render_string(QUERY, n=n)).df()
    con.close()
    return out


@pytest.mark.parametrize("n", [2, 3, 12, 14, 50])
def test_filters_match_the_recursion_with_nulls_and_several_symbols(n):
    rng = np.random.default_rng(n)
    rows = 20_000
    x = np.cumsum(rng.normal(size=rows)) + 500
    x[rng.random(rows) < 0.05] = np.nan  # NULL inputs are skipped, state unchanged
    x[5_000:5_300] = 480.0  # a stale flat block
    frame = pd.DataFrame({"symbol": np.repeat(["A", "B"], rows // 2), "ts": np.tile(np.arange(rows // 2), 2), "x": x})
    out = _run(frame, n)
    for symbol in ("A", "B"):
        xs = frame.loc[frame.symbol == symbol, "x"].to_numpy()
        got = out[out.symbol == symbol]
        for column, reference in (("ema", ema(xs, n)), ("wilder", wilder(xs, n))):
            value = got[column].to_numpy(dtype=float)
            assert (np.isnan(value) == np.isnan(reference)).all(), column
            ok = ~np.isnan(reference)
            # Catalog tolerance for recursive features: rtol 1e-9, atol 1e-12 (achieved: ~1e-14).
            np.testing.assert_allclose(value[ok], reference[ok], rtol=1e-12, atol=1e-12)


def test_ema_matches_talib_from_its_first_output():
    x = np.cumsum(np.random.default_rng(7).normal(size=5_000)) + 100
    out = _run(pd.DataFrame({"symbol": "A", "ts": np.arange(len(x)), "x": x}), 26)
    reference = talib.EMA(x, 26)
    assert (np.isnan(out.ema.to_numpy(dtype=float)) == np.isnan(reference)).all()
    ok = ~np.isnan(reference)
    np.testing.assert_allclose(out.ema.to_numpy(dtype=float)[ok], reference[ok], rtol=1e-12)
