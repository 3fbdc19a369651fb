"""Deterministic SYNTHETIC 1-minute CME Globex bars holding every edge case of FEATURES.md section 7.

``globex_bars()`` (defaults) contains, for every symbol:

* sessions only inside Globex hours: trading date D opens 18:00 ET on D-1 and closes 17:00 ET on D (1380
  minutes); no bar in the 17:00-18:00 ET halt, none from Friday 17:00 to Sunday 18:00 ET (weekends);
* the US DST switch of 2024-03-10 (the default range 2024-03-04 .. 2024-03-20 crosses it: UTC offsets -5 and -4);
* a holiday: a holiday is simply a weekday trading date WITHOUT a session (no bars from 18:00 ET the evening
  before to 17:00 ET on the day). ``holidays`` defaults to :data:`DEFAULT_HOLIDAYS` =
  2024-03-13 (a SYNTHETIC mid-week full closure, so the default 12-session range contains a holiday) and
  2024-03-29 (the real Good Friday closure, reached with ``sessions >= 19`` from the default start; it is also the
  last weekday of March, the catalog's example where ``is_month_end`` differs from the true last trading day).
  ``sessions`` counts trading dates WITH a session, so holidays extend the calendar range;
* missing minutes: about 1.5 % of the rows dropped at random, and one 30-minute gap (session 1, 01:00-01:30 ET:
  30 absent rows, so two consecutive bars 31 minutes apart);
* zero-range bars (h == l, also o == c), about 3 % at random, and zero-volume bars (about 2 %);
* a 300-bar stale flat block (session 2, 19:00-00:00 ET: 300 consecutive rows with identical OHLC equal to the
  previous close and volume 0, no row missing inside it);
* prices on each product's tick grid (ES 0.25, CL 0.01, ZN 1/64; price = integer ticks / ticks-per-point, so a
  decimal tick such as 0.01 gives the double nearest to the decimal) and valid OHLC (h >= max(o, c),
  l <= min(o, c), all > 0).

Session position of the gap and the block is clamped to the available sessions (``sessions >= 3`` keeps them
apart; every default edge case needs the default range). Randomness: ``numpy.random.default_rng([seed,
crc32(symbol)])``, so each symbol's bars do not depend on which other symbols are requested.

``hourly(bars)`` and ``session_daily(bars)`` resample to 1h bars (UTC hour buckets = ET hour buckets, since the
offsets are whole hours; a bucket never crosses the halt) and to CME session bars (one per symbol and trading
date, ts = 18:00 ET of the previous calendar day in UTC), like the warehouse's SQL resamplers but in pandas.
"""

from __future__ import annotations

import zlib
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from tests.features_oracle.common import minute_of_day, rth_window, trading_date

ET = ZoneInfo("America/New_York")
SESSION_MINUTES = 1380
DEFAULT_HOLIDAYS: tuple[str, ...] = ("2024-03-13", "2024-03-29")

#: root -> (ticks per price unit, start price, sd of the 1-minute step in ticks). Longest prefix wins.
PRODUCTS: dict[str, tuple[int, float, float]] = {
    "ES": (4, 5100.0, 4.0),  # tick 0.25
    "NQ": (4, 18000.0, 12.0),  # tick 0.25
    "CL": (100, 78.0, 4.0),  # tick 0.01
    "GC": (10, 2150.0, 3.0),  # tick 0.1
    "ZN": (64, 110.5, 1.0),  # tick 1/64
    "6E": (20000, 1.09, 3.0),  # tick 0.00005
}
DEFAULT_PRODUCT = (100, 100.0, 3.0)

#: Where the deliberate edge cases sit: (session index, first offset from the 18:00 ET open, length in rows).
GAP = (1, 420, 30)  # 01:00-01:30 ET of session 1
STALE = (2, 60, 300)  # 19:00-00:00 ET of session 2
P_DROP, P_ZERO_RANGE, P_ZERO_VOLUME = 0.015, 0.03, 0.02


def product(symbol: str) -> tuple[int, float, float]:
    keys = [k for k in PRODUCTS if symbol.startswith(k)]
    return PRODUCTS[max(keys, key=len)] if keys else DEFAULT_PRODUCT


def session_dates(start: str | date, sessions: int, holidays=DEFAULT_HOLIDAYS) -> list[date]:
    """The first ``sessions`` weekday trading dates >= start that are not holidays."""
    day = date.fromisoformat(start) if isinstance(start, str) else start
    closed = {date.fromisoformat(h) if isinstance(h, str) else h for h in holidays}
    out: list[date] = []
    while len(out) < sessions:
        if day.weekday() < 5 and day not in closed:
            out.append(day)
        day += timedelta(days=1)
    return out


def _session_minutes(day: date) -> np.ndarray:
    """UTC datetime64[ns] of the 1380 bar opens of trading date ``day`` (18:00 ET on day-1 .. 16:59 ET on day)."""
    open_utc = datetime.combine(day - timedelta(days=1), time(18, 0), ET).astimezone(timezone.utc)
    start = np.datetime64(open_utc.replace(tzinfo=None), "ns")
    # No session spans a DST change (02:00 Sunday, Globex closed), so 1380 UTC minutes = 18:00..17:00 wall time.
    return start + np.arange(SESSION_MINUTES).astype("timedelta64[m]").astype("timedelta64[ns]")


def _symbol_bars(symbol: str, days: list[date], seed: int) -> pd.DataFrame:
    rng = np.random.default_rng([seed, zlib.crc32(symbol.encode())])
    per_unit, price0, step_sd = product(symbol)
    n_sessions = len(days)
    ts_all = np.concatenate([_session_minutes(d) for d in days])
    sess_all = np.repeat(np.arange(n_sessions), SESSION_MINUTES)
    offset_all = np.tile(np.arange(SESSION_MINUTES), n_sessions)

    def block(spec: tuple[int, int, int]) -> np.ndarray:
        sess, first, length = spec
        sess = min(sess, n_sessions - 1)
        return (sess_all == sess) & (offset_all >= first) & (offset_all < first + length)

    gap = block(GAP)
    stale_full = block(STALE)
    drop = (rng.random(len(ts_all)) < P_DROP) & ~stale_full
    keep = ~(gap | drop)

    ts = ts_all[keep]
    sess = sess_all[keep]
    stale = stale_full[keep]
    m = len(ts)
    session_start = np.r_[True, sess[1:] != sess[:-1]]

    # Integer-tick price path. open = previous close (+ a jump at each session open), close = open + step.
    zero_range = (rng.random(m) < P_ZERO_RANGE) | stale
    step = np.rint(rng.normal(0.0, step_sd, m)).astype(np.int64)
    step[zero_range] = 0
    jump = np.where(session_start, rng.integers(-20, 21, m), 0)
    jump[0] = 0
    jump[stale] = 0
    start_ticks = int(round(price0 * per_unit))
    close_t = start_ticks + np.cumsum(jump + step)
    open_t = close_t - step
    wick_scale = max(1.0, step_sd / 2)
    up = np.floor(rng.exponential(wick_scale, m)).astype(np.int64)
    dn = np.floor(rng.exponential(wick_scale, m)).astype(np.int64)
    up[zero_range] = 0
    dn[zero_range] = 0
    high_t = np.maximum(open_t, close_t) + up
    low_t = np.minimum(open_t, close_t) - dn
    if low_t.min() <= 0:
        raise ValueError(f"{symbol}: synthetic price path reached zero; use another seed")

    ts_series = pd.Series(pd.to_datetime(ts, utc=True))
    mod = minute_of_day(ts_series)
    rth_open, rth_close = rth_window(symbol)
    lam = np.where((mod >= rth_open) & (mod < rth_close), 300.0, 40.0)
    volume = rng.poisson(lam).astype(np.int64)
    volume[rng.random(m) < P_ZERO_VOLUME] = 0
    volume[stale] = 0

    return pd.DataFrame(
        {
            "symbol": symbol,
            "ts": ts_series,
            "open": open_t / per_unit,
            "high": high_t / per_unit,
            "low": low_t / per_unit,
            "close": close_t / per_unit,
            "volume": volume,
        }
    )


def globex_bars(
    symbols=("ESH4", "CLJ4", "ZNH4"),
    start: str = "2024-03-04",
    sessions: int = 12,
    seed: int = 0,
    holidays=DEFAULT_HOLIDAYS,
) -> pd.DataFrame:
    """Synthetic 1-minute Globex bars (see the module docstring), sorted by symbol, ts.

    Columns: symbol (str), ts (datetime64[ns, UTC], bar open), open, high, low, close (float64), volume (int64).
    """
    if sessions < 1:
        raise ValueError("sessions must be >= 1")
    days = session_dates(start, sessions, holidays)
    frames = [_symbol_bars(sym, days, seed) for sym in symbols]
    bars = pd.concat(frames, ignore_index=True)
    return bars.sort_values(["symbol", "ts"], kind="mergesort").reset_index(drop=True)


def _ohlcv(grouped) -> pd.DataFrame:
    return grouped.agg(
        open=("open", "first"),
        high=("high", "max"),
        low=("low", "min"),
        close=("close", "last"),
        volume=("volume", "sum"),
    )


def hourly(bars: pd.DataFrame) -> pd.DataFrame:
    """1h bars: ts = UTC hour bucket of the 1m bar opens (= ET hour bucket); first open, max, min, last close, sum."""
    frame = bars.sort_values(["symbol", "ts"], kind="mergesort").copy()
    frame["bucket"] = pd.to_datetime(frame["ts"], utc=True).dt.floor("h")
    out = _ohlcv(frame.groupby(["symbol", "bucket"], sort=True)).reset_index().rename(columns={"bucket": "ts"})
    return out[["symbol", "ts", "open", "high", "low", "close", "volume"]].reset_index(drop=True)


def session_daily(bars: pd.DataFrame) -> pd.DataFrame:
    """CME session bars: one per (symbol, trading date D); ts = 18:00 ET of D - 1 as UTC (the session open)."""
    frame = bars.sort_values(["symbol", "ts"], kind="mergesort").copy()
    frame["trading_date"] = trading_date(frame["ts"]).to_numpy()
    out = _ohlcv(frame.groupby(["symbol", "trading_date"], sort=True)).reset_index()
    wall_open = out["trading_date"] - pd.Timedelta(hours=6)  # 18:00 of the previous calendar day
    out["ts"] = wall_open.dt.tz_localize("America/New_York").dt.tz_convert("UTC")
    return out[["symbol", "ts", "open", "high", "low", "close", "volume"]].reset_index(drop=True)
