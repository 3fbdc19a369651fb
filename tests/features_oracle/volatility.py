"""Independent oracle for catalog features #61-#90 (category "volatility").

Implemented straight from ``shared/FEATURES.md`` with numpy/pandas (never through the SQL under test). Conventions
(NULL rules 1-5, recursive filters with SMA seed, guarded division, price floor) come from ``common``.

Readings chosen where the catalog leaves room (a TA-Lib / pandas user's reading):

* Window statistics (SUM/MEAN/VAR/STD/PCTRANK) are computed **per window** (numpy pairwise sum, two-pass variance)
  instead of pandas' add/remove running aggregates.  pandas ``rolling().var()`` on raw prices (~4000) is off by up to
  ~4e-7 relative (more than the dispersion tolerance 1e-8), and a running sum leaves ~1e-22 residue on an all-zero
  window (e.g. ``SUM_60(r**2)`` after a stale block), which ``sqrt`` and ``÷`` would turn into visible numbers.
  Per-window evaluation gives exactly 0 on all-zero windows, like DuckDB's segment-tree window aggregates.
* Bollinger ``U - L`` is evaluated as ``4·STDP_20(c)`` (algebraically identical, exactly 0 on flat windows, no
  cancellation against the mean); ``U`` and ``L`` themselves (``bb_pctb_20``, ``squeeze_on``) are ``MEAN ± 2·STDP``.
* ``sqrt`` of a negative mean (Garman-Klass / Rogers-Satchell, only possible on inconsistent bars with o or c outside
  [l, h]) is NULL, never NaN-with-warning or an error.
* ``squeeze_on`` compares with the text's strict inequalities and is NULL where ``WILDER_10(TR) < 1e-7·|c|`` (NULL
  rule 4): on a long stale block both band widths collapse to ~0 and the comparison would be decided by rounding.
* The price floor of ``÷p`` uses the current row's close ``c[t]`` (also for ``range_expansion_14``, whose denominator
  is ``atr_14[t-1]``).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from .common import BARS_PER_YEAR, PRICE_FLOOR, gdiv, lag, log_ratio, pdiv, rolling, true_range, wilder, ema

COLUMNS: list[str] = [
    "rv_cc_5",              # 61
    "rv_cc_20",             # 62
    "rv_cc_60",             # 63
    "rv_cc_240",            # 64
    "rv_up_20",             # 65
    "rv_down_20",           # 66
    "ewma_vol_32",          # 67
    "vol_parkinson_20",     # 68
    "vol_parkinson_60",     # 69
    "vol_gk_20",            # 70
    "vol_gk_60",            # 71
    "vol_rs_20",            # 72
    "vol_yz_20",            # 73
    "vol_yz_60",            # 74
    "atr_14",               # 75
    "natr_14",              # 76
    "atr_ratio_5_50",       # 77
    "hl_range_log",         # 78
    "range_expansion_14",   # 79
    "donchian_width_20",    # 80
    "bb_width_20",          # 81
    "bb_pctb_20",           # 82
    "kc_width_20",          # 83
    "kc_pos_20",            # 84
    "squeeze_on",           # 85
    "vov_20_60",            # 86
    "vol_ratio_20_240",     # 87
    "vol_ratio_pk_cc_20",   # 88
    "rv_pctrank_20_240",    # 89
    "rj_bv_60",             # 90
]

#: PCTRANK epsilon for computed floats (catalog section 3).
PCTRANK_EPS = 1e-9
#: Rows per block when evaluating windows (bounds the temporary (rows x n) arrays).
_CHUNK = 32_768


# --------------------------------------------------------------------------------------------------------------
# Generic per-window helpers (NULL rule 1: NULL unless the window holds n rows, all non-NULL)
# --------------------------------------------------------------------------------------------------------------

def _per_window(x: np.ndarray, n: int, func: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Apply ``func`` to the (rows, n) block of windows ending at each row t >= n-1; NaN before and where a window
    holds a NULL.  ``func`` maps a 2-D block to one value per row (its last column is x[t])."""
    x = np.asarray(x, float)
    out = np.full(len(x), np.nan)
    if len(x) < n:
        return out
    view = sliding_window_view(x, n)
    for start in range(0, len(view), _CHUNK):
        block = view[start:start + _CHUNK]
        with np.errstate(invalid="ignore"):
            vals = func(block)
        vals[np.isnan(block).any(axis=1)] = np.nan
        out[n - 1 + start:n - 1 + start + len(block)] = vals
    return out


def wsum(x: np.ndarray, n: int) -> np.ndarray:
    """SUM_n(x), each window summed on its own (exactly 0 on all-zero windows)."""
    return _per_window(x, n, lambda b: b.sum(axis=1))


def wmean(x: np.ndarray, n: int) -> np.ndarray:
    """MEAN_n(x) = SMA_n."""
    return wsum(x, n) / n


def wvar(x: np.ndarray, n: int, ddof: int = 1) -> np.ndarray:
    """VAR_n (ddof=1) / VARP_n (ddof=0): corrected two-pass per window, exactly 0 when FLAT_n(x) (NULL rule 3)."""

    def two_pass(b: np.ndarray) -> np.ndarray:
        d = b - b.mean(axis=1, keepdims=True)
        v = ((d * d).sum(axis=1) - d.sum(axis=1) ** 2 / n) / (n - ddof)
        v = np.maximum(v, 0.0)
        v[b.max(axis=1) == b.min(axis=1)] = 0.0
        return v

    return _per_window(x, n, two_pass)


def wstd(x: np.ndarray, n: int, ddof: int = 1) -> np.ndarray:
    """STD_n / STDP_n = sqrt(VAR), 0 on flat windows."""
    return np.sqrt(wvar(x, n, ddof))


def pctrank(x: np.ndarray, n: int, eps: float) -> np.ndarray:
    """PCTRANK_n(x) = (1/n)·#{k in window : x[k] <= x[t] + eps·|x[t]|}, current row included."""

    def rank(b: np.ndarray) -> np.ndarray:
        cur = b[:, -1:]
        return (b <= cur + eps * np.abs(cur)).sum(axis=1) / n

    return _per_window(x, n, rank)


def nsqrt(x: np.ndarray) -> np.ndarray:
    """sqrt that maps NULL and negative arguments to NULL (no warnings)."""
    x = np.asarray(x, float)
    out = np.full(len(x), np.nan)
    ok = x >= 0
    out[ok] = np.sqrt(x[ok])
    return out


# --------------------------------------------------------------------------------------------------------------
# Features (one small function per feature or tight group)
# --------------------------------------------------------------------------------------------------------------

def rv_cc(r: np.ndarray, n: int, N: float) -> np.ndarray:
    """#61-#64 ``sqrt(N)·STD_n(r)``; first = n (r is NULL at t = 0)."""
    return math.sqrt(N) * wstd(r, n, ddof=1)


def rv_semi(r: np.ndarray, n: int, N: float) -> tuple[np.ndarray, np.ndarray]:
    """#65/#66 upside / downside semivol ``sqrt(N·MEAN_n(max(r,0)²))``, ``sqrt(N·MEAN_n(min(r,0)²))``, not demeaned."""
    up = np.maximum(r, 0.0)  # NaN propagates
    dn = np.minimum(r, 0.0)
    return nsqrt(N * wmean(up * up, n)), nsqrt(N * wmean(dn * dn, n))


def ewma_vol(r: np.ndarray, n: int, N: float) -> np.ndarray:
    """#67 ``sqrt(N·EMA_n(r²))``, EMA seeded with the mean of r² rows 1..n (first = n)."""
    return nsqrt(N * ema(r * r, n))


def vol_parkinson(hl: np.ndarray, n: int, N: float) -> np.ndarray:
    """#68/#69 ``sqrt(N·MEAN_n(ln(h/l)²) / (4·ln 2))``; first = n-1."""
    return nsqrt(N * wmean(hl * hl, n) / (4.0 * math.log(2.0)))


def vol_gk(hl: np.ndarray, co: np.ndarray, n: int, N: float) -> np.ndarray:
    """#70/#71 Garman-Klass ``sqrt(N·MEAN_n(0.5·ln(h/l)² − (2·ln 2 − 1)·ln(c/o)²))``; first = n-1."""
    term = 0.5 * hl * hl - (2.0 * math.log(2.0) - 1.0) * co * co
    return nsqrt(N * wmean(term, n))


def rogers_satchell(o: np.ndarray, h: np.ndarray, l: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Per-bar ``rs = ln(h/c)·ln(h/o) + ln(l/c)·ln(l/o)`` (NULL if any log is NULL)."""
    return log_ratio(h, c) * log_ratio(h, o) + log_ratio(l, c) * log_ratio(l, o)


def vol_yz(on: np.ndarray, co: np.ndarray, rs: np.ndarray, n: int, N: float) -> np.ndarray:
    """#73/#74 Yang-Zhang ``sqrt(N·(VAR_n(on) + k·VAR_n(co) + (1−k)·MEAN_n(rs)))``,
    ``k = 0.34 / (1.34 + (n+1)/(n−1))``; ``on`` = ln(o / c[t-1]) is NULL at t = 0, so first = n."""
    k = 0.34 / (1.34 + (n + 1) / (n - 1))
    return nsqrt(N * (wvar(on, n) + k * wvar(co, n) + (1.0 - k) * wmean(rs, n)))


def bollinger(c: np.ndarray, n: int = 20, width: float = 2.0):
    """MEAN_n(c), STDP_n(c) and the bands U, L = MEAN ± width·STDP (population sd, TA-Lib BBANDS)."""
    mid = wmean(c, n)
    sd = wstd(c, n, ddof=0)
    return mid, sd, mid + width * sd, mid - width * sd


def squeeze(upper: np.ndarray, lower: np.ndarray, kc_mid: np.ndarray, atr10: np.ndarray, c: np.ndarray) -> np.ndarray:
    """#85 1 if ``U < EMA_20 + 1.5·W10`` and ``L > EMA_20 − 1.5·W10`` else 0; NULL where any input is NULL or
    where ``W10 < PRICE_FLOOR·|c|`` (NULL rule 4: the comparison is decided by rounding there)."""
    flag = ((upper < kc_mid + 1.5 * atr10) & (lower > kc_mid - 1.5 * atr10)).astype(float)
    flag[np.isnan(upper) | np.isnan(lower) | np.isnan(kc_mid) | np.isnan(atr10)] = np.nan
    with np.errstate(invalid="ignore"):
        flag[atr10 < PRICE_FLOOR * np.abs(c)] = np.nan
    return flag


def vov(rv20: np.ndarray, n: int = 60) -> np.ndarray:
    """#86 ``STD_n(rv_cc_20) ÷ MEAN_n(rv_cc_20)`` (sample sd); first = 20 + n − 1 = 79."""
    return gdiv(wstd(rv20, n, ddof=1), wmean(rv20, n))


def rj_bv(r: np.ndarray, n: int = 60) -> np.ndarray:
    """#90 ``(RV − BV) ÷ RV``, ``RV = SUM_n(r²)``, ``BV = (π/2)·SUM_n(|r|·|r[t-1]|)``; first = n + 1 (the product
    is NULL at t <= 1)."""
    rv = wsum(r * r, n)
    bv = (math.pi / 2.0) * wsum(np.abs(r) * np.abs(lag(r, 1)), n)
    return gdiv(rv - bv, rv)


# --------------------------------------------------------------------------------------------------------------

def compute(bars: pd.DataFrame, timeframe: str) -> pd.DataFrame:
    """Volatility features #61-#90 of one symbol's partition.

    Parameters
    ----------
    bars : pandas.DataFrame
        One symbol's bars sorted by ``ts``: columns ``symbol, ts, open, high, low, close, volume``; missing minutes
        are absent rows (windows count rows, never clock time).
    timeframe : {'1m', '1h', '1d'}
        Selects the bars per year ``N`` used for annualization (347,760 / 5,796 / 252).

    Returns
    -------
    pandas.DataFrame
        Exactly :data:`COLUMNS` in catalog order, same index and length as ``bars``, float64; NaN means NULL
        (warm-up, guarded division, price floor, non-positive prices under a log).  ``squeeze_on`` is 0/1 as float.
        No value is ever infinite.

    Raises
    ------
    ValueError
        If ``timeframe`` is not one of '1m', '1h', '1d'.
    """
    if timeframe not in BARS_PER_YEAR:
        raise ValueError(f"unknown timeframe {timeframe!r}; expected one of {sorted(BARS_PER_YEAR)}")
    N = BARS_PER_YEAR[timeframe]
    if len(bars) == 0:  # common.true_range indexes row 0
        return pd.DataFrame({name: pd.Series(dtype="float64") for name in COLUMNS}, index=bars.index)
    o = bars["open"].to_numpy(float)
    h = bars["high"].to_numpy(float)
    l = bars["low"].to_numpy(float)
    c = bars["close"].to_numpy(float)

    r = log_ratio(c, lag(c, 1))          # 1-bar log return, NULL at t = 0
    hl = log_ratio(h, l)                 # ln(h/l)
    co = log_ratio(c, o)                 # ln(c/o)
    on = log_ratio(o, lag(c, 1))         # "overnight" = open vs previous bar's close
    rs = rogers_satchell(o, h, l, c)
    tr = true_range(h, l, c)             # NULL at t = 0

    atr14 = wilder(tr, 14)
    atr5, atr10, atr50 = wilder(tr, 5), wilder(tr, 10), wilder(tr, 50)
    ema20 = ema(c, 20)
    bb_mid, bb_sd, bb_up, bb_lo = bollinger(c)
    bb_range = 4.0 * bb_sd               # U − L, exactly 0 on a flat window

    out: dict[str, np.ndarray] = {}
    for n in (5, 20, 60, 240):
        out[f"rv_cc_{n}"] = rv_cc(r, n, N)
    out["rv_up_20"], out["rv_down_20"] = rv_semi(r, 20, N)
    out["ewma_vol_32"] = ewma_vol(r, 32, N)
    for n in (20, 60):
        out[f"vol_parkinson_{n}"] = vol_parkinson(hl, n, N)
    for n in (20, 60):
        out[f"vol_gk_{n}"] = vol_gk(hl, co, n, N)
    out["vol_rs_20"] = nsqrt(N * wmean(rs, 20))
    for n in (20, 60):
        out[f"vol_yz_{n}"] = vol_yz(on, co, rs, n, N)
    out["atr_14"] = atr14
    out["natr_14"] = 100.0 * gdiv(atr14, c)                    # plain ÷ (not ÷p) per the catalog
    out["atr_ratio_5_50"] = pdiv(atr5, atr50, c)
    out["hl_range_log"] = hl
    out["range_expansion_14"] = pdiv(tr, lag(atr14, 1), c)     # floor against the current close c[t]
    out["donchian_width_20"] = log_ratio(rolling(h, 20).max().to_numpy(), rolling(l, 20).min().to_numpy())
    out["bb_width_20"] = gdiv(bb_range, bb_mid)
    out["bb_pctb_20"] = pdiv(c - bb_lo, bb_range, c)
    out["kc_width_20"] = gdiv(4.0 * atr10, ema20)
    out["kc_pos_20"] = pdiv(c - (ema20 - 2.0 * atr10), 4.0 * atr10, c)
    out["squeeze_on"] = squeeze(bb_up, bb_lo, ema20, atr10, c)
    out["vov_20_60"] = vov(out["rv_cc_20"], 60)
    out["vol_ratio_20_240"] = gdiv(out["rv_cc_20"], out["rv_cc_240"])
    out["vol_ratio_pk_cc_20"] = gdiv(out["vol_parkinson_20"], out["rv_cc_20"])
    out["rv_pctrank_20_240"] = pctrank(out["rv_cc_20"], 240, PCTRANK_EPS)
    out["rj_bv_60"] = rj_bv(r, 60)

    frame = pd.DataFrame({name: np.asarray(out[name], dtype="float64") for name in COLUMNS}, index=bars.index)
    values = frame.to_numpy()
    assert not np.isinf(values).any(), "oracle produced inf"
    return frame
