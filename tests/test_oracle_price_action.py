"""Checks of the price-action oracle (catalog #1-#30) itself: TA-Lib/pandas references, hand-worked
numbers, warm-up indices, NULL rules. Fast (< 5 s)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import talib

from tests.features_oracle import price_action as pa
from tests.features_oracle.common import PRICE_FLOOR

# Catalog "first=" warm-up row of every feature (section 6).
FIRST = {
    "ret_1": 1, "logret_1": 1, "logret_5": 5, "logret_15": 15, "logret_60": 60, "logret_240": 240,
    "mom_10": 10, "roc_10": 10, "rsi_2": 2, "rsi_14": 14, "stoch_k_14_3": 15, "stoch_d_14_3_3": 17,
    "willr_14": 13, "cci_20": 19, "macd_12_26": 25, "macd_signal_12_26_9": 33, "macd_hist_12_26_9": 33,
    "ppo_12_26": 25, "trix_15": 43, "aroon_up_25": 25, "aroon_down_25": 25, "zscore_close_20": 19,
    "dist_sma_20_atr": 19, "dist_ema_50_atr": 49, "ret_sigma_20": 21, "clv": 0, "body_ratio": 0,
    "upper_wick_ratio": 0, "lower_wick_ratio": 0, "gap_open": 1,
}

# Catalog tolerance (rtol, atol) of every feature compared against a reference below.
TOL = {
    "closed": (1e-12, 1e-14),
    "rsi": (1e-9, 1e-12),
    "stoch": (1e-10, 1e-12),
    "cci": (1e-8, 1e-7),
    "macd": (1e-9, 1e-9),
    "recursive": (1e-9, 1e-12),
    "exact": (0.0, 0.0),
    "z": (1e-8, 1e-7),
    "atr_dist": (1e-9, 1e-7),
    "ret_sigma": (1e-8, 1e-12),
}

FLAT_SHORT = slice(1000, 1030)  # 30 flat bars: flat 14/20-bar windows
FLAT_LONG = slice(2000, 2320)  # 320 flat bars: Wilder ATR decays below the price floor


def _frame(o, h, l, c, v) -> pd.DataFrame:
    n = len(c)
    return pd.DataFrame(
        {
            "symbol": "ESZ4",
            "ts": pd.date_range("2024-03-04 14:30", periods=n, freq="1min", tz="UTC"),
            "open": np.asarray(o, float),
            "high": np.asarray(h, float),
            "low": np.asarray(l, float),
            "close": np.asarray(c, float),
            "volume": np.asarray(v, dtype=np.int64),
        }
    )


def grid_walk(n: int = 4000, seed: int = 7) -> pd.DataFrame:
    """Random-walk bars on a 0.25 grid with zero-range bars, zero volume and two flat blocks."""
    rng = np.random.default_rng(seed)
    tick = 0.25
    c = 4000.0 + tick * np.cumsum(rng.integers(-3, 4, n))
    prev = np.r_[c[0] - tick, c[:-1]]
    o = prev + tick * rng.choice([-1, 0, 0, 0, 1], n)
    h = np.maximum(o, c) + tick * rng.geometric(0.5, n) - tick  # 0, 1, 2 ... ticks above the body
    l = np.minimum(o, c) - tick * rng.geometric(0.5, n) + tick
    zero_range = rng.random(n) < 0.04
    o[zero_range] = h[zero_range] = l[zero_range] = c[zero_range]
    for block in (FLAT_SHORT, FLAT_LONG):
        level = c[block.start - 1]
        o[block] = h[block] = l[block] = c[block] = level
    v = rng.integers(0, 40, n)
    v[rng.random(n) < 0.1] = 0
    return _frame(o, h, l, c, v)


def smooth_walk(n: int = 600, seed: int = 3) -> pd.DataFrame:
    """Gap-free, non-degenerate continuous prices (no ties, no flat windows): warm-ups are exact."""
    rng = np.random.default_rng(seed)
    c = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    o = np.r_[c[0], c[:-1]] * np.exp(rng.normal(0, 0.0005, n))
    h = np.maximum(o, c) * (1 + rng.uniform(1e-4, 2e-3, n))
    l = np.minimum(o, c) * (1 - rng.uniform(1e-4, 2e-3, n))
    return _frame(o, h, l, c, rng.integers(1, 100, n))


@pytest.fixture(scope="module")
def grid():
    bars = grid_walk()
    return bars, pa.compute(bars, "1m")


def assert_match(ours, ref, tol, start=0, min_rows=500, name=""):
    """Compare on rows >= start where both are defined, with the catalog tolerance."""
    ours, ref = np.asarray(ours, float), np.asarray(ref, float)
    both = ~np.isnan(ours) & ~np.isnan(ref) & np.isfinite(ref)
    both[:start] = False
    assert both.sum() >= min_rows, f"{name}: only {both.sum()} comparable rows"
    rtol, atol = tol
    bad = np.abs(ours[both] - ref[both]) > atol + rtol * np.abs(ref[both])
    if bad.any():
        idx = np.flatnonzero(both)[bad]
        raise AssertionError(
            f"{name}: {bad.sum()} rows differ, first at row {idx[0]}: ours={ours[idx[0]]!r} ref={ref[idx[0]]!r}"
        )


# ------------------------------------------------------------------------------------------ shape


def test_columns_catalog_order(grid):
    bars, out = grid
    assert pa.COLUMNS == list(FIRST)
    assert list(out.columns) == pa.COLUMNS
    assert out.index.equals(bars.index)
    assert (out.dtypes == np.float64).all()


def test_no_inf_anywhere(grid):
    _, out = grid
    assert not np.isinf(out.to_numpy()).any()
    # Degenerate inputs: zero and negative prices (difference-adjusted series), a constant series, very short.
    c = np.array([2.0, 1.0, 0.0, -1.0, 0.0, 1.0, 2.0] * 40)
    weird = pa.compute(_frame(c, c + 0.5, c - 0.5, c, np.zeros(len(c))), "1h")
    assert not np.isinf(weird.to_numpy()).any()
    assert np.isnan(weird["logret_1"].to_numpy()[[2, 3, 4, 5]]).all()  # ln needs both sides > 0
    assert np.isnan(weird["ret_1"].to_numpy()[[3, 5]]).all()  # c[t-1] = 0
    const = pa.compute(_frame(*[np.full(300, 5.0)] * 4, np.ones(300)), "1d")
    assert not np.isinf(const.to_numpy()).any()
    short = pa.compute(_frame(*[np.arange(1.0, 6.0)] * 4, np.ones(5)), "1m")
    assert short.shape == (5, 30)
    with pytest.raises(ValueError):
        pa.compute(short, "5m")


# ------------------------------------------------------------------------------------------ TA-Lib


def _talib_refs(bars):
    h, l, c = (bars[k].to_numpy(float) for k in ("high", "low", "close"))
    slowk, slowd = talib.STOCH(h, l, c, 14, 3, 0, 3, 0)
    macd, signal, hist = talib.MACD(c, 12, 26, 9)
    aroon_down, aroon_up = talib.AROON(h, l, 25)
    atr = talib.ATR(h, l, c, 14)
    with np.errstate(divide="ignore", invalid="ignore"):
        dist_sma = (c - talib.SMA(c, 20)) / atr
        dist_ema = (c - talib.EMA(c, 50)) / atr
    # (feature, reference, tolerance, first row compared)
    return [
        ("mom_10", talib.MOM(c, 10), "closed", 0),
        ("roc_10", talib.ROC(c, 10), "closed", 0),
        ("rsi_2", talib.RSI(c, 2), "rsi", 0),
        ("rsi_14", talib.RSI(c, 14), "rsi", 0),
        ("stoch_k_14_3", slowk, "stoch", 0),
        ("stoch_d_14_3_3", slowd, "stoch", 0),
        ("willr_14", talib.WILLR(h, l, c, 14), "stoch", 0),
        ("cci_20", talib.CCI(h, l, c, 20), "cci", 0),
        ("macd_12_26", macd, "macd", 300),  # TA-Lib seeds its 12-EMA at row 25 (catalog section 4.4)
        ("macd_signal_12_26_9", signal, "macd", 300),
        ("macd_hist_12_26_9", hist, "macd", 300),
        ("ppo_12_26", talib.PPO(c, 12, 26, 1), "recursive", 0),
        ("trix_15", talib.TRIX(c, 15), "recursive", 0),
        ("aroon_up_25", aroon_up, "exact", 0),
        ("aroon_down_25", aroon_down, "exact", 0),
        ("dist_sma_20_atr", dist_sma, "atr_dist", 0),
        ("dist_ema_50_atr", dist_ema, "atr_dist", 0),
    ]


def test_against_talib(grid):
    bars, out = grid
    for name, ref, tol, start in _talib_refs(bars):
        assert_match(out[name], ref, TOL[tol], start, name=name)


def test_talib_agrees_from_first_output(grid):
    """Where the catalog says TA-Lib matches from its first output, our first row is TA-Lib's first row."""
    bars, out = grid
    for name, ref, _, start in _talib_refs(bars):
        if start == 0 and not name.startswith("dist_"):
            first_ref = int(np.flatnonzero(~np.isnan(ref))[0])
            # TA-Lib STOCH aligns slow %K with slow %D (lookback 17); the catalog's slow %K starts at 15.
            expected = 17 if name == "stoch_k_14_3" else FIRST[name]
            assert first_ref == expected, name
            assert not np.isnan(out[name].iloc[first_ref]), name


def test_stoch_k_rows_before_talib_output(grid):
    """Slow %K at rows 15-16 (before TA-Lib STOCH outputs): SMA_3 of fast %K = WILLR + 100."""
    bars, out = grid
    h, l, c = (bars[k].to_numpy(float) for k in ("high", "low", "close"))
    ref = talib.SMA(talib.WILLR(h, l, c, 14) + 100.0, 3)
    assert np.isnan(ref[:15]).all()
    ours = out["stoch_k_14_3"].to_numpy()
    np.testing.assert_allclose(ours[15:17], ref[15:17], rtol=1e-10, atol=1e-12)
    assert_match(ours, ref, TOL["stoch"], name="stoch_k vs SMA(WILLR+100)")


def test_macd_early_rows_differ_from_talib_on_purpose(grid):
    """Catalog 4.4: TA-Lib MACD seeds its 12-EMA with rows 14..25; the catalog seeds at row 11."""
    bars, out = grid
    macd = talib.MACD(bars["close"].to_numpy(float), 12, 26, 9)[0]
    assert np.isnan(macd[:33]).all()  # TA-Lib's MACD line starts with the signal, at row 33
    early = slice(33, 60)
    assert not np.allclose(out["macd_12_26"].to_numpy()[early], macd[early], rtol=1e-9, atol=1e-9)


def test_talib_zero_where_catalog_null(grid):
    """TA-Lib returns 0 on zero denominators where the catalog returns NULL (catalog 4.4)."""
    bars, out = grid
    h, l, c = (bars[k].to_numpy(float) for k in ("high", "low", "close"))
    for name, ref in (
        ("willr_14", talib.WILLR(h, l, c, 14)),
        ("cci_20", talib.CCI(h, l, c, 20)),
        ("rsi_14", talib.RSI(c, 14)),
        ("rsi_2", talib.RSI(c, 2)),
    ):
        ours = out[name].to_numpy()
        only_ref = np.isnan(ours) & ~np.isnan(ref)
        assert (ref[only_ref] == 0).all(), name
        assert not (~np.isnan(ours) & np.isnan(ref)).any(), name
    # the flat blocks really do produce such rows
    assert np.isnan(out["willr_14"].to_numpy()[FLAT_SHORT][14:]).all()
    assert np.isnan(out["cci_20"].to_numpy()[FLAT_SHORT][20:]).all()


# ------------------------------------------------------------------------------------------ pandas


def test_against_pandas(grid):
    bars, out = grid
    c = bars["close"]
    r = np.log(c / c.shift(1))
    ref = {
        "ret_1": c.pct_change(),
        "logret_1": r,
        "logret_5": np.log(c / c.shift(5)),
        "logret_240": np.log(c / c.shift(240)),
        "zscore_close_20": (c - c.rolling(20).mean()) / c.rolling(20).std(),
        "ret_sigma_20": r / r.rolling(20).std().shift(1),
        "clv": ((c - bars["low"]) - (bars["high"] - c)) / (bars["high"] - bars["low"]),
        "gap_open": np.log(bars["open"] / c.shift(1)),
    }
    tol = {"zscore_close_20": "z", "ret_sigma_20": "ret_sigma"}
    for name, series in ref.items():
        assert_match(out[name], series.to_numpy(), TOL[tol.get(name, "closed")], name=name)


def _sma_seeded_ewm(x: pd.Series, n: int) -> pd.Series:
    """pandas ewm(adjust=False) with the first value replaced by the SMA of the first n non-NULL values."""
    valid = x.dropna()
    seeded = pd.concat([pd.Series([valid.iloc[:n].mean()], index=[valid.index[n - 1]]), valid.iloc[n:]])
    return seeded.ewm(alpha=2 / (n + 1), adjust=False).mean().reindex(x.index)


def test_macd_against_pandas_ewm(grid):
    bars, out = grid
    c = bars["close"]
    line = _sma_seeded_ewm(c, 12) - _sma_seeded_ewm(c, 26)
    signal = _sma_seeded_ewm(line, 9)
    assert_match(out["macd_12_26"], line.to_numpy(), TOL["macd"], name="macd")
    assert_match(out["macd_signal_12_26_9"], signal.to_numpy(), TOL["macd"], name="signal")
    assert out["macd_signal_12_26_9"].first_valid_index() == 33


# ------------------------------------------------------------------------------------------ by hand


def test_hand_worked_six_rows():
    #       o      h      l      c
    rows = [
        (10.0, 10.5, 9.5, 10.0),
        (10.25, 11.25, 10.0, 11.0),
        (10.5, 10.5, 10.5, 10.5),  # zero-range bar
        (10.5, 11.0, 10.0, 10.5),
        (11.0, 12.0, 11.0, 12.0),
        (12.0, 12.5, 10.5, 11.0),
    ]
    o, h, l, c = map(np.array, zip(*rows))
    out = pa.compute(_frame(o, h, l, c, [1] * 6), "1m")
    nan = math.nan
    expect = {
        "ret_1": [nan, 0.1, 10.5 / 11 - 1, 0.0, 12 / 10.5 - 1, 11 / 12 - 1],
        "gap_open": [nan, math.log(1.025), math.log(10.5 / 11), 0.0, math.log(11 / 10.5), 0.0],
        "clv": [0.0, 0.6, nan, 0.0, 1.0, -0.5],
        "body_ratio": [0.0, 0.6, nan, 0.0, 1.0, -0.5],
        "upper_wick_ratio": [0.5, 0.2, nan, 0.5, 0.0, 0.25],
        "lower_wick_ratio": [0.5, 0.2, nan, 0.5, 0.0, 0.25],
        # G = [-, 1, 0, 0, 1.5, 0], L = [-, 0, .5, 0, 0, 1]; seed at row 2: W(G)=.5, W(L)=.25, then
        # W <- (x + W)/2: (.25, .125), (.875, .0625), (.4375, .53125)
        "rsi_2": [nan, nan, 200 / 3, 200 / 3, 100 * 0.875 / 0.9375, 1400 / 31],
    }
    for name, values in expect.items():
        np.testing.assert_allclose(out[name].to_numpy(), values, rtol=1e-12, atol=1e-14, err_msg=name)
    # everything with a window longer than 6 rows is still NULL
    assert out[["logret_15", "rsi_14", "willr_14", "macd_12_26", "aroon_up_25"]].isna().all().all()


def test_rsi_null_when_both_averages_zero():
    c = np.array([5.0, 5.0, 5.0, 5.0, 6.0])
    rsi = pa.compute(_frame(c, c, c, c, [1] * 5), "1m")["rsi_2"].to_numpy()
    np.testing.assert_allclose(rsi, [math.nan, math.nan, math.nan, math.nan, 100.0])


def test_aroon_ties_pick_most_recent():
    h = np.r_[np.arange(1.0, 21.0), [20.0] * 6, [19.0] * 3]  # max 20 at rows 19..25
    l = h - 1
    l[[1, 10]] = 0.0  # two equal minima: most recent (row 10) counts
    out = pa.compute(_frame(h, h, l, h, [1] * len(h)), "1m")
    up, down = out["aroon_up_25"].to_numpy(), out["aroon_down_25"].to_numpy()
    assert np.isnan(up[:25]).all() and np.isnan(down[:25]).all()
    assert up[25] == 100.0 and up[28] == 100.0 * (25 - 3) / 25
    assert down[25] == 100.0 * (25 - 15) / 25


# ------------------------------------------------------------------------------------------ warm-up and NULL rules


def test_first_non_null_row_is_catalog_warm_up():
    out = pa.compute(smooth_walk(), "1m")
    for name in pa.COLUMNS:
        values = out[name].to_numpy()
        first = FIRST[name]
        assert np.isnan(values[:first]).all(), name
        assert not np.isnan(values[first:]).any(), f"{name}: NULL after the warm-up row {first}"


def test_flat_block_nulls_and_price_floor(grid):
    bars, out = grid
    h, l, c = (bars[k].to_numpy(float) for k in ("high", "low", "close"))
    end = FLAT_LONG.stop - 1
    atr = talib.ATR(h, l, c, 14)
    assert 0 < atr[end] < PRICE_FLOOR * abs(c[end])  # the stale-feed case of NULL rule 4
    row = out.iloc[end]
    for name in ("zscore_close_20", "dist_sma_20_atr", "dist_ema_50_atr", "cci_20", "willr_14",
                 "stoch_k_14_3", "stoch_d_14_3_3", "ret_sigma_20", "clv", "body_ratio"):
        assert np.isnan(row[name]), name
    # c - EMA_50 is still ~3e-6 there and ATR ~5e-11: without the floor the ratio would be ~6e4
    ema50 = talib.EMA(c, 50)[end]
    assert c[end] - ema50 != 0 and abs((c[end] - ema50) / atr[end]) > 1e3
    assert row["mom_10"] == 0.0 and row["logret_60"] == 0.0 and row["aroon_up_25"] == 100.0
    assert row["rsi_14"] > 0  # Wilder averages decay but never reach 0: RSI stays defined
    # first rows of the flat block: ATR still above the floor, the distances are defined (exactly 0)
    assert out["dist_sma_20_atr"].iloc[FLAT_LONG.start + 25] == 0.0
