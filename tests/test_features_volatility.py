"""Volatility features (catalog #61-#90, sql/features/03_volatility.sql) against the independent oracle.

Every column is compared with tests/features_oracle/volatility.py using the catalog's own tolerances and identical
NULL patterns, on synthetic Globex bars (1m, 1h), synthetic session bars (1d), a partition long enough to cross the
template's chunk boundaries, non-positive (difference-adjusted) prices, and the real ES minute bars.

One documented exception: ``squeeze_on`` inside the synthetic 300-bar stale block. There the Bollinger bands are a
single price (U = L = MEAN_20(c) = c) and WILDER_10(TR) has decayed below the price floor, so the flag compares
EMA_20(c) with c at the last ulp; the oracle's sequential recursion and the SQL block-exponential EMA round
differently. The 1m test checks that every mismatch lies in that regime and nowhere else.
"""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

import tests.features_oracle.volatility as oracle
from tests.feature_harness import (
    assert_matches,
    compare_family,
    family_template,
    lean_minute_bars,
    sql_features,
)
from tests.features_oracle.common import PRICE_FLOOR, ema, true_range, wilder
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


def _squeeze_ulp_regime(part: pd.DataFrame) -> np.ndarray:
    """Rows where squeeze_on is decided at the last ulp: a flat 20-row close window (U = L = c) and
    1.5*WILDER_10(TR) below the price floor, so U < EMA_20 + 1.5*ATR and L > EMA_20 - 1.5*ATR compare c with
    EMA_20(c) to within its rounding."""
    c = part["close"].to_numpy(float)
    flat = pd.Series(c).rolling(20).max().to_numpy() == pd.Series(c).rolling(20).min().to_numpy()
    atr10 = wilder(true_range(part["high"].to_numpy(float), part["low"].to_numpy(float), c), 10)
    e20 = ema(c, 20)
    with np.errstate(invalid="ignore"):
        return flat & (1.5 * atr10 < PRICE_FLOOR * np.abs(c)) & (np.abs(e20 - c) < 1e-12 * np.abs(c))


def test_minute_bars_match_the_oracle(minute_bars):
    """All 30 columns on the synthetic Globex bars (DST, holiday, weekends, missing minutes, zero range, zero
    volume, the 300-bar stale block, three products); squeeze_on differs only in the ulp regime above."""
    sql = sql_features(minute_bars, "1m", family_template(PREFIX))
    others = [name for name in oracle.COLUMNS if name != "squeeze_on"]
    regime_rows = 0
    for symbol, part in minute_bars.groupby("symbol", sort=True):
        part = part.sort_values("ts").reset_index(drop=True)
        expected = oracle.compute(part, "1m")
        got = sql[sql.symbol == symbol].reset_index(drop=True)
        assert len(got) == len(part)
        assert_matches(got, expected, others, label=f"[{symbol} 1m] ")
        regime = _squeeze_ulp_regime(part)
        regime_rows += int(regime.sum())
        ok = ~regime
        assert_matches(got[ok].reset_index(drop=True), expected[ok].reset_index(drop=True), ["squeeze_on"],
                       label=f"[{symbol} 1m, outside the stale-block ulp regime] ")
        flag = pd.to_numeric(got["squeeze_on"]).to_numpy(float)
        assert not np.isnan(flag[regime]).any() and set(np.unique(flag[regime])) <= {0.0, 1.0}
    assert regime_rows > 0  # the stale block does reach the regime: the exception above is exercised


@pytest.mark.xfail(strict=True, reason="squeeze_on is decided at the last ulp inside the synthetic stale block "
                                       "(see test_minute_bars_match_the_oracle); reported, not fudged")
def test_minute_bars_compare_family_as_is(minute_bars):
    compare_family(PREFIX, oracle, minute_bars, "1m")


def test_header_and_registry():
    from warehouse.features.registry import build_registry

    registry = build_registry(family_template(PREFIX), timeframe="1m")
    assert [f.name for f in registry.features] == oracle.COLUMNS
    assert {f.category for f in registry.features} == {"volatility"}
    assert registry.spec("squeeze_on").type == "int"
    assert registry.lineage("hl_range_log") == ["high", "low"]
    assert registry.lineage("rv_cc_20") == ["close"]
    assert registry.spec("rv_pctrank_20_240").warmup == "first=259"
