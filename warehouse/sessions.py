"""CME Globex session conventions: trading dates, session bounds, exchange calendars, business days.

Conventions (DESIGN.md, FEATURES.md section 1)
----------------------------------------------
* The exchange clock is America/New_York (ET). CME quotes its hours in Central Time, which follows the
  same DST rules one hour behind, so 17:00 CT is always 18:00 ET.
* **Trading date** ``D(ts)`` = ET calendar date of ``ts``, plus one day when the ET time is ``>= 18:00``.
  Equivalently ``D(ts) = date(ET wall clock of ts + 6 h)``, which is how it is computed here and in SQL.
* A Globex session for trading date ``D`` runs from 18:00 ET on ``D - 1`` to 17:00 ET on ``D`` (daily halt
  17:00-18:00 ET). DST changes at 02:00 Sunday while Globex is closed, so no session spans a change.
* Holidays and early closes come from pandas_market_calendars, through the calendar named for each root in
  ``contracts.csv``; nothing here lists holidays by hand.

Trading day vs business day
---------------------------
On some U.S. holidays (MLK, Presidents', Memorial, Juneteenth, Independence, Labor, Thanksgiving) Globex
trades an abbreviated session that CME clears with the *next* day's trade date. Under our convention such a
session still has its own trading date (bars from 18:00 ET the evening before are labelled with the holiday),
so :func:`is_trading_day` is True, but the day is not a CME business day: :func:`business_days`, used for
contract expiries, leaves it out.
"""

from __future__ import annotations

import functools
from datetime import date, datetime, time, timedelta, timezone
from typing import TYPE_CHECKING, overload
from zoneinfo import ZoneInfo

import pandas as pd

from warehouse.contracts import load_specs

if TYPE_CHECKING:
    from pandas_market_calendars import MarketCalendar

__all__ = [
    "ET",
    "SESSION_OPEN_ET",
    "SESSION_CLOSE_ET",
    "trading_date",
    "session_bounds",
    "calendar_for",
    "trading_sessions",
    "is_trading_day",
    "business_days",
]

ET = ZoneInfo("America/New_York")
#: Globex reopens at 18:00 ET for the next trading date and halts at 17:00 ET.
SESSION_OPEN_ET = time(18, 0)
SESSION_CLOSE_ET = time(17, 0)
# 24:00 - 18:00: shifting the ET wall clock by this moves exactly the 18:00-24:00 part onto the next date.
_SHIFT = timedelta(hours=6)
# Calendar listing CME trade dates (clearing business days); its regular holidays are the U.S. holidays on
# which CME assigns no trade date even when Globex trades an abbreviated session.
_TRADE_DATE_CALENDAR = "CME_TradeDate"


@overload
def trading_date(ts: datetime) -> date: ...
@overload
def trading_date(ts: pd.Series) -> pd.Series: ...
@overload
def trading_date(ts: pd.DatetimeIndex) -> pd.DatetimeIndex: ...


def trading_date(ts: datetime | pd.Series | pd.DatetimeIndex) -> date | pd.Series | pd.DatetimeIndex:
    """CME trading date of tz-aware timestamps: ``D(ts) = date(ET wall clock of ts + 6 h)``.

    That is the America/New_York date, plus one day from 18:00 ET on (17:59:59 ET belongs to the same date,
    18:00:00 ET to the next). Weekend timestamps get weekend dates; Globex has no bars there.

    Parameters
    ----------
    ts : datetime, pandas.Timestamp, pandas.Series or pandas.DatetimeIndex
        Tz-aware instants in any time zone (bars use UTC). Naive values are refused: their instant is unknown.

    Returns
    -------
    datetime.date, pandas.Series or pandas.DatetimeIndex
        A ``date`` for a scalar; for a Series, a Series named ``trading_date`` on the same index of naive
        ``datetime64[ns]`` midnights (NaT stays NaT); for a DatetimeIndex, a naive normalized DatetimeIndex.

    Raises
    ------
    ValueError
        Naive input.
    TypeError
        Input of another type.
    """
    if isinstance(ts, pd.Series):
        if not isinstance(ts.dtype, pd.DatetimeTZDtype):
            raise ValueError(f"trading_date needs tz-aware timestamps, got a Series of dtype {ts.dtype}")
        wall = ts.dt.tz_convert(ET).dt.tz_localize(None)
        return (wall + _SHIFT).dt.normalize().rename("trading_date")
    if isinstance(ts, pd.DatetimeIndex):
        if ts.tz is None:
            raise ValueError("trading_date needs a tz-aware DatetimeIndex")
        return (ts.tz_convert(ET).tz_localize(None) + _SHIFT).normalize()
    if isinstance(ts, datetime):
        if ts.tzinfo is None or ts.utcoffset() is None:
            raise ValueError(f"trading_date needs a tz-aware datetime, got {ts!r}")
        return (ts.astimezone(ET).replace(tzinfo=None) + _SHIFT).date()
    raise TypeError(f"expected a tz-aware datetime, pandas Series or DatetimeIndex, got {type(ts).__name__}")


def session_bounds(trading_day: date) -> tuple[datetime, datetime]:
    """Regular Globex session of a trading date, in UTC.

    ``open = 18:00 ET on trading_day - 1 calendar day``, ``close = 17:00 ET on trading_day``; each is
    converted to UTC with the offset in force at that instant, so a session is 23 h long in UTC in all
    seasons. Holidays and early closes are not applied (see :func:`trading_sessions`).

    Returns
    -------
    tuple[datetime, datetime]
        ``(open_utc, close_utc)``, tz-aware UTC.
    """
    if isinstance(trading_day, datetime):
        raise TypeError("session_bounds takes a trading date (datetime.date), not a datetime")
    open_et = datetime.combine(trading_day - timedelta(days=1), SESSION_OPEN_ET, tzinfo=ET)
    close_et = datetime.combine(trading_day, SESSION_CLOSE_ET, tzinfo=ET)
    return open_et.astimezone(timezone.utc), close_et.astimezone(timezone.utc)


@functools.cache
def _calendar(name: str) -> MarketCalendar:
    import pandas_market_calendars as mcal

    return mcal.get_calendar(name)


def calendar_for(root: str) -> MarketCalendar:
    """The pandas_market_calendars calendar named for ``root`` in ``contracts.csv`` (cached per name).

    Raises
    ------
    KeyError
        Unknown root.
    """
    return _calendar(_calendar_name(root))


def trading_sessions(root: str, start: date | str, end: date | str) -> pd.DataFrame:
    """Globex sessions of a product between two trading dates (inclusive), from its exchange calendar.

    Full holidays are absent; abbreviated sessions are present with ``early_close`` True. The calendars
    report each session's ``market_open`` at 17:00 CT on the previous calendar day and its regular
    ``market_close`` at 16:00 CT, i.e. exactly :func:`session_bounds`; this function checks that every
    session's open falls on its own trading date under :func:`trading_date`, and fails loudly otherwise.

    Returns
    -------
    pandas.DataFrame
        Columns ``trading_date`` (naive ``datetime64[ns]`` midnight), ``open_utc``, ``close_utc``
        (``datetime64[ns, UTC]``), ``early_close`` (bool: the close is before the regular 17:00 ET).
    """
    calendar = calendar_for(root)
    schedule = calendar.schedule(start_date=pd.Timestamp(start), end_date=pd.Timestamp(end))
    early = calendar.early_closes(schedule).index
    sessions = pd.DataFrame(
        {
            "trading_date": schedule.index.to_numpy(dtype="datetime64[ns]"),
            "open_utc": schedule["market_open"].to_numpy(),
            "close_utc": schedule["market_close"].to_numpy(),
            "early_close": schedule.index.isin(early),
        }
    )
    sessions["open_utc"] = sessions["open_utc"].dt.tz_convert("UTC")
    sessions["close_utc"] = sessions["close_utc"].dt.tz_convert("UTC")
    # Guard the convention: a session's first instant must carry its own trading date. A calendar that
    # labelled sessions by another rule would silently shift every daily bar by one day.
    mismatched = trading_date(sessions["open_utc"]) != sessions["trading_date"]
    if mismatched.any():
        row = sessions[mismatched].iloc[0]
        raise ValueError(
            f"calendar {_calendar_name(root)!r}: session {row['trading_date'].date()} opens at {row['open_utc']}, "
            "which is not on that trading date under the 18:00 ET convention"
        )
    return sessions


def is_trading_day(root: str, day: date | str) -> bool:
    """True when the product's calendar has a Globex session (possibly abbreviated) with trading date ``day``."""
    when = _as_date(day)
    return when in _sessions_in_year(_calendar_name(root), when.year)


def business_days(root: str, start: date | str, end: date | str) -> list[date]:
    """CME business days of a product between two dates (inclusive), ascending.

    A business day is a day on which the product's calendar has a session **and** CME assigns a trade date:
    the product calendar's sessions minus the regular holidays of pandas_market_calendars' ``CME_TradeDate``
    calendar (New Year, MLK, Presidents', Good Friday, Memorial, Juneteenth from 2022, Independence, Labor,
    Thanksgiving, Christmas). Its ad-hoc days of mourning are not removed: CME cleared them as (shortened)
    trade dates. Used by :func:`warehouse.contracts.expiry_date`.
    """
    first, last = _as_date(start), _as_date(end)
    name = _calendar_name(root)
    days: list[date] = []
    for year in range(first.year, last.year + 1):
        days.extend(d for d in _business_days_in_year(name, year) if first <= d <= last)
    return days


def _calendar_name(root: str) -> str:
    specs = load_specs()
    if root not in specs:
        raise KeyError(f"unknown root {root!r}; known roots: {', '.join(specs)}")
    return specs[root].calendar


def _as_date(day: date | str) -> date:
    if isinstance(day, datetime):
        raise TypeError("pass a trading date (datetime.date), not a datetime")
    return day if isinstance(day, date) else date.fromisoformat(day)


# Whole calendar years are computed once per calendar and cached: the library rebuilds its holiday rules on
# every call (milliseconds each), which would dominate expiry and roll computations.
@functools.cache
def _sessions_in_year(calendar_name: str, year: int) -> frozenset[date]:
    days = _calendar(calendar_name).valid_days(start_date=f"{year}-01-01", end_date=f"{year}-12-31")
    return frozenset(ts.date() for ts in days)


@functools.cache
def _business_days_in_year(calendar_name: str, year: int) -> tuple[date, ...]:
    no_trade_date = _calendar(_TRADE_DATE_CALENDAR).regular_holidays.holidays(f"{year}-01-01", f"{year}-12-31")
    excluded = {ts.date() for ts in no_trade_date}
    return tuple(sorted(d for d in _sessions_in_year(calendar_name, year) if d not in excluded))
