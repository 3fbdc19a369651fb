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
from tests.feature_harness import compare_family, lean_minute_bars
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
