"""Oracle for catalog features #121-#150 (category "time"), written from shared/FEATURES.md only.

Every feature here is a closed form of the bar's open time ``ts`` (and, for the RTH features, of the symbol),
so the oracle works row by row with pandas/numpy; nothing depends on earlier rows except
``is_first_bar_of_session`` (LAG of the trading date). NULL is NaN; integer features are returned as floats.

Conventions taken from the catalog (sections 1-3), through ``common``:
* ET wall clock (America/New_York) of the bar OPEN; ``minute_of_day = 60*hour + minute``.
* Trading date ``D(ts)`` = ET date, +1 day from 18:00 ET. All calendar features (day_of_week ... weekdays_to_month_end)
  are functions of D, never of the ET calendar date: the Sunday-evening open belongs to Monday, a Thursday 18:00
  bar to Friday, etc.
* Calendar features use a plain Mon-Fri calendar, no holidays (``np.busday_count`` with the default weekmask).

Ambiguities resolved here (the SQL templates must make the same choice):
1. ``session_phase`` for a bar opening in the 17:00-18:00 ET halt (Globex prints none; only odd vendor data
   could): the four phases are evaluated as the catalog's ordered CASE and the remainder ``[16:00, 18:00)`` is
   phase 3 ("US post"), i.e. ``0 if mod >= 1080 or mod < 180, 1 if mod < 570, 2 if mod < 960, else 3``.
   The feature is therefore never NULL (first=0).
2. ``minutes_since_session_open`` / ``minutes_to_session_close`` are the literal closed forms; a halt bar would
   get 1380..1439 and 0..-59 (no clamping, no NULL). Early closes are ignored, as the catalog says.
3. ``day_of_week`` = ISO weekday of D minus 1 with no clamping: a trading date on a weekend (only possible for
   bars between Friday 18:00 and Sunday 18:00 ET, which Globex never prints) gives 5 (Sat) or 6 (Sun), and
   ``dow_sin/cos`` use the same value with period 5, as written.
4. ``is_month_end`` / ``is_month_start`` require D itself to be a weekday ("the trading date IS the last/first
   weekday of its month"); a weekend D gives 0. ``weekdays_to_month_end`` is exactly
   ``np.busday_count(D + 1, first day of next month)`` as the catalog's reference column states (for a weekend
   D this is still the number of weekdays after D up to the month end).
5. Third Friday of a month = first Friday + 14 days. ``days_to_expiry`` uses the quarterly (Mar/Jun/Sep/Dec)
   third Friday >= D, ``days_to_monthly_opex`` that of any month >= D; both are 0 on the expiry date itself.
   ``days_to_roll``: roll date = quarterly third Friday - 8 days (a Thursday); the next roll date >= D, 0 on the
   roll date; between a roll date and its expiry the NEXT quarter's roll date counts. Exchange holidays are
   ignored (plain calendar days, e.g. a Good Friday expiry date is not moved).
6. Timeframes: the formulas do not depend on the timeframe. On ``1d`` bars (ts = session open, 18:00 ET of the
   previous day, as the warehouse's session bars have) this yields the catalog's degenerate values by itself:
   minute_of_day 1080, minutes_since_session_open 0, session_phase 0 (is_asia 1), is_rth 0 and rth_* NULL,
   is_first_bar_of_session 1 on every row but the first (NULL). ``1h`` bars are judged by their open minute
   (e.g. the ES 09:00 ET hour bar is not RTH, the 10:00 one is).
7. ``is_rth`` uses ``common.rth_window`` (longest key that prefixes the symbol, default 09:30-16:00) per row,
   so a frame holding several symbols is handled too; ``rth_minutes_to_close`` = ``rth_close - minute_of_day``
   (1 on the last RTH minute bar, bar open convention).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tests.features_oracle.common import minute_of_day, rth_window, trading_date

COLUMNS: list[str] = [
    "minute_of_day",
    "minute_of_hour",
    "tod_sin",
    "tod_cos",
    "minutes_since_session_open",
    "minutes_to_session_close",
    "session_phase",
    "is_asia",
    "is_europe",
    "is_us",
    "is_rth",
    "rth_minutes_since_open",
    "rth_minutes_to_close",
    "is_first_bar_of_session",
    "day_of_week",
    "dow_sin",
    "dow_cos",
    "day_of_month",
    "dom_sin",
    "dom_cos",
    "month",
    "month_sin",
    "month_cos",
    "days_to_roll",
    "days_to_expiry",
    "days_to_monthly_opex",
    "is_month_end",
    "is_month_start",
    "is_quarter_end",
    "weekdays_to_month_end",
]

TIMEFRAMES = ("1m", "1h", "1d")
SESSION_OPEN_MIN = 18 * 60  # 1080
SESSION_MINUTES = 23 * 60  # 1380
QUARTERLY_ROLL_OFFSET_DAYS = 8

_DAY = np.timedelta64(1, "D")


def _weekday(days: np.ndarray) -> np.ndarray:
    """Mon=0..Sun=6 of datetime64[D] values (1970-01-01 was a Thursday)."""
    return (days.astype(np.int64) + 3) % 7


def _month_start(month_index: np.ndarray) -> np.ndarray:
    """First day (datetime64[D]) of the month ``month_index`` (months since 1970-01)."""
    return month_index.astype("datetime64[M]").astype("datetime64[D]")


def _third_friday(month_index: np.ndarray) -> np.ndarray:
    """Third Friday (datetime64[D]) of the month ``month_index`` (months since 1970-01)."""
    first = _month_start(month_index)
    first_friday = first + ((4 - _weekday(first)) % 7) * _DAY
    return first_friday + 14 * _DAY


def compute(bars: pd.DataFrame, timeframe: str) -> pd.DataFrame:
    """The 30 time features of one symbol's partition (sorted by ts), NaN = NULL, in catalog order."""
    if timeframe not in TIMEFRAMES:
        raise ValueError(f"timeframe must be one of {TIMEFRAMES}, got {timeframe!r}")
    n = len(bars)
    out: dict[str, np.ndarray] = {}
    ts = bars["ts"].reset_index(drop=True)
    two_pi = 2.0 * np.pi

    # --- clock features (ET wall clock of the bar open) -------------------------------------------------
    mod = minute_of_day(ts).astype(np.int64)
    out["minute_of_day"] = mod.astype(float)
    out["minute_of_hour"] = (mod % 60).astype(float)
    out["tod_sin"] = np.sin(two_pi * mod / 1440.0)
    out["tod_cos"] = np.cos(two_pi * mod / 1440.0)
    since_open = (mod - SESSION_OPEN_MIN) % 1440  # numpy % is non-negative for a positive divisor
    out["minutes_since_session_open"] = since_open.astype(float)
    out["minutes_to_session_close"] = (SESSION_MINUTES - since_open).astype(float)

    phase = np.select(
        [(mod >= 1080) | (mod < 180), mod < 570, mod < 960],
        [0, 1, 2],
        default=3,  # [16:00, 18:00): US post (and the halt, ambiguity 1)
    )
    out["session_phase"] = phase.astype(float)
    out["is_asia"] = (phase == 0).astype(float)
    out["is_europe"] = (phase == 1).astype(float)
    out["is_us"] = (phase == 2).astype(float)

    symbols = bars["symbol"].astype(str).to_numpy()
    windows = {s: rth_window(s) for s in pd.unique(symbols)}
    rth_open = np.array([windows[s][0] for s in symbols], dtype=np.int64).reshape(n)
    rth_close = np.array([windows[s][1] for s in symbols], dtype=np.int64).reshape(n)
    in_rth = (mod >= rth_open) & (mod < rth_close)
    out["is_rth"] = in_rth.astype(float)
    out["rth_minutes_since_open"] = np.where(in_rth, mod - rth_open, np.nan)
    out["rth_minutes_to_close"] = np.where(in_rth, rth_close - mod, np.nan)

    # --- trading-date features ------------------------------------------------------------------------------
    d = trading_date(ts).to_numpy().astype("datetime64[D]")
    first_bar = np.full(n, np.nan)
    if n > 1:
        first_bar[1:] = (d[1:] != d[:-1]).astype(float)
    out["is_first_bar_of_session"] = first_bar

    dow = _weekday(d)
    out["day_of_week"] = dow.astype(float)
    out["dow_sin"] = np.sin(two_pi * dow / 5.0)
    out["dow_cos"] = np.cos(two_pi * dow / 5.0)

    month_index = d.astype("datetime64[M]").astype(np.int64)  # months since 1970-01
    month_start = _month_start(month_index)
    next_month_start = _month_start(month_index + 1)
    day_of_month = (d - month_start).astype(np.int64) + 1
    days_in_month = (next_month_start - month_start).astype(np.int64)
    out["day_of_month"] = day_of_month.astype(float)
    out["dom_sin"] = np.sin(two_pi * (day_of_month - 1) / days_in_month)
    out["dom_cos"] = np.cos(two_pi * (day_of_month - 1) / days_in_month)
    month = month_index % 12 + 1
    out["month"] = month.astype(float)
    out["month_sin"] = np.sin(two_pi * (month - 1) / 12.0)
    out["month_cos"] = np.cos(two_pi * (month - 1) / 12.0)

    # Quarterly expiry: the quarter month (Mar/Jun/Sep/Dec) at or after D's month; 12 is a multiple of 3, so
    # month_index % 3 == 2 exactly on quarter months.
    quarter_month = month_index + (2 - month_index % 3)
    expiry_this = _third_friday(quarter_month)
    expiry_next = _third_friday(quarter_month + 3)
    expiry = np.where(expiry_this >= d, expiry_this, expiry_next)
    out["days_to_expiry"] = ((expiry - d) // _DAY).astype(float)
    roll_this = expiry_this - QUARTERLY_ROLL_OFFSET_DAYS * _DAY
    roll_next = expiry_next - QUARTERLY_ROLL_OFFSET_DAYS * _DAY
    roll = np.where(roll_this >= d, roll_this, roll_next)
    out["days_to_roll"] = ((roll - d) // _DAY).astype(float)
    opex_this = _third_friday(month_index)
    opex_next = _third_friday(month_index + 1)
    opex = np.where(opex_this >= d, opex_this, opex_next)
    out["days_to_monthly_opex"] = ((opex - d) // _DAY).astype(float)

    is_weekday = dow < 5
    weekdays_left = np.busday_count(d + _DAY, next_month_start)  # weekdays in (D, month end]
    weekdays_before = np.busday_count(month_start, d)  # weekdays in [month start, D)
    month_end = is_weekday & (weekdays_left == 0)
    out["is_month_end"] = month_end.astype(float)
    out["is_month_start"] = (is_weekday & (weekdays_before == 0)).astype(float)
    out["is_quarter_end"] = (month_end & (month % 3 == 0)).astype(float)
    out["weekdays_to_month_end"] = weekdays_left.astype(float)

    frame = pd.DataFrame({name: np.asarray(out[name], dtype=np.float64) for name in COLUMNS}, index=bars.index)
    return frame
