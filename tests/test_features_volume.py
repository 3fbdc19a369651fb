"""SQL volume features (catalog #31-#60, sql/features/02_volume.sql) against the independent oracle.

Every comparison runs the template alone through the real registry / compose path in DuckDB
(``tests.feature_harness.compare_family``) and checks every column with the catalog's tolerance and identical NULL
patterns, per symbol, on:

* 1m: 24 sessions of synthetic Globex bars (ES/CL/ZN: DST switch, holidays incl. Good Friday, weekends, missing
  minutes, a 30-minute gap, zero-range and zero-volume bars, a 300-bar stale block), enough for the 20-prior-session
  feature (first=D21) and for 20 earlier rows at most minutes of day;
* 1h: their hourly resample;
* 1d: daily bars built directly (ts = 18:00 ET of the previous day, two years of weekdays, three symbols, daily
  volumes around a million with zero-volume days and a 70-day stale block);
* a difference-adjusted copy of the 1m bars whose prices cross zero, so r (and every ln) is NULL in the middle of
  the series and the windows over r must notice;
* the real ES minute bars of contract ESZ3 (LEAN zips in shared/data/real/lean-es-cme/minute).
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from tests.feature_harness import catalog, compare_family, family_template, lean_minute_bars, sql_features
from tests.features_oracle import synthetic, volume
from warehouse.features.headers import parse_header
from warehouse.features.registry import build_registry

ET = ZoneInfo("America/New_York")
PREFIX = "02_"


@pytest.fixture(scope="module")
def globex() -> pd.DataFrame:
    # 24 trading dates from 2024-03-04: sids 21..23 carry session_volume_frac_20.
    return synthetic.globex_bars(sessions=24)


def daily_walk(symbol: str, days: list, seed: int) -> pd.DataFrame:
    """Daily session bars: seeded random walk on a 0.25 grid, ts = 18:00 ET of the previous calendar day."""
    rng = np.random.default_rng(seed)
    n = len(days)
    close = 4000.0 + np.cumsum(rng.integers(-80, 81, n)) * 0.25
    open_ = np.r_[4000.0, close[:-1]] + rng.integers(-8, 9, n) * 0.25
    high = np.maximum(open_, close) + rng.integers(0, 40, n) * 0.25
    low = np.minimum(open_, close) - rng.integers(0, 40, n) * 0.25
    vol = np.rint(rng.lognormal(np.log(1.5e6), 0.4, n)).astype(np.int64)
    vol[rng.random(n) < 0.03] = 0
    stale = slice(200, 270)  # longer than the 60-bar windows: every flat-window guard fires
    open_[stale] = high[stale] = low[stale] = close[stale] = close[199]
    vol[stale] = 1_000_000
    stamps = [pd.Timestamp(datetime.combine(d - timedelta(days=1), time(18, 0), ET)).tz_convert("UTC") for d in days]
    return pd.DataFrame({"symbol": symbol, "ts": pd.Series(stamps, dtype="datetime64[ns, UTC]"), "open": open_,
                         "high": high, "low": low, "close": close, "volume": vol})


@pytest.fixture(scope="module")
def daily() -> pd.DataFrame:
    days = [d for d in pd.date_range("2022-01-03", "2023-12-29").date if d.weekday() < 5]
    return pd.concat([daily_walk(s, days, i) for i, s in enumerate(("ESH4", "CLZ4", "ZNM4"))], ignore_index=True)


@pytest.fixture(scope="module")
def real_es() -> pd.DataFrame:
    """ESZ3 minute bars from the LEAN trade zips."""
    return lean_minute_bars()


def test_header_is_the_catalog_rows_31_to_60():
    (name, text), = family_template(PREFIX)
    specs = parse_header(name, text)
    assert [s.name for s in specs] == volume.COLUMNS
    rows = catalog()
    assert [rows[s.name]["index"] for s in specs] == list(range(31, 61))
    assert [s.type for s in specs] == [rows[s.name]["type"] for s in specs]
    assert {(s.family, s.category) for s in specs} == {("volume", "volume")}


@pytest.mark.parametrize("timeframe", ["1m", "1h", "1d"])
def test_builds_and_passes_the_look_ahead_lint(timeframe):
    registry = build_registry(family_template(PREFIX), timeframe=timeframe)
    assert [f.name for f in registry.features] == volume.COLUMNS


def test_lineage_follows_the_ctes():
    registry = build_registry(family_template(PREFIX))
    assert registry.lineage("log_volume") == ["volume"]
    assert registry.lineage("pv_corr_20") == ["close", "volume"]
    assert registry.lineage("dist_prev_session_vwap") == ["high", "low", "close", "volume", "ts"]


def test_1m_synthetic_globex(globex):
    compare_family(PREFIX, volume, globex, "1m")


def test_1h_synthetic_globex(globex):
    compare_family(PREFIX, volume, synthetic.hourly(globex), "1h")


def test_1d_daily_random_walk(daily):
    compare_family(PREFIX, volume, daily, "1d")


def test_1m_prices_crossing_zero(globex):
    # A difference-adjusted series can go <= 0: r and every ln(c / ...) are NULL there, mid-series, so windows over
    # r (amihud, vwret, absret corr, kyle) must count NULLs rather than rows.
    bars = globex[globex.symbol == "ESH4"].copy()
    shift = float(np.median(bars["close"]))
    for column in ("open", "high", "low", "close"):
        bars[column] = bars[column] - shift
    assert (bars["close"] <= 0).mean() > 0.2 and (bars["close"] > 0).mean() > 0.2
    compare_family(PREFIX, volume, bars, "1m")


def test_real_es_minute_bars(real_es):
    compare_family(PREFIX, volume, real_es, "1m")


def test_session_and_prior_session_features_are_populated(globex):
    # The comparisons above are only as strong as the non-NULL rows they see.
    es = sql_features(globex[globex.symbol == "ESH4"], "1m", family_template(PREFIX))
    for name in volume.COLUMNS:
        assert es[name].notna().sum() > 1000, name


def test_adosc_keeps_its_digits_on_a_large_ad_offset():
    """catalog #47, atol=1e-9: 1000 bars of 1e9 contracts push AD to 1e12, then bars of 1..20 contracts. The SQL
    carries EMA_n(AD) - AD on the increments (AD cancels), so it stays within the catalog tolerance of the exact
    60-digit value (tests/test_oracle_volume.py, where the naive EMA_3(AD) - EMA_10(AD) is shown to miss it by
    ~1e-5), and the whole family still matches the oracle on these volumes."""
    from tests.test_oracle_volume import exact_adosc_3_10_norm, large_ad_offset_bars

    bars = large_ad_offset_bars()
    exact = exact_adosc_3_10_norm(bars)
    got = pd.to_numeric(sql_features(bars, "1m", family_template(PREFIX))["adosc_3_10_norm"]).to_numpy(float)
    tol = catalog()["adosc_3_10_norm"]
    assert (tol["rtol"], tol["atol"]) == (1e-9, 1e-9)
    assert np.array_equal(np.isnan(got), np.isnan(exact)) and np.isnan(got[:9]).all()
    np.testing.assert_allclose(got[9:], exact[9:], rtol=tol["rtol"], atol=tol["atol"])
    compare_family(PREFIX, volume, bars, "1m")


def test_ema_ratios_keep_their_values_through_a_long_zero_volume_stretch():
    """1500 zero-volume bars (rows 800..2299), more than two blocks (L = 520 rows) of the fused filters: EMA_20(sv)
    and EMA_20(v_s) decay by the same 19/21 per bar, so tick_imbalance_ema_20 stays at its row-799 value, and
    pvo_12_26 tends to -100 (EMA_12 decays faster than EMA_26). A carry from the two previous blocks alone dropped
    both EMAs to 0 (NULL) from row 2160 on; the oracle's sequential recursion keeps them."""
    rng = np.random.default_rng(3)
    n = 3000
    low = 4000.0 + 0.25 * np.cumsum(rng.integers(-4, 5, n))
    close = low + 0.25 * rng.integers(0, 5, n)
    v = rng.integers(1, 50, n)
    v[800:2300] = 0
    bars = pd.DataFrame({"symbol": "ESH4", "ts": pd.date_range("2024-03-05 23:00", periods=n, freq="min", tz="UTC"),
                         "open": close, "high": low + 1.0, "low": low, "close": close, "volume": v.astype(np.int64)})
    compare_family(PREFIX, volume, bars, "1m")
    got = sql_features(bars, "1m", family_template(PREFIX))
    tie = got["tick_imbalance_ema_20"].to_numpy(float)
    np.testing.assert_allclose(tie[800:2300], tie[799], rtol=1e-9)
    np.testing.assert_allclose(got["pvo_12_26"].to_numpy(float)[2000:2300], -100.0, rtol=1e-9)
