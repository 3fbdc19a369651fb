"""Checks of the volume-feature oracle (tests/features_oracle/volume.py, catalog #31-#60) itself.

* against the catalog's reference column: TA-Lib (PPO, OBV, AD, ADOSC from row 300, MFI, EMA, ATR) and pandas;
* against a brute-force per-row computation (own ET clock via zoneinfo) for the session and same-minute features
  on sparse multi-session 1-minute bars around the 2024-03-10 DST switch, with missing minutes;
* hand-worked numbers on tiny examples;
* first non-NULL row == the catalog's "first=" warm-up on gap-free data; no inf on edge-case data.
"""

from __future__ import annotations

import datetime as dt
import math
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
import talib

from tests.features_oracle import volume
from tests.features_oracle.common import ema, money_flow_multiplier

ET = ZoneInfo("America/New_York")

#: Catalog tolerances (rtol, atol) of #31-#60; (0, 0) = exact.
TOL = {
    "log_volume": (1e-12, 1e-14),
    "rel_volume_20": (1e-10, 1e-12),
    "rel_volume_tod_20": (1e-10, 1e-12),
    "volume_z_20": (1e-8, 1e-12),
    "log_volume_z_60": (1e-8, 1e-12),
    "volume_ma_ratio_5_20": (1e-10, 1e-12),
    "pvo_12_26": (1e-9, 1e-12),
    "volume_pctrank_60": (0.0, 0.0),
    "volume_conc_20": (1e-10, 1e-12),
    "obv_z_60": (1e-8, 1e-12),
    "obv_slope_20": (1e-7, 1e-9),
    "tick_vol_imbalance_20": (1e-10, 1e-12),
    "tick_imbalance_ema_20": (1e-9, 1e-12),
    "candle_vol_imbalance_20": (1e-10, 1e-12),
    "session_tick_imbalance": (1e-10, 1e-12),
    "cmf_20": (1e-10, 1e-12),
    "adosc_3_10_norm": (1e-9, 1e-9),
    "mfi_14": (1e-10, 1e-12),
    "vwap_session_dist": (1e-10, 1e-12),
    "vwap_session_dist_atr": (1e-9, 1e-7),
    "vwap_session_z": (1e-8, 1e-7),
    "vwap_roll_dist_20": (1e-10, 1e-12),
    "vwap_roll_dist_60": (1e-10, 1e-12),
    "dist_prev_session_vwap": (1e-10, 1e-12),
    "pv_corr_20": (1e-7, 1e-9),
    "absret_vol_corr_60": (1e-7, 1e-9),
    "amihud_20": (1e-10, 1e-12),
    "kyle_lambda_60": (1e-7, 1e-9),
    "session_volume_frac_20": (1e-10, 1e-12),
    "vwret_20": (1e-10, 1e-12),
}


# ----------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------


def _ohlc(rng: np.random.Generator, n: int, tick: float = 0.25, base: float = 4000.0) -> dict[str, np.ndarray]:
    """Random-walk quarter-tick bars (binary-fraction ticks, so tp ties are exact as TA-Lib assumes)."""
    c = base + np.cumsum(rng.integers(-4, 5, n)) * tick
    o = np.concatenate([[base], c[:-1]]) + rng.integers(-1, 2, n) * tick
    h = np.maximum(o, c) + rng.integers(0, 3, n) * tick
    l = np.minimum(o, c) - rng.integers(0, 3, n) * tick
    return {"open": o, "high": h, "low": l, "close": c}


def _frame(ts: pd.DatetimeIndex | list, ohlc: dict[str, np.ndarray], v: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {"symbol": "ESH4", "ts": pd.DatetimeIndex(ts).tz_convert("UTC"), **ohlc, "volume": np.asarray(v, np.int64)}
    )


def _et(day: dt.date, minutes_since_open: int) -> pd.Timestamp:
    """ET wall time of the bar ``minutes_since_open`` after the 18:00 ET open of trading date ``day``."""
    wall = dt.datetime.combine(day - dt.timedelta(days=1), dt.time(18)) + dt.timedelta(minutes=minutes_since_open)
    return pd.Timestamp(wall).tz_localize(ET)


def _weekdays(first: str, count: int) -> list[dt.date]:
    return [d.date() for d in pd.bdate_range(first, periods=count)]


@pytest.fixture(scope="module")
def gapfree_1m() -> pd.DataFrame:
    """2000 gap-free 1-minute bars, positive volumes (for the TA-Lib and pandas references)."""
    rng = np.random.default_rng(7)
    n = 2000
    ts = pd.date_range("2024-01-09 14:00", periods=n, freq="1min", tz="UTC")
    return _frame(ts, _ohlc(rng, n), rng.integers(1, 1000, n))


@pytest.fixture(scope="module")
def gapfree_1h() -> pd.DataFrame:
    """26 complete weekday sessions of 1-hour bars (23 a session) across the DST switch; starts 3 bars before
    the end of a session so that sid 0 is partial."""
    rng = np.random.default_rng(11)
    ts = [_et(d, 60 * k) for d in _weekdays("2024-02-12", 27) for k in range(23)][20:]
    n = len(ts)
    return _frame(ts, _ohlc(rng, n), rng.integers(1, 1000, n))


@pytest.fixture(scope="module")
def dst_sample() -> pd.DataFrame:
    """Sparse 1-minute bars: 30 weekday sessions (2024-02-05 .. 2024-03-15, DST on Sunday 2024-03-10), each with
    ~90% of 40 fixed minutes (missing minutes), starting mid-session; some zero-volume bars (one opening a
    session) and a flat stretch."""
    rng = np.random.default_rng(3)
    slots = np.unique(np.concatenate([[0, 1, 359, 360, 929, 930, 1379], rng.integers(0, 1380, 33)]))
    ts = []
    for day in _weekdays("2024-02-05", 30):
        keep = slots[rng.random(len(slots)) < 0.9]
        ts += [_et(day, int(m)) for m in keep]
    ts = ts[15:]
    n = len(ts)
    ohlc = _ohlc(rng, n)
    v = rng.integers(1, 500, n)
    v[rng.random(n) < 0.05] = 0
    frame = _frame(ts, ohlc, v)
    dates = [_bf_clock(t)[0] for t in frame["ts"]]
    first_rows = [i for i in range(1, n) if dates[i] != dates[i - 1]]
    frame.loc[first_rows[5], "volume"] = 0  # a session opening on a zero-volume bar
    for col in ("open", "high", "low", "close"):  # a flat stretch (tp unchanged, sigma 0 within a session)
        frame.loc[first_rows[8] : first_rows[8] + 4, col] = 4000.0
    return frame


@pytest.fixture(scope="module")
def edge_bars() -> pd.DataFrame:
    """Edge cases of catalog section 7: zero-range bars, zero-volume bars and windows, a 300-bar flat stale
    block, missing minutes, a weekend."""
    rng = np.random.default_rng(5)
    n = 3000
    ts = pd.date_range("2024-03-06 14:00", periods=4000, freq="1min", tz="UTC")
    ts = ts[np.sort(rng.choice(4000, n, replace=False))]
    ohlc = _ohlc(rng, n)
    v = rng.integers(0, 50, n)
    v[rng.random(n) < 0.2] = 0
    v[100:180] = 0  # windows of zero volume
    for col in ("open", "high", "low", "close"):
        ohlc[col][1000:1300] = 4000.0  # stale feed: flat prices, zero-range bars
    v[1000:1300] = 7
    zr = rng.random(n) < 0.1
    ohlc["high"][zr] = ohlc["low"][zr] = ohlc["open"][zr] = ohlc["close"][zr]
    return _frame(ts, ohlc, v)


# ----------------------------------------------------------------------------------------------------------------
# Comparison
# ----------------------------------------------------------------------------------------------------------------


def assert_close(name: str, got, ref, rows=None, same_nulls: bool = True) -> None:
    """Catalog comparison: identical NULL patterns (unless ``same_nulls`` is False: then only rows where both
    are defined), ``abs(a - b) <= atol + rtol * abs(b)`` elsewhere."""
    got = np.asarray(got, float)
    ref = np.asarray(ref, float)
    if rows is not None:
        got, ref = got[rows], ref[rows]
    if same_nulls:
        diff_nulls = np.flatnonzero(np.isnan(got) != np.isnan(ref))
        assert diff_nulls.size == 0, f"{name}: NULL patterns differ at {diff_nulls[:10]}"
    both = ~np.isnan(got) & ~np.isnan(ref)
    assert both.sum() > 0, f"{name}: nothing to compare"
    rtol, atol = TOL[name]
    err = np.abs(got[both] - ref[both]) - (atol + rtol * np.abs(ref[both]))
    worst = int(np.argmax(err))
    assert err[worst] <= 0, f"{name}: {got[both][worst]!r} vs {ref[both][worst]!r} (row {np.flatnonzero(both)[worst]})"


def _null_where(x: np.ndarray, cond: np.ndarray) -> np.ndarray:
    x = np.array(x, float)
    x[cond] = np.nan
    return x


# ----------------------------------------------------------------------------------------------------------------
# Shape and NULL hygiene
# ----------------------------------------------------------------------------------------------------------------


def test_columns_and_shape(gapfree_1m):
    assert len(volume.COLUMNS) == 30 and len(set(volume.COLUMNS)) == 30
    assert volume.COLUMNS[0] == "log_volume" and volume.COLUMNS[-1] == "vwret_20"
    assert set(volume.COLUMNS) == set(TOL)
    bars = gapfree_1m.set_index(pd.RangeIndex(100, 100 + len(gapfree_1m)))
    out = volume.compute(bars, "1m")
    assert list(out.columns) == volume.COLUMNS
    assert out.index.equals(bars.index)
    assert (out.dtypes == np.float64).all()
    assert volume.compute(bars.iloc[:0], "1m").shape == (0, 30)
    assert volume.compute(bars.iloc[:5], "1m").shape == (5, 30)


@pytest.mark.parametrize("fixture", ["edge_bars", "dst_sample", "gapfree_1h"])
def test_never_inf(fixture, request):
    bars = request.getfixturevalue(fixture)
    out = volume.compute(bars, "1m").to_numpy()
    assert not np.isinf(out).any()


def test_edge_nulls(edge_bars):
    out = volume.compute(edge_bars, "1m")
    # all-zero volume windows -> NULL ratios, never 0/0 noise
    assert out["rel_volume_20"].iloc[120:180].isna().all()
    assert out["volume_conc_20"].iloc[120:180].isna().all()
    assert out["amihud_20"].iloc[120:180].isna().all()
    assert out["mfi_14"].iloc[120:180].isna().all()
    # flat stale block: constant volume -> STD 0 -> NULL z; flat close -> CORR NULL; flat sv -> BETA NULL
    block = slice(1000 + 60, 1300)
    assert out["volume_z_20"].iloc[block].isna().all()
    assert out["pv_corr_20"].iloc[block].isna().all()
    assert out["kyle_lambda_60"].iloc[block].isna().all()
    assert out["obv_z_60"].iloc[block].isna().all()  # OBV constant (s = 0) -> flat
    assert out["vwap_roll_dist_60"].iloc[block].abs().max() < 1e-15  # VWAP = c exactly 4000


# ----------------------------------------------------------------------------------------------------------------
# Warm-up ("first=") on gap-free data
# ----------------------------------------------------------------------------------------------------------------

FIRST_BARS = {
    "log_volume": 0, "rel_volume_20": 20, "volume_z_20": 19, "log_volume_z_60": 59, "volume_ma_ratio_5_20": 19,
    "pvo_12_26": 25, "volume_pctrank_60": 59, "volume_conc_20": 19, "obv_z_60": 59, "obv_slope_20": 19,
    "tick_vol_imbalance_20": 20, "tick_imbalance_ema_20": 20, "candle_vol_imbalance_20": 19, "cmf_20": 19,
    "adosc_3_10_norm": 9, "mfi_14": 14, "vwap_roll_dist_20": 19, "vwap_roll_dist_60": 59, "pv_corr_20": 19,
    "absret_vol_corr_60": 60, "amihud_20": 20, "kyle_lambda_60": 60, "vwret_20": 20,
}  # fmt: skip


def test_warmup_gapfree(gapfree_1h):
    bars = gapfree_1h
    out = volume.compute(bars, "1h")
    dates = [_bf_clock(t)[0] for t in bars["ts"]]
    mods = [_bf_clock(t)[1] for t in bars["ts"]]
    starts = [0] + [i for i in range(1, len(dates)) if dates[i] != dates[i - 1]]
    d1, d2, d21 = starts[1], starts[2], starts[21]
    assert d1 == 3 and len(starts) >= 22
    tod20 = next(i for i in range(len(mods)) if mods[:i].count(mods[i]) >= 20)
    first = dict(FIRST_BARS)
    first.update(
        {
            "rel_volume_tod_20": tod20,
            "session_tick_imbalance": d1,
            "vwap_session_dist": d1,
            "vwap_session_dist_atr": max(d1, 14),
            "vwap_session_z": d1 + 1,
            "dist_prev_session_vwap": d2,
            "session_volume_frac_20": d21,
        }
    )
    for name in volume.COLUMNS:
        col = out[name].to_numpy()
        nonnull = np.flatnonzero(~np.isnan(col))
        assert nonnull.size and nonnull[0] == first[name], (name, nonnull[:1], first[name])
        if name in FIRST_BARS or name in (
            "session_tick_imbalance",
            "vwap_session_dist",
            "vwap_session_dist_atr",
            "dist_prev_session_vwap",
            "session_volume_frac_20",
        ):
            assert not np.isnan(col[first[name] :]).any(), name  # fully defined after warm-up on this data
    # vwap_session_z: from sid 1 on, NULL exactly where the session's tp has not moved yet (sigma = 0), which
    # includes every session's first bar
    z = out["vwap_session_z"].to_numpy()
    tp = ((bars["high"] + bars["low"] + bars["close"]) / 3).to_numpy()
    sigma_zero = [len(set(tp[max(k for k in starts if k <= i) : i + 1])) == 1 for i in range(len(tp))]
    assert np.isnan(z[:d1]).all()
    assert (np.isnan(z[d1:]) == np.array(sigma_zero[d1:])).all()
    assert sum(sigma_zero[d1:]) > len(starts) - 1  # some sessions also open with two equal tp


def test_warmup_1m_bar_windows(gapfree_1m):
    out = volume.compute(gapfree_1m, "1m")
    for name, first in FIRST_BARS.items():
        col = out[name].to_numpy()
        assert np.isnan(col[:first]).all() and not np.isnan(col[first:]).any(), name


# ----------------------------------------------------------------------------------------------------------------
# TA-Lib and pandas references (catalog "reference" column)
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ref_inputs(gapfree_1m):
    b = gapfree_1m
    h, l, c, o = (b[k].to_numpy(float) for k in ("high", "low", "close", "open"))
    v = b["volume"].to_numpy(float)
    return b, o, h, l, c, v, volume.compute(b, "1m")


def test_talib_references(ref_inputs):
    b, _o, h, l, c, v, out = ref_inputs
    vs = pd.Series(v)
    # PVO: TA-Lib PPO(v, 12, 26, EMA) matches from its first output (row 25).
    assert_close("pvo_12_26", out["pvo_12_26"], talib.PPO(v, 12, 26, talib.MA_Type.EMA))
    # OBV: TA-Lib starts at v_0 (catalog: 0); the offset cancels in the z-score and the slope.
    obv = pd.Series(talib.OBV(c, v))
    z_ref = (obv - obv.rolling(60).mean()) / obv.rolling(60).std()
    assert_close("obv_z_60", out["obv_z_60"], z_ref)
    assert_close("obv_slope_20", out["obv_slope_20"], talib.LINEARREG_SLOPE(obv.to_numpy(), 20) / talib.SMA(v, 20))
    # Tick-rule EMA share: TA-Lib EMA skips the leading NaN (sv, v_s are NULL on row 0).
    s = np.sign(np.diff(c, prepend=np.nan))
    sv, v_s = s * v, np.where(np.isnan(s), np.nan, v)
    assert_close("tick_imbalance_ema_20", out["tick_imbalance_ema_20"], talib.EMA(sv, 20) / talib.EMA(v_s, 20))
    # CMF: (AD - AD[t-20]) / SUM(v, 20) (defined from row 20; the oracle from row 19).
    ad = talib.AD(h, l, c, v)
    cmf_ref = (ad - np.concatenate([np.full(20, np.nan), ad[:-20]])) / talib.SUM(v, 20)
    assert_close("cmf_20", out["cmf_20"], cmf_ref, same_nulls=False)
    assert np.isnan(out["cmf_20"].to_numpy()[:19]).all()
    # ADOSC seeds both EMAs with AD_0 (catalog: SMA seed): equal from row 300, different before.
    adosc_ref = talib.ADOSC(h, l, c, v, 3, 10) / talib.SMA(v, 10)
    assert_close("adosc_3_10_norm", out["adosc_3_10_norm"], adosc_ref, rows=slice(300, None))
    assert abs(out["adosc_3_10_norm"].iloc[9] - adosc_ref[9]) > 1e-6
    # MFI (quarter ticks: TIE_EPS and TA-Lib's exact comparison agree).
    assert_close("mfi_14", out["mfi_14"], talib.MFI(h, l, c, v, 14))
    # vwap_session_dist_atr: its ATR is TA-Lib's ATR(14).
    tp = (h + l + c) / 3
    dates = [_bf_clock(t)[0] for t in b["ts"]]
    vw = pd.Series(tp * v).groupby(dates).cumsum() / vs.groupby(dates).cumsum()
    first_sid1 = next(i for i in range(1, len(dates)) if dates[i] != dates[i - 1])
    ref = _null_where((c - vw.to_numpy()) / talib.ATR(h, l, c, 14), np.arange(len(c)) < first_sid1)
    assert_close("vwap_session_dist_atr", out["vwap_session_dist_atr"], ref)


def test_pandas_references(ref_inputs):
    _b, o, h, l, c, v, out = ref_inputs
    vs, cs = pd.Series(v), pd.Series(c)
    r = np.log(cs / cs.shift(1))
    tp = pd.Series((h + l + c) / 3)
    assert_close("log_volume", out["log_volume"], np.log1p(v))
    assert_close("rel_volume_20", out["rel_volume_20"], vs / vs.rolling(20).mean().shift(1))
    assert_close("volume_z_20", out["volume_z_20"], (vs - vs.rolling(20).mean()) / vs.rolling(20).std())
    x = np.log1p(vs)
    assert_close("log_volume_z_60", out["log_volume_z_60"], (x - x.rolling(60).mean()) / x.rolling(60).std())
    assert_close("volume_ma_ratio_5_20", out["volume_ma_ratio_5_20"],
                 np.log(vs.rolling(5).mean() / vs.rolling(20).mean()))  # fmt: skip
    assert_close("volume_pctrank_60", out["volume_pctrank_60"], vs.rolling(60).rank(method="max", pct=True))
    assert_close("volume_conc_20", out["volume_conc_20"], (vs**2).rolling(20).sum() / vs.rolling(20).sum() ** 2)
    sv = np.sign(cs.diff()) * vs
    v_s = vs.where(cs.diff().notna())
    assert_close("tick_vol_imbalance_20", out["tick_vol_imbalance_20"], sv.rolling(20).sum() / v_s.rolling(20).sum())
    assert_close("candle_vol_imbalance_20", out["candle_vol_imbalance_20"],
                 (np.sign(cs - o) * vs).rolling(20).sum() / vs.rolling(20).sum())  # fmt: skip
    for n in (20, 60):
        ref = np.log(cs / ((tp * vs).rolling(n).sum() / vs.rolling(n).sum()))
        assert_close(f"vwap_roll_dist_{n}", out[f"vwap_roll_dist_{n}"], ref)
    assert_close("pv_corr_20", out["pv_corr_20"], cs.rolling(20).corr(vs))
    assert_close("absret_vol_corr_60", out["absret_vol_corr_60"], r.abs().rolling(60).corr(vs))
    assert_close("amihud_20", out["amihud_20"], r.abs().rolling(20).sum() / vs.rolling(20).sum())
    assert_close("kyle_lambda_60", out["kyle_lambda_60"], r.rolling(60).cov(sv) / sv.rolling(60).var())
    assert_close("vwret_20", out["vwret_20"], (r * vs).rolling(20).sum() / vs.rolling(20).sum())


def test_talib_returns_zero_where_catalog_is_null(edge_bars):
    """TA-Lib MFI gives 0 on zero-volume windows; the catalog (and the oracle) NULL."""
    b = edge_bars
    h, l, c, v = (b[k].to_numpy(float) for k in ("high", "low", "close", "volume"))
    out = volume.compute(b, "1m")["mfi_14"].to_numpy()
    ref = talib.MFI(h, l, c, v, 14)
    assert (ref[np.isnan(out) & ~np.isnan(ref)] == 0).all()
    assert np.isnan(out[130:180]).all()
    assert_close("mfi_14", out, ref, rows=ref > 0, same_nulls=False)


# ----------------------------------------------------------------------------------------------------------------
# Brute force for the session and same-minute features
# ----------------------------------------------------------------------------------------------------------------


def _bf_clock(ts: pd.Timestamp) -> tuple[dt.date, int]:
    """Trading date and ET minute of day of one bar, with zoneinfo (independent of common.py)."""
    local = ts.to_pydatetime().astimezone(ET)
    day = local.date() + dt.timedelta(days=1 if local.hour >= 18 else 0)
    return day, local.hour * 60 + local.minute


def _brute_force(bars: pd.DataFrame) -> dict[str, np.ndarray]:
    h, l, c = (bars[k].tolist() for k in ("high", "low", "close"))
    v = bars["volume"].tolist()
    n = len(c)
    clock = [_bf_clock(t) for t in bars["ts"]]
    dates = [d for d, _ in clock]
    mods = [m for _, m in clock]
    rank = {d: k for k, d in enumerate(sorted(set(dates)))}
    sid = [rank[d] for d in dates]
    tp = [(h[i] + l[i] + c[i]) / 3 for i in range(n)]
    atr = talib.ATR(np.array(h), np.array(l), np.array(c), 14)
    rows_of = {}
    for i, s in enumerate(sid):
        rows_of.setdefault(s, []).append(i)
    total_v = {s: sum(v[j] for j in js) for s, js in rows_of.items()}
    out = {k: np.full(n, np.nan) for k in ("vwap_session_dist", "vwap_session_dist_atr", "vwap_session_z",
                                           "session_tick_imbalance", "dist_prev_session_vwap",
                                           "session_volume_frac_20", "rel_volume_tod_20")}  # fmt: skip

    def vwap(js):
        sv = sum(v[j] for j in js)
        return math.fsum(tp[j] * v[j] for j in js) / sv if sv else None

    for i in range(n):
        js = [j for j in rows_of[sid[i]] if j <= i]
        vw = vwap(js)
        if sid[i] >= 1 and vw is not None:
            out["vwap_session_dist"][i] = math.log(c[i] / vw)
            if not np.isnan(atr[i]) and abs(atr[i]) >= 1e-7 * abs(c[i]):
                out["vwap_session_dist_atr"][i] = (c[i] - vw) / atr[i]
            sd = math.sqrt(math.fsum(v[j] * (tp[j] - vw) ** 2 for j in js) / sum(v[j] for j in js))
            if len({tp[j] for j in js if v[j] > 0}) == 1:
                sd = 0.0
            if sd >= 1e-7 * abs(c[i]) and sd > 0:
                out["vwap_session_z"][i] = (c[i] - vw) / sd
        signed = [(np.sign(c[j] - c[j - 1]) * v[j], v[j]) for j in js if j >= 1]
        den = sum(b for _, b in signed)
        if sid[i] >= 1 and den:
            out["session_tick_imbalance"][i] = sum(a for a, _ in signed) / den
        if sid[i] >= 2:
            pv = vwap(rows_of[sid[i] - 1])
            if pv is not None:
                out["dist_prev_session_vwap"][i] = math.log(c[i] / pv)
        if sid[i] >= 21:
            mean20 = sum(total_v[s] for s in range(sid[i] - 20, sid[i])) / 20
            if mean20:
                out["session_volume_frac_20"][i] = sum(v[j] for j in js) / mean20
        same = [j for j in range(i) if mods[j] == mods[i]][-20:]
        if len(same) == 20:
            m = sum(v[j] for j in same) / 20
            if m:
                out["rel_volume_tod_20"][i] = v[i] / m
    return out


def test_brute_force_sessions_and_tod(dst_sample):
    bars = dst_sample
    # the sample crosses DST: same ET minute, different UTC offset
    offsets = {t.tz_convert(ET).utcoffset() for t in bars["ts"]}
    assert offsets == {dt.timedelta(hours=-5), dt.timedelta(hours=-4)}
    out = volume.compute(bars, "1m")
    ref = _brute_force(bars)
    for name, col in ref.items():
        assert_close(name, out[name], col)
    assert (~np.isnan(ref["rel_volume_tod_20"])).sum() > 30
    assert (~np.isnan(ref["session_volume_frac_20"])).sum() > 100
    assert np.isnan(ref["vwap_session_z"]).sum() > 40  # first bars, flat and zero-volume openings


def test_daily_bars_degenerate():
    """On 1d bars each bar is a session: session VWAP = tp, vwap_session_z always NULL."""
    rng = np.random.default_rng(1)
    days = _weekdays("2024-01-02", 40)
    ts = [_et(d, 0) for d in days]
    bars = _frame(ts, _ohlc(rng, 40), rng.integers(1, 100, 40))
    out = volume.compute(bars, "1d")
    assert out["vwap_session_z"].isna().all()
    tp = (bars["high"] + bars["low"] + bars["close"]) / 3
    ref = _null_where(np.log(bars["close"] / tp), np.arange(40) < 1)
    assert_close("vwap_session_dist", out["vwap_session_dist"], ref)
    assert out["session_volume_frac_20"].first_valid_index() == 21


# ----------------------------------------------------------------------------------------------------------------
# Hand-worked numbers
# ----------------------------------------------------------------------------------------------------------------


def test_hand_worked_sessions():
    """Three sessions of zero-range bars (tp = c = o = h = l).

    sid 0 (trading date 2024-01-08): c 100, 100; v 1, 1.
    sid 1 (2024-01-09, first bar at 18:00 ET on the 8th): c 100, 102, 101; v 1, 3, 2.
      s = 0, +1, -1 -> session_tick_imbalance = 0/1, 3/4, 1/6.
      VWAP = 100, 406/4 = 101.5, 608/6; d = tp - 100 = 0, 2, 1;
      m1 = 0, 6/4, 8/6; m2 = 0, 12/4, 14/6; sigma^2 = 0, 3/4, 5/9;
      vwap_session_z = NULL, 0.5/sqrt(3/4) = 1/sqrt(3), (-1/3)/(sqrt(5)/3) = -1/sqrt(5).
    sid 2 (2024-01-10): c 104, 98 -> dist_prev_session_vwap = ln(104*6/608), ln(98*6/608).
    """
    wall = ["2024-01-08 10:00", "2024-01-08 11:00", "2024-01-08 18:00", "2024-01-09 02:00", "2024-01-09 09:00",
            "2024-01-09 19:00", "2024-01-10 16:00"]  # fmt: skip
    ts = [pd.Timestamp(w).tz_localize(ET) for w in wall]
    c = np.array([100, 100, 100, 102, 101, 104, 98], float)
    bars = _frame(ts, {"open": c, "high": c, "low": c, "close": c}, np.array([1, 1, 1, 3, 2, 1, 1]))
    out = volume.compute(bars, "1h")
    nan = np.nan
    np.testing.assert_allclose(out["session_tick_imbalance"], [nan, nan, 0, 0.75, 1 / 6, 1, 0], rtol=1e-12)
    np.testing.assert_allclose(
        out["vwap_session_dist"],
        [nan, nan, 0, math.log(102 / 101.5), math.log(101 * 6 / 608), 0, math.log(98 * 2 / 202)],
        rtol=1e-10, atol=1e-15,
    )  # fmt: skip
    np.testing.assert_allclose(
        out["vwap_session_z"], [nan, nan, nan, 1 / math.sqrt(3), -1 / math.sqrt(5), nan, -1.0], rtol=1e-9
    )  # sid 2: VWAP 101, sigma 3, (98 - 101)/3 = -1
    np.testing.assert_allclose(
        out["dist_prev_session_vwap"],
        [nan] * 5 + [math.log(104 * 6 / 608), math.log(98 * 6 / 608)],
        rtol=1e-12,
    )
    assert out["log_volume"].tolist() == pytest.approx(np.log1p([1, 1, 1, 3, 2, 1, 1]).tolist(), rel=1e-15)


def test_hand_worked_volume_windows():
    """v = 1 (x19), 21, 8: volume_conc_20[19] = (19 + 441) / 40^2 = 0.2875; rel_volume_20[20] = 8 / 2 = 4."""
    n = 21
    ts = pd.date_range("2024-01-09 15:00", periods=n, freq="1min", tz="UTC")
    c = np.full(n, 100.0)
    v = np.array([1] * 19 + [21, 8])
    out = volume.compute(_frame(ts, {"open": c, "high": c + 1, "low": c - 1, "close": c}, v), "1m")
    assert out["volume_conc_20"].iloc[19] == pytest.approx(0.2875, rel=1e-14)
    assert out["volume_conc_20"].iloc[20] == pytest.approx((18 + 441 + 64) / 47**2, rel=1e-14)
    assert out["rel_volume_20"].iloc[20] == pytest.approx(4.0, rel=1e-14)
    assert np.isnan(out["rel_volume_20"].iloc[19])
    # flat closes: pv_corr NULL (FLAT_20(c)), candle imbalance 0 (c == o)
    assert np.isnan(out["pv_corr_20"].iloc[19]) and out["candle_vol_imbalance_20"].iloc[19] == 0.0


def test_hand_worked_mfi_tie_eps():
    """tp = 10, 11..17 (7 ups), 17*(1 + 5e-11) (an up below TIE_EPS: unchanged), 16..11 (6 downs); v = 1.

    P = 11 + ... + 17 = 98, M = 16 + ... + 11 = 81, MFI = 100 * 98 / 179. TA-Lib (exact comparison) counts the
    near-tie as up.
    """
    tp = np.array([10, 11, 12, 13, 14, 15, 16, 17, 17 * (1 + 5e-11), 16, 15, 14, 13, 12, 11], float)
    out = volume.mfi_14(tp, np.ones(15))
    assert np.isnan(out[:14]).all()
    assert out[14] == pytest.approx(100 * 98 / 179, rel=1e-13)
    ta = talib.MFI(tp, tp, tp, np.ones(15), 14)[14]
    assert ta == pytest.approx(100 * (98 + tp[8]) / (179 + tp[8]), rel=1e-13)


# ---------------------------------------------------------------------------------------------------- adosc precision


def large_ad_offset_bars() -> pd.DataFrame:
    """1000 identical bars (l 4000, h = c 4001) of 1e9 contracts closing at the high (mfm = 1), so AD reaches 1e12
    (OBV stays 0: the close does not move), then 1000 bars of 1..20 contracts on a random walk whose close sits on
    a quarter of the unit range (mfm in {-1, -0.5, 0, 0.5, 1}, exact in binary)."""
    rng = np.random.default_rng(17)
    n = 2000
    low = 4000.0 + 0.25 * np.cumsum(np.where(np.arange(n) < 1000, 0, rng.integers(-4, 5, n)))
    high = low + 1.0
    close = np.where(np.arange(n) < 1000, high, low + 0.25 * rng.integers(0, 5, n))
    volume = np.where(np.arange(n) < 1000, 1_000_000_000, rng.integers(1, 21, n)).astype(np.int64)
    ts = pd.date_range("2024-03-05 23:00", periods=n, freq="min", tz="UTC")
    return pd.DataFrame({"symbol": "ESH4", "ts": ts, "open": close, "high": high, "low": low, "close": close,
                         "volume": volume})


def exact_adosc_3_10_norm(bars: pd.DataFrame) -> np.ndarray:
    """Catalog #47 in 60-digit decimal arithmetic (the float64 inputs are exact decimals): AD_t = Σ mfm·v,
    EMA_n SMA-seeded on AD_0..AD_{n-1}, (EMA_3(AD) - EMA_10(AD)) / MEAN_10(v)."""
    import decimal

    with decimal.localcontext() as ctx:
        ctx.prec = 60
        D = decimal.Decimal
        h, l, c = (list(map(D, bars[k].to_numpy(float).tolist())) for k in ("high", "low", "close"))
        v = [D(int(x)) for x in bars["volume"]]
        ad, total = [], D(0)
        for hi, lo, cl, vol in zip(h, l, c, v):
            total += (((cl - lo) - (hi - cl)) / (hi - lo) if hi != lo else D(0)) * vol
            ad.append(total)

        def ema(n: int) -> list:
            out, alpha = [None] * len(ad), D(2) / D(n + 1)
            out[n - 1] = sum(ad[:n]) / n
            for t in range(n, len(ad)):
                out[t] = alpha * ad[t] + (1 - alpha) * out[t - 1]
            return out

        e3, e10 = ema(3), ema(10)
        res = np.full(len(ad), np.nan)
        for t in range(9, len(ad)):
            res[t] = float((e3[t] - e10[t]) / (sum(v[t - 9 : t + 1]) / 10))
        return res


def test_adosc_keeps_its_digits_on_a_large_ad_offset():
    """|AD| ~ 1e12 while the bar volume is ~10: the difference of the two EMAs of AD loses |AD|·ε ≈ 1e-4
    (ulp(1e12) = 2^-13), i.e. ~1e-5 bar volumes; the oracle's increment form stays within atol=1e-9 of the exact
    value on every row."""
    bars = large_ad_offset_bars()
    exact = exact_adosc_3_10_norm(bars)
    out = volume.compute(bars, "1m")["adosc_3_10_norm"].to_numpy()
    assert_close("adosc_3_10_norm", out, exact)
    h, l, c = (bars[k].to_numpy(float) for k in ("high", "low", "close"))
    v = bars["volume"].to_numpy(float)
    ad = np.cumsum(money_flow_multiplier(h, l, c) * v)
    assert abs(ad[-1]) > 9e11
    naive = (ema(ad, 3) - ema(ad, 10)) / pd.Series(v).rolling(10).mean().to_numpy()
    rtol, atol = TOL["adosc_3_10_norm"]
    assert (np.abs(naive - exact)[1300:] > atol + rtol * np.abs(exact[1300:])).sum() > 100  # the naive form fails
