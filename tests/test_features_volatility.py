"""Volatility features (catalog #61-#90, sql/features/03_volatility.sql) against the independent oracle.

Every column is compared with tests/features_oracle/volatility.py using the catalog's own tolerances and identical
NULL patterns, on synthetic Globex bars (1m, 1h), synthetic session bars (1d), a partition long enough to cross the
template's chunk boundaries, non-positive (difference-adjusted) prices, and the real ES minute bars.

``squeeze_on`` is NULL where WILDER_10(TR) < 1e-7*abs(c) (catalog #85, NULL rule 4): inside a stale block the
Bollinger bands are a single price and the decayed ATR would leave the flag to the last ulp of EMA_20(c), where the
oracle's sequential recursion and the SQL block-exponential EMA round differently. So the whole family, stale block
included, is compared as is.
"""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

import tests.features_oracle.volatility as oracle
from tests.feature_harness import (
    compare_family,
    family_template,
    lean_minute_bars,
    sql_features,
)
from tests.features_oracle.synthetic import globex_bars, hourly

PREFIX = "03_"


def _random_walk(symbol: str, ts: pd.DatetimeIndex, seed: int, price: float, tick: float, sigma: float) -> pd.DataFrame:
    """Gap-free OHLCV on a tick grid with consistent bars (l <= o, c <= h), some zero-range bars."""
    rng = np.random.default_rng(seed)
    n = len(ts)
    c = np.round(price * np.exp(np.cumsum(rng.normal(0.0, sigma, n))) / tick) * tick
    o = np.r_[c[0], c[:-1]]
    h = np.maximum(o, c) + tick * np.floor(rng.exponential(1.5, n))
    l = np.minimum(o, c) - tick * np.floor(rng.exponential(1.5, n))
    flat = rng.random(n) < 0.03
    o[flat] = h[flat] = l[flat] = c[flat] = np.r_[price, c[:-1]][flat]
    return pd.DataFrame({"symbol": symbol, "ts": ts, "open": o, "high": h, "low": l, "close": c,
                         "volume": rng.integers(0, 5000, n)})


def _daily_bars() -> pd.DataFrame:
    """CME session bars: ts = 18:00 ET of the previous calendar day (as UTC), one per weekday, three products."""
    days = pd.bdate_range("2022-01-03", periods=420)
    ts = (days - pd.Timedelta(hours=6)).tz_localize("America/New_York").tz_convert("UTC")
    frames = [_random_walk("ESH4", ts, 1, 4500.0, 0.25, 0.012), _random_walk("CLJ4", ts, 2, 80.0, 0.01, 0.025),
              _random_walk("ZNH4", ts, 3, 110.5, 1 / 64, 0.004)]
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def minute_bars() -> pd.DataFrame:
    return globex_bars()


def test_hourly_bars_match_the_oracle(minute_bars):
    compare_family(PREFIX, oracle, hourly(minute_bars), "1h")


def test_daily_bars_match_the_oracle():
    compare_family(PREFIX, oracle, _daily_bars(), "1d")


def test_real_es_minute_bars_match_the_oracle():
    bars = lean_minute_bars()
    assert len(bars) == 16_673  # ESZ3 in the LEAN sample (the provenance README's count)
    compare_family(PREFIX, oracle, bars, "1m")


def test_long_partition_crosses_chunk_boundaries():
    """One symbol of 70,000 1-minute rows: the template's window passes run per 65,536-row chunk plus a 1,024-row
    overlap, so rows right after the boundary must still see their full windows and filter history."""
    ts = pd.date_range("2023-01-02 23:00", periods=70_000, freq="min", tz="UTC")
    compare_family(PREFIX, oracle, _random_walk("CLJ4", ts, 11, 75.0, 0.01, 0.0008), "1m")


def test_non_positive_prices_skip_null_returns():
    """Difference-adjusted prices crossing zero: every log feature is NULL there and EMA_32(r^2) skips the NULL r
    (the template switches to its general NULL-skipping path at the first NULL r after row 0)."""
    rng = np.random.default_rng(7)
    n = 1500
    c = np.round(np.r_[np.linspace(3.0, -2.0, n // 2), np.linspace(-2.0, 5.0, n - n // 2)] + rng.normal(0, 0.01, n), 2)
    o = np.r_[c[0], c[:-1]]
    ts = pd.date_range("2024-03-04 14:30", periods=n, freq="h", tz="UTC")
    neg = pd.DataFrame({"symbol": "CLK0", "ts": ts, "open": o, "high": np.maximum(o, c) + 0.01 * (np.arange(n) % 3),
                        "low": np.minimum(o, c), "close": c, "volume": 1})
    bars = pd.concat([neg, _random_walk("CLM0", ts, 5, 60.0, 0.01, 0.004)], ignore_index=True)
    compare_family(PREFIX, oracle, bars, "1h")
    out = sql_features(bars, "1h", family_template(PREFIX))
    assert out.loc[out.symbol == "CLK0", "ewma_vol_32"].notna().sum() > 500


def test_minute_bars_match_the_oracle(minute_bars):
    """All 30 columns on the synthetic Globex bars (DST, holiday, weekends, missing minutes, zero range, zero
    volume, the 300-bar stale block, three products), squeeze_on included."""
    compare_family(PREFIX, oracle, minute_bars, "1m")


def test_squeeze_on_is_null_below_the_price_floor_in_a_stale_feed():
    """Rows 0..29: o = c = 100, h = 100.5, l = 99.5 (TR = 1 from row 1); rows 30..429 stale: o = h = l = c = 100.

    Hand-worked: every close is 100, so MEAN_20(c) = EMA_20(c) = U = L = 100 (STDP 0) from row 19; WILDER_10(TR) =
    1 from row 10 to row 29, then 0.9^k on row 29 + k (TR = 0). The flag compares 100 < 100 + 1.5*0.9^k: 1 while
    that sum still exceeds 100 in float64 (k up to ~313), 0 after it - decided by rounding. With NULL rule 4 it is
    NULL once 0.9^k < 1e-7*100 = 1e-5: 0.9^109 = 1.028e-5, 0.9^110 = 9.25e-6, so from row 29 + 110 = 139 on.
    So: NULL on rows 0..18, 1 on rows 19..138, NULL on rows 139..429.
    """
    n = 430
    c = np.full(n, 100.0)
    h, l = c + 0.5, c - 0.5
    h[30:] = l[30:] = 100.0
    assert 0.9**109 >= 1e-5 > 0.9**110 and 100.0 + 1.5 * 0.9**320 == 100.0  # the floor row; the rounding flip
    bars = pd.DataFrame({"symbol": "ESH4", "ts": pd.date_range("2024-03-05 23:00", periods=n, freq="min", tz="UTC"),
                         "open": c, "high": h, "low": l, "close": c, "volume": np.full(n, 5, dtype=np.int64)})
    want = np.full(n, np.nan)
    want[19:139] = 1.0
    got = pd.to_numeric(sql_features(bars, "1m", family_template(PREFIX))["squeeze_on"]).to_numpy(float)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(oracle.compute(bars, "1m")["squeeze_on"].to_numpy(), want)


def test_header_and_registry():
    from warehouse.features.registry import build_registry

    registry = build_registry(family_template(PREFIX), timeframe="1m")
    assert [f.name for f in registry.features] == oracle.COLUMNS
    assert {f.category for f in registry.features} == {"volatility"}
    assert registry.spec("squeeze_on").type == "int"
    assert registry.lineage("hl_range_log") == ["high", "low"]
    assert registry.lineage("rv_cc_20") == ["close"]
    assert registry.spec("rv_pctrank_20_240").warmup == "first=259"
