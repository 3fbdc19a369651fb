"""Checks of the structure oracle (catalog #91-#120) itself: TA-Lib, pandas, brute force, hand-worked numbers."""

from __future__ import annotations

import math
from datetime import timedelta
from fractions import Fraction
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
import talib

from tests.features_oracle.structure import COLUMNS, compute

ET = "America/New_York"
#: Trading dates of the ES-like fixture: the DST switch (Sun 2024-03-10 02:00 ET) lies in the weekend halt.
DATES = ["2024-03-05", "2024-03-06", "2024-03-07", "2024-03-08", "2024-03-11", "2024-03-12", "2024-03-13"]
#: First row index that may be non-NULL (catalog "first="); session warm-ups are resolved per fixture.
FIRST = {
    "dist_high_20": 19, "dist_low_20": 19, "dist_high_240": 239, "dist_low_240": 239, "donchian_pos_55": 54,
    "breakout_high_20": 20, "breakout_low_20": 20, "hh_count_10": 10, "ll_count_10": 10, "inside_bar": 1,
    "outside_bar": 1, "adx_14": 27, "plus_di_14": 14, "minus_di_14": 14, "linreg_slope_20": 19,
    "linreg_r2_20": 19, "linreg_slope_60": 59, "linreg_r2_60": 59, "variance_ratio_5_120": 124,
    "autocorr_1_60": 61, "skew_60": 60, "kurt_60": 60, "efficiency_ratio_10": 10,
    "dist_prev_session_high": "D2", "dist_prev_session_low": "D2", "dist_prev_session_close": "D2",
    "session_gap": "D2", "overnight_gap": "D2rth", "dist_session_open": "D1", "session_range_pos": "D1",
}
SESSION_COLS = [
    "dist_prev_session_high", "dist_prev_session_low", "dist_prev_session_close", "session_gap",
    "overnight_gap", "dist_session_open", "session_range_pos",
]
CLOSED = (1e-12, 1e-14)
REGR = (1e-7, 1e-9)


# ----------------------------------------------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------------------------------------------


def _frame(local: pd.DatetimeIndex, o, h, l, c, symbol: str = "ESH4") -> pd.DataFrame:
    n = len(local)
    return pd.DataFrame({
        "symbol": symbol,
        "ts": pd.Series(local.tz_convert("UTC")),
        "open": np.asarray(o, float), "high": np.asarray(h, float), "low": np.asarray(l, float),
        "close": np.asarray(c, float), "volume": np.arange(1, n + 1, dtype=np.int64) % 50 + 1,
    })


def es_bars(drop: float = 0.05, no_rth: str | None = "2024-03-08", seed: int = 11) -> pd.DataFrame:
    """1-minute ES-like Globex bars (tick 0.25) over DATES; the partition starts mid-session (Mar 5 10:03 ET).

    ``drop``: share of minutes removed at random; ``no_rth``: a trading date whose RTH rows are all removed.
    """
    rng = np.random.default_rng(seed)
    parts, dates = [], []
    for d in DATES:
        start = pd.Timestamp(d, tz=ET) - pd.Timedelta(days=1) + pd.Timedelta(hours=18)
        rng_local = pd.date_range(start.tz_localize(None), periods=1380, freq="min").tz_localize(ET)
        parts.append(rng_local)
        dates += [d] * 1380
    local = parts[0].append(parts[1:])
    dates = np.array(dates)
    mod = local.hour * 60 + local.minute
    keep = np.asarray(local >= pd.Timestamp("2024-03-05 10:03", tz=ET))
    keep &= rng.random(len(local)) >= drop
    if no_rth is not None:
        keep &= ~((dates == no_rth) & (mod >= 570) & (mod < 960))
    local, dates = local[keep], dates[keep]
    n = len(local)
    first_of_session = np.r_[True, dates[1:] != dates[:-1]]
    c = np.empty(n)
    o = np.empty(n)
    prev = 5000.0
    for i in range(n):
        o[i] = prev + 0.25 * rng.integers(-24, 25) if first_of_session[i] else prev
        c[i] = o[i] + 0.25 * rng.integers(-4, 5)
        prev = c[i]
    h = np.maximum(o, c) + 0.25 * rng.integers(0, 3, n)
    l = np.minimum(o, c) - 0.25 * rng.integers(0, 3, n)
    h[h == l] += 0.25
    return _frame(local, o, h, l, c)


def flat_block_bars(seed: int = 5) -> pd.DataFrame:
    """500 random bars, a stale feed of 300 identical bars (o = h = l = c), then 200 random bars."""
    rng = np.random.default_rng(seed)
    n = 1000
    local = pd.date_range("2024-03-05 18:00", periods=n, freq="min").tz_localize(ET)
    c = 5000 + 0.25 * np.cumsum(rng.integers(-4, 5, n))
    c[500:800] = c[499]
    o = np.r_[c[0], c[:-1]]
    h = np.maximum(o, c) + 0.25 * rng.integers(1, 3, n)
    l = np.minimum(o, c) - 0.25 * rng.integers(1, 3, n)
    h[500:800] = l[500:800] = o[500:800] = c[499]
    return _frame(local, o, h, l, c)


@pytest.fixture(scope="module")
def es() -> tuple[pd.DataFrame, pd.DataFrame]:
    bars = es_bars()
    return bars, compute(bars, "1m")


# ----------------------------------------------------------------------------------------------------------------
# comparison helpers
# ----------------------------------------------------------------------------------------------------------------


def assert_close(a, b, rtol: float, atol: float, label: str, same_nulls: bool = True, min_rows: int = 1) -> None:
    """Catalog section 5: identical NULL patterns (optional) and |a − b| <= atol + rtol·|b| where both defined."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if same_nulls:
        diff = np.flatnonzero(np.isnan(a) != np.isnan(b))
        assert len(diff) == 0, f"{label}: NULL patterns differ at rows {diff[:10]} (a={a[diff[:3]]}, b={b[diff[:3]]})"
    both = ~np.isnan(a) & ~np.isnan(b)
    assert both.sum() >= min_rows, f"{label}: only {both.sum()} comparable rows"
    bad = np.flatnonzero(both & ~(np.abs(a - b) <= atol + rtol * np.abs(b)))
    assert len(bad) == 0, f"{label}: {len(bad)} rows off, first {bad[:5]}: {a[bad[:3]]} vs {b[bad[:3]]}"


def _ohlc(bars: pd.DataFrame):
    return (bars[k].to_numpy(float) for k in ("open", "high", "low", "close"))


# ----------------------------------------------------------------------------------------------------------------
# shape, inf, warm-up
# ----------------------------------------------------------------------------------------------------------------


def test_shape_and_no_inf(es) -> None:
    bars, out = es
    assert list(out.columns) == COLUMNS and len(COLUMNS) == 30
    assert out.index.equals(bars.index)
    assert all(out.dtypes == np.float64)
    assert not np.isinf(out.to_numpy()).any()
    flat_out = compute(flat_block_bars(), "1m")
    assert not np.isinf(flat_out.to_numpy()).any()


def _session_marks(bars: pd.DataFrame) -> dict[str, int]:
    tz = ZoneInfo(ET)
    dates, mods = [], []
    for ts in bars["ts"]:
        loc = ts.to_pydatetime().astimezone(tz)
        dates.append(loc.date() + timedelta(days=1 if loc.hour >= 18 else 0))
        mods.append(loc.hour * 60 + loc.minute)
    order = sorted(set(dates))
    sid = [order.index(d) for d in dates]
    d1, d2 = sid.index(1), sid.index(2)
    d2rth = next(i for i in range(len(sid)) if sid[i] == 2 and 570 <= mods[i] < 960)
    return {"D1": d1, "D2": d2, "D2rth": d2rth}


def test_first_non_null_is_catalog_warmup() -> None:
    bars = es_bars(drop=0.0, no_rth=None)  # no missing minutes, no NULL inputs
    out = compute(bars, "1m")
    marks = _session_marks(bars)
    for name in COLUMNS:
        first = FIRST[name] if isinstance(FIRST[name], int) else marks[FIRST[name]]
        nonnull = np.flatnonzero(out[name].notna().to_numpy())
        assert len(nonnull) and nonnull[0] == first, f"{name}: first non-NULL {nonnull[:1]} != {first}"


# ----------------------------------------------------------------------------------------------------------------
# TA-Lib and pandas references
# ----------------------------------------------------------------------------------------------------------------


def test_extremes_vs_talib(es) -> None:
    bars, out = es
    _, h, l, c = _ohlc(bars)
    for n in (20, 240):
        assert_close(out[f"dist_high_{n}"], np.log(c / talib.MAX(h, n)), *CLOSED, f"dist_high_{n}")
        assert_close(out[f"dist_low_{n}"], np.log(c / talib.MIN(l, n)), *CLOSED, f"dist_low_{n}")
    assert (out["dist_high_20"].dropna() <= 0).all() and (out["dist_low_20"].dropna() >= 0).all()


def test_channel_features_vs_pandas(es) -> None:
    bars, out = es
    _, h, l, c = _ohlc(bars)
    hs, ls, cs = pd.Series(h), pd.Series(l), pd.Series(c)
    hh, ll = hs.rolling(55).max(), ls.rolling(55).min()
    assert_close(out["donchian_pos_55"], (cs - ll) / (hh - ll), *CLOSED, "donchian_pos_55")
    hh20, ll20 = hs.rolling(20).max().shift(1), ls.rolling(20).min().shift(1)
    assert_close(out["breakout_high_20"], (cs > hh20).astype(float).where(hh20.notna()), 0, 0, "breakout_high")
    assert_close(out["breakout_low_20"], (cs < ll20).astype(float).where(ll20.notna()), 0, 0, "breakout_low")
    up = (hs > hs.shift(1)).astype(float).where(hs.shift(1).notna())
    dn = (ls < ls.shift(1)).astype(float).where(ls.shift(1).notna())
    assert_close(out["hh_count_10"], up.rolling(10).sum(), 0, 0, "hh_count_10")
    assert_close(out["ll_count_10"], dn.rolling(10).sum(), 0, 0, "ll_count_10")
    assert out["breakout_high_20"].sum() > 0 and out["inside_bar"].sum() > 0 and out["outside_bar"].sum() > 0


def test_dmi_vs_talib_from_row_400(es) -> None:
    bars, out = es
    _, h, l, c = _ohlc(bars)
    ref = {"adx_14": talib.ADX(h, l, c, 14), "plus_di_14": talib.PLUS_DI(h, l, c, 14),
           "minus_di_14": talib.MINUS_DI(h, l, c, 14)}
    for name, b in ref.items():
        a = out[name].to_numpy()
        assert not np.isnan(a[400:]).any()
        assert_close(a[400:], b[400:], 1e-9, 1e-12, name)


def test_regression_vs_talib_and_pandas(es) -> None:
    bars, out = es
    c = bars["close"].to_numpy(float)
    ln_c = np.log(c)
    t = pd.Series(np.arange(len(c), dtype=float))
    for n in (20, 60):
        assert_close(out[f"linreg_slope_{n}"], talib.LINEARREG_SLOPE(ln_c, n), *REGR, f"linreg_slope_{n}")
        # pandas' online rolling corr on the raw level (ln c ≈ 8.5) is itself off by up to ~1e-8 here (see
        # test_r2_exact_rows); R² is shift invariant, so the pandas reference runs on ln c − ln c[0].
        ref = pd.Series(ln_c - ln_c[0]).rolling(n).corr(t) ** 2
        assert_close(out[f"linreg_r2_{n}"], ref, *REGR, f"linreg_r2_{n}")


def test_r2_exact_rows(es) -> None:
    """R² of a few windows in exact rational arithmetic (inputs = the float64 ln c values)."""
    bars, out = es
    ln_c = np.log(bars["close"].to_numpy(float))
    for t in (3820, 5000, 7900):
        y = [Fraction(float(v)) for v in ln_c[t - 19 : t + 1]]
        ym, jm = sum(y) / 20, Fraction(19, 2)
        sxy = sum((j - jm) * (v - ym) for j, v in enumerate(y))
        sxx = sum((j - jm) ** 2 for j in range(20))
        syy = sum((v - ym) ** 2 for v in y)
        assert out["linreg_r2_20"].iloc[t] == pytest.approx(float(sxy**2 / (sxx * syy)), rel=1e-12, abs=1e-15)
        assert out["linreg_slope_20"].iloc[t] == pytest.approx(float(sxy / sxx), rel=1e-12, abs=1e-15)


def test_return_stats_vs_pandas(es) -> None:
    bars, out = es
    c = pd.Series(bars["close"].to_numpy(float))
    r = np.log(c / c.shift(1))
    lr5 = np.log(c / c.shift(5))
    assert_close(out["variance_ratio_5_120"], lr5.rolling(120).var() / (5 * r.rolling(120).var()), *REGR, "vr")
    assert_close(out["autocorr_1_60"], r.rolling(60).corr(r.shift(1)), *REGR, "autocorr_1_60")
    assert_close(out["skew_60"], r.rolling(60).skew(), *REGR, "skew_60")
    assert_close(out["kurt_60"], r.rolling(60).kurt(), *REGR, "kurt_60")
    er = (c - c.shift(10)).abs() / (c - c.shift(1)).abs().rolling(10).sum()
    assert_close(out["efficiency_ratio_10"], er, 1e-10, 1e-12, "efficiency_ratio_10")


# ----------------------------------------------------------------------------------------------------------------
# session features: brute force (per-row zoneinfo, explicit loops)
# ----------------------------------------------------------------------------------------------------------------


def brute_sessions(bars: pd.DataFrame, rth: tuple[int, int] = (570, 960)) -> dict[str, np.ndarray]:
    tz = ZoneInfo(ET)
    o, h, l, c = (list(x) for x in _ohlc(bars))
    n = len(c)
    dates, mods = [], []
    for ts in bars["ts"]:
        loc = ts.to_pydatetime().astimezone(tz)
        dates.append(loc.date() + timedelta(days=1 if loc.hour >= 18 else 0))
        mods.append(loc.hour * 60 + loc.minute)
    order = sorted(set(dates))
    sid = [order.index(d) for d in dates]
    members: dict[int, list[int]] = {s: [] for s in range(len(order))}
    for i in range(n):
        members[sid[i]].append(i)
    res = {k: [math.nan] * n for k in SESSION_COLS}
    for s, rows in members.items():
        rth_rows = [i for i in rows if rth[0] <= mods[i] < rth[1]]
        prev_rth = None
        for p in range(s - 1, -1, -1):
            cand = [i for i in members[p] if rth[0] <= mods[i] < rth[1]]
            if cand:
                prev_rth = cand[-1]
                break
        run_h, run_l = -math.inf, math.inf
        for i in rows:
            run_h, run_l = max(run_h, h[i]), min(run_l, l[i])
            if s >= 1:
                res["dist_session_open"][i] = math.log(c[i] / o[rows[0]])
                if run_h > run_l:
                    res["session_range_pos"][i] = (c[i] - run_l) / (run_h - run_l)
            if s >= 2:
                prev = members[s - 1]
                res["dist_prev_session_high"][i] = math.log(c[i] / max(h[j] for j in prev))
                res["dist_prev_session_low"][i] = math.log(c[i] / min(l[j] for j in prev))
                res["dist_prev_session_close"][i] = math.log(c[i] / c[prev[-1]])
                res["session_gap"][i] = math.log(o[rows[0]] / c[prev[-1]])
                if rth_rows and prev_rth is not None and i >= rth_rows[0]:
                    res["overnight_gap"][i] = math.log(o[rth_rows[0]] / c[prev_rth])
    return {k: np.array(v) for k, v in res.items()}


def test_session_features_brute_force(es) -> None:
    bars, out = es
    ref = brute_sessions(bars)
    for name in SESSION_COLS:
        assert_close(out[name], ref[name], *CLOSED, name, min_rows=1000)
    # the fixture exercises the cases: Friday without RTH rows, DST weekend, partial first session
    ts_et = bars["ts"].dt.tz_convert(ET)
    fri = (ts_et.dt.date.astype(str) == "2024-03-08") & (ts_et.dt.hour < 17)
    assert fri.any() and out.loc[fri, "overnight_gap"].isna().all()
    mon_rth = (ts_et.dt.date.astype(str) == "2024-03-11") & (ts_et.dt.hour >= 10) & (ts_et.dt.hour < 17)
    assert out.loc[mon_rth, "overnight_gap"].notna().all()  # refers to Thursday's RTH close
    assert bars["ts"].iloc[0].tz_convert(ET).hour == 10  # starts mid-session


def test_session_features_brute_force_other_product() -> None:
    """CL (RTH 09:00-14:30) and a different random path; also the 1h resample of the ES fixture."""
    bars = es_bars(drop=0.1, no_rth="2024-03-12", seed=3).assign(symbol="CLK4")
    out = compute(bars, "1m")
    ref = brute_sessions(bars, rth=(540, 870))
    for name in SESSION_COLS:
        assert_close(out[name], ref[name], *CLOSED, f"CL {name}", min_rows=1000)
    es1m = es_bars(seed=4).set_index("ts")
    hourly = es1m.resample("1h").agg({"symbol": "first", "open": "first", "high": "max", "low": "min",
                                      "close": "last", "volume": "sum"}).dropna().reset_index()
    out_h = compute(hourly, "1h")
    ref_h = brute_sessions(hourly)
    for name in SESSION_COLS:
        assert_close(out_h[name], ref_h[name], *CLOSED, f"1h {name}", min_rows=20)


def test_daily_bars_degenerate() -> None:
    """On 1d bars (open 18:00 ET) dist_session_open = ln(c/o) and overnight_gap is NULL (catalog section 1)."""
    local = pd.DatetimeIndex([pd.Timestamp(f"2024-03-{d:02d} 18:00", tz=ET) for d in (3, 4, 5, 6, 7, 10, 11)])
    c = np.array([100.0, 101, 99, 102, 103, 101, 104])
    o = np.r_[100.0, c[:-1] + 0.5]
    bars = _frame(local, o, np.maximum(o, c) + 1, np.minimum(o, c) - 1, c)
    out = compute(bars, "1d")
    assert_close(out["dist_session_open"][1:], np.log(c / o)[1:], *CLOSED, "1d dist_session_open")
    assert out["overnight_gap"].isna().all()
    assert_close(out["session_gap"][2:], np.log(o / np.r_[np.nan, c[:-1]])[2:], *CLOSED, "1d session_gap")


# ----------------------------------------------------------------------------------------------------------------
# hand-worked numbers
# ----------------------------------------------------------------------------------------------------------------


def test_hand_inside_outside_efficiency() -> None:
    local = pd.date_range("2024-03-05 18:00", periods=11, freq="min").tz_localize(ET)
    c = np.array([100, 101, 100, 102, 103, 102, 104, 105, 104, 106, 107], float)
    h = np.array([110, 109, 111, 111, 112, 112, 113, 113, 113, 114, 115], float)
    l = np.array([90, 90, 87, 87, 88, 88, 89, 89, 89, 90, 91], float)
    out = compute(_frame(local, c, h, l, c), "1m")
    # bar 1: 109 <= 110 and 90 >= 90 -> inside (non-strict); bar 2: 111 > 109 and 87 < 90 -> outside;
    # bar 3: 111 <= 111 and 87 >= 87 -> inside
    assert out["inside_bar"][:4].tolist()[1:] == [1.0, 0.0, 1.0] and np.isnan(out["inside_bar"][0])
    assert out["outside_bar"][:4].tolist()[1:] == [0.0, 1.0, 0.0]
    # |107 - 100| / (1+1+2+1+1+2+1+1+2+1) = 7/13
    assert out["efficiency_ratio_10"].iloc[10] == pytest.approx(7 / 13, rel=1e-12)
    assert out["efficiency_ratio_10"][:10].isna().all()
    # higher highs over bars 1..10: 111(2), 112(4), 113(6), 114(9), 115(10) -> 5; lower lows: 87(2) -> 1
    assert out["hh_count_10"].iloc[10] == 5 and out["ll_count_10"].iloc[10] == 1


def test_hand_linreg_exponential_path() -> None:
    """ln c linear in t with slope 0.001 -> SLOPE = 0.001, R2 = 1; dist_high_20 = ln(c/h) with rising highs."""
    n = 80
    local = pd.date_range("2024-03-05 18:00", periods=n, freq="min").tz_localize(ET)
    c = 100 * np.exp(0.001 * np.arange(n))
    out = compute(_frame(local, c, c + 0.5, c - 0.5, c), "1m")
    assert np.allclose(out["linreg_slope_20"][19:], 0.001, rtol=1e-9, atol=0)
    assert np.allclose(out["linreg_slope_60"][59:], 0.001, rtol=1e-9, atol=0)
    assert np.allclose(out["linreg_r2_60"][59:], 1.0, rtol=0, atol=1e-12)
    assert np.allclose(out["dist_high_20"][19:], np.log(c / (c + 0.5))[19:], rtol=1e-12, atol=1e-14)
    assert out["donchian_pos_55"].iloc[60] == pytest.approx((c[60] - (c[6] - 0.5)) / (c[60] + 0.5 - (c[6] - 0.5)))


def test_hand_sessions() -> None:
    """Three sessions (sid 0 partial), ES RTH [09:30, 16:00)."""
    stamps = ["2024-03-05 10:00",  # D = Mar 5, sid 0
              "2024-03-05 18:00", "2024-03-06 09:30", "2024-03-06 15:59", "2024-03-06 16:30",  # D = Mar 6, sid 1
              "2024-03-06 18:00", "2024-03-07 09:30"]  # D = Mar 7, sid 2
    local = pd.DatetimeIndex([pd.Timestamp(s, tz=ET) for s in stamps])
    o = [99.0, 100, 101, 102, 103, 104, 106]
    h = [99.5, 102, 103, 104, 103.5, 105, 107]
    l = [98.5, 99, 100, 101, 102.5, 103, 98]
    c = [99.0, 101, 102, 103, 103, 104.5, 99]
    out = compute(_frame(local, o, h, l, c), "1m")
    assert out.loc[0, SESSION_COLS].isna().all()
    assert out.loc[1, "session_range_pos"] == pytest.approx(2 / 3) and out.loc[1, "dist_session_open"] == pytest.approx(
        math.log(101 / 100))
    assert out.loc[3, "session_range_pos"] == pytest.approx((103 - 99) / (104 - 99))
    assert out.loc[1:4, ["dist_prev_session_high", "session_gap", "overnight_gap"]].isna().all().all()
    # sid 2: prior session high 104, low 99, last close 103; first open 104; RTH: open 106 vs Mar 6 15:59 close 103
    assert out.loc[5, "dist_prev_session_high"] == pytest.approx(math.log(104.5 / 104), rel=1e-12)
    assert out.loc[6, "dist_prev_session_low"] == pytest.approx(math.log(99 / 99), abs=1e-15)
    assert out.loc[6, "dist_prev_session_close"] == pytest.approx(math.log(99 / 103), rel=1e-12)
    assert out.loc[5:6, "session_gap"].tolist() == pytest.approx([math.log(104 / 103)] * 2, rel=1e-12)
    assert np.isnan(out.loc[5, "overnight_gap"]) and out.loc[6, "overnight_gap"] == pytest.approx(math.log(106 / 103))
    assert out.loc[5, "session_range_pos"] == pytest.approx(0.75) and out.loc[6, "session_range_pos"] == pytest.approx(
        1 / 9)
    assert out.loc[6, "dist_session_open"] == pytest.approx(math.log(99 / 104), rel=1e-12)


# ----------------------------------------------------------------------------------------------------------------
# flat windows, price floor, NULL-skipping in ADX
# ----------------------------------------------------------------------------------------------------------------


def test_stale_flat_block() -> None:
    bars = flat_block_bars()
    out = compute(bars, "1m")
    c = bars["close"].to_numpy()
    # windows entirely inside the flat block (c constant from row 499, r = 0 from row 500)
    assert out["linreg_r2_20"][520:800].isna().all() and out["linreg_slope_20"][520:800].eq(0).all()
    assert out["skew_60"][560:800].isna().all() and out["kurt_60"][560:800].isna().all()
    assert out["autocorr_1_60"][561:800].isna().all()
    assert out["variance_ratio_5_120"][620:800].isna().all()
    assert out["efficiency_ratio_10"][510:800].isna().all()  # 0 ÷ 0
    assert out["inside_bar"][501:800].eq(1).all() and out["hh_count_10"][510:800].eq(0).all()
    # no price floor on the DI (plain ÷, NULL rule 4): where the decayed ATR is below 1e-7·c the DI, DX and ADX
    # keep their values and match TA-Lib, whose Wilder sums decay together the same way
    h, l = bars["high"].to_numpy(float), bars["low"].to_numpy(float)
    atr = talib.ATR(h, l, c, 14)
    floored = np.flatnonzero(atr < 1e-7 * np.abs(c))
    assert len(floored) > 100
    ref = {"adx_14": talib.ADX(h, l, c, 14), "plus_di_14": talib.PLUS_DI(h, l, c, 14),
           "minus_di_14": talib.MINUS_DI(h, l, c, 14)}
    for name, b in ref.items():
        assert out[name][30:].notna().all()
        assert_close(out[name].to_numpy()[floored], b[floored], 1e-9, 1e-12, name)


def test_adx_skips_null_dx() -> None:
    """ADX skips NULL DX rows (section 4): a feed that starts flat has W(TR) = 0, so both DI and DX are NULL until
    the first move; ADX is then the mean of the first 14 non-NULL DX and continues as (13·ADX[t-1] + DX) / 14."""
    bars = flat_block_bars()
    n = len(bars)
    for k in ("open", "high", "low", "close"):
        bars.loc[:39, k] = 5000.0  # rows 0..39 identical: TR = +DM = -DM = 0 on rows 1..39
    out = compute(bars, "1m")
    pdi, mdi, adx = (out[k].to_numpy() for k in ("plus_di_14", "minus_di_14", "adx_14"))
    dx = 100 * np.abs(pdi - mdi) / (pdi + mdi)
    assert np.isnan(pdi[:40]).all() and np.isnan(mdi[:40]).all()  # 0 ÷ W(TR) = 0 is NULL (guarded division)
    first = int(np.flatnonzero(~np.isnan(dx))[0])
    assert 40 <= first < n and np.isnan(dx[:first]).all() and not np.isnan(dx[first:]).any()
    assert np.isnan(adx[: first + 13]).all()
    assert adx[first + 13] == pytest.approx(np.mean(dx[first : first + 14]), rel=1e-12)
    assert adx[first + 14] == pytest.approx((13 * adx[first + 13] + dx[first + 14]) / 14, rel=1e-12)


