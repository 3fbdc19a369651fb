"""Oracle of catalog features #1-#30, category "price action" (shared/FEATURES.md, section 6).

Written from the catalog text with numpy/pandas and the shared helpers of ``common``; NULL is NaN.
Conventions (catalog sections 3-4): NULL rule 1 = pandas ``rolling(n)`` (``common.rolling``), ``÷`` =
``common.gdiv``, ``÷p`` = ``common.pdiv`` (floor 1e-7*|c[t]|), dispersions are exactly 0 on flat windows
(``common.var/std``, and ``_mad`` below), EMA/Wilder are SMA-seeded and skip NULL inputs (``common.ema/wilder``).

Readings chosen where the text leaves room (a TA-Lib/pandas user's expectation):

* ``cci_20``: the price floor is tested on ``MAD_20(tp)`` itself (as the row says "floor on MAD_20(tp)" and
  NULL rule 4 lists ``MAD_20(tp)``), not on ``0.015*MAD_20(tp)``; the division is by ``0.015*MAD``.
* ``rsi_n``: ``G``/``L`` are NULL at t = 0, so the Wilder seed is the mean of rows 1..n (TA-Lib RSI); the RSI is
  NULL when ``WILDER(G) + WILDER(L) = 0`` (TA-Lib returns 0 there).
* ``stoch_k_14_3`` / ``stoch_d_14_3_3``: a NULL fast %K (flat 14-bar window) makes the 3-bar means NULL for the
  3 rows whose window contains it (NULL rule 1; TA-Lib substitutes 0).
* ``trix_15``: ``E[t-1]`` is the previous row's ``E`` (LAG, not the previous non-NULL value).
* ``ret_sigma_20``: ``÷`` (not ``÷p``: the denominator is a return dispersion, not a price), so only a flat
  (exactly 0) 20-bar sd of ``r`` gives NULL.
* ``aroon_*``: BARS_SINCE_MAX over 26 rows, all 26 inputs must be non-NULL (NULL rule 1); ties pick the most
  recent row (TA-Lib AROON).
* ``atr_14`` for the ``*_atr`` features is ``WILDER_14(TR)`` with TR NULL at t = 0 (first value = mean of
  TR rows 1..14, output at row 14).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from .common import (
    BARS_PER_YEAR,
    PRICE_FLOOR,
    ema,
    flat,
    gdiv,
    lag,
    log_ratio,
    pdiv,
    rolling,
    std,
    true_range,
    typical_price,
    wilder,
)

COLUMNS: list[str] = [
    "ret_1",
    "logret_1",
    "logret_5",
    "logret_15",
    "logret_60",
    "logret_240",
    "mom_10",
    "roc_10",
    "rsi_2",
    "rsi_14",
    "stoch_k_14_3",
    "stoch_d_14_3_3",
    "willr_14",
    "cci_20",
    "macd_12_26",
    "macd_signal_12_26_9",
    "macd_hist_12_26_9",
    "ppo_12_26",
    "trix_15",
    "aroon_up_25",
    "aroon_down_25",
    "zscore_close_20",
    "dist_sma_20_atr",
    "dist_ema_50_atr",
    "ret_sigma_20",
    "clv",
    "body_ratio",
    "upper_wick_ratio",
    "lower_wick_ratio",
    "gap_open",
]


# --------------------------------------------------------------------------- window helpers (local)


def _windows(x: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Full windows of ``x`` ending at rows n-1.. and a mask of windows free of NULLs (NULL rule 1)."""
    w = sliding_window_view(x, n)
    return w, ~np.isnan(w).any(axis=1)


def _mad(x: np.ndarray, n: int) -> np.ndarray:
    """MAD_n(x): mean abs deviation from the current window's mean; 0 on flat windows; NaN unless full."""
    out = np.full(len(x), np.nan)
    if len(x) < n:
        return out
    w, ok = _windows(x, n)
    m = w.mean(axis=1, keepdims=True)
    mad = np.abs(w - m).mean(axis=1)
    mad[~ok] = np.nan
    out[n - 1 :] = mad
    out[flat(x, n) == 1] = 0.0
    return out


def _bars_since_max(x: np.ndarray, n: int) -> np.ndarray:
    """BARS_SINCE_MAX_n(x): 0..n-1 bars since the most recent maximum of the n rows t-n+1..t."""
    out = np.full(len(x), np.nan)
    if len(x) < n:
        return out
    w, ok = _windows(x, n)
    # argmax of the reversed window returns the first hit from the right = most recent max = bars since.
    since = np.where(ok, np.argmax(np.where(np.isnan(w), -np.inf, w)[:, ::-1], axis=1), np.nan)
    out[n - 1 :] = since
    return out


def _mean(x: np.ndarray, n: int) -> np.ndarray:
    return rolling(x, n).mean().to_numpy()


def _max(x: np.ndarray, n: int) -> np.ndarray:
    return rolling(x, n).max().to_numpy()


def _min(x: np.ndarray, n: int) -> np.ndarray:
    return rolling(x, n).min().to_numpy()


# --------------------------------------------------------------------------- features


def _returns(c: np.ndarray) -> dict[str, np.ndarray]:
    """#1-#8: ret_1, logret_k, mom_10, roc_10."""
    out = {"ret_1": gdiv(c, lag(c, 1)) - 1.0}
    for k in (1, 5, 15, 60, 240):
        out[f"logret_{k}"] = log_ratio(c, lag(c, k))
    out["mom_10"] = c - lag(c, 10)
    out["roc_10"] = 100.0 * (gdiv(c, lag(c, 10)) - 1.0)
    return out


def _rsi(c: np.ndarray, n: int) -> np.ndarray:
    """#9-#10: Wilder RSI, 100*W(G) ÷ (W(G) + W(L)), G/L NULL at t = 0."""
    d = c - lag(c, 1)
    gain = np.where(np.isnan(d), np.nan, np.maximum(d, 0.0))
    loss = np.where(np.isnan(d), np.nan, np.maximum(-d, 0.0))
    wg, wl = wilder(gain, n), wilder(loss, n)
    return 100.0 * gdiv(wg, wg + wl)


def _stoch_willr(h: np.ndarray, l: np.ndarray, c: np.ndarray) -> dict[str, np.ndarray]:
    """#11-#13: slow stochastic 14/3/3 (SMA) and Williams %R 14."""
    hh, ll = _max(h, 14), _min(l, 14)
    fast_k = 100.0 * gdiv(c - ll, hh - ll)
    slow_k = _mean(fast_k, 3)
    return {
        "stoch_k_14_3": slow_k,
        "stoch_d_14_3_3": _mean(slow_k, 3),
        "willr_14": -100.0 * gdiv(hh - c, hh - ll),
    }


def _cci(h: np.ndarray, l: np.ndarray, c: np.ndarray, n: int = 20) -> np.ndarray:
    """#14: (tp - MEAN_n(tp)) ÷p (0.015*MAD_n(tp)), floor tested on MAD_n(tp)."""
    tp = typical_price(h, l, c)
    mad = _mad(tp, n)
    out = gdiv(tp - _mean(tp, n), 0.015 * mad)
    out[np.abs(mad) < PRICE_FLOOR * np.abs(c)] = np.nan  # NULL rule 4 on MAD_n(tp) (0/NULL: by gdiv)
    return out


def _macd_ppo(c: np.ndarray) -> dict[str, np.ndarray]:
    """#15-#18: MACD line / signal / histogram (price units) and PPO, all SMA-seeded EMAs."""
    e12, e26 = ema(c, 12), ema(c, 26)
    line = e12 - e26
    signal = ema(line, 9)  # seeded on the first 9 non-NULL MACD values (rows 25..33)
    return {
        "macd_12_26": line,
        "macd_signal_12_26_9": signal,
        "macd_hist_12_26_9": line - signal,
        "ppo_12_26": 100.0 * gdiv(e12 - e26, e26),
    }


def _trix(c: np.ndarray, n: int = 15) -> np.ndarray:
    """#19: 100*(E ÷ E[t-1] - 1) with E the triple, independently seeded EMA_n."""
    e = ema(ema(ema(c, n), n), n)
    return 100.0 * (gdiv(e, lag(e, 1)) - 1.0)


def _aroon(h: np.ndarray, l: np.ndarray, n: int = 25) -> dict[str, np.ndarray]:
    """#20-#21: Aroon up/down over n+1 rows (ties -> most recent row)."""
    return {
        "aroon_up_25": 100.0 * (n - _bars_since_max(h, n + 1)) / n,
        "aroon_down_25": 100.0 * (n - _bars_since_max(-l, n + 1)) / n,
    }


def _normalized_distances(h: np.ndarray, l: np.ndarray, c: np.ndarray) -> dict[str, np.ndarray]:
    """#22-#25: zscore_close_20, dist_sma_20_atr, dist_ema_50_atr, ret_sigma_20."""
    sma20 = _mean(c, 20)
    atr14 = wilder(true_range(h, l, c), 14)
    r = log_ratio(c, lag(c, 1))
    return {
        "zscore_close_20": pdiv(c - sma20, std(c, 20), c),
        "dist_sma_20_atr": pdiv(c - sma20, atr14, c),
        "dist_ema_50_atr": pdiv(c - ema(c, 50), atr14, c),
        "ret_sigma_20": gdiv(r, lag(std(r, 20), 1)),
    }


def _candle(o: np.ndarray, h: np.ndarray, l: np.ndarray, c: np.ndarray) -> dict[str, np.ndarray]:
    """#26-#30: candle shape ratios over h - l (NULL on zero-range bars) and the bar-to-bar gap."""
    rng = h - l
    return {
        "clv": gdiv((c - l) - (h - c), rng),
        "body_ratio": gdiv(c - o, rng),
        "upper_wick_ratio": gdiv(h - np.maximum(o, c), rng),
        "lower_wick_ratio": gdiv(np.minimum(o, c) - l, rng),
        "gap_open": log_ratio(o, lag(c, 1)),
    }


def compute(bars: pd.DataFrame, timeframe: str) -> pd.DataFrame:
    """Compute catalog features #1-#30 (price action) for one symbol's partition.

    Parameters
    ----------
    bars : pandas.DataFrame
        One symbol's bars sorted by ``ts``, columns ``symbol, ts, open, high, low, close, volume``;
        missing minutes are absent rows (windows count rows, never clock time).
    timeframe : str
        ``"1m"``, ``"1h"`` or ``"1d"``. No price-action feature depends on it (none is annualized);
        it is validated for interface symmetry with the other categories.

    Returns
    -------
    pandas.DataFrame
        Exactly :data:`COLUMNS` in catalog order, same index and length as ``bars``, float64 with NaN
        meaning NULL (also for the integer-valued Aroon features). Never contains ``inf``.

    Raises
    ------
    ValueError
        If ``timeframe`` is not one of the catalog's timeframes.
    """
    if timeframe not in BARS_PER_YEAR:
        raise ValueError(f"unknown timeframe {timeframe!r}")
    o, h, l, c = (bars[k].to_numpy(dtype=float) for k in ("open", "high", "low", "close"))
    feats: dict[str, np.ndarray] = {}
    feats.update(_returns(c))
    feats["rsi_2"] = _rsi(c, 2)
    feats["rsi_14"] = _rsi(c, 14)
    feats.update(_stoch_willr(h, l, c))
    feats["cci_20"] = _cci(h, l, c)
    feats.update(_macd_ppo(c))
    feats["trix_15"] = _trix(c)
    feats.update(_aroon(h, l))
    feats.update(_normalized_distances(h, l, c))
    feats.update(_candle(o, h, l, c))
    out = pd.DataFrame({k: np.asarray(feats[k], dtype=float) for k in COLUMNS}, index=bars.index)
    # Belt and braces: ÷/÷p and ln() already return NaN for every undefined case.
    assert not np.isinf(out.to_numpy()).any(), "oracle produced inf"
    return out
