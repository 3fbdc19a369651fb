"""Signal generators (sql/signals/*.sql, engine/signals/generators.py): hand-built bars where the right signal is obvious.

One warehouse of hourly bars is built once for the module (ingest + the real feature build, a few seconds),
with one scenario per root:

* ES   a clean uptrend (+1 point a bar), volume 400 on every bar with t % 10 == 5, else 100;
* NQ   noise, a six-bar spike up and back, noise, a six-bar crash and back;
* MES  a flat range (4996..5004) for 120 bars, then a close at 5010 on volume 500 (5x), then 5010/5011;
* MNQ  the same, but the break bar's volume is 110 (no confirmation);
* CL   300 volatile bars, 200 calm bars drifting up, 150 volatile bars trending up.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlglot

from engine.cli.signals import signals_app
from engine.signals.generators import build_signals, registry, signal_query, signals_relation
from warehouse import Warehouse
from warehouse.errors import QEError
from warehouse.features.lint import lint_lookahead

START = pd.Timestamp("2024-01-02 00:00", tz="UTC")
RANGE_BARS = 120  # MES / MNQ: bars in the range before the break bar


# -- data -----------------------------------------------------------------------------------------------


def _frame(contract: str, close, volume, tick: float, open_=None) -> pd.DataFrame:
    close = np.round(np.asarray(close, float) / tick) * tick
    if open_ is None:
        open_ = np.concatenate([[close[0]], close[:-1]])
    open_ = np.round(np.asarray(open_, float) / tick) * tick
    return pd.DataFrame({
        "symbol": contract, "ts": pd.date_range(START, periods=len(close), freq="h"),
        "open": open_, "high": np.maximum(open_, close) + tick, "low": np.minimum(open_, close) - tick,
        "close": close, "volume": np.asarray(volume, dtype="int64"),
    })


def _uptrend(n: int = 200) -> pd.DataFrame:
    t = np.arange(n)
    return _frame("ESH4", 4000 + t * 1.0, np.where(t % 10 == 5, 400, 100), 0.25, open_=4000 + t * 1.0 - 0.5)


def _spike() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    steps = [-0.5, -0.25, 0.25, 0.5]
    base = 15000 + np.cumsum(rng.choice(steps, 150))
    up = base[-1] + 15 * np.arange(1, 7)          # rows 150..155: the top is row 155
    down = up[-1] - 15 * np.arange(1, 7)          # rows 156..161
    mid = down[-1] + np.cumsum(rng.choice(steps, 40))
    crash = mid[-1] - 15 * np.arange(1, 7)        # rows 202..207: the bottom is row 207
    rebound = crash[-1] + 15 * np.arange(1, 7)
    tail = rebound[-1] + np.cumsum(rng.choice(steps, 20))
    close = np.concatenate([base, up, down, mid, crash, rebound, tail])
    return _frame("NQH4", close, np.full(len(close), 100), 0.25)


def _range_break(contract: str, break_volume: int) -> pd.DataFrame:
    pattern = np.array([0, 2, 4, 2, 0, -2, -4, -2], float)
    close = np.concatenate([5000 + np.tile(pattern, RANGE_BARS // len(pattern)), 5010 + np.tile([0.0, 1.0], 10)])
    volume = np.full(len(close), 100)
    volume[RANGE_BARS] = break_volume
    return _frame(contract, close, volume, 0.25)


def _regimes() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    volatile = 75 + np.cumsum(rng.normal(0, 0.5, 300))
    calm = volatile[-1] + np.cumsum(rng.normal(0.01, 0.03, 200))
    trend = calm[-1] + np.cumsum(rng.normal(0.3, 0.4, 150))
    close = np.concatenate([volatile, calm, trend])
    return _frame("CLH4", close, np.full(len(close), 1000), 0.01)


@pytest.fixture(scope="module")
def wh(tmp_path_factory) -> Warehouse:
    from loaders.ingest import ingest
    from warehouse.features.materialize import build_features

    root = tmp_path_factory.mktemp("signals")
    warehouse = Warehouse(root / "qe_data")
    bars = pd.concat([_uptrend(), _spike(), _range_break("MESH4", 500), _range_break("MNQH4", 110), _regimes()])
    path = root / "bars.parquet"
    pq.write_table(pa.Table.from_pandas(bars, preserve_index=False), path)
    [report] = ingest(warehouse, [path], timeframe="1h")
    assert report.error is None
    assert warehouse.sql("SELECT count(*) AS n FROM quarantine").to_pylist()[0]["n"] == 0
    built = build_features(warehouse, "1h")
    assert sorted(built.built) == ["CL", "ES", "MES", "MNQ", "NQ"]
    yield warehouse
    warehouse.close()


def _run(wh: Warehouse, name: str, symbols: list[str] | None = None, **params) -> pd.DataFrame:
    frame = wh.pandas(signal_query(name, "1h", symbols, params or None))
    return frame.sort_values(["symbol", "ts"]).reset_index(drop=True)


def _one(wh: Warehouse, name: str, symbol: str, **params) -> pd.DataFrame:
    return _run(wh, name, [symbol], **params)


# -- registry and rendering -------------------------------------------------------------------------------


def test_the_header_registry_lists_five_generators_with_classes_and_parameters():
    reg = registry()
    assert list(reg.generators) == ["momentum", "mean_reversion", "breakout", "volatility_regime", "composite"]
    assert [g.class_name for g in reg.generators.values()] == [
        "MomentumSignalGenerator", "MeanReversionSignalGenerator", "BreakoutSignalGenerator",
        "VolatilityRegimeSignalGenerator", "CompositeSignalGenerator"]
    assert all(g.description and g.params and g.outputs for g in reg.generators.values())
    mr = {p.name: p.default for p in reg.get("MeanReversionSignalGenerator").params}
    assert mr == {"pctb_low": 0.0, "pctb_high": 1.0, "z_entry": 2.0, "z_full": 3.0, "rsi_oversold": 30.0,
                  "rsi_overbought": 70.0}
    # Composed generators take their parts' parameters under a prefix, recursively; everyone takes sizing.
    params = reg.parameters("composite")
    assert {"w_momentum", "momentum.short", "breakout.channel", "volatility_regime.momentum.adx_min",
            "volatility_regime.ratio_high", "sizing", "max_contracts", "target_vol"} <= set(params)
    assert "momentum.sizing" not in params
    assert reg.get("volatility_regime").uses == ("momentum", "mean_reversion")


def test_unknown_parameters_and_bad_values_are_clear_errors():
    with pytest.raises(QEError, match=r"momentum.*unknown parameter\(s\) shorty; valid: short, medium"):
        signal_query("momentum", "1h", params={"shorty": 3})
    with pytest.raises(QEError, match="unknown parameter"):
        signal_query("composite", "1h", params={"momentum.nope": 1})
    with pytest.raises(QEError, match="'short' must be one of 1, 5, 15, 60, 240"):
        signal_query("momentum", "1h", params={"short": 7})
    with pytest.raises(QEError, match="'channel' must be int"):
        signal_query("breakout", "1h", params={"channel": "wide"})
    with pytest.raises(QEError, match="short < medium < long"):
        signal_query("momentum", "1h", params={"short": 60, "long": 15})
    with pytest.raises(QEError, match="rsi_oversold < rsi_overbought"):
        signal_query("mean_reversion", "1h", params={"rsi_oversold": 80})
    with pytest.raises(QEError, match="at least one weight"):
        signal_query("composite", "1h", params={f"w_{n}": 0 for n in ("momentum", "mean_reversion", "breakout",
                                                                        "volatility_regime")})
    with pytest.raises(QEError, match="unknown signal generator 'nope'"):
        signal_query("nope")
    with pytest.raises(QEError, match="not '5m'"):
        signal_query("momentum", "5m")
    with pytest.raises(QEError, match="invalid symbol"):
        signal_query("momentum", "1h", symbols=["ES'; DROP"])
    # Text values (from --param k=v) are typed by the header.
    assert "logret_15 AS ret_short" in signal_query("momentum", "1h", params={"short": "15", "medium": "60", "long": "240"})


@pytest.mark.parametrize("timeframe", ["1m", "1h", "1d"])
def test_every_rendered_query_passes_the_lookahead_lint_and_declares_its_columns(timeframe):
    from engine.data.feed import infer_timeframe

    for gen in registry().generators.values():
        sql = signal_query(gen.name, timeframe, ["ES", "NQ"])
        tree = sqlglot.parse_one(sql, read="duckdb")
        lint_lookahead(gen.template, tree)  # raises on LEAD / FOLLOWING / joins to later rows
        assert [p.alias_or_name for p in tree.selects] == list(gen.columns)
        assert list(gen.columns[:10]) == ["symbol", "ts", "open", "high", "low", "close", "volume", "contract",
                                          "signal", "target"]
        assert "lead(" not in sql.lower() and "following" not in sql.lower()
        # Usable as a backtest query: the timeframe is inferred from the views it reads.
        assert infer_timeframe(sql) == timeframe
    # The lint does look at the breakout channel: a channel that includes later bars is refused.
    leaky = signal_query("breakout", timeframe).replace("AND 1 PRECEDING", "AND 1 FOLLOWING")
    with pytest.raises(QEError, match="FOLLOWING"):
        lint_lookahead("leaky", sqlglot.parse_one(leaky, read="duckdb"))


# -- the scenarios ----------------------------------------------------------------------------------------


def test_every_signal_is_in_range_and_null_exactly_during_warm_up(wh):
    warmup = {"momentum": 60, "mean_reversion": 19, "breakout": 20, "volatility_regime": 259, "composite": 259}
    for name, first in warmup.items():
        frame = _run(wh, name)
        assert set(frame.symbol) == {"CL", "ES", "MES", "MNQ", "NQ"}
        values = frame.signal.dropna()
        assert ((values >= -1) & (values <= 1)).all(), name
        assert (frame.signal.isna() == frame.target.isna()).all(), name
        for _, rows in frame.groupby("symbol"):
            assert rows.signal.iloc[:first].isna().all(), name
            if len(rows) > first:
                assert rows.signal.iloc[first:].notna().all(), name
        targets = frame.target.dropna()
        assert (targets == targets.round()).all() and targets.abs().max() <= 10, name
    types = dict(wh.connect().sql(f"DESCRIBE {signal_query('composite', '1h')}").fetchall()[i][:2] for i in range(10))
    assert types["signal"] == "DOUBLE" and types["target"] == "INTEGER" and types["contract"] == "VARCHAR"


def test_clean_uptrend_gives_a_momentum_long_and_volume_confirmed_breakouts(wh):
    mom = _one(wh, "momentum", "ES")
    assert mom.signal.iloc[:60].isna().all()
    assert (mom.signal.iloc[60:] > 0.9).all()  # every lookback up, close above EMA_50, ADX 100
    assert (mom.target.iloc[60:] > 0).all()
    assert (mom.ret_short.iloc[60:] > 0).all() and (mom.trend_dist.iloc[60:] > 0).all()

    # hold=0: the signal is the breakout bar's own event. The close is above the prior 20-bar high on every
    # bar, but only the bars with 4x volume (t % 10 == 5: rel_volume 400/130 = 3.08) are confirmed.
    bo = _one(wh, "breakout", "ES", hold=0)
    t = np.arange(len(bo))
    assert (bo.breakout.iloc[20:] == 1).all()
    confirmed = (t >= 20) & (t % 10 == 5)
    assert (bo.signal[confirmed] == 1.0).all()  # min(1, 3.08 / 3.0)
    assert (bo.signal[(t >= 20) & ~confirmed] == 0).all()
    assert (bo.rel_volume[(t >= 20) & ~confirmed] < 1.5).all()
    # The default hold keeps the long for 10 bars after each confirmed breakout (so from bar 25 on here).
    held = _one(wh, "breakout", "ES")
    assert (held.signal.iloc[25:] == 1.0).all() and (held.signal.iloc[20:25] == 0).all()
    # A clean trend is not a mean-reversion short (%B 0.91 < 1), and never long.
    mr = _one(wh, "mean_reversion", "ES")
    assert (mr.signal.dropna() == 0).all()


def test_spike_and_revert_mean_reversion_fades_with_rsi_in_the_right_direction(wh):
    mr = _one(wh, "mean_reversion", "NQ")
    top, bottom = 155, 207
    assert mr.close.iloc[top] == mr.close.iloc[140:170].max()
    row = mr.iloc[top]
    assert row.signal < 0 and row.target < 0
    assert row.pctb > 1 and row.zscore > 2 and row.rsi > 70
    assert (mr.signal.iloc[150:162] <= 0).all()  # never long on the way up or at the top
    row = mr.iloc[bottom]
    assert mr.close.iloc[bottom] == mr.close.iloc[190:230].min()
    assert row.signal > 0 and row.target > 0 and row.pctb < 0 and row.zscore < -2 and row.rsi < 30
    assert (mr.signal.iloc[202:214] >= 0).all()
    # RSI confirms in the right direction on every row of every symbol: long only when oversold, short
    # only when overbought -- never long with an overbought RSI.
    every = _run(wh, "mean_reversion")
    assert (every.rsi[every.signal > 0] < 30).all() and (every.rsi[every.signal < 0] > 70).all()
    assert (every.signal > 0).any() and (every.signal < 0).any()
    # Without RSI confirmation (an overbought level no RSI reaches) the spike top is not shorted.
    strict = _one(wh, "mean_reversion", "NQ", rsi_overbought=99.9)
    assert strict.signal.iloc[top] == 0


def test_range_break_fires_on_the_break_bar_and_not_before_only_with_volume(wh):
    for params in ({}, {"hold": 0}):
        mes = _one(wh, "breakout", "MES", **params)
        assert (mes.signal.iloc[20:RANGE_BARS] == 0).all()
        assert mes.signal.iloc[:20].isna().all()
        nonzero = np.flatnonzero(mes.signal.fillna(0).to_numpy() != 0)
        assert nonzero[0] == RANGE_BARS
        row = mes.iloc[RANGE_BARS]
        assert row.close == 5010 and row.channel_high == 5004.25 and row.rel_volume == 5.0
        assert row.signal == 1.0 and row.breakout == 1
        # The channel excludes the current bar: on the next bar it includes the break bar's high.
        assert mes.channel_high.iloc[RANGE_BARS + 1] == 5010.25
    # The same break on ordinary volume (1.1x) is a breakout of price but no signal.
    mnq = _one(wh, "breakout", "MNQ")
    assert mnq.breakout.iloc[RANGE_BARS] == 1 and mnq.rel_volume.iloc[RANGE_BARS] == pytest.approx(1.1)
    assert (mnq.signal.dropna() == 0).all()


def test_breakout_channel_of_20_matches_the_catalog_columns(wh):
    frame = wh.pandas(
        f"SELECT s.symbol, s.ts, s.breakout, f.breakout_high_20, f.breakout_low_20 FROM ({signal_query('breakout', '1h')}) s "
        "JOIN features_1h f USING (symbol, ts) WHERE s.breakout IS NOT NULL")
    assert len(frame) > 1000
    expected = frame.breakout_high_20 - frame.breakout_low_20
    assert (frame.breakout == expected).all()


def test_volatility_regime_follows_mean_reversion_when_calm_and_momentum_when_volatile(wh):
    vr = _one(wh, "volatility_regime", "CL")
    live = vr[vr.signal.notna()]
    # The switch, on every row: regime 1 -> the momentum signal, -1 -> the mean-reversion signal, 0 -> flat.
    assert np.allclose(live.signal[live.regime == 1], live.momentum_signal[live.regime == 1])
    assert np.allclose(live.signal[live.regime == -1], live.mean_reversion_signal[live.regime == -1])
    assert (live.signal[live.regime == 0] == 0).all()
    calm, volatile = vr.iloc[320:500], vr.iloc[505:600]
    assert (calm.regime == -1).mean() > 0.9 and (calm.vol_ratio < 1).all()
    assert (volatile.regime == 1).mean() > 0.9 and (volatile.vol_ratio > 1.2).mean() > 0.9
    # The calm segment drifts up, so momentum is long there -- but the regime takes mean reversion instead
    # (flat, or short at the small pops) ...
    ignored = calm[(calm.regime == -1) & (calm.momentum_signal > 0.5)]
    assert len(ignored) > 20 and (ignored.signal == ignored.mean_reversion_signal).all()
    assert (calm.signal[calm.regime == -1] < 0).any()
    # ... and in the volatile trend it follows momentum even where mean reversion says short.
    assert (volatile.signal[volatile.regime == 1] > 0.5).mean() > 0.8
    overruled = volatile[(volatile.regime == 1) & (volatile.mean_reversion_signal < 0)]
    assert len(overruled) >= 1 and (overruled.signal > 0).all()
    # The sub-signals are the momentum and mean_reversion generators themselves, with their own parameters.
    mom = _one(wh, "momentum", "CL", adx_min=30)
    again = _one(wh, "volatility_regime", "CL", **{"momentum.adx_min": 30})
    assert np.allclose(again.momentum_signal, mom.signal, equal_nan=True)
    assert not np.allclose(again.momentum_signal, vr.momentum_signal, equal_nan=True)


def test_composite_is_the_normalized_weighted_sum_of_the_four_signals(wh):
    weights = {"momentum": 2.0, "mean_reversion": 1.0, "breakout": 0.5, "volatility_regime": -1.5}
    comp = _run(wh, "composite", **{f"w_{k}": v for k, v in weights.items()})
    parts = {k: _run(wh, k).set_index(["symbol", "ts"]).signal for k in weights}
    comp = comp.set_index(["symbol", "ts"])
    for k in weights:
        assert np.allclose(comp[f"{k}_signal"], parts[k].reindex(comp.index), equal_nan=True), k
    total = sum(abs(w) for w in weights.values())
    expected = sum(w * parts[k].reindex(comp.index) for k, w in weights.items()) / total
    assert np.allclose(comp.signal, expected, atol=1e-12, equal_nan=True)
    values = comp.signal.dropna()
    # Only CL is longer than the regime's 259-bar warm-up (rv_pctrank_20_240), so only CL has values here.
    assert len(values) > 350 and ((values >= -1) & (values <= 1)).all()
    assert (values != 0).any()
    # Without the regime every symbol has values after 60 bars.
    three = {"momentum": 1.0, "mean_reversion": -0.5, "breakout": 2.0}
    comp3 = _run(wh, "composite", w_volatility_regime=0, **{f"w_{k}": v for k, v in three.items()})
    comp3 = comp3.set_index(["symbol", "ts"])
    expected3 = sum(w * parts[k].reindex(comp3.index) for k, w in three.items()) / 3.5
    assert np.allclose(comp3.signal, expected3, atol=1e-12, equal_nan=True)
    assert comp3.signal.notna().sum() > 1000 and comp3.signal.abs().max() <= 1
    # A weight of 0 leaves a generator out (not computed; its column NULL).
    only = _run(wh, "composite", w_mean_reversion=0, w_breakout=0, w_volatility_regime=0).set_index(["symbol", "ts"])
    assert only.breakout_signal.isna().all()
    assert np.allclose(only.signal, parts["momentum"].reindex(only.index), equal_nan=True)
    # With default (equal) weights an all-agreeing extreme stays inside [-1, 1].
    default = _run(wh, "composite").signal.dropna()
    assert default.abs().max() <= 1


# -- sizing -----------------------------------------------------------------------------------------------


def test_vol_sizing_matches_the_documented_formula_and_the_risk_managers_helper(wh):
    from engine.risk import volatility_scaled_contracts

    frame = _run(wh, "momentum", target_vol=0.05, max_contracts=1000)
    live = frame[frame.signal.notna()]
    assert (live.signal != 0).sum() > 100
    for row in live.itertuples():
        scale = min(max(0.05 / row.sizing_vol, 0.25), 2.0) if row.sizing_vol and row.sizing_vol > 0 else 0.25
        expected = math.copysign(math.floor(abs(row.signal) * 1e6 * scale / (row.close * row.multiplier) + 1e-9), row.signal)
        assert row.vol_scale == pytest.approx(scale)
        assert row.target == expected
        assert row.target == volatility_scaled_contracts(row.signal, 1e6, row.close, row.multiplier, row.sizing_vol,
                                                         target_vol=0.05)


def test_sizing_hand_worked_on_the_mes_break_bar(wh):
    # signal 1.0, MES close 5010, multiplier 5 -> 25,050 per contract; rv_cc_20 there is ~0.051.
    def target(**params):
        return _one(wh, "breakout", "MES", **params).iloc[RANGE_BARS]

    row = target()
    assert row.signal == 1.0 and row.multiplier == 5.0 and 0.04 < row.sizing_vol < 0.06
    assert row.vol_scale == 2.0 and row.target == 10  # 1e6 * 2 / 25,050 = 79.8 -> capped at max_contracts 10
    assert target(max_contracts=100).target == 79
    # target_vol 0.01 -> scale 0.195, clipped up to min_vol_scale 0.25: 1e6 * 0.25 / 25,050 = 9.98 -> 9
    assert target(target_vol=0.01, max_contracts=100).target == 9
    assert target(capital=100_000, max_contracts=100).target == 7  # 1e5 * 2 / 25,050 = 7.98
    assert target(sizing="fixed", max_contracts=3).target == 3
    # fixed sizing: round(signal * max_contracts), half away from zero
    fixed = _run(wh, "mean_reversion", sizing="fixed", max_contracts=4)
    live = fixed[fixed.signal.notna()]
    expected = np.sign(live.signal) * np.floor(np.abs(live.signal) * 4 + 0.5)
    assert (live.target == expected).all() and (live.target.abs() <= 4).all()


# -- both execution paths ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["momentum", "mean_reversion", "breakout", "volatility_regime", "composite"])
def test_each_generator_runs_through_the_vectorized_path_and_the_event_engine_alike(wh, name):
    from engine.backtest.run import BacktestConfig, run_backtest
    from engine.risk import RiskLimits
    from engine.strategies.signal_follower import SignalFollower
    from engine.backtest.vectorized import run_vectorized

    query = signal_query(name, "1h", params={"max_contracts": 3})
    config = BacktestConfig(risk=RiskLimits.off())
    vector = run_vectorized(wh, query, config=config, record=False)
    event = run_backtest(wh, query, SignalFollower(), config, record=False)
    assert vector.timeframe == event.timeframe == "1h"
    fills_v, fills_e = vector.tables["fills"], event.tables["fills"]
    assert fills_v.num_rows > 0 and fills_v.num_rows == fills_e.num_rows
    for column in ("symbol", "quantity", "ts"):
        assert fills_v.column(column).to_pylist() == fills_e.column(column).to_pylist(), column
    np.testing.assert_allclose(fills_v.column("price").to_numpy(), fills_e.column("price").to_numpy(), atol=1e-9)
    assert vector.final_equity == pytest.approx(event.final_equity, abs=1e-6)
    # Positions never exceed the sizing cap.
    frame = wh.pandas(query)
    assert frame.target.abs().max() <= 3


def test_signal_follower_refuses_a_query_without_a_target_column(wh):
    from engine.backtest.run import BacktestConfig, run_backtest
    from engine.risk import RiskLimits
    from engine.strategies.signal_follower import SignalFollower

    with pytest.raises(QEError, match="no 'target' column"):
        run_backtest(wh, "SELECT * FROM bars_1h", SignalFollower(), BacktestConfig(risk=RiskLimits.off()), record=False)


# -- materialization and the command line -----------------------------------------------------------------


def test_build_signals_writes_partitions_atomically_and_reads_back(wh):
    report = build_signals(wh, "breakout", "1h", params={"hold": 3})
    assert report.symbols == ["CL", "ES", "MES", "MNQ", "NQ"] and report.rows == len(_run(wh, "breakout"))
    base = wh.root / "signals" / "breakout" / "timeframe=1h"
    assert report.path == base
    assert sorted(p.relative_to(base).as_posix() for p in base.rglob("*.parquet")) == [
        f"symbol={s}/year=2024/data.parquet" for s in ("CL", "ES", "MES", "MNQ", "NQ")]
    assert not list(wh.root.rglob("*.tmp")) and not list((wh.root / ".staging").glob("*"))
    manifest = json.loads((base / "_build.json").read_text())
    assert manifest["symbols"]["ES"]["params"]["hold"] == 3
    stored = wh.pandas(signals_relation(wh.root, "breakout", "1h") + " ORDER BY symbol, ts")
    fresh = _run(wh, "breakout", hold=3)
    assert list(stored.columns) == list(fresh.columns)
    pd.testing.assert_frame_equal(stored.reset_index(drop=True), fresh, check_dtype=False)
    # Rebuilding one symbol replaces only its partitions.
    before = (base / "symbol=CL" / "year=2024" / "data.parquet").stat().st_mtime_ns
    again = build_signals(wh, "breakout", "1h", symbols=["ES"])
    assert again.symbols == ["ES"] and again.files == 1
    assert (base / "symbol=CL" / "year=2024" / "data.parquet").stat().st_mtime_ns == before
    assert json.loads((base / "_build.json").read_text())["symbols"]["ES"]["params"]["hold"] == 10


def test_build_signals_without_features_is_a_clear_error(tmp_path):
    with pytest.raises(QEError, match="qe features build --timeframe 1d"):
        build_signals(Warehouse(tmp_path / "empty"), "momentum", "1d")


def test_cli_list_params_show_and_build(wh, monkeypatch):
    from typer.testing import CliRunner

    monkeypatch.setenv("COLUMNS", "400")  # rich wraps tables to the terminal width
    runner = CliRunner()
    listed = runner.invoke(signals_app, ["list"])
    assert listed.exit_code == 0, listed.output
    for cls in ("MomentumSignalGenerator", "MeanReversionSignalGenerator", "BreakoutSignalGenerator",
                "VolatilityRegimeSignalGenerator", "CompositeSignalGenerator"):
        assert cls in listed.output
    assert "rsi_overbought=70" in listed.output and "max_contracts=10" in listed.output
    params = runner.invoke(signals_app, ["params", "composite"])
    assert params.exit_code == 0 and "volatility_regime.momentum.short" in params.output
    shown = runner.invoke(signals_app, ["show", "momentum", "-t", "1h", "-s", "ES,NQ", "-p", "adx_min=25"])
    assert shown.exit_code == 0
    assert shown.output.lstrip().startswith("WITH") and "features_1h" in shown.output
    assert "CAST(25.0 AS DOUBLE)" in shown.output and "IN ('ES', 'NQ')" in shown.output
    bad = runner.invoke(signals_app, ["show", "momentum", "-p", "nope=1"])
    assert bad.exit_code != 0 and "unknown parameter" in str(bad.exception)
    monkeypatch.setenv("QE_WAREHOUSE", str(wh.root))
    # the sub-app alone: no --warehouse of an earlier `qe` invocation in this process may linger
    monkeypatch.setattr("engine.cli.main.state.warehouse", None)
    built = runner.invoke(signals_app, ["build", "mean_reversion", "-t", "1h", "-s", "NQ", "-p", "z_entry=2.5"])
    assert built.exit_code == 0, built.output
    assert "1 symbol(s) (NQ)" in built.output
    assert (wh.root / "signals" / "mean_reversion" / "timeframe=1h" / "symbol=NQ" / "year=2024" / "data.parquet").exists()


def test_signal_follower_can_size_in_the_engine_under_the_risk_limits(wh):
    from engine.backtest.run import BacktestConfig, run_backtest
    from engine.strategies.signal_follower import SignalFollower

    # MES breakout: the SQL target is 10 contracts (250,500 notional), far over the house limit of 5 % of
    # equity per position; trading the column gives one denial per bar, sizing in the engine gives none.
    query = signal_query("breakout", "1h", ["MES"])
    column = run_backtest(wh, query, SignalFollower(), BacktestConfig(), record=False)
    engine = run_backtest(wh, query, SignalFollower(sizing="engine"), BacktestConfig(), record=False)
    denials = lambda run: [e for e in run.tables["events"].to_pylist() if e["kind"] == "denial"]
    assert len(denials(column)) > 1 and column.tables["fills"].num_rows == 0
    assert denials(engine) == [] and engine.tables["fills"].num_rows > 0
    assert max(abs(q) for q in engine.tables["fills"].column("quantity").to_pylist()) <= 10
    with pytest.raises(QEError, match="sizing must be"):
        SignalFollower(sizing="nope")


@pytest.mark.parametrize("name", ["momentum", "mean_reversion", "breakout", "volatility_regime", "composite"])
def test_qe_backtest_runs_each_generator_through_the_risk_manager_on_a_sql_universe(wh, name):
    # The "done when": each generator, through the event engine and the risk manager (house limits),
    # on a multi-root universe chosen with SQL; the run is recorded and every denial carries a stable code.
    from engine.backtest.run import BacktestConfig, run_backtest
    from engine.strategies.signal_follower import SignalFollower

    universe = "SELECT root FROM contracts WHERE correlation_group IN ('equity_index', 'energy')"
    query = (f"SELECT * FROM ({signal_query(name, '1h', params={'capital': 10_000_000, 'max_contracts': 4})}) AS s "
             f"WHERE s.symbol IN ({universe}) ORDER BY s.ts, s.symbol")
    result = run_backtest(wh, query, SignalFollower(), BacktestConfig(initial_capital=10_000_000.0))
    assert len(result.symbols) >= 3
    recorded = wh.sql(f"SELECT kind, code, count(*) AS n FROM run_events WHERE run_id = '{result.run_id}' "
                      "GROUP BY ALL").to_pylist()
    codes = {r["code"] for r in recorded if r["kind"] == "denial"}
    assert codes <= {"MAX_POSITION_SIZE", "MAX_SINGLE_POSITION", "MAX_PORTFOLIO_EXPOSURE", "MAX_CORRELATED_EXPOSURE",
                     "MARGIN", "REDUCING", "HALTED", "NO_MARKET_DATA"}
    orders = result.tables["orders"].to_pylist()
    # whatever was filled respected the limits at the time: never more than 10 contracts in one symbol
    assert all(abs(f["position_after"]) <= 10 for f in result.tables["fills"].to_pylist())
    assert all(o["status"] != "DENIED" or o["detail"].split(":")[0] in codes for o in orders)
