"""Trading-date convention, session bounds and calendar sessions against hand-worked oracles."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from warehouse.sessions import (
    business_days,
    calendar_for,
    is_trading_day,
    session_bounds,
    trading_date,
    trading_sessions,
)

UTC = timezone.utc
ET = ZoneInfo("America/New_York")
CT = ZoneInfo("America/Chicago")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# (instant, trading date) worked by hand: EDT = UTC-4, EST = UTC-5.
EDGES = [
    # DST ends Sunday 2013-11-03 02:00 EDT -> 01:00 EST.
    (utc(2013, 11, 1, 21, 59, 59), date(2013, 11, 1)),  # Fri 17:59:59 EDT
    (utc(2013, 11, 1, 22, 0, 0), date(2013, 11, 2)),  # Fri 18:00:00 EDT
    (utc(2013, 11, 3, 5, 30), date(2013, 11, 3)),  # 01:30 EDT (first pass)
    (utc(2013, 11, 3, 6, 30), date(2013, 11, 3)),  # 01:30 EST (second pass)
    (utc(2013, 11, 3, 22, 59, 59), date(2013, 11, 3)),  # Sun 17:59:59 EST
    (utc(2013, 11, 3, 23, 0, 0), date(2013, 11, 4)),  # Sun 18:00:00 EST: Globex opens for Monday
    (utc(2013, 11, 4, 4, 59, 59), date(2013, 11, 4)),  # 23:59:59 EST Sunday
    (utc(2013, 11, 4, 21, 59), date(2013, 11, 4)),  # Mon 16:59 EST, last minute before the halt
    # DST starts Sunday 2014-03-09 02:00 EST -> 03:00 EDT.
    (utc(2014, 3, 7, 22, 0), date(2014, 3, 7)),  # Fri 17:00 EST (halt), same date
    (utc(2014, 3, 7, 22, 59, 59), date(2014, 3, 7)),  # Fri 17:59:59 EST
    (utc(2014, 3, 9, 21, 59, 59), date(2014, 3, 9)),  # Sun 17:59:59 EDT
    (utc(2014, 3, 9, 22, 0, 0), date(2014, 3, 10)),  # Sun 18:00:00 EDT: Globex opens for Monday
    (utc(2014, 3, 9, 23, 0, 0), date(2014, 3, 10)),  # 19:00 EDT (would be 18:00 EST)
    (utc(2014, 3, 10, 3, 59, 59), date(2014, 3, 10)),  # 23:59:59 EDT Sunday
]


@pytest.mark.parametrize(("instant", "expected"), EDGES)
def test_trading_date_scalar(instant, expected):
    assert trading_date(instant) == expected
    assert trading_date(pd.Timestamp(instant)) == expected
    assert trading_date(instant.astimezone(CT)) == expected  # any time zone, same instant


def test_trading_date_other_time_zones():
    assert trading_date(datetime(2014, 3, 9, 18, 0, tzinfo=ET)) == date(2014, 3, 10)
    assert trading_date(datetime(2014, 3, 9, 17, 0, tzinfo=CT)) == date(2014, 3, 10)  # 17:00 CT = 18:00 ET
    assert trading_date(datetime(2014, 3, 9, 16, 59, tzinfo=CT)) == date(2014, 3, 9)


def test_trading_date_vectorized_matches_scalar():
    index = pd.Index([10, 11, 12, 13] + list(range(20, 20 + len(EDGES))))
    values = [pd.NaT, utc(2013, 11, 3, 23), utc(2024, 6, 30, 22), utc(2024, 12, 31, 23)] + [i for i, _ in EDGES]
    series = pd.Series(pd.to_datetime(values, utc=True), index=index)
    out = trading_date(series)
    assert out.name == "trading_date"
    assert out.dtype == "datetime64[ns]"
    assert out.index.equals(index)
    assert pd.isna(out.iloc[0])
    expected = [date(2013, 11, 4), date(2024, 7, 1), date(2025, 1, 1)] + [d for _, d in EDGES]
    assert [d.date() for d in out.iloc[1:]] == expected
    as_index = trading_date(pd.DatetimeIndex(series.iloc[1:]))
    assert isinstance(as_index, pd.DatetimeIndex) and as_index.tz is None
    assert [d.date() for d in as_index] == expected
    # Input in another zone gives the same answer.
    assert trading_date(series.dt.tz_convert(CT)).equals(out)


def test_trading_date_refuses_naive_and_other_types():
    with pytest.raises(ValueError, match="tz-aware"):
        trading_date(datetime(2014, 3, 9, 18))
    with pytest.raises(ValueError, match="tz-aware"):
        trading_date(pd.Series(pd.to_datetime(["2014-03-09 18:00"])))
    with pytest.raises(ValueError, match="tz-aware"):
        trading_date(pd.DatetimeIndex(["2014-03-09 18:00"]))
    with pytest.raises(TypeError):
        trading_date("2014-03-09 18:00")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("day", "open_utc", "close_utc"),
    [
        (date(2013, 11, 1), utc(2013, 10, 31, 22), utc(2013, 11, 1, 21)),  # EDT both ends
        (date(2013, 11, 4), utc(2013, 11, 3, 23), utc(2013, 11, 4, 22)),  # EST both ends
        (date(2014, 3, 10), utc(2014, 3, 9, 22), utc(2014, 3, 10, 21)),  # EDT both ends
        (date(2013, 12, 2), utc(2013, 12, 1, 23), utc(2013, 12, 2, 22)),
    ],
)
def test_session_bounds(day, open_utc, close_utc):
    bounds = session_bounds(day)
    assert bounds == (open_utc, close_utc)
    assert all(b.tzinfo is not None and b.utcoffset() == timedelta(0) for b in bounds)
    assert trading_date(bounds[0]) == day
    assert trading_date(bounds[1] - timedelta(seconds=1)) == day
    assert trading_date(bounds[0] - timedelta(seconds=1)) == day - timedelta(days=1)


def test_calendar_for_is_cached_per_calendar_name():
    assert calendar_for("ES") is calendar_for("MES")
    assert calendar_for("ZN") is calendar_for("ZF")
    assert calendar_for("CL") is not calendar_for("ES")
    with pytest.raises(KeyError, match="unknown root"):
        calendar_for("XX")


def test_trading_sessions_thanksgiving_and_christmas_2013():
    s = trading_sessions("ES", date(2013, 11, 25), date(2013, 12, 31)).set_index("trading_date")
    assert list(s.columns) == ["open_utc", "close_utc", "early_close"]
    assert str(s["open_utc"].dtype) == "datetime64[ns, UTC]"
    # Monday 2013-12-02: opened Sunday 17:00 CT = 18:00 EST = 23:00 UTC.
    assert s.loc["2013-12-02", "open_utc"] == pd.Timestamp("2013-12-01 23:00", tz="UTC")
    assert s.loc["2013-12-02", "close_utc"] == pd.Timestamp("2013-12-02 22:00", tz="UTC")
    assert not s.loc["2013-12-02", "early_close"]
    # Thanksgiving: an abbreviated session, present and flagged.
    assert s.loc["2013-11-28", "early_close"]
    assert s.loc["2013-11-28", "close_utc"] < pd.Timestamp("2013-11-28 22:00", tz="UTC")
    # Day after Thanksgiving and Christmas Eve: equity close 12:15 CT = 18:15 UTC.
    for day in ("2013-11-29", "2013-12-24"):
        assert s.loc[day, "early_close"]
        assert s.loc[day, "close_utc"] == pd.Timestamp(f"{day} 18:15", tz="UTC")
    # Christmas: no session; the 26th opens 18:00 ET on the 25th.
    assert pd.Timestamp("2013-12-25") not in s.index
    assert s.loc["2013-12-26", "open_utc"] == pd.Timestamp("2013-12-25 23:00", tz="UTC")
    assert s.index.dayofweek.max() <= 4  # no weekend trading dates


@pytest.mark.parametrize("root", ["ES", "CL", "NG", "GC", "SI", "ZN", "6E"])
def test_trading_sessions_agree_with_trading_date_convention(root):
    for start, end in ((date(2013, 1, 1), date(2014, 12, 31)), (date(2024, 1, 1), date(2024, 12, 31))):
        s = trading_sessions(root, start, end)
        assert len(s) > 240
        bounds = [session_bounds(d.date()) for d in s["trading_date"]]
        regular_open = pd.Series([b[0] for b in bounds], dtype="datetime64[ns, UTC]")
        regular_close = pd.Series([b[1] for b in bounds], dtype="datetime64[ns, UTC]")
        assert (s["open_utc"] == regular_open).all()  # always 18:00 ET the calendar day before
        assert (s["close_utc"] <= regular_close).all()
        assert (s["early_close"] == (s["close_utc"] < regular_close)).all()
        assert (trading_date(s["open_utc"]) == s["trading_date"]).all()
        assert (trading_date(s["close_utc"] - pd.Timedelta(seconds=1)) == s["trading_date"]).all()


def test_is_trading_day():
    assert is_trading_day("ES", date(2013, 12, 2))
    assert is_trading_day("ES", date(2013, 11, 28))  # abbreviated Thanksgiving session
    assert not is_trading_day("ES", date(2013, 12, 25))
    assert not is_trading_day("ES", date(2013, 11, 30))  # Saturday
    assert not is_trading_day("CL", date(2013, 3, 29))  # Good Friday
    assert not is_trading_day("ZN", date(2024, 3, 29))  # Good Friday 2024


def test_business_days_drop_holiday_sessions():
    # Thanksgiving 2013 trades a short Globex session but has no CME trade date; the Friday after does.
    assert business_days("ES", date(2013, 11, 25), date(2013, 11, 29)) == [
        date(2013, 11, 25), date(2013, 11, 26), date(2013, 11, 27), date(2013, 11, 29)
    ]
    # MLK 2024: a trading day under our convention, not a business day.
    assert is_trading_day("ES", date(2024, 1, 15))
    assert business_days("ES", "2024-01-12", "2024-01-16") == [date(2024, 1, 12), date(2024, 1, 16)]
    # Christmas and New Year 2013/14 for crude.
    assert business_days("CL", date(2013, 12, 23), date(2014, 1, 3)) == [
        date(2013, 12, 23), date(2013, 12, 24), date(2013, 12, 26), date(2013, 12, 27),
        date(2013, 12, 30), date(2013, 12, 31), date(2014, 1, 2), date(2014, 1, 3),
    ]
    # A national day of mourning is a (shortened) trade date, kept.
    assert date(2025, 1, 9) in business_days("CL", date(2025, 1, 6), date(2025, 1, 10))
