"""Oracle of the catalog's "structure" category, features #91-#120 (shared/FEATURES.md, section 6).

Written from the catalog text with numpy/pandas only (TA-Lib and pandas' rolling moments are used by the tests of
this oracle, never here). NULL is NaN. Integer features (flags, counts) are returned as 0/1 or counts in float64.

Readings chosen where the catalog text leaves room (each is repeated at the function concerned):

* ``plus_di_14`` / ``minus_di_14``: plain ``÷`` as written (NULL rule 4: the price floor applies only where the
  table marks ``÷p``). In a stale feed the Wilder sums of ±DM and of TR decay by the same factor, so both DI, DX and
  ADX keep their values there, as in TA-Lib. DX is NULL only where a DI is NULL or ``+DI + −DI = 0``; ADX's Wilder
  filter skips those rows (its output is NULL there and its state is kept).
* ``donchian_pos_55`` and ``session_range_pos`` divide by ``max − min`` of raw input prices: plain ``÷`` as written
  (the denominator is exact, not a decayed filter, and rule 4 does not list it).
* ``kurt_60`` is NULL on a flat window like ``skew_60`` (the kurtosis of a constant series is undefined, and the
  catalog defines kurt "as" the same moments).
* ``autocorr_1_60`` needs 60 rows where both ``r`` and ``r[t-1]`` are non-NULL, so its first row is 61.
* ``overnight_gap``: the value is defined on every row of D at or after (in row order) D's first RTH row, so
  post-RTH rows of D (16:00-17:00 ET for ES) carry it too. The "latest earlier date with RTH rows" may be any
  earlier date present, including sid 0 (only the current row's sid must be >= 2). RTH membership uses the
  bar's open minute: ``rth_open <= minute_of_day < rth_close``; the product is ``bars.symbol`` (first row).
"""

from __future__ import annotations


import numpy as np
import pandas as pd

from .common import (
    window_apply,
    window_corr,
    window_is_flat,
    window_slope,
    gdiv,
    lag,
    log_ratio,
    minute_of_day,
    rolling,
    rth_window,
    session_index,
    trading_date,
    true_range,
    var,
    wilder,
)

COLUMNS: list[str] = [
    "dist_high_20",
    "dist_low_20",
    "dist_high_240",
    "dist_low_240",
    "donchian_pos_55",
    "breakout_high_20",
    "breakout_low_20",
    "hh_count_10",
    "ll_count_10",
    "inside_bar",
    "outside_bar",
    "adx_14",
    "plus_di_14",
    "minus_di_14",
    "linreg_slope_20",
    "linreg_r2_20",
    "linreg_slope_60",
    "linreg_r2_60",
    "variance_ratio_5_120",
    "autocorr_1_60",
    "skew_60",
    "kurt_60",
    "efficiency_ratio_10",
    "dist_prev_session_high",
    "dist_prev_session_low",
    "dist_prev_session_close",
    "session_gap",
    "overnight_gap",
    "dist_session_open",
    "session_range_pos",
]



# ----------------------------------------------------------------------------------------------------------------
# generic helpers (window statistics by explicit two-pass sums over each window)
# ----------------------------------------------------------------------------------------------------------------





def _r2(y: np.ndarray, n: int) -> np.ndarray:
    """R2_n(y) = sxy² / (sxx·syy) of y on the bar offset; NULL if FLAT_n(y)."""
    j = np.arange(n) - (n - 1) / 2.0
    sxx = float(j @ j)

    def fn(w: np.ndarray) -> np.ndarray:
        d = w - w.mean(axis=1, keepdims=True)
        sxy = d @ j
        syy = (d * d).sum(axis=1)
        r2 = sxy * sxy / (sxx * syy)
        r2[window_is_flat(w) | (syy == 0)] = np.nan
        return r2

    return window_apply(fn, n, y)



def _central_moments(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = w - w.mean(axis=1, keepdims=True)
    d2 = d * d
    return d2.mean(axis=1), (d2 * d).mean(axis=1), (d2 * d2).mean(axis=1)


def _skew(x: np.ndarray, n: int) -> np.ndarray:
    """G1 = sqrt(n(n−1))/(n−2) · m3 / m2^1.5 (pandas ``rolling.skew``); NULL if flat."""

    def fn(w: np.ndarray) -> np.ndarray:
        m2, m3, _ = _central_moments(w)
        g1 = np.sqrt(n * (n - 1.0)) / (n - 2.0) * m3 / m2**1.5
        g1[window_is_flat(w) | (m2 == 0)] = np.nan
        return g1

    return window_apply(fn, n, x)


def _kurt(x: np.ndarray, n: int) -> np.ndarray:
    """G2 = (n−1)/((n−2)(n−3)) · ((n+1)(m4/m2² − 3) + 6) (pandas ``rolling.kurt``); NULL if flat."""

    def fn(w: np.ndarray) -> np.ndarray:
        m2, _, m4 = _central_moments(w)
        g2 = (n - 1.0) / ((n - 2.0) * (n - 3.0)) * ((n + 1.0) * (m4 / (m2 * m2) - 3.0) + 6.0)
        g2[window_is_flat(w) | (m2 == 0)] = np.nan
        return g2

    return window_apply(fn, n, x)


def _flag(cond: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """0/1 flag as float, NaN where ``valid`` is False (warm-up)."""
    out = cond.astype(float)
    out[~valid] = np.nan
    return out


# ----------------------------------------------------------------------------------------------------------------
# features
# ----------------------------------------------------------------------------------------------------------------


def _channels(h: np.ndarray, l: np.ndarray, c: np.ndarray) -> dict[str, np.ndarray]:
    """#91-#97: distances to rolling extremes (current bar included), Donchian position, breakouts."""
    hh20, ll20 = rolling(h, 20).max().to_numpy(), rolling(l, 20).min().to_numpy()
    hh240, ll240 = rolling(h, 240).max().to_numpy(), rolling(l, 240).min().to_numpy()
    hh55, ll55 = rolling(h, 55).max().to_numpy(), rolling(l, 55).min().to_numpy()
    prev_hh20, prev_ll20 = lag(hh20, 1), lag(ll20, 1)
    return {
        "dist_high_20": log_ratio(c, hh20),
        "dist_low_20": log_ratio(c, ll20),
        "dist_high_240": log_ratio(c, hh240),
        "dist_low_240": log_ratio(c, ll240),
        # plain ÷ on max − min of raw prices (see module docstring)
        "donchian_pos_55": gdiv(c - ll55, hh55 - ll55),
        "breakout_high_20": _flag(c > prev_hh20, ~np.isnan(prev_hh20)),
        "breakout_low_20": _flag(c < prev_ll20, ~np.isnan(prev_ll20)),
    }


def _bar_patterns(h: np.ndarray, l: np.ndarray) -> dict[str, np.ndarray]:
    """#98-#101: higher-high / lower-low counts over 10 bars, inside (non-strict) and outside (strict) bars."""
    ph, pl = lag(h, 1), lag(l, 1)
    valid = ~np.isnan(ph)
    hh = _flag(h > ph, valid)  # NULL at t = 0
    ll = _flag(l < pl, valid)
    return {
        "hh_count_10": rolling(hh, 10).sum().to_numpy(),
        "ll_count_10": rolling(ll, 10).sum().to_numpy(),
        "inside_bar": _flag((h <= ph) & (l >= pl), valid),
        "outside_bar": _flag((h > ph) & (l < pl), valid),
    }


def _dmi(h: np.ndarray, l: np.ndarray, c: np.ndarray) -> dict[str, np.ndarray]:
    """#102-#104: Wilder's directional movement with the catalog's SMA-seeded WILDER_14.

    +DM/−DM and TR start at row 1, so both DI first appear at row 14 (seed = mean of rows 1..14). The DI use
    plain ÷ (no price floor: numerator and denominator decay together in a stale feed; see module docstring).
    DX is NULL where a DI is NULL or +DI + −DI = 0; WILDER_14(DX) skips those rows (section 4), first at row 27.
    """
    up = h - lag(h, 1)
    dn = lag(l, 1) - l
    pdm = np.where((up > dn) & (up > 0), up, 0.0)
    mdm = np.where((dn > up) & (dn > 0), dn, 0.0)
    pdm[0] = mdm[0] = np.nan
    atr = wilder(true_range(h, l, c), 14)
    plus_di = 100.0 * gdiv(wilder(pdm, 14), atr)
    minus_di = 100.0 * gdiv(wilder(mdm, 14), atr)
    dx = 100.0 * gdiv(np.abs(plus_di - minus_di), plus_di + minus_di)
    return {"adx_14": wilder(dx, 14), "plus_di_14": plus_di, "minus_di_14": minus_di}


def _regression(c: np.ndarray) -> dict[str, np.ndarray]:
    """#105-#108: OLS slope (per bar) and R² of ln c on the bar offset; ln c NULL where c <= 0."""
    ln_c = log_ratio(c, np.ones_like(c))
    return {
        "linreg_slope_20": window_slope(ln_c, 20),
        "linreg_r2_20": _r2(ln_c, 20),
        "linreg_slope_60": window_slope(ln_c, 60),
        "linreg_r2_60": _r2(ln_c, 60),
    }


def _return_stats(c: np.ndarray) -> dict[str, np.ndarray]:
    """#109-#113: variance ratio, lag-1 autocorrelation, skew, kurtosis of r; Kaufman efficiency ratio."""
    r = log_ratio(c, lag(c, 1))  # NULL at t = 0
    logret_5 = log_ratio(c, lag(c, 5))  # NULL at t < 5
    # VAR_* are 0 on flat windows (common.var): a flat r window makes the ratio NULL, a flat logret_5 window 0.
    vr = gdiv(var(logret_5, 120), 5.0 * var(r, 120))
    path = rolling(np.abs(c - lag(c, 1)), 10).sum().to_numpy()
    return {
        "variance_ratio_5_120": vr,
        "autocorr_1_60": window_corr(r, lag(r, 1), 60),
        "skew_60": _skew(r, 60),
        "kurt_60": _kurt(r, 60),
        "efficiency_ratio_10": gdiv(np.abs(c - lag(c, 10)), path),
    }


def _sessions(bars: pd.DataFrame, o: np.ndarray, h: np.ndarray, l: np.ndarray, c: np.ndarray) -> dict:
    """#114-#120: prior-session levels (sid >= 2), session-so-far levels (sid >= 1), RTH overnight gap."""
    sid = session_index(trading_date(bars["ts"]))
    idx = np.arange(len(c))
    g = pd.DataFrame({"sid": sid, "o": o, "h": h, "l": l, "c": c, "i": idx}).groupby("sid", sort=True)
    first_open = g["o"].first().to_numpy()  # per sid (sids are 0..S-1, all present)
    last_close = g["c"].last().to_numpy()
    high, low = g["h"].max().to_numpy(), g["l"].min().to_numpy()

    prior = sid >= 2
    ps = np.where(prior, sid - 1, 0)

    def at_prior(agg: np.ndarray) -> np.ndarray:
        out = agg[ps].astype(float)
        out[~prior] = np.nan
        return out

    current = sid >= 1
    sess_open = np.where(current, first_open[sid], np.nan)
    run_high = pd.Series(h).groupby(sid).cummax().to_numpy()
    run_low = pd.Series(l).groupby(sid).cummin().to_numpy()
    return {
        "dist_prev_session_high": log_ratio(c, at_prior(high)),
        "dist_prev_session_low": log_ratio(c, at_prior(low)),
        "dist_prev_session_close": log_ratio(c, at_prior(last_close)),
        "session_gap": log_ratio(np.where(prior, first_open[sid], np.nan), at_prior(last_close)),
        "overnight_gap": _overnight_gap(bars, sid, o, c),
        "dist_session_open": log_ratio(c, sess_open),
        # plain ÷ on max − min of raw prices (see module docstring)
        "session_range_pos": gdiv(c - run_low, np.where(current, run_high - run_low, np.nan)),
    }


def _overnight_gap(bars: pd.DataFrame, sid: np.ndarray, o: np.ndarray, c: np.ndarray) -> np.ndarray:
    """#118: ln(open of D's first RTH row / close of the last RTH row of the latest earlier date with RTH rows).

    Defined on rows of D at or after (row order) D's first RTH row, when sid >= 2 and such an earlier date exists.
    """
    out = np.full(len(c), np.nan)
    if len(c) == 0:
        return out
    lo, hi = rth_window(str(bars["symbol"].iloc[0]))
    mod = minute_of_day(bars["ts"])
    rth_rows = np.flatnonzero((mod >= lo) & (mod < hi))
    if len(rth_rows) == 0:
        return out
    rth = pd.DataFrame({"sid": sid[rth_rows], "i": rth_rows}).groupby("sid")["i"].agg(["min", "max"])
    prev_close = np.nan  # close of the last RTH row of the latest earlier date with RTH rows
    for s, first, last in zip(rth.index.to_numpy(), rth["min"].to_numpy(), rth["max"].to_numpy()):
        if s >= 2 and not np.isnan(prev_close):
            end = np.searchsorted(sid, s, side="right")  # sid is non-decreasing: D's rows end here
            out[first:end] = log_ratio(np.array([o[first]]), np.array([prev_close]))[0]
        prev_close = c[last]
    return out


def compute(bars: pd.DataFrame, timeframe: str) -> pd.DataFrame:
    """Structure features #91-#120 of one symbol's bars.

    Parameters
    ----------
    bars : pandas.DataFrame
        One symbol's partition sorted by ``ts``, with columns ``symbol``, ``ts`` (tz-aware UTC bar open time),
        ``open``, ``high``, ``low``, ``close`` (float64) and ``volume`` (int64). Missing minutes are absent rows;
        every window counts rows.
    timeframe : str
        ``"1m"``, ``"1h"`` or ``"1d"``. No structure feature is annualized, so it does not change any value; it is
        accepted for the common oracle interface (on ``1d`` bars the session features degenerate as the catalog
        says, e.g. ``dist_session_open = ln(c/o)`` and ``overnight_gap`` NULL).

    Returns
    -------
    pandas.DataFrame
        Exactly :data:`COLUMNS` in catalog order, indexed like ``bars``, float64; NaN is NULL (warm-up, guarded
        division, flat windows, non-positive prices). Flags and counts are 0/1 and counts as floats. Never inf.
    """
    if timeframe not in ("1m", "1h", "1d"):
        raise ValueError(f"unknown timeframe {timeframe!r}")
    o, h, l, c = (bars[k].to_numpy(dtype=float) for k in ("open", "high", "low", "close"))
    if len(c) == 0:
        return pd.DataFrame({k: pd.Series(dtype=float) for k in COLUMNS}, index=bars.index)
    cols: dict[str, np.ndarray] = {}
    cols.update(_channels(h, l, c))
    cols.update(_bar_patterns(h, l))
    cols.update(_dmi(h, l, c))
    cols.update(_regression(c))
    cols.update(_return_stats(c))
    cols.update(_sessions(bars, o, h, l, c))
    out = pd.DataFrame({k: np.asarray(cols[k], dtype=float) for k in COLUMNS}, index=bars.index)
    return out.where(np.isfinite(out.to_numpy()))
