"""Shared definitions of the catalog's sections 1, 3 and 4, for the oracle.

Every function takes numpy arrays (float64 with NaN for NULL) of ONE partition (one symbol, ordered by ts).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: NULL rule 4: a price-unit denominator below PRICE_FLOOR * |c| counts as zero.
PRICE_FLOOR = 1e-7
#: Ties in computed prices (tp): "up" means tp - tp[t-1] > TIE_EPS * |tp[t-1]|.
TIE_EPS = 1e-10
#: Bars per year by timeframe (annualization, catalog section 1).
BARS_PER_YEAR = {"1m": 347_760.0, "1h": 5_796.0, "1d": 252.0}
#: RTH windows [open, close) in ET minute of day; symbol matched by the longest key that prefixes it.
RTH = {
    **{k: (570, 960) for k in ("ES", "NQ", "YM", "RTY", "MES", "MNQ", "MYM", "M2K")},
    **{k: (540, 870) for k in ("CL", "NG", "RB", "HO", "MCL")},
    **{k: (500, 810) for k in ("GC", "SI", "HG", "MGC")},
    **{k: (500, 900) for k in ("ZN", "ZB", "ZF", "ZT", "UB", "TN")},
    **{k: (500, 900) for k in ("6E", "6J", "6B", "6A", "6C", "6S", "6N", "6M")},
}
RTH_DEFAULT = (570, 960)


def rth_window(symbol: str) -> tuple[int, int]:
    """RTH [open, close) minutes of ``symbol`` by the longest matching key."""
    keys = [k for k in RTH if symbol.startswith(k)]
    return RTH[max(keys, key=len)] if keys else RTH_DEFAULT


def et(ts: pd.Series) -> pd.Series:
    """UTC timestamps to America/New_York wall time."""
    return pd.to_datetime(ts, utc=True).dt.tz_convert("America/New_York")


def trading_date(ts: pd.Series) -> pd.Series:
    """D(ts): ET date, plus one day when ET time >= 18:00 (as datetime64 at midnight)."""
    local = et(ts)
    day = local.dt.tz_localize(None).dt.normalize()
    return day + pd.to_timedelta((local.dt.hour >= 18).astype(int), unit="D")


def session_index(dates: pd.Series) -> np.ndarray:
    """sid: 0-based rank of the trading date among the dates present in the partition."""
    uniq = np.unique(dates.values)
    return np.searchsorted(uniq, dates.values)


def minute_of_day(ts: pd.Series) -> np.ndarray:
    local = et(ts)
    return (local.dt.hour * 60 + local.dt.minute).to_numpy()


def lag(x: np.ndarray, k: int) -> np.ndarray:
    out = np.full(len(x), np.nan)
    if k < len(x):
        out[k:] = x[: len(x) - k]
    return out


def gdiv(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Guarded division: NaN when b == 0 or either side is NaN."""
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = a / b
    out[(b == 0) | np.isnan(a) | np.isnan(b)] = np.nan
    return out


def pdiv(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Price-scale division: as gdiv, and NaN when |b| < PRICE_FLOOR * |c|."""
    out = gdiv(a, b)
    out[np.abs(b) < PRICE_FLOOR * np.abs(c)] = np.nan
    return out


def log_ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ln(a / b), NaN unless a > 0 and b > 0."""
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    ok = (a > 0) & (b > 0)
    out = np.full(len(a), np.nan)
    out[ok] = np.log(a[ok] / b[ok])
    return out


def recursive_filter(x: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """Section 4: SMA seed of the first n non-NULL inputs, then y = alpha*x + (1-alpha)*y; NULL rows skipped."""
    out = np.full(len(x), np.nan)
    seen = 0
    total = 0.0
    y = np.nan
    beta = 1.0 - alpha
    for i, value in enumerate(x):
        if np.isnan(value):
            continue
        if seen < n:
            total += value
            seen += 1
            if seen == n:
                y = total / n
                out[i] = y
        else:
            y = alpha * value + beta * y
            out[i] = y
    return out


def ema(x: np.ndarray, n: int) -> np.ndarray:
    return recursive_filter(np.asarray(x, float), n, 2.0 / (n + 1))


def wilder(x: np.ndarray, n: int) -> np.ndarray:
    return recursive_filter(np.asarray(x, float), n, 1.0 / n)


def rolling(x: np.ndarray, n: int) -> pd.core.window.rolling.Rolling:
    """pandas rolling(n): NaN unless n rows, all non-NULL (NULL rule 1)."""
    return pd.Series(np.asarray(x, float)).rolling(n, min_periods=n)


def flat(x: np.ndarray, n: int) -> np.ndarray:
    """FLAT_n(x): max == min over the full window (NaN where the window is not full)."""
    r = rolling(x, n)
    mx, mn = r.max().to_numpy(), r.min().to_numpy()
    out = (mx == mn).astype(float)
    out[np.isnan(mx)] = np.nan
    return out


def var(x: np.ndarray, n: int, ddof: int = 1) -> np.ndarray:
    """VAR_n (ddof=1) / VARP_n (ddof=0), exactly 0 on flat windows (NULL rule 3)."""
    v = rolling(x, n).var(ddof=ddof).to_numpy()
    f = flat(x, n)
    v[f == 1] = 0.0
    return v


def std(x: np.ndarray, n: int, ddof: int = 1) -> np.ndarray:
    return np.sqrt(var(x, n, ddof))


def true_range(h: np.ndarray, l: np.ndarray, c: np.ndarray) -> np.ndarray:
    pc = lag(c, 1)
    tr = np.maximum(h - l, np.maximum(np.abs(h - pc), np.abs(l - pc)))
    tr[0] = np.nan
    return tr


def typical_price(h: np.ndarray, l: np.ndarray, c: np.ndarray) -> np.ndarray:
    return (h + l + c) / 3


def tick_sign(c: np.ndarray) -> np.ndarray:
    s = np.sign(c - lag(c, 1))
    return s  # NaN at t = 0


def money_flow_multiplier(h: np.ndarray, l: np.ndarray, c: np.ndarray) -> np.ndarray:
    rng = h - l
    with np.errstate(divide="ignore", invalid="ignore"):
        m = ((c - l) - (h - c)) / rng
    m[rng == 0] = 0.0
    return m


# -- exact per-window statistics (two-pass on each window; pandas running updates drift on price levels) -----

WINDOW_CHUNK = 32_768  # rows per block of sliding windows (bounds memory to CHUNK * n floats)


def window_apply(fn, n: int, *xs: np.ndarray) -> np.ndarray:  # noqa: ANN001
    """Apply ``fn(W1, W2, ...)`` to the (m, n) matrices of full windows of each input, block by block.

    Row t (t >= n-1) gets ``fn`` of rows t-n+1..t; rows whose window holds a NULL in any input are NULL
    (NULL rule 1), as are rows t < n-1 and any non-finite result.
    """
    length = len(xs[0])
    out = np.full(length, np.nan)
    if length < n:
        return out
    bad = np.zeros(length, bool)
    for x in xs:
        bad |= np.isnan(np.asarray(x, float))
    any_bad = rolling(bad.astype(float), n).max().to_numpy() > 0
    views = [np.lib.stride_tricks.sliding_window_view(np.nan_to_num(np.asarray(x, float), nan=0.0), n) for x in xs]
    for start in range(0, length - n + 1, WINDOW_CHUNK):
        stop = min(start + WINDOW_CHUNK, length - n + 1)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            out[start + n - 1 : stop + n - 1] = fn(*(v[start:stop] for v in views))
    out[any_bad] = np.nan
    out[~np.isfinite(out)] = np.nan
    return out


def window_is_flat(w: np.ndarray) -> np.ndarray:
    """FLAT over each window row (exact comparison)."""
    return w.max(axis=1) == w.min(axis=1)


def window_slope(y: np.ndarray, n: int) -> np.ndarray:
    """SLOPE_n(y): OLS slope per bar of y on the in-window offset j = 0..n-1."""
    j = np.arange(n, dtype=float) - (n - 1) / 2.0
    sjj = float(j @ j)
    return window_apply(lambda w: ((w - w.mean(axis=1, keepdims=True)) @ j) / sjj, n, y)


def window_corr(x: np.ndarray, y: np.ndarray, n: int) -> np.ndarray:
    """CORR_n(x, y), two-pass Pearson; NULL when either window is flat."""

    def fn(wx: np.ndarray, wy: np.ndarray) -> np.ndarray:
        dx = wx - wx.mean(axis=1, keepdims=True)
        dy = wy - wy.mean(axis=1, keepdims=True)
        sxx, syy = (dx * dx).sum(axis=1), (dy * dy).sum(axis=1)
        rho = (dx * dy).sum(axis=1) / np.sqrt(sxx * syy)
        rho[window_is_flat(wx) | window_is_flat(wy) | (sxx == 0) | (syy == 0)] = np.nan
        return rho

    return window_apply(fn, n, x, y)
