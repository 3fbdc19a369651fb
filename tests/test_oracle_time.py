"""The time-feature oracle (#121-#150) against brute force, hand-picked values, and the synthetic Globex bars."""

from __future__ import annotations

import functools
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from tests.features_oracle import synthetic, time_features

ET = ZoneInfo("America/New_York")
# Independent copy of the catalog's RTH table for the products used here (ET minute of day, [open, close)).
RTH_BRUTE = {"ES": (time(9, 30), time(16, 0)), "CL": (time(9, 0), time(14, 30)), "ZN": (time(8, 20), time(15, 0))}


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return synthetic.globex_bars()


@pytest.fixture(scope="module")
def good_friday_bars() -> pd.DataFrame:
    # 2024-03-18 .. 2024-04-05: crosses the Good Friday closure (2024-03-29) and a month/quarter end.
    return synthetic.globex_bars(symbols=("ESM4",), start="2024-03-18", sessions=14, seed=3)


def utc(*args) -> pd.Timestamp:
    return pd.Timestamp(datetime(*args, tzinfo=timezone.utc))


def frame(symbol: str, stamps: list[pd.Timestamp]) -> pd.DataFrame:
    n = len(stamps)
    return pd.DataFrame(
        {"symbol": symbol, "ts": pd.Series(stamps, dtype="datetime64[ns, UTC]"), "open": 100.0, "high": 101.0,
         "low": 99.0, "close": 100.0, "volume": np.ones(n, dtype=np.int64)}
    )


# ---------------------------------------------------------------------------------------------------------
# Brute force: plain Python datetime / zoneinfo, day-by-day loops
# ---------------------------------------------------------------------------------------------------------


def brute_trading_date(local: datetime) -> date:
    return local.date() + timedelta(days=1) if local.time() >= time(18, 0) else local.date()


def is_third_friday(d: date) -> bool:
    return d.weekday() == 4 and 15 <= d.day <= 21


@functools.lru_cache(maxsize=None)
def brute_calendar(d: date) -> dict[str, float]:
    def days_until(pred) -> int:
        k = 0
        while not pred(d + timedelta(days=k)):
            k += 1
        return k

    quarterly = lambda x: is_third_friday(x) and x.month in (3, 6, 9, 12)  # noqa: E731
    month_days = [date(d.year, d.month, k) for k in range(1, 32) if _valid(d.year, d.month, k)]
    weekdays = [x for x in month_days if x.weekday() < 5]
    return {
        "day_of_week": d.isoweekday() - 1,
        "day_of_month": d.day,
        "days_in_month": len(month_days),
        "month": d.month,
        "days_to_expiry": days_until(quarterly),
        "days_to_roll": days_until(lambda x: quarterly(x + timedelta(days=8))),
        "days_to_monthly_opex": days_until(is_third_friday),
        "is_month_end": int(d == weekdays[-1]),
        "is_month_start": int(d == weekdays[0]),
        "is_quarter_end": int(d == weekdays[-1] and d.month % 3 == 0),
        "weekdays_to_month_end": sum(1 for x in weekdays if x > d),
    }


def _valid(y: int, m: int, k: int) -> bool:
    try:
        date(y, m, k)
    except ValueError:
        return False
    return True


def brute_rows(df: pd.DataFrame) -> pd.DataFrame:
    rows = []
    prev_d = None
    for i, (sym, ts) in enumerate(zip(df["symbol"], df["ts"])):
        local = ts.to_pydatetime().astimezone(ET)
        d = brute_trading_date(local)
        mod = local.hour * 60 + local.minute
        # Session open = 18:00 ET of the previous calendar day; sessions never span DST, so the wall-clock
        # difference equals elapsed minutes.
        session_open = datetime.combine(d - timedelta(days=1), time(18, 0))
        since = int((local.replace(tzinfo=None, second=0, microsecond=0) - session_open).total_seconds() // 60)
        t = local.time()
        if t >= time(18, 0) or t < time(3, 0):
            phase = 0
        elif t < time(9, 30):
            phase = 1
        elif t < time(16, 0):
            phase = 2
        else:
            phase = 3
        rth_open, rth_close = RTH_BRUTE[sym[:2]]
        in_rth = rth_open <= t < rth_close
        to_minutes = lambda x: x.hour * 60 + x.minute  # noqa: E731
        cal = brute_calendar(d)
        rows.append(
            {
                "minute_of_day": mod,
                "minute_of_hour": local.minute,
                "minutes_since_session_open": since,
                "minutes_to_session_close": 1380 - since,
                "session_phase": phase,
                "is_asia": int(phase == 0),
                "is_europe": int(phase == 1),
                "is_us": int(phase == 2),
                "is_rth": int(in_rth),
                "rth_minutes_since_open": mod - to_minutes(rth_open) if in_rth else np.nan,
                "rth_minutes_to_close": to_minutes(rth_close) - mod if in_rth else np.nan,
                "is_first_bar_of_session": np.nan if i == 0 else int(d != prev_d),
                **{k: cal[k] for k in cal if k != "days_in_month"},
                "_dim": cal["days_in_month"],
            }
        )
        prev_d = d
    return pd.DataFrame(rows, index=df.index)


def assert_matches_brute(df: pd.DataFrame, timeframe: str) -> None:
    got = time_features.compute(df, timeframe)
    want = brute_rows(df)
    exact = [c for c in want.columns if not c.startswith("_")]
    for col in exact:
        pd.testing.assert_series_equal(got[col], want[col].astype(float), check_names=False, obj=col)
    two_pi = 2 * np.pi
    trig = {
        "tod_sin": np.sin(two_pi * want["minute_of_day"] / 1440),
        "tod_cos": np.cos(two_pi * want["minute_of_day"] / 1440),
        "dow_sin": np.sin(two_pi * want["day_of_week"] / 5),
        "dow_cos": np.cos(two_pi * want["day_of_week"] / 5),
        "dom_sin": np.sin(two_pi * (want["day_of_month"] - 1) / want["_dim"]),
        "dom_cos": np.cos(two_pi * (want["day_of_month"] - 1) / want["_dim"]),
        "month_sin": np.sin(two_pi * (want["month"] - 1) / 12),
        "month_cos": np.cos(two_pi * (want["month"] - 1) / 12),
    }
    for col, values in trig.items():
        np.testing.assert_allclose(got[col].to_numpy(), values.to_numpy(dtype=float), rtol=0, atol=1e-12, err_msg=col)


# ---------------------------------------------------------------------------------------------------------
# Oracle vs brute force
# ---------------------------------------------------------------------------------------------------------


def test_columns_and_shape(bars):
    assert len(time_features.COLUMNS) == 30 == len(set(time_features.COLUMNS))
    assert time_features.COLUMNS[0] == "minute_of_day" and time_features.COLUMNS[-1] == "weekdays_to_month_end"
    part = bars[bars.symbol == "ESH4"]
    out = time_features.compute(part, "1m")
    assert list(out.columns) == time_features.COLUMNS
    assert len(out) == len(part) and (out.index == part.index).all()
    assert all(out[c].dtype == np.float64 for c in out.columns)
    assert not np.isinf(out.to_numpy()).any()
    with pytest.raises(ValueError):
        time_features.compute(part, "5m")


@pytest.mark.parametrize("symbol", ["ESH4", "CLJ4", "ZNH4"])
def test_1m_matches_brute_force(bars, symbol):
    assert_matches_brute(bars[bars.symbol == symbol], "1m")


def test_1h_and_1d_match_brute_force(bars):
    for symbol in ("ESH4", "CLJ4", "ZNH4"):
        assert_matches_brute(synthetic.hourly(bars[bars.symbol == symbol]), "1h")
        assert_matches_brute(synthetic.session_daily(bars[bars.symbol == symbol]), "1d")


def test_good_friday_range_matches_brute_force(good_friday_bars):
    assert_matches_brute(good_friday_bars, "1m")
    assert_matches_brute(synthetic.session_daily(good_friday_bars), "1d")


# ---------------------------------------------------------------------------------------------------------
# Hand-picked values
# ---------------------------------------------------------------------------------------------------------


def test_known_values_around_dst():
    stamps = [
        utc(2024, 3, 3, 23, 0),  # Sun 18:00 EST: Monday 03-04's session open
        utc(2024, 3, 8, 21, 59),  # Fri 16:59 EST: last bar of the week
        utc(2024, 3, 10, 22, 0),  # Sun 18:00 EDT (after the switch): Monday 03-11
        utc(2024, 3, 11, 13, 30),  # Mon 09:30 EDT: ES RTH open
        utc(2024, 3, 11, 19, 59),  # Mon 15:59 EDT: last ES RTH minute
        utc(2024, 3, 11, 20, 0),  # Mon 16:00 EDT: US post
        utc(2024, 3, 12, 7, 0),  # Tue 03:00 EDT: Europe
    ]
    out = time_features.compute(frame("ESH4", stamps), "1m")
    col = lambda name: out[name].tolist()  # noqa: E731
    assert col("minute_of_day") == [1080, 1019, 1080, 570, 959, 960, 180]
    assert col("minutes_since_session_open") == [0, 1379, 0, 930, 1319, 1320, 540]
    assert col("minutes_to_session_close") == [1380, 1, 1380, 450, 61, 60, 840]
    assert col("session_phase") == [0, 3, 0, 2, 2, 3, 1]
    assert col("day_of_week") == [0, 4, 0, 0, 0, 0, 1]
    assert col("is_rth") == [0, 0, 0, 1, 1, 0, 0]
    assert out["rth_minutes_since_open"].tolist()[3:5] == [0, 389]
    assert out["rth_minutes_to_close"].tolist()[3:5] == [390, 1]
    assert out["rth_minutes_since_open"].isna().tolist() == [True, True, True, False, False, True, True]
    assert np.isnan(out["is_first_bar_of_session"].iloc[0])
    assert col("is_first_bar_of_session")[1:] == [1, 1, 0, 0, 0, 1]
    assert out["tod_sin"].iloc[0] == pytest.approx(-1.0, abs=1e-12)
    assert out["tod_cos"].iloc[6] == pytest.approx(np.cos(2 * np.pi * 180 / 1440), abs=1e-12)


def test_known_calendar_values():
    # One bar per trading date at 10:00 ET (the ET date is the trading date).
    days = [date(2024, 3, 4), date(2024, 3, 7), date(2024, 3, 8), date(2024, 3, 15), date(2024, 3, 28),
            date(2024, 3, 29), date(2024, 4, 1), date(2024, 6, 13), date(2024, 6, 14), date(2024, 12, 31)]
    stamps = [pd.Timestamp(datetime.combine(d, time(10, 0), ET)).tz_convert("UTC") for d in days]
    out = time_features.compute(frame("ESM4", stamps), "1m")
    col = lambda name: out[name].astype(int).tolist()  # noqa: E731
    # Third Friday of March 2024 = 03-15 (roll 03-07); June 2024 = 06-21 (roll 06-13); April 2024 = 04-19;
    # September 2024 = 09-20 (roll 09-12); March 2025 = 03-21 (roll 03-13).
    assert col("days_to_expiry") == [11, 8, 7, 0, 85, 84, 81, 8, 7, 80]
    assert col("days_to_roll") == [3, 0, 97, 90, 77, 76, 73, 0, 90, 72]
    assert col("days_to_monthly_opex") == [11, 8, 7, 0, 22, 21, 18, 8, 7, 17]
    # 2024-03-29 (Good Friday, no Globex session) is still the last weekday of March on the plain calendar.
    assert col("is_month_end") == [0, 0, 0, 0, 0, 1, 0, 0, 0, 1]
    assert col("is_quarter_end") == [0, 0, 0, 0, 0, 1, 0, 0, 0, 1]
    assert col("is_month_start") == [0, 0, 0, 0, 0, 0, 1, 0, 0, 0]
    assert col("weekdays_to_month_end") == [19, 16, 15, 10, 1, 0, 21, 11, 10, 0]
    assert col("day_of_week") == [0, 3, 4, 4, 3, 4, 0, 3, 4, 1]
    assert col("day_of_month") == [4, 7, 8, 15, 28, 29, 1, 13, 14, 31]
    assert col("month") == [3, 3, 3, 3, 3, 3, 4, 6, 6, 12]
    assert out["month_sin"].iloc[-1] == pytest.approx(np.sin(2 * np.pi * 11 / 12), abs=1e-12)
    assert out["dom_cos"].iloc[6] == pytest.approx(1.0, abs=1e-12)


def test_trading_date_rolls_calendar_at_18et():
    # Thu 2024-02-29 17:59 ET is Thursday 02-29; 18:00 ET belongs to Friday 03-01 (new month, month start);
    # Sun 2024-06-30 18:00 EDT belongs to Monday 07-01.
    stamps = [pd.Timestamp(datetime(2024, 2, 29, 16, 59, tzinfo=ET)).tz_convert("UTC"),
              pd.Timestamp(datetime(2024, 2, 29, 18, 0, tzinfo=ET)).tz_convert("UTC"),
              pd.Timestamp(datetime(2024, 6, 30, 18, 0, tzinfo=ET)).tz_convert("UTC")]
    out = time_features.compute(frame("CLJ4", stamps), "1m")
    assert out["day_of_week"].tolist() == [3, 4, 0]
    assert out["month"].tolist() == [2, 3, 7]
    assert out["day_of_month"].tolist() == [29, 1, 1]
    assert out["is_month_end"].tolist() == [1, 0, 0]
    assert out["is_month_start"].tolist() == [0, 1, 1]
    assert out["is_first_bar_of_session"].tolist()[1:] == [1, 1]


def test_weekend_trading_date_is_not_clamped():
    # A (non-Globex) bar Friday 2024-03-29 19:00 ET has trading date Saturday 03-30: day_of_week 5, no month end.
    stamp = pd.Timestamp(datetime(2024, 3, 29, 19, 0, tzinfo=ET)).tz_convert("UTC")
    out = time_features.compute(frame("ESM4", [stamp]), "1m")
    assert out["day_of_week"].iloc[0] == 5
    assert out["is_month_end"].iloc[0] == 0 and out["is_month_start"].iloc[0] == 0
    assert out["weekdays_to_month_end"].iloc[0] == 0
    assert np.isnan(out["is_first_bar_of_session"].iloc[0])


def test_daily_bars_degenerate(bars):
    daily = synthetic.session_daily(bars[bars.symbol == "ESH4"])
    out = time_features.compute(daily, "1d")
    assert (out["minute_of_day"] == 1080).all() and (out["minutes_since_session_open"] == 0).all()
    assert (out["session_phase"] == 0).all() and (out["is_asia"] == 1).all()
    assert (out["is_rth"] == 0).all()
    assert out["rth_minutes_since_open"].isna().all() and out["rth_minutes_to_close"].isna().all()
    assert np.isnan(out["is_first_bar_of_session"].iloc[0]) and (out["is_first_bar_of_session"].iloc[1:] == 1).all()
    dates = [date(2024, 3, d) for d in (4, 5, 6, 7, 8, 11, 12, 14, 15, 18, 19, 20)]
    assert out["day_of_month"].astype(int).tolist() == [d.day for d in dates]
    assert out["day_of_week"].astype(int).tolist() == [d.weekday() for d in dates]


def test_hourly_rth_by_bar_open(bars):
    es = time_features.compute(synthetic.hourly(bars[bars.symbol == "ESH4"]), "1h")
    cl = time_features.compute(synthetic.hourly(bars[bars.symbol == "CLJ4"]), "1h")
    assert set(es.loc[es.is_rth == 1, "minute_of_day"]) == {600, 660, 720, 780, 840, 900}  # 10:00..15:00
    assert set(cl.loc[cl.is_rth == 1, "minute_of_day"]) == {540, 600, 660, 720, 780, 840}  # 09:00..14:00
    assert (es["minute_of_hour"] == 0).all()


# ---------------------------------------------------------------------------------------------------------
# The synthetic bars really contain the edge cases of catalog section 7
# ---------------------------------------------------------------------------------------------------------


def _local(bars: pd.DataFrame) -> pd.Series:
    return bars["ts"].dt.tz_convert("America/New_York")


def test_synthetic_shape_and_determinism(bars):
    assert list(bars.columns) == ["symbol", "ts", "open", "high", "low", "close", "volume"]
    assert str(bars["ts"].dtype) == "datetime64[ns, UTC]"
    assert sorted(bars.symbol.unique()) == ["CLJ4", "ESH4", "ZNH4"]
    key = list(zip(bars.symbol, bars.ts))
    assert key == sorted(key) and len(set(key)) == len(key)
    pd.testing.assert_frame_equal(bars, synthetic.globex_bars())
    other = synthetic.globex_bars(seed=1)
    assert not other[["open", "close"]].equals(bars[["open", "close"]])
    # Each symbol's bars do not depend on which other symbols are requested.
    alone = synthetic.globex_bars(symbols=("ZNH4",))
    pd.testing.assert_frame_equal(alone, bars[bars.symbol == "ZNH4"].reset_index(drop=True))


def test_synthetic_sessions_only_in_globex_hours(bars):
    local = _local(bars)
    wall = local.dt.hour * 60 + local.dt.minute
    assert not ((wall >= 17 * 60) & (wall < 18 * 60)).any()  # no bar in the halt
    dow = local.dt.dayofweek
    weekend = (dow == 5) | ((dow == 4) & (wall >= 17 * 60)) | ((dow == 6) & (wall < 18 * 60))
    assert not weekend.any()  # nothing Friday 17:00 .. Sunday 18:00 ET
    assert ((dow == 6) & (wall >= 18 * 60)).sum() > 0  # Sunday-evening opens present


def test_synthetic_dst_holiday_weekend(bars, good_friday_bars):
    offsets = {t.utcoffset() for t in _local(bars)}
    assert offsets == {timedelta(hours=-5), timedelta(hours=-4)}  # crosses 2024-03-10
    for df, holiday in ((bars, date(2024, 3, 13)), (good_friday_bars, date(2024, 3, 29))):
        dates = {brute_trading_date(t.to_pydatetime()) for t in _local(df)}
        assert holiday not in dates and holiday.weekday() < 5
        assert holiday - timedelta(days=1) in dates or holiday - timedelta(days=3) in dates
    gf_dates = sorted({brute_trading_date(t.to_pydatetime()) for t in _local(good_friday_bars)})
    assert date(2024, 3, 28) in gf_dates and date(2024, 4, 1) in gf_dates
    # No bar from Thursday 2024-03-28 17:00 ET to Sunday 2024-03-31 18:00 ET.
    lo = pd.Timestamp(datetime(2024, 3, 28, 17, 0, tzinfo=ET))
    hi = pd.Timestamp(datetime(2024, 3, 31, 18, 0, tzinfo=ET))
    assert not ((good_friday_bars.ts >= lo) & (good_friday_bars.ts < hi)).any()
    # The oracle on the Good Friday range: no row has is_month_end = 1 in March (03-29 has no session).
    out = time_features.compute(good_friday_bars, "1m")
    assert out.loc[out.month == 3, "is_month_end"].sum() == 0
    assert out.loc[out.day_of_month == 28, "weekdays_to_month_end"].eq(1).all()
    assert (bars.groupby("symbol").apply(lambda g: g.ts.diff().max(), include_groups=False) > pd.Timedelta(days=2)).all()


def test_synthetic_missing_minutes(bars):
    for _, g in bars.groupby("symbol"):
        local = _local(g)
        dates = [brute_trading_date(t.to_pydatetime()) for t in local]
        n_sessions = len(set(dates))
        assert n_sessions == 12
        assert len(g) < n_sessions * 1380 - 30 - 50  # the 30-minute gap plus random drops
        gaps = g.ts.diff()
        same_session = pd.Series(dates, index=g.index).eq(pd.Series(dates, index=g.index).shift())
        inside = gaps[same_session]
        assert (inside == pd.Timedelta(minutes=31)).sum() >= 1  # 30 absent minutes
        assert (inside == pd.Timedelta(minutes=2)).sum() > 50  # single dropped minutes
        assert (inside >= pd.Timedelta(minutes=1)).all()


def test_synthetic_price_edge_cases(bars):
    ticks = {"ESH4": 4, "CLJ4": 100, "ZNH4": 64}
    for symbol, g in bars.groupby("symbol"):
        o, h, l, c, v = (g[k].to_numpy() for k in ("open", "high", "low", "close", "volume"))
        assert (h >= np.maximum(o, c)).all() and (l <= np.minimum(o, c)).all() and (l > 0).all()
        per = ticks[symbol]
        for x in (o, h, l, c):
            k = np.rint(x * per)
            assert np.array_equal(x, k / per)  # exactly the double of a grid price
        assert (h == l).sum() > 0
        assert ((h == l) & (v > 0)).sum() > 0 and (v == 0).sum() > 0 and ((v == 0) & (h > l)).sum() > 0
        # A run of >= 300 consecutive identical bars (stale feed), volume 0.
        same = (np.diff(o) == 0) & (np.diff(h) == 0) & (np.diff(l) == 0) & (np.diff(c) == 0) & (np.diff(v) == 0)
        best = run = 0
        for flag in same:
            run = run + 1 if flag else 0
            best = max(best, run)
        assert best + 1 >= 300
        assert v.dtype == np.int64 and (v >= 0).all()


def test_resamplers(bars):
    one = bars[bars.symbol == "ESH4"]
    hourly = synthetic.hourly(one)
    assert (hourly.ts.dt.minute == 0).all() and hourly.volume.sum() == one.volume.sum()
    assert (hourly.high >= hourly[["open", "close"]].max(axis=1)).all()
    first = one[(one.ts >= hourly.ts.iloc[1]) & (one.ts < hourly.ts.iloc[1] + pd.Timedelta(hours=1))]
    assert hourly.iloc[1][["open", "high", "low", "close"]].tolist() == [
        first.open.iloc[0], first.high.max(), first.low.min(), first.close.iloc[-1]]
    daily = synthetic.session_daily(bars)
    assert len(daily) == 36 and daily.groupby("symbol").size().eq(12).all()
    local = _local(daily)
    assert (local.dt.hour == 18).all() and (local.dt.minute == 0).all()
    assert daily.volume.sum() == bars.volume.sum()
    d0 = one[one.ts < pd.Timestamp("2024-03-04 22:00", tz="UTC")]  # first session: 03-03 18:00 .. 03-04 17:00 ET
    row = daily[daily.symbol == "ESH4"].iloc[0]
    assert row.ts == pd.Timestamp("2024-03-03 23:00", tz="UTC")
    assert [row.open, row.high, row.low, row.close, row.volume] == [
        d0.open.iloc[0], d0.high.max(), d0.low.min(), d0.close.iloc[-1], d0.volume.sum()]
