"""The structure family (sql/features/04_structure.sql, catalog #91-#120) against its independent oracle.

Every column is compared by the real registry/compose path in DuckDB with the catalog's own tolerance and identical
NULL patterns (tests/feature_harness.py), on synthetic Globex bars with every edge case (1m, 1h), on daily session
bars, on a series whose closes go through zero (the NULL rule of log-based windows), and on the real ES minute bars.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

import tests.features_oracle.structure as oracle
from tests.feature_harness import compare_family, family_template, lean_minute_bars, sql_features
from tests.features_oracle.synthetic import globex_bars, hourly

ET = ZoneInfo("America/New_York")


@pytest.fixture(scope="module")
def minute_bars() -> pd.DataFrame:
    return globex_bars()


def daily_bars(days: int = 400, symbols: tuple[str, ...] = ("ESH4", "CLJ4", "6EM4"), seed: int = 3) -> pd.DataFrame:
    """Session bars built directly: one per weekday trading date D, ts = 18:00 ET of D - 1 (as UTC), seeded walk.

    Holds a 30-day flat stretch (identical OHLC: flat windows, zero ranges) and a few zero-range days.
    """
    frames = []
    for n, symbol in enumerate(symbols):
        rng = np.random.default_rng([seed, n])
        day, dates = date(2022, 1, 3), []
        while len(dates) < days:
            if day.weekday() < 5:
                dates.append(day)
            day += timedelta(days=1)
        ts = [datetime.combine(d - timedelta(days=1), time(18), ET).astimezone(timezone.utc) for d in dates]
        close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.012, days)))
        close[200:230] = close[199]
        open_ = np.r_[close[0], close[:-1]] * np.exp(rng.normal(0.0, 0.003, days))
        open_[200:230] = close[199]
        high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 0.006, days)))
        low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 0.006, days)))
        high[200:230], low[200:230] = close[199], close[199]
        zero = rng.choice(np.r_[0:200, 230:days], 8, replace=False)
        open_[zero] = high[zero] = low[zero] = close[zero]
        # on a 0.01 tick grid, like the products
        frames.append(pd.DataFrame({
            "symbol": symbol, "ts": pd.to_datetime(ts, utc=True),
            "open": np.round(open_, 2), "high": np.round(high, 2), "low": np.round(low, 2), "close": np.round(close, 2),
            "volume": rng.integers(0, 100_000, days),
        }))
    return pd.concat(frames, ignore_index=True)


def test_synthetic_1m(minute_bars):
    compare_family("04_", oracle, minute_bars, "1m")


def test_synthetic_1h(minute_bars):
    compare_family("04_", oracle, hourly(minute_bars), "1h")


def test_daily_session_bars():
    compare_family("04_", oracle, daily_bars(), "1d")


def test_closes_through_zero(minute_bars):
    """A difference-adjusted series can reach c <= 0: every window reading ln c or r there is NULL (NULL rule 1).

    One symbol shifted down so that a stretch of its closes (and highs, lows) is <= 0.
    """
    bars = minute_bars[minute_bars.symbol == "CLJ4"].copy()
    shift = round(float(bars["close"].quantile(0.05)), 2)
    for column in ("open", "high", "low", "close"):
        bars[column] = np.round(bars[column] - shift, 2)
    assert (bars["close"] <= 0).sum() > 100 and (bars["close"] > 0).sum() > 1000
    compare_family("04_", oracle, bars, "1m")


def test_real_es_minute_bars():
    bars = lean_minute_bars()
    assert len(bars) == 16_673  # ESZ3, the provenance README's count
    compare_family("04_", oracle, bars, "1m")


# ----------------------------------------------------------------------------------------------------------------
# +DI / -DI / DX / ADX use plain ÷ (NULL rule 4: the price floor only where the catalog marks ÷p)
# ----------------------------------------------------------------------------------------------------------------


def _move_then_stale(stale: int) -> pd.DataFrame:
    """Row 0: h 102, l 100, c 101. Rows 1..14 shift the whole bar by +2 (odd rows) or -1 (even rows), o = c.
    Then ``stale`` identical bars o = h = l = c = c[14] = 101 + 7*2 - 7*1 = 108.

    Hand-worked (catalog #102-#104, WILDER_14 seeded with the mean of rows 1..14):
      odd row:  up = +2, dn = -2 -> +DM 2, -DM 0; TR = max(h - l = 2, |h - c[t-1]| = 3, |l - c[t-1]| = 1) = 3
      even row: up = -1, dn = +1 -> +DM 0, -DM 1; TR = max(2, |h - c[t-1]| = 0, |l - c[t-1]| = 2) = 2
      seeds at row 14: W(+DM) = 7*2/14 = 1, W(-DM) = 7*1/14 = 0.5, W(TR) = (7*3 + 7*2)/14 = 2.5
      +DI = 100*1/2.5 = 40, -DI = 100*0.5/2.5 = 20, DX = 100*|40 - 20|/(40 + 20) = 100/3
      stale rows: TR = 0 (h = l = c[t-1]) and up = dn = -1, so every sum decays by 13/14 per bar and the three
      ratios stay 40, 20, 100/3; ADX (first at row 27) = mean of the 14 equal DX = 100/3, and stays there.
      The old price floor: W(TR) at row 14 + k = 2.5*(13/14)^k < 1e-7*108 from k = 167 (row 181) on.
    """
    n = 15 + stale
    h, l = np.empty(n), np.empty(n)
    h[0], l[0] = 102.0, 100.0
    for t in range(1, 15):
        shift = 2.0 if t % 2 else -1.0
        h[t], l[t] = h[t - 1] + shift, l[t - 1] + shift
    c = (h + l) / 2
    h[15:] = l[15:] = c[15:] = c[14]
    ts = pd.date_range("2024-03-05 23:00", periods=n, freq="min", tz="UTC")
    return pd.DataFrame({"symbol": "ESH4", "ts": ts, "open": c, "high": h, "low": l, "close": c,
                         "volume": np.full(n, 10, dtype=np.int64)})


@pytest.mark.parametrize("stale", [300, 2000])
def test_dmi_keep_their_values_through_a_stale_feed(stale):
    """No price floor on the DI: in a stale feed +DI, -DI, DX and ADX keep their values (hand-worked above), where
    the floor made them NULL from row 181 on. 2000 stale rows span more than two Wilder blocks of the SQL's block
    method (L = 539 rows), so the carry must come from the last block that had a non-zero TR."""
    bars = _move_then_stale(stale)
    c = bars["close"].to_numpy()
    assert c[14] == 108.0 and 2.5 * (13 / 14) ** 167 < 1e-7 * 108 < 2.5 * (13 / 14) ** 166
    got = sql_features(bars, "1m", family_template("04_"))
    hand = {"plus_di_14": (14, 40.0), "minus_di_14": (14, 20.0), "adx_14": (27, 100 / 3)}
    for name, (first, value) in hand.items():
        col = pd.to_numeric(got[name]).to_numpy(float)
        assert np.isnan(col[:first]).all(), name
        np.testing.assert_allclose(col[first:], value, rtol=1e-9, atol=1e-12, err_msg=name)
    compare_family("04_", oracle, bars, "1m")


def test_dmi_match_talib_through_a_stale_feed():
    """TA-Lib PLUS_DI / MINUS_DI / ADX (plain division, their sums decay together) from row 400, across a 300-bar
    stale block that starts at row 500: the price floor used to make rows ~650..799 NULL."""
    import talib

    from tests.test_oracle_structure import flat_block_bars

    bars = flat_block_bars()
    h, l, c = (bars[k].to_numpy(float) for k in ("high", "low", "close"))
    got = sql_features(bars, "1m", family_template("04_"))
    atr = talib.ATR(h, l, c, 14)
    assert (atr[500:800] < 1e-7 * c[500:800]).sum() > 100  # where the floor would have applied
    ref = {"plus_di_14": talib.PLUS_DI(h, l, c, 14), "minus_di_14": talib.MINUS_DI(h, l, c, 14),
           "adx_14": talib.ADX(h, l, c, 14)}
    for name, want in ref.items():
        col = pd.to_numeric(got[name]).to_numpy(float)
        assert not np.isnan(col[400:]).any(), name
        np.testing.assert_allclose(col[400:], want[400:], rtol=1e-9, atol=1e-12, err_msg=name)


def test_dmi_of_a_feed_that_starts_flat():
    """W(TR) = 0 on a flat start: both DI are 0 ÷ 0 = NULL, DX too, and ADX starts 14 non-NULL DX rows later."""
    from tests.test_oracle_structure import flat_block_bars

    bars = flat_block_bars()
    for k in ("open", "high", "low", "close"):
        bars.loc[:39, k] = 5000.0
    compare_family("04_", oracle, bars, "1m")
    got = sql_features(bars, "1m", family_template("04_"))
    assert got["plus_di_14"][:40].isna().all() and got["plus_di_14"][40:].notna().all()
