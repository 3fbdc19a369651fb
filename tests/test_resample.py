"""Resampling templates: property tests against a pandas oracle, on bars that cross a DST switch."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from warehouse.templates import render

BASE = datetime(2024, 3, 7, 22, 0, tzinfo=timezone.utc)  # Thursday 17:00 ET; the DST switch is Sunday 03-10
SPAN_MINUTES = 6 * 24 * 60


@st.composite
def minute_bars(draw) -> pd.DataFrame:
    """Random valid 1-minute bars of two contracts, outside the 17:00-18:00 ET halt, with gaps."""
    offsets = draw(st.lists(st.integers(0, SPAN_MINUTES - 1), min_size=1, max_size=400, unique=True))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    ts = pd.DatetimeIndex([BASE + timedelta(minutes=m) for m in sorted(offsets)])
    et = ts.tz_convert("America/New_York")
    ts = ts[(et.hour != 17) & (et.weekday != 5)]  # no halt-hour bars, no Saturday trading
    n = len(ts)
    close = np.round((4000 + np.cumsum(rng.normal(0, 2, n))) * 4) / 4
    open_ = np.round((close + rng.normal(0, 1, n)) * 4) / 4
    high = np.maximum(open_, close) + rng.integers(0, 4, n) * 0.25
    low = np.minimum(open_, close) - rng.integers(0, 4, n) * 0.25
    contract = np.where(rng.random(n) < 0.5, "ESH4", "ESM4")
    return pd.DataFrame(
        {"symbol": "ES", "contract": contract, "ts": ts, "open": open_, "high": high, "low": low, "close": close,
         "volume": rng.integers(0, 500, n)}
    )


def _run(template: str, bars: pd.DataFrame, **params) -> pd.DataFrame:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("src", pa.Table.from_pandas(bars, preserve_index=False))
    out = con.sql(render(template, source="src", **params)).df()
    con.close()
    return out


def _trading_date(ts: pd.Series) -> pd.Series:
    return (ts.dt.tz_convert("America/New_York").dt.tz_localize(None) + pd.Timedelta(hours=6)).dt.date


def _front_at_end(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    """The rows of each ``key`` bucket whose contract is the contract of the bucket's last bar.

    A resampled bar never mixes two contracts: where the contract changes inside a bucket, the bucket is
    the contract it ends with (the generator draws contracts at random per bar, so this is exercised).
    """
    ordered = frame.sort_values("ts")
    last = ordered.groupby(key)["contract"].transform("last")
    return ordered[ordered["contract"] == last]


@settings(max_examples=40, deadline=None)
@given(bars=minute_bars(), minutes=st.sampled_from([5, 15, 60]))
def test_intraday_resample_matches_oracle_and_keeps_invariants(bars, minutes):
    if bars.empty:
        return
    got = _run("resample_intraday.sql", bars, minutes=minutes).sort_values(["contract", "ts"]).reset_index(drop=True)
    frame = bars.assign(bucket=bars.ts.dt.floor(f"{minutes}min"), day=_trading_date(bars.ts))
    # No bucket spans two sessions: every 1m bar of a bucket has the same trading date.
    assert (frame.groupby(["contract", "bucket"]).day.nunique() == 1).all()
    kept = _front_at_end(frame, "bucket")
    oracle = (
        kept
        .groupby(["contract", "bucket"])
        .agg(open=("open", "first"), high=("high", "max"), low=("low", "min"), close=("close", "last"), volume=("volume", "sum"))
        .reset_index()
    )
    assert len(got) == len(oracle)
    assert (got.ts.dt.tz_convert("UTC").values == oracle.bucket.dt.tz_convert("UTC").values).all()
    for col in ("open", "high", "low", "close", "volume"):
        assert (got[col].to_numpy() == oracle[col].to_numpy()).all(), col
    assert (got.high >= got[["open", "close"]].max(axis=1)).all()
    assert (got.low <= got[["open", "close"]].min(axis=1)).all()
    assert got.volume.sum() == kept.volume.sum()
    assert not got.duplicated(["symbol", "ts"]).any()


@settings(max_examples=40, deadline=None)
@given(bars=minute_bars())
def test_session_bars_follow_the_cme_trading_date(bars):
    if bars.empty:
        return
    got = _run("resample_session_daily.sql", bars).sort_values(["contract", "trading_date"]).reset_index(drop=True)
    frame = _front_at_end(bars.assign(day=_trading_date(bars.ts)), "day")
    oracle = (
        frame.groupby(["contract", "day"])
        .agg(open=("open", "first"), high=("high", "max"), low=("low", "min"), close=("close", "last"), volume=("volume", "sum"),
             first=("ts", "min"), last=("ts", "max"))
        .reset_index()
    )
    assert list(got.trading_date.dt.date) == list(oracle.day)
    for col in ("open", "high", "low", "close", "volume"):
        assert (got[col].to_numpy() == oracle[col].to_numpy()).all(), col
    assert got.volume.sum() == frame.volume.sum()
    assert not got.duplicated(["symbol", "trading_date"]).any()
    # Every bar lies inside its session [18:00 ET the day before, 17:00 ET the day].
    for row in got.itertuples():
        # Wall-clock times localized directly (adding hours to midnight would cross the DST switch).
        open_et = (pd.Timestamp(row.trading_date) - pd.Timedelta(days=1) + pd.Timedelta(hours=18)).tz_localize("America/New_York")
        close_et = (pd.Timestamp(row.trading_date) + pd.Timedelta(hours=17)).tz_localize("America/New_York")
        assert row.ts == open_et.tz_convert("UTC")
        assert open_et <= row.first_bar_ts and row.last_bar_ts < close_et


def test_session_daily_by_hand():
    """Sunday evening and Monday bars form Monday's session; Monday 18:00 ET starts Tuesday's."""
    ts = pd.to_datetime(["2024-03-10 22:00", "2024-03-11 13:30", "2024-03-11 20:59", "2024-03-11 22:00"], utc=True)
    bars = pd.DataFrame({"symbol": "ES", "contract": "ESH4", "ts": ts, "open": [1.0, 2, 3, 4], "high": [1.5, 2.5, 3.5, 4.5],
                         "low": [0.5, 1.5, 2.5, 3.5], "close": [1.25, 2.25, 3.25, 4.25], "volume": [1, 2, 3, 4]})
    got = _run("resample_session_daily.sql", bars).sort_values("trading_date")
    assert [str(d.date()) for d in got.trading_date] == ["2024-03-11", "2024-03-12"]
    monday = got.iloc[0]
    assert (monday.open, monday.high, monday.low, monday.close, monday.volume) == (1.0, 3.5, 0.5, 3.25, 6)
    # DST began 03-10 02:00: Sunday 18:00 EDT is 22:00 UTC.
    assert monday.ts == pd.Timestamp("2024-03-10 22:00", tz="UTC")
