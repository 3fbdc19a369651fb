"""Oracle of the catalog's **volume** features, #31-#60 (shared/FEATURES.md, section 6).

Written from the catalog text only (sections 1-5 and 7), in numpy/pandas; NULL is NaN. Every window statistic
follows NULL rule 1 (n rows, all non-NULL), every ratio is guarded (``gdiv``; ``pdiv`` for the price-unit
denominators ``atr_14`` and the session VWAP sd), dispersions are exactly 0 on flat windows, and recursive filters
are the SMA-seeded, NULL-skipping filters of section 4 (``common.ema`` / ``common.wilder``).

Window statistics are evaluated directly on each window (``sliding_window_view``: plain sums, two-pass variances,
covariances and slopes) rather than with running add/remove updates, so that the reference stays accurate on
drifting levels such as OBV and on windows that follow very large values.

Readings chosen where the text leaves room (a TA-Lib / pandas user's reading):

* ``v_s`` and ``sv`` are NULL on row 0 (``s`` is), so windows over them start at row ``n`` (first=20/60).
  ``OBV_t = sum_{k=1..t} s_k v_k`` with ``OBV_0 = 0``: row 0 contributes 0 (TA-Lib starts at ``v_0``; the
  offset cancels in both OBV features).
* ``mfi_14``: the up/down flow of row 0 is NULL (no ``tp[t-1]``), which gives first=14 as in the catalog and
  TA-Lib. P + M = 0 gives NULL (TA-Lib returns 0 whenever P + M < 1).
* ``rel_volume_tod_20``: the 20 earlier rows of the same ET ``minute_of_day`` must all exist (NULL rule 1, as
  the SQL ``ROWS BETWEEN 20 PRECEDING AND 1 PRECEDING`` with a count check); they need not be on consecutive
  sessions (a missing minute simply reaches further back), and DST does not matter because the key is ET wall
  time.
* Session features group rows by the catalog's trading date (``sid``). Session-so-far features (45, 49, 50, 51)
  are NULL on ``sid = 0``; ``dist_prev_session_vwap`` is NULL on ``sid < 2``; ``session_volume_frac_20`` is
  NULL on ``sid < 21`` (its 20 previous sessions ``sid-20..sid-1`` are then all complete). A session whose
  volume so far (or whose total, for the prior-session and 20-session denominators) is 0 gives NULL.
* ``vwap_session_z``: ``a`` = open of the first row of the trading date in the partition; ``VWAP`` in the
  numerator is ``sum(tp v) / sum(v)`` itself (not ``a + m1``); ``sigma`` is computed from the shifted moments as
  written and the price floor makes the first bar of a session (and any session whose ``tp`` has not moved so
  far) NULL even when ``m2 - m1**2`` leaves a rounding residue.
* ``kyle_lambda_60``: ``BETA_60(r, sv)`` = slope of ``r`` on ``sv`` (y = r, x = sv); NULL when ``sv`` is flat.
* ``obv_slope_20``: ``SLOPE_20`` on the in-window bar offset ``j = 0..19`` (per bar), divided by ``MEAN_20(v)``.
* ``log_volume``: ``ln(1 + v)`` is NULL unless ``1 + v > 0`` (negative volumes do not occur; no ``-inf``).
"""

from __future__ import annotations


import numpy as np
import pandas as pd

from tests.features_oracle.common import (
    window_apply,
    window_corr,
    window_is_flat,
    window_slope,
    BARS_PER_YEAR,
    TIE_EPS,
    ema,
    gdiv,
    lag,
    log_ratio,
    minute_of_day,
    money_flow_multiplier,
    pdiv,
    session_index,
    tick_sign,
    trading_date,
    true_range,
    typical_price,
    wilder,
)

COLUMNS: list[str] = [
    "log_volume",
    "rel_volume_20",
    "rel_volume_tod_20",
    "volume_z_20",
    "log_volume_z_60",
    "volume_ma_ratio_5_20",
    "pvo_12_26",
    "volume_pctrank_60",
    "volume_conc_20",
    "obv_z_60",
    "obv_slope_20",
    "tick_vol_imbalance_20",
    "tick_imbalance_ema_20",
    "candle_vol_imbalance_20",
    "session_tick_imbalance",
    "cmf_20",
    "adosc_3_10_norm",
    "mfi_14",
    "vwap_session_dist",
    "vwap_session_dist_atr",
    "vwap_session_z",
    "vwap_roll_dist_20",
    "vwap_roll_dist_60",
    "dist_prev_session_vwap",
    "pv_corr_20",
    "absret_vol_corr_60",
    "amihud_20",
    "kyle_lambda_60",
    "session_volume_frac_20",
    "vwret_20",
]

# --------------------------------------------------------------------------------------------------------------
# Generic window helpers (NULL rule 1 by NaN propagation: a window containing NaN yields NaN).
# --------------------------------------------------------------------------------------------------------------





def wsum(x: np.ndarray, n: int) -> np.ndarray:
    """SUM_n(x)."""
    return window_apply(lambda w: w.sum(axis=1), n, x)


def wmean(x: np.ndarray, n: int) -> np.ndarray:
    """MEAN_n(x)."""
    return wsum(x, n) / n


def wstd(x: np.ndarray, n: int) -> np.ndarray:
    """STD_n(x) (ddof = 1), two-pass, exactly 0 on a flat window."""

    def f(w: np.ndarray) -> np.ndarray:
        d = w - w.mean(axis=1, keepdims=True)
        out = np.sqrt((d * d).sum(axis=1) / (n - 1))
        out[window_is_flat(w)] = 0.0
        return out

    return window_apply(f, n, x)



def wbeta(y: np.ndarray, x: np.ndarray, n: int) -> np.ndarray:
    """BETA_n(y, x): OLS slope of y on x, NULL when x is flat."""

    def f(wy: np.ndarray, wx: np.ndarray) -> np.ndarray:
        dx = wx - wx.mean(axis=1, keepdims=True)
        dy = wy - wy.mean(axis=1, keepdims=True)
        out = gdiv((dx * dy).sum(axis=1), (dx * dx).sum(axis=1))
        out[window_is_flat(wx)] = np.nan
        return out

    return window_apply(f, n, y, x)



def wzscore(x: np.ndarray, n: int) -> np.ndarray:
    """(x - MEAN_n(x)) ÷ STD_n(x)."""
    return gdiv(x - wmean(x, n), wstd(x, n))


def pctrank(x: np.ndarray, n: int) -> np.ndarray:
    """PCTRANK_n(x) with ε = 0: share of the window's rows with x[k] <= x[t], current row included."""
    return window_apply(lambda w: (w <= w[:, -1:]).sum(axis=1) / n, n, x)


def session_cumsum(x: np.ndarray, sid: np.ndarray) -> np.ndarray:
    """Session-to-date running sum of x (rows of the current trading date up to t)."""
    return pd.Series(np.asarray(x, float)).groupby(sid).cumsum().to_numpy()


def session_total(x: np.ndarray, sid: np.ndarray) -> np.ndarray:
    """Total of x per session, indexed by sid (0..max sid)."""
    return pd.Series(np.asarray(x, float)).groupby(sid).sum().to_numpy()


def prior_session(per_session: np.ndarray, sid: np.ndarray, min_sid: int = 2) -> np.ndarray:
    """Value of the previous session (sid - 1) on each row; NULL on sid < min_sid."""
    out = np.full(len(sid), np.nan)
    ok = sid >= min_sid
    out[ok] = per_session[sid[ok] - 1]
    return out


# --------------------------------------------------------------------------------------------------------------
# Features, grouped by the inputs they share.
# --------------------------------------------------------------------------------------------------------------


def _volume_level(v: np.ndarray) -> dict[str, np.ndarray]:
    """#31, #32, #34-#36, #38, #39: bar-window statistics of v."""
    x = log_ratio(1.0 + v, np.ones(len(v)))  # ln(1 + v), NULL unless 1 + v > 0
    m5, m20 = wmean(v, 5), wmean(v, 20)
    return {
        "log_volume": x,
        "rel_volume_20": gdiv(v, lag(m20, 1)),
        "volume_z_20": wzscore(v, 20),
        "log_volume_z_60": wzscore(x, 60),
        "volume_ma_ratio_5_20": log_ratio(m5, m20),  # ln(a ÷ b): NULL if either mean is 0
        "volume_pctrank_60": pctrank(v, 60),
        "volume_conc_20": gdiv(wsum(v * v, 20), wsum(v, 20) ** 2),
    }


def rel_volume_tod_20(v: np.ndarray, mod: np.ndarray) -> np.ndarray:
    """#33: v ÷ mean of the 20 most recent earlier rows with the same ET minute of day.

    Exact integer arithmetic: exclusive cumulative sum per minute of day, differenced 20 rows back in the group.
    """
    frame = pd.DataFrame({"mod": mod, "v": np.asarray(v, np.int64)})
    group = frame.groupby("mod")["v"]
    excl = group.cumsum() - frame["v"]  # sum of the earlier same-minute rows
    back = excl.groupby(frame["mod"]).shift(20)  # NaN unless 20 earlier same-minute rows exist
    return gdiv(v, ((excl - back) / 20.0).to_numpy())


def pvo_12_26(v: np.ndarray) -> np.ndarray:
    """#37: 100·(EMA_12(v) − EMA_26(v)) ÷ EMA_26(v), both EMAs SMA-seeded on their own first n values."""
    e26 = ema(v, 26)
    return 100.0 * gdiv(ema(v, 12) - e26, e26)


def _obv(sv: np.ndarray, v: np.ndarray) -> dict[str, np.ndarray]:
    """#40, #41: OBV_t = Σ_{k=1..t} s_k·v_k (OBV_0 = 0)."""
    obv = np.cumsum(np.where(np.isnan(sv), 0.0, sv))
    return {
        "obv_z_60": wzscore(obv, 60),
        "obv_slope_20": gdiv(window_slope(obv, 20), wmean(v, 20)),
    }


def _tick_rule(sv: np.ndarray, v_s: np.ndarray, sid: np.ndarray) -> dict[str, np.ndarray]:
    """#42, #43, #45: tick-rule signed-volume shares (windowed, EMA, session to date)."""
    sess = gdiv(session_cumsum(np.nan_to_num(sv), sid), session_cumsum(np.nan_to_num(v_s), sid))
    sess[sid == 0] = np.nan
    return {
        "tick_vol_imbalance_20": gdiv(wsum(sv, 20), wsum(v_s, 20)),
        "tick_imbalance_ema_20": gdiv(ema(sv, 20), ema(v_s, 20)),
        "session_tick_imbalance": sess,
    }


def candle_vol_imbalance_20(o: np.ndarray, c: np.ndarray, v: np.ndarray) -> np.ndarray:
    """#44: SUM_20(sign(c − o)·v) ÷ SUM_20(v)."""
    return gdiv(wsum(np.sign(c - o) * v, 20), wsum(v, 20))


def ema_gap_of_running_sum(x: np.ndarray, n: int) -> np.ndarray:
    """``EMA_n(AD) − AD`` for the running sum ``AD_t = x_0 + … + x_t``, from the increments ``x`` alone (no NULLs).

    The level of AD never enters, so ``EMA_3(AD) − EMA_10(AD)`` keeps its digits however large AD grows (the
    difference of two EMAs of a running sum ~1e12 loses ``|AD|·ε`` ≈ 1e-4). Section 4's SMA seed at row n−1:
    ``mean(AD_0..AD_{n−1}) − AD_{n−1} = −mean_j (x_{j+1} + … + x_{n−1})``; after it ``EMA_t = α·AD_t + β·EMA_{t−1}``
    gives ``EMA_t − AD_t = β·((EMA_{t−1} − AD_{t−1}) − x_t)``.
    """
    x = np.asarray(x, float)
    out = np.full(len(x), np.nan)
    if len(x) < n:
        return out
    beta = 1.0 - 2.0 / (n + 1)
    tails = np.r_[np.cumsum(x[1:n][::-1])[::-1], 0.0]  # tails[j] = x_{j+1} + … + x_{n−1}, j = 0..n−1
    gap = -float(np.mean(tails))
    out[n - 1] = gap
    for t in range(n, len(x)):
        gap = beta * (gap - x[t])
        out[t] = gap
    return out


def _money_flow(h: np.ndarray, l: np.ndarray, c: np.ndarray, v: np.ndarray) -> dict[str, np.ndarray]:
    """#46, #47: Chaikin money flow and the normalized Chaikin oscillator (AD from row 0).

    ``EMA_3(AD) − EMA_10(AD) = (EMA_3(AD) − AD) − (EMA_10(AD) − AD)``: both gaps come from the increments ``mfv``
    (``ema_gap_of_running_sum``), so the running level of AD cancels exactly instead of costing ``|AD|·ε``.
    """
    mfv = money_flow_multiplier(h, l, c) * v
    return {
        "cmf_20": gdiv(wsum(mfv, 20), wsum(v, 20)),
        "adosc_3_10_norm": gdiv(ema_gap_of_running_sum(mfv, 3) - ema_gap_of_running_sum(mfv, 10), wmean(v, 10)),
    }


def mfi_14(tp: np.ndarray, v: np.ndarray) -> np.ndarray:
    """#48: money flow index with TIE_EPS ties on the computed tp; row 0's flow is NULL."""
    mf = tp * v
    prev = lag(tp, 1)
    diff = tp - prev
    up = diff > TIE_EPS * np.abs(prev)
    down = diff < -TIE_EPS * np.abs(prev)
    pos = np.where(up, mf, 0.0)
    neg = np.where(down, mf, 0.0)
    pos[np.isnan(prev)] = np.nan
    neg[np.isnan(prev)] = np.nan
    p, m = wsum(pos, 14), wsum(neg, 14)
    return 100.0 * gdiv(p, p + m)


def _session_vwap(
    o: np.ndarray, c: np.ndarray, tp: np.ndarray, v: np.ndarray, atr: np.ndarray, sid: np.ndarray
) -> dict[str, np.ndarray]:
    """#49-#51, #54: session-anchored VWAP (trading date from 18:00 ET) and the prior session's VWAP."""
    sum_v = session_cumsum(v, sid)
    vwap = gdiv(session_cumsum(tp * v, sid), sum_v)
    a = pd.Series(o).groupby(sid).transform("first").to_numpy()
    d = tp - a
    m1 = gdiv(session_cumsum(v * d, sid), sum_v)
    m2 = gdiv(session_cumsum(v * d * d, sid), sum_v)
    sigma = np.sqrt(np.maximum(m2 - m1 * m1, 0.0))  # NaN stays NaN
    out = {
        "vwap_session_dist": log_ratio(c, vwap),
        "vwap_session_dist_atr": pdiv(c - vwap, atr, c),
        "vwap_session_z": pdiv(c - vwap, sigma, c),
    }
    for col in out.values():
        col[sid == 0] = np.nan
    prev_vwap = prior_session(gdiv(session_total(tp * v, sid), session_total(v, sid)), sid, min_sid=2)
    out["dist_prev_session_vwap"] = log_ratio(c, prev_vwap)
    return out


def vwap_roll_dist(c: np.ndarray, tp: np.ndarray, v: np.ndarray, n: int) -> np.ndarray:
    """#52, #53: ln(c / (SUM_n(tp·v) ÷ SUM_n(v)))."""
    return log_ratio(c, gdiv(wsum(tp * v, n), wsum(v, n)))


def session_volume_frac_20(v: np.ndarray, sid: np.ndarray) -> np.ndarray:
    """#59: session-to-date volume ÷ mean total volume of sessions sid-20..sid-1 (NULL on sid < 21)."""
    totals = session_total(v, sid)
    mean20 = np.full(len(totals), np.nan)
    if len(totals) > 20:
        mean20[20:] = wmean(totals, 20)[19:-1]  # sessions s-20..s-1 for s >= 20
    denom = mean20[sid]
    denom[sid < 21] = np.nan
    return gdiv(session_cumsum(v, sid), denom)


def _returns_volume(r: np.ndarray, c: np.ndarray, v: np.ndarray, sv: np.ndarray) -> dict[str, np.ndarray]:
    """#55-#58, #60: correlations, Amihud, Kyle's lambda, volume-weighted return."""
    absr = np.abs(r)
    return {
        "pv_corr_20": window_corr(c, v, 20),
        "absret_vol_corr_60": window_corr(absr, v, 60),
        "amihud_20": gdiv(wsum(absr, 20), wsum(v, 20)),
        "kyle_lambda_60": wbeta(r, sv, 60),
        "vwret_20": gdiv(wsum(r * v, 20), wsum(v, 20)),
    }


def compute(bars: pd.DataFrame, timeframe: str) -> pd.DataFrame:
    """Compute the 30 volume features (#31-#60) of one symbol's bars.

    Parameters
    ----------
    bars : pandas.DataFrame
        One symbol's partition sorted by ``ts``, with columns ``symbol``, ``ts`` (tz-aware UTC bar open time),
        ``open``, ``high``, ``low``, ``close`` (float64) and ``volume`` (int64). Missing bars are absent rows.
    timeframe : str
        ``"1m"``, ``"1h"`` or ``"1d"``. Windows are in rows, so the values do not depend on it; sessions are
        always the catalog's trading dates (on ``1d`` each bar is its own session).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`COLUMNS` in catalog order, float64, same index and length as ``bars``; NaN means NULL.
        No value is infinite.
    """
    if timeframe not in BARS_PER_YEAR:
        raise ValueError(f"unknown timeframe {timeframe!r}")
    o = bars["open"].to_numpy(float)
    h = bars["high"].to_numpy(float)
    l = bars["low"].to_numpy(float)
    c = bars["close"].to_numpy(float)
    v = bars["volume"].to_numpy(float)
    if len(bars) == 0:
        return pd.DataFrame({k: np.array([], float) for k in COLUMNS}, index=bars.index)

    sid = session_index(trading_date(bars["ts"]))
    mod = minute_of_day(bars["ts"])
    tp = typical_price(h, l, c)
    r = log_ratio(c, lag(c, 1))
    s = tick_sign(c)
    sv = s * v
    v_s = np.where(np.isnan(s), np.nan, v)
    atr = wilder(true_range(h, l, c), 14)

    feats: dict[str, np.ndarray] = {}
    feats.update(_volume_level(v))
    feats["rel_volume_tod_20"] = rel_volume_tod_20(bars["volume"].to_numpy(), mod)
    feats["pvo_12_26"] = pvo_12_26(v)
    feats.update(_obv(sv, v))
    feats.update(_tick_rule(sv, v_s, sid))
    feats["candle_vol_imbalance_20"] = candle_vol_imbalance_20(o, c, v)
    feats.update(_money_flow(h, l, c, v))
    feats["mfi_14"] = mfi_14(tp, v)
    feats.update(_session_vwap(o, c, tp, v, atr, sid))
    feats["vwap_roll_dist_20"] = vwap_roll_dist(c, tp, v, 20)
    feats["vwap_roll_dist_60"] = vwap_roll_dist(c, tp, v, 60)
    feats["session_volume_frac_20"] = session_volume_frac_20(v, sid)
    feats.update(_returns_volume(r, c, v, sv))

    return pd.DataFrame({k: np.asarray(feats[k], dtype=float) for k in COLUMNS}, index=bars.index)
