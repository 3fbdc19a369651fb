"""Checks of the volatility oracle (catalog #61-#90) itself: TA-Lib / pandas references, hand-worked values,
warm-up indices, the stale flat block and the no-inf rule."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest
import talib

from tests.features_oracle import volatility as vo
from tests.features_oracle.common import BARS_PER_YEAR, PRICE_FLOOR

#: Catalog "first=" warm-up index of every column (section 6).
FIRST = {
    "rv_cc_5": 5, "rv_cc_20": 20, "rv_cc_60": 60, "rv_cc_240": 240, "rv_up_20": 20, "rv_down_20": 20,
    "ewma_vol_32": 32, "vol_parkinson_20": 19, "vol_parkinson_60": 59, "vol_gk_20": 19, "vol_gk_60": 59,
    "vol_rs_20": 19, "vol_yz_20": 20, "vol_yz_60": 60, "atr_14": 14, "natr_14": 14, "atr_ratio_5_50": 50,
    "hl_range_log": 0, "range_expansion_14": 15, "donchian_width_20": 19, "bb_width_20": 19, "bb_pctb_20": 19,
    "kc_width_20": 19, "kc_pos_20": 19, "squeeze_on": 19, "vov_20_60": 79, "vol_ratio_20_240": 240,
    "vol_ratio_pk_cc_20": 20, "rv_pctrank_20_240": 259, "rj_bv_60": 61,
}
#: Catalog tolerances (rtol, atol); None = exact.
TOL = {
    **{f"rv_cc_{n}": (1e-8, 1e-12) for n in (5, 20, 60, 240)},
    "rv_up_20": (1e-10, 1e-12), "rv_down_20": (1e-10, 1e-12), "ewma_vol_32": (1e-9, 1e-12),
    "vol_parkinson_20": (1e-10, 1e-12), "vol_parkinson_60": (1e-10, 1e-12),
    "vol_gk_20": (1e-10, 1e-12), "vol_gk_60": (1e-10, 1e-12), "vol_rs_20": (1e-10, 1e-12),
    "vol_yz_20": (1e-8, 1e-12), "vol_yz_60": (1e-8, 1e-12),
    "atr_14": (1e-9, 1e-12), "natr_14": (1e-9, 1e-12), "atr_ratio_5_50": (1e-9, 1e-12),
    "hl_range_log": (1e-12, 1e-14), "range_expansion_14": (1e-9, 1e-12), "donchian_width_20": (1e-12, 1e-14),
    "bb_width_20": (1e-8, 1e-12), "bb_pctb_20": (1e-8, 1e-7), "kc_width_20": (1e-9, 1e-12),
    "kc_pos_20": (1e-9, 1e-7), "squeeze_on": None, "vov_20_60": (1e-7, 1e-9), "vol_ratio_20_240": (1e-8, 1e-12),
    "vol_ratio_pk_cc_20": (1e-8, 1e-12), "rv_pctrank_20_240": None, "rj_bv_60": (1e-8, 1e-12),
}
PRICE_DIV = ["atr_ratio_5_50", "range_expansion_14", "bb_pctb_20", "kc_pos_20"]


def make_bars(n: int, seed: int = 0, price: float = 100.0, sigma: float = 0.004, tick: float | None = None):
    """Gap-free random OHLCV bars (consistent: l <= o, c <= h; h > l)."""
    rng = np.random.default_rng(seed)
    c = price * np.exp(np.cumsum(rng.normal(0.0, sigma, n)))
    o = np.r_[price, c[:-1]] * np.exp(rng.normal(0.0, sigma / 4, n))
    h = np.maximum(o, c) * np.exp(np.abs(rng.normal(0.0, sigma, n))) + 1e-6 * price
    l = np.minimum(o, c) * np.exp(-np.abs(rng.normal(0.0, sigma, n))) - 1e-6 * price
    if tick:
        o, h, l, c = (np.round(x / tick) * tick for x in (o, h, l, c))
    return frame(o, h, l, c, rng.integers(0, 500, n))


def frame(o, h, l, c, v=None) -> pd.DataFrame:
    n = len(c)
    return pd.DataFrame({
        "symbol": "ESZ4",
        "ts": pd.date_range("2024-03-04 14:30", periods=n, freq="min", tz="UTC"),
        "open": np.asarray(o, float), "high": np.asarray(h, float),
        "low": np.asarray(l, float), "close": np.asarray(c, float),
        "volume": np.asarray(v if v is not None else np.ones(n), dtype="int64"),
    })


def assert_close(actual, expected, rtol, atol, name, require_same_nulls=False):
    """Catalog comparison on rows where both are defined (optionally also identical NULL patterns)."""
    a = np.asarray(actual, float)
    b = np.asarray(expected, float)
    if require_same_nulls:
        assert np.array_equal(np.isnan(a), np.isnan(b)), f"{name}: NULL patterns differ"
    both = ~np.isnan(a) & ~np.isnan(b)
    assert both.sum() > 0, f"{name}: nothing to compare"
    err = np.abs(a[both] - b[both]) - (atol + rtol * np.abs(b[both]))
    assert (err <= 0).all(), f"{name}: {(err > 0).sum()} rows out of tolerance, worst excess {err.max():.3g}"


@pytest.fixture(scope="module")
def bars():
    return make_bars(3000, seed=1)


@pytest.fixture(scope="module")
def feats(bars):
    return vo.compute(bars, "1m")


@pytest.fixture(scope="module")
def ohlc(bars):
    return tuple(bars[k].to_numpy(float) for k in ("open", "high", "low", "close"))


# ---------------------------------------------------------------------------------------------------- shape / warm-up

def test_columns_shape_dtype(bars, feats):
    assert len(vo.COLUMNS) == 30 and list(feats.columns) == vo.COLUMNS == list(FIRST)
    assert feats.index.equals(bars.index)
    assert (feats.dtypes == "float64").all()
    assert set(np.unique(feats["squeeze_on"].dropna())) <= {0.0, 1.0}


def test_warmup_first_row(feats):
    for name in vo.COLUMNS:
        col = feats[name].to_numpy()
        defined = np.flatnonzero(~np.isnan(col))
        assert defined[0] == FIRST[name], f"{name}: first non-NULL row {defined[0]} != {FIRST[name]}"
        # gap-free, strictly moving data: defined on every later row
        assert len(defined) == len(col) - FIRST[name], name


def test_unknown_timeframe_and_annualization(bars, feats):
    with pytest.raises(ValueError):
        vo.compute(bars, "5m")
    daily = vo.compute(bars, "1d")
    scale = math.sqrt(BARS_PER_YEAR["1d"] / BARS_PER_YEAR["1m"])
    for name in ("rv_cc_20", "ewma_vol_32", "vol_yz_60", "vol_rs_20"):
        assert_close(daily[name], feats[name] * scale, 1e-12, 0, name, require_same_nulls=True)
    for name in ("atr_14", "vov_20_60", "rj_bv_60", "rv_pctrank_20_240"):
        assert_close(daily[name], feats[name], 1e-12, 0, name, require_same_nulls=True)


# ---------------------------------------------------------------------------------------------------- TA-Lib

def test_talib_atr_natr_ratio_trange(feats, ohlc):
    o, h, l, c = ohlc
    atr14 = talib.ATR(h, l, c, 14)
    assert_close(feats["atr_14"], atr14, *TOL["atr_14"], "atr_14", require_same_nulls=True)
    assert_close(feats["natr_14"], talib.NATR(h, l, c, 14), *TOL["natr_14"], "natr_14", require_same_nulls=True)
    ratio = talib.ATR(h, l, c, 5) / talib.ATR(h, l, c, 50)
    assert_close(feats["atr_ratio_5_50"], ratio, *TOL["atr_ratio_5_50"], "atr_ratio", require_same_nulls=True)
    rexp = talib.TRANGE(h, l, c) / pd.Series(atr14).shift(1).to_numpy()
    assert_close(feats["range_expansion_14"], rexp, *TOL["range_expansion_14"], "range_expansion",
                 require_same_nulls=True)


def test_talib_ewma_vol(feats, ohlc):
    c = ohlc[3]
    r = np.r_[np.nan, np.log(c[1:] / c[:-1])]
    ref = np.sqrt(BARS_PER_YEAR["1m"] * talib.EMA(r * r, 32))  # TA-Lib skips the leading NaN
    assert_close(feats["ewma_vol_32"], ref, *TOL["ewma_vol_32"], "ewma_vol_32", require_same_nulls=True)


def test_talib_bollinger_keltner_squeeze(feats, ohlc):
    o, h, l, c = ohlc
    up, mid, lo = talib.BBANDS(c, 20, 2, 2, 0)
    assert_close(feats["bb_width_20"], (up - lo) / mid, *TOL["bb_width_20"], "bb_width", require_same_nulls=True)
    assert_close(feats["bb_pctb_20"], (c - lo) / (up - lo), *TOL["bb_pctb_20"], "bb_pctb", require_same_nulls=True)
    e20, a10 = talib.EMA(c, 20), talib.ATR(h, l, c, 10)
    assert_close(feats["kc_width_20"], 4 * a10 / e20, *TOL["kc_width_20"], "kc_width", require_same_nulls=True)
    kpos = (c - (e20 - 2 * a10)) / (4 * a10)
    assert_close(feats["kc_pos_20"], kpos, *TOL["kc_pos_20"], "kc_pos", require_same_nulls=True)
    ok = ~np.isnan(up) & ~np.isnan(e20) & ~np.isnan(a10)
    flag = np.where(ok, ((up < e20 + 1.5 * a10) & (lo > e20 - 1.5 * a10)).astype(float), np.nan)
    assert np.array_equal(feats["squeeze_on"].to_numpy(), flag, equal_nan=True)
    assert 0 < np.nansum(flag) < ok.sum()  # both states occur


# ---------------------------------------------------------------------------------------------------- pandas

def test_pandas_rolling(feats, ohlc):
    o, h, l, c = ohlc
    N = BARS_PER_YEAR["1m"]
    r = np.log(pd.Series(c) / pd.Series(c).shift(1))
    for n in (5, 20, 60, 240):
        name = f"rv_cc_{n}"
        assert_close(feats[name], r.rolling(n).std() * math.sqrt(N), *TOL[name], name, require_same_nulls=True)
    hl2 = pd.Series(np.log(h / l) ** 2)
    for n in (20, 60):
        name = f"vol_parkinson_{n}"
        ref = np.sqrt(N * hl2.rolling(n).mean() / (4 * math.log(2)))
        assert_close(feats[name], ref, *TOL[name], name, require_same_nulls=True)
    dw = np.log(pd.Series(h).rolling(20).max() / pd.Series(l).rolling(20).min())
    assert_close(feats["donchian_width_20"], dw, *TOL["donchian_width_20"], "donchian", require_same_nulls=True)
    rv20 = r.rolling(20).std() * math.sqrt(N)
    vov = rv20.rolling(60).std() / rv20.rolling(60).mean()
    assert_close(feats["vov_20_60"], vov, *TOL["vov_20_60"], "vov", require_same_nulls=True)
    up = np.sqrt(N * (r.clip(lower=0) ** 2).rolling(20).mean())
    assert_close(feats["rv_up_20"], up, *TOL["rv_up_20"], "rv_up_20", require_same_nulls=True)
    dn = np.sqrt(N * (r.clip(upper=0) ** 2).rolling(20).mean())
    assert_close(feats["rv_down_20"], dn, *TOL["rv_down_20"], "rv_down_20", require_same_nulls=True)


def test_pctrank_matches_pandas_rank(feats):
    rv = feats["rv_cc_20"]
    ref = rv.rolling(240).rank(method="max", pct=True)
    assert np.array_equal(feats["rv_pctrank_20_240"].to_numpy(), ref.to_numpy(), equal_nan=True)


def test_closed_forms_brute_force(feats, ohlc):
    """YZ, GK, RS and rj_bv re-derived row by row with plain Python loops (independent of the window helpers)."""
    o, h, l, c = ohlc
    N = BARS_PER_YEAR["1m"]
    t = 1234
    on = [math.log(o[k] / c[k - 1]) for k in range(t - 59, t + 1)]
    co = [math.log(c[k] / o[k]) for k in range(t - 59, t + 1)]
    rs = [math.log(h[k] / c[k]) * math.log(h[k] / o[k]) + math.log(l[k] / c[k]) * math.log(l[k] / o[k])
          for k in range(t - 59, t + 1)]
    kk = 0.34 / (1.34 + 61 / 59)
    yz = math.sqrt(N * (np.var(on, ddof=1) + kk * np.var(co, ddof=1) + (1 - kk) * np.mean(rs)))
    assert feats["vol_yz_60"][t] == pytest.approx(yz, rel=1e-8)
    assert feats["vol_rs_20"][t] == pytest.approx(math.sqrt(N * np.mean(rs[-20:])), rel=1e-10)
    gk = [0.5 * math.log(h[k] / l[k]) ** 2 - (2 * math.log(2) - 1) * math.log(c[k] / o[k]) ** 2
          for k in range(t - 19, t + 1)]
    assert feats["vol_gk_20"][t] == pytest.approx(math.sqrt(N * np.mean(gk)), rel=1e-10)
    r = [math.log(c[k] / c[k - 1]) for k in range(t - 60, t + 1)]
    rv = sum(x * x for x in r[1:])
    bv = math.pi / 2 * sum(abs(r[i]) * abs(r[i - 1]) for i in range(1, 61))
    assert feats["rj_bv_60"][t] == pytest.approx((rv - bv) / rv, rel=1e-8)


# ---------------------------------------------------------------------------------------------------- hand-worked

def test_hand_rv_cc_5_and_hl_range():
    r = np.array([0.01, -0.01, 0.02, 0.0, 0.03])
    c = 100 * np.exp(np.r_[0.0, np.cumsum(r)])
    h, l = c * math.exp(0.01), c * math.exp(-0.01)
    out = vo.compute(frame(c, h, l, c), "1d")
    # mean 0.01; squared deviations 0, 4e-4, 1e-4, 1e-4, 4e-4 -> VAR = 1e-3 / 4 = 2.5e-4
    assert out["rv_cc_5"].iloc[5] == pytest.approx(math.sqrt(252) * math.sqrt(2.5e-4), rel=1e-12)
    assert out["rv_cc_5"].iloc[:5].isna().all()
    np.testing.assert_allclose(out["hl_range_log"], 0.02, rtol=1e-12)


def test_hand_atr_natr_range_expansion():
    # h - l = 2 around a constant close: TR = 2 on rows 1..14 -> atr_14[14] = 2; row 15 has TR = 16
    c = np.full(16, 100.0)
    h, l = c + 1, c - 1
    h[15], l[15] = 108.0, 92.0
    out = vo.compute(frame(c, h, l, c), "1m")
    assert out["atr_14"].iloc[14] == 2.0
    assert out["atr_14"].iloc[15] == pytest.approx((13 * 2 + 16) / 14, rel=1e-15)  # = 3
    assert out["natr_14"].iloc[15] == pytest.approx(3.0, rel=1e-14)               # 100·3/100
    assert out["range_expansion_14"].iloc[15] == pytest.approx(8.0, rel=1e-15)     # 16 / atr[14]
    assert out["range_expansion_14"].iloc[:15].isna().all()


def test_hand_parkinson_and_rj_bv():
    a = 0.001
    n = 70
    c = 100 * np.exp(np.cumsum(np.r_[0.0, a * (-1.0) ** np.arange(n - 1)]))  # |r| = a, alternating
    h, l = c * math.exp(0.01), c * math.exp(-0.01)                            # ln(h/l) = 0.02
    out = vo.compute(frame(c, h, l, c), "1h")
    park = math.sqrt(5796 * 0.02 ** 2 / (4 * math.log(2)))
    np.testing.assert_allclose(out["vol_parkinson_20"].iloc[19:], park, rtol=1e-12)
    # RV = 60a², BV = (π/2)·60a² -> 1 − π/2
    np.testing.assert_allclose(out["rj_bv_60"].iloc[61:], 1 - math.pi / 2, rtol=1e-9)
    assert out["rj_bv_60"].iloc[:61].isna().all()
    # not demeaned: every 20-row window has 10 returns of +a -> MEAN_20(max(r,0)²) = a²/2
    np.testing.assert_allclose(out["rv_up_20"].iloc[20:], math.sqrt(5796 * a * a / 2), rtol=1e-9)


# ---------------------------------------------------------------------------------------------------- edge cases

@pytest.fixture(scope="module")
def stale():
    """400 moving bars, a 300-bar stale flat block (o = h = l = c), 100 moving bars."""
    a = make_bars(400, seed=3, tick=0.01)
    p = a["close"].iloc[-1]
    b = frame(*[np.full(300, p)] * 4)
    c = make_bars(100, seed=4, price=p, tick=0.01)
    bars = pd.concat([a, b, c], ignore_index=True)
    bars["ts"] = pd.date_range("2024-03-04 14:30", periods=len(bars), freq="min", tz="UTC")
    return bars, vo.compute(bars, "1m")


def test_stale_block_price_floor(stale):
    bars, out = stale
    c = bars["close"].to_numpy()
    flat = slice(400, 700)
    atr = out["atr_14"].to_numpy()
    assert atr[699] < PRICE_FLOOR * c[699]           # Wilder ATR decayed through the floor
    for name in ("range_expansion_14", "kc_pos_20", "bb_pctb_20"):
        assert np.isnan(out[name].iloc[699]), name   # NULL, not 1e12-amplified noise
    assert np.isnan(out["range_expansion_14"].to_numpy()[401:700][atr[400:699] < PRICE_FLOOR * c[401:700]]).all()
    for name in PRICE_DIV:
        vals = out[name].iloc[flat].dropna()
        assert (vals.abs() < 1e3).all(), name
    # kc_pos_20 is NULL exactly where 4·WILDER_10(TR) (TA-Lib ATR 10) is below 1e-7·|c|
    h, l = bars["high"].to_numpy(), bars["low"].to_numpy()
    below = 4 * talib.ATR(h, l, c, 10) < PRICE_FLOOR * np.abs(c)
    kpos = out["kc_pos_20"].to_numpy()
    assert below[flat].any() and np.isnan(kpos[below]).all()
    assert not np.isnan(kpos[19:][~below[19:]]).any()


def test_stale_block_exact_zeros_and_nulls(stale):
    _, out = stale
    late = slice(460, 700)   # every 60/20-row window lies inside the block
    for name in ("rv_cc_5", "rv_cc_20", "rv_cc_60", "rv_up_20", "rv_down_20", "vol_parkinson_20",
                 "vol_parkinson_60", "vol_gk_20", "vol_gk_60", "vol_rs_20", "vol_yz_20", "vol_yz_60",
                 "donchian_width_20", "bb_width_20", "hl_range_log"):
        assert (out[name].iloc[late] == 0.0).all(), name
    for name in ("bb_pctb_20", "vol_ratio_pk_cc_20", "rj_bv_60"):
        assert out[name].iloc[late].isna().all(), name   # 0 ÷ 0 by the flat rule
    # r = 0 from row 400 (the block repeats the last close), rv_cc_20 = 0 from row 419, vov window all 0 from 478
    assert out["vov_20_60"].iloc[478:700].isna().all() and out["vov_20_60"].iloc[:478].iloc[79:].notna().all()
    ratio = out["vol_ratio_20_240"]
    assert (ratio.iloc[419:639] == 0.0).all() and ratio.iloc[639:700].isna().all()  # rv_cc_240 = 0 from 639
    # rv_cc_20 = 0 from row 419: all zeros tie at the bottom, rank = (number of zeros in the window) / 240
    np.testing.assert_array_equal(out["rv_pctrank_20_240"].iloc[419:659], np.arange(1, 241) / 240)
    # after the block everything is defined again
    assert out.iloc[-1].notna().all()


def test_no_inf_on_edge_cases(stale):
    _, out = stale
    assert not np.isinf(out.to_numpy()).any()
    # zero-range bars, non-positive (difference-adjusted) prices, a single row and an empty frame
    rng = np.random.default_rng(7)
    c = np.r_[np.linspace(3.0, -2.0, 150), np.linspace(-2.0, 5.0, 150)] + rng.normal(0, 0.01, 300)
    c = np.round(c, 2)
    o = np.r_[c[0], c[:-1]]
    h, l = np.maximum(o, c) + 0.01 * (np.arange(300) % 3), np.minimum(o, c)
    out = vo.compute(frame(o, h, l, c), "1h")
    assert not np.isinf(out.to_numpy()).any()
    assert out["hl_range_log"][l <= 0].isna().all()
    assert out["natr_14"][c == 0].isna().all()
    assert (out["hl_range_log"][(h == l) & (l > 0)] == 0).all()
    # NULL rule 1: a window holding a NULL return (non-positive close) is NULL
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.log(pd.Series(c) / pd.Series(c).shift(1)).where((c > 0) & (np.r_[np.nan, c[:-1]] > 0))
    for n in (5, 20, 60):
        ref = r.rolling(n).std() * math.sqrt(BARS_PER_YEAR["1h"])
        assert_close(out[f"rv_cc_{n}"], ref, *TOL[f"rv_cc_{n}"], f"rv_cc_{n}", require_same_nulls=True)
    one = vo.compute(frame([1.0], [1.0], [1.0], [1.0]), "1d")
    assert one.shape == (1, 30) and np.isnan(one.to_numpy()[0, 0])
    empty = vo.compute(frame([], [], [], []), "1d")
    assert empty.shape == (0, 30)


def test_speed_20k_rows():
    bars = make_bars(20_000, seed=9, price=4000.0, sigma=0.0005, tick=0.25)
    t0 = time.perf_counter()
    out = vo.compute(bars, "1m")
    assert time.perf_counter() - t0 < 4.0
    assert not np.isinf(out.to_numpy()).any()
