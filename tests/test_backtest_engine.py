"""The event-driven backtester end to end: oracle parity, money regressions, P&L identity, rolls, ledger.

Expected values come from the independent numpy oracle (``tests/backtest_oracle.py``) or are worked by
hand in the comments; nothing here is computed by the engine and then compared with itself.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.backtest.run import BacktestConfig, run_backtest
from engine.risk import RiskLimits
from engine.core.orders import Order, OrderType, limit, market, stop
from engine.strategies.sma_cross import SmaCross
from engine.strategy import Strategy
from tests.backtest_oracle import random_walk_bars, sma_cross_backtest
from warehouse.errors import ConfigError, QEError

#: Risk checks on, with limits that let the 1-contract crossover trade a 1,000,000 account (one ES contract
#: is ~200,000 notional, so the house defaults of 5 % / 20 % of equity would refuse it).
ONE_CONTRACT_RISK = RiskLimits(max_single_position_pct=1.0, max_portfolio_exposure=1.0, max_correlated_exposure=1.0,
                               max_daily_loss=0.5, max_weekly_loss=0.5, max_drawdown=0.9)
OFF = RiskLimits.off()
ES_FEE = 0.85 + 1.38 + 0.02  # fees.csv: IB commission + exchange + regulatory, per contract per side
NQ_FEE = ES_FEE


def _connection(bars: dict[str, np.ndarray], symbol: str = "ES", extra: dict | None = None) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    n = len(bars["close"])
    columns = {
        "symbol": pa.array([symbol] * n),
        "ts": pa.array(bars["ts"]).cast(pa.timestamp("ns", tz="UTC")),
        "open": bars["open"], "high": bars["high"], "low": bars["low"], "close": bars["close"], "volume": bars["volume"],
        **(extra or {}),
    }
    con.register("bars_arrow", pa.table(columns))
    con.execute("CREATE TABLE bars AS SELECT * FROM bars_arrow")
    return con


def _bars(rows: list[tuple[float, float, float, float]], start: str = "2024-01-02T15:00", volume: int = 1000) -> dict:
    ts0 = np.datetime64(start, "ns").astype(np.int64)
    return {
        "ts": ts0 + np.arange(len(rows), dtype=np.int64) * 60_000_000_000,
        "open": np.array([r[0] for r in rows]), "high": np.array([r[1] for r in rows]),
        "low": np.array([r[2] for r in rows]), "close": np.array([r[3] for r in rows]),
        "volume": np.full(len(rows), volume, dtype=np.int64),
    }


class Script(Strategy):
    """Submits the orders listed for each bar index (per symbol order of arrival)."""

    history_size = 0

    def __init__(self, plan: dict[int, list[Order]]) -> None:
        super().__init__()
        self.plan = plan
        self.index = -1

    def on_bar(self, bar):  # noqa: ANN001, ANN201
        self.index += 1
        return self.plan.get(self.index)


# -- oracle parity ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "fill"), [(1_000_000, "next_open"), (200_000, "signal_close")])
def test_sma_crossover_matches_numpy_oracle_to_the_cent(n: int, fill: str) -> None:
    bars = random_walk_bars(n, seed=11)
    con = _connection(bars)
    result = run_backtest(con, "SELECT * FROM bars", SmaCross(fast=20, slow=50),
                          BacktestConfig(fill=fill, timeframe="1m", initial_capital=1_000_000.0, risk=ONE_CONTRACT_RISK))
    oracle = sma_cross_backtest(bars["open"], bars["close"], bars["ts"], fill=fill, initial_capital=1_000_000.0)

    fills = result.tables["fills"]
    # The engine stores a reversal as a closing and an opening fill; merge them back per (ts) to compare orders.
    ts = fills.column("ts").cast(pa.int64()).to_numpy() * 1000
    qty = fills.column("quantity").to_numpy()
    order_ts, first = np.unique(ts, return_index=True)
    merged_qty = np.add.reduceat(qty, first)
    expected_ts = bars["ts"][oracle.fills.bar_index] + (60_000_000_000 if fill == "signal_close" else 0)
    np.testing.assert_array_equal(order_ts, expected_ts)
    np.testing.assert_array_equal(merged_qty, oracle.fills.quantity)
    np.testing.assert_array_equal(fills.column("price").to_numpy()[first], oracle.fills.price)
    assert round(result.final_equity, 2) == round(oracle.final_equity, 2)
    assert result.metrics["commissions"] == pytest.approx(oracle.total_commission, abs=1e-6)
    equity = result.tables["equity"].column("equity").to_numpy()
    assert np.abs(equity - oracle.equity).max() < 0.005  # every bar to the cent
    closed = result.tables["trades"].filter(pa.compute.is_valid(result.tables["trades"].column("exit_ts")))
    np.testing.assert_allclose(closed.column("pnl").to_numpy(), oracle.trades.net_pnl, atol=1e-6)


# -- regressions of the old engine -------------------------------------------------------------------------


def test_commission_is_charged_once_per_side_not_again_on_exit() -> None:
    # Buy 3 at bar 1's open (4000.00), sell 3 at bar 3's open (4010.00): gross = 10 * 3 * 50 = 1500;
    # commissions = 3 * 2.25 (entry) + 3 * 2.25 (exit) = 13.50; equity change = 1486.50.
    bars = _bars([(3999.0, 4001.0, 3998.0, 4000.0), (4000.0, 4005.0, 3999.0, 4004.0), (4004.0, 4011.0, 4003.0, 4010.0),
                  (4010.0, 4012.0, 4009.0, 4011.0)])
    con = _connection(bars)
    plan = {0: [market("ES", 3)], 2: [market("ES", -3)]}
    result = run_backtest(con, "SELECT * FROM bars", Script(plan), BacktestConfig(timeframe="1m", risk=OFF))
    fills = result.tables["fills"]
    assert fills.column("commission").to_pylist() == pytest.approx([3 * ES_FEE, 3 * ES_FEE])
    assert result.final_equity - 1_000_000.0 == pytest.approx(1500.0 - 6 * ES_FEE)
    trade = result.tables["trades"].to_pylist()[0]
    assert trade["commission"] == pytest.approx(6 * ES_FEE)
    assert trade["pnl"] == pytest.approx(1500.0 - 6 * ES_FEE)


def test_max_position_size_is_enforced_and_reducing_orders_pass() -> None:
    bars = _bars([(4000.0, 4001.0, 3999.0, 4000.0)] * 6)
    con = _connection(bars)
    # 0 -> 8 ok; 8 + 4 = 12 > 10 denied; 8 + 2 = 10 ok (at the limit); 10 - 21 = -11: flips past the limit,
    # denied; 10 - 3 = 7 reduces: always passes.
    plan = {0: [market("ES", 8)], 1: [market("ES", 4)], 2: [market("ES", 2)], 3: [market("ES", -21)], 4: [market("ES", -3)]}
    config = BacktestConfig(timeframe="1m", risk=OFF.model_copy(update={"max_position_size": 10}))
    result = run_backtest(con, "SELECT * FROM bars", Script(plan), config)
    orders = result.tables["orders"].to_pylist()
    assert [o["status"] for o in orders] == ["FILLED", "DENIED", "FILLED", "DENIED", "FILLED"]
    assert orders[1]["detail"] == "MAX_POSITION_SIZE: requested=12, limit=10"
    assert orders[3]["detail"] == "MAX_POSITION_SIZE: requested=11, limit=10"
    events = result.tables["events"].to_pylist()
    assert [e["code"] for e in events] == ["MAX_POSITION_SIZE", "MAX_POSITION_SIZE"]
    assert result.tables["fills"].column("position_after").to_pylist()[-1] == 7


def test_margin_check_counts_every_open_position() -> None:
    # Capital 30,000. ES initial margin 2024 = 13,750 per contract (margins.csv), NQ 19,360.
    # Holding 1 NQ (19,360), buying 1 ES needs 19,360 + 13,750 = 33,110 > 30,000 -> denied.
    # Without the NQ position the same ES order needs 13,750 <= 30,000 -> accepted.
    rows = [(4000.0, 4001.0, 3999.0, 4000.0)] * 4
    es, nq = _bars(rows), _bars([(17000.0, 17001.0, 16999.0, 17000.0)] * 4)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    table = pa.concat_tables([
        pa.table({"symbol": ["ES"] * 4, "ts": pa.array(es["ts"]).cast(pa.timestamp("ns", tz="UTC")), "open": es["open"],
                  "high": es["high"], "low": es["low"], "close": es["close"], "volume": es["volume"]}),
        pa.table({"symbol": ["NQ"] * 4, "ts": pa.array(nq["ts"]).cast(pa.timestamp("ns", tz="UTC")), "open": nq["open"],
                  "high": nq["high"], "low": nq["low"], "close": nq["close"], "volume": nq["volume"]}),
    ])
    con.register("bars_arrow", table)
    con.execute("CREATE TABLE bars AS SELECT * FROM bars_arrow")

    def strategy(bar, engine):  # noqa: ANN001, ANN202
        # bars arrive ES, NQ per minute: NQ bought on minute 0, ES tried on minute 2
        if bar.symbol == "NQ" and engine.position("NQ") == 0 and not engine.orders:
            return market("NQ", 1)
        if bar.symbol == "ES" and len(engine.orders) == 1 and engine.position("NQ") == 1:
            return market("ES", 1)
        return None

    config = BacktestConfig(timeframe="1m", initial_capital=30_000.0,
                            risk=RiskLimits.off().model_copy(update={"check_margin": True}))
    result = run_backtest(con, "SELECT * FROM bars", strategy, config)
    orders = result.tables["orders"].to_pylist()
    assert [o["symbol"] for o in orders] == ["NQ", "ES"]
    assert orders[1]["status"] == "DENIED"
    assert orders[1]["detail"].startswith("MARGIN: required=33110.00, equity=")

    alone = run_backtest(con, "SELECT * FROM bars WHERE symbol = 'ES'", Script({0: [market("ES", 1)]}), config)
    assert alone.tables["orders"].column("status").to_pylist() == ["FILLED"]


# -- P&L identity ----------------------------------------------------------------------------------------


@st.composite
def _order_plans(draw):  # noqa: ANN001, ANN202
    plan: dict[int, list[Order]] = {}
    for _ in range(draw(st.integers(1, 25))):
        index = draw(st.integers(0, 79))
        quantity = draw(st.integers(-4, 4).filter(bool))
        kind = draw(st.sampled_from(["market", "limit", "stop"]))
        offset = draw(st.integers(-8, 8)) * 0.25
        if kind == "market":
            order = market("ES", quantity)
        elif kind == "limit":
            order = limit("ES", quantity, 4000.0 + offset)
        else:
            order = stop("ES", quantity, 4000.0 + offset)
        plan.setdefault(index, []).append(order)
    return plan


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=_order_plans(), seed=st.integers(0, 10_000), slippage=st.sampled_from([0, 1, 2]))
def test_realized_plus_unrealized_minus_costs_equals_equity_change(plan, seed, slippage) -> None:  # noqa: ANN001
    bars = random_walk_bars(80, seed=seed, start_price=4000.0)
    # a roll in the middle: contract ESH4 then ESM4 (prices continue; the roll trades out and back in)
    contract = pa.array(["ESH4"] * 40 + ["ESM4"] * 40)
    con = _connection(bars, extra={"contract": contract})
    config = BacktestConfig(timeframe="1m", slippage={"model": "fixed", "ticks": slippage},
                            risk=OFF)
    result = run_backtest(con, "SELECT * FROM bars", Script(plan), config)
    equity = result.tables["equity"]
    fills = result.tables["fills"]
    realized = sum(fills.column("realized_pnl").to_pylist())
    commissions = sum(fills.column("commission").to_pylist())
    unrealized = equity.column("unrealized").to_pylist()[-1]
    assert result.final_equity - 1_000_000.0 == pytest.approx(realized + unrealized - commissions, abs=1e-6)
    # commission: once per side per contract, every fill
    assert commissions == pytest.approx(sum(abs(q) for q in fills.column("quantity").to_pylist()) * ES_FEE)
    # unrealized from first principles at the end: position * multiplier * (last close - average price)
    positions = result.tables["positions"].to_pylist()
    if positions and positions[-1]["quantity"]:
        last = positions[-1]
        assert unrealized == pytest.approx(last["quantity"] * 50.0 * (bars["close"][-1] - last["avg_price"]), abs=1e-6)
    # every equity point obeys the identity with the running totals
    e = equity.to_pandas()
    lhs = e["equity"] - 1_000_000.0
    np.testing.assert_allclose(lhs, e["realized"] + e["unrealized"] - e["commissions"], atol=1e-6)


# -- rolls on real data ----------------------------------------------------------------------------------------


def test_position_held_across_the_real_esz3_esh4_roll_is_rolled_at_roll_table_prices(tmp_path) -> None:  # noqa: ANN001
    from loaders.ingest import ingest
    from tests.conftest import LEAN
    from warehouse import Warehouse
    from warehouse.rolls import build_rolls

    wh = Warehouse(tmp_path / "wh")
    ingest(wh, [LEAN])
    build_rolls(wh)
    wh.refresh()
    roll = wh.sql("SELECT * FROM rolls WHERE symbol = 'ES' AND from_contract = 'ESZ3'").to_pylist()[0]

    class HoldLong(Strategy):
        history_size = 0

        def on_bar(self, bar):  # noqa: ANN001, ANN201
            if self.position("ES") == 0 and not self.working_orders():
                return market("ES", 2)
            return None

    query = "SELECT * FROM bars_1m WHERE symbol = 'ES' AND ts BETWEEN '2013-11-25' AND '2013-12-20'"
    result = run_backtest(wh, query, HoldLong(), BacktestConfig(slippage={"model": "fixed", "ticks": 1}, risk=OFF))
    fills = result.tables["fills"].to_pylist()
    legs = [f for f in fills if f["kind"] != "order"]
    assert [(f["kind"], f["contract"], f["quantity"]) for f in legs] == [("roll_out", "ESZ3", -2), ("roll_in", "ESH4", 2)]
    # raw prices from the roll table, one tick (0.25) against us on each leg, commission on both legs
    assert legs[0]["price"] == pytest.approx(roll["from_price"] - 0.25)
    assert legs[1]["price"] == pytest.approx(roll["to_price"] + 0.25)
    assert [f["commission"] for f in legs] == pytest.approx([2 * ES_FEE, 2 * ES_FEE])
    assert legs[0]["ts"] >= roll["roll_ts"]
    trades = result.tables["trades"].to_pylist()
    assert len(trades) == 1 and trades[0]["rolls"] == 1
    # recorded: the ledger answers cross-table questions with SQL
    n = wh.sql(f"SELECT count(*) FROM run_fills WHERE run_id = '{result.run_id}' AND kind LIKE 'roll%'").to_pylist()[0]
    assert list(n.values()) == [2]


# -- the stream ----------------------------------------------------------------------------------------------


def test_a_stream_going_back_in_time_is_refused() -> None:
    con = _connection(_bars([(4000.0, 4001.0, 3999.0, 4000.0)] * 3))
    with pytest.raises(QEError, match="ordered by ts"):
        run_backtest(con, "SELECT * FROM bars ORDER BY ts DESC", SmaCross(), BacktestConfig(timeframe="1m", risk=OFF))


def test_missing_columns_and_bad_sql_are_one_clear_error() -> None:
    con = _connection(_bars([(4000.0, 4001.0, 3999.0, 4000.0)] * 3))
    with pytest.raises(QEError, match="missing: high, low"):
        run_backtest(con, "SELECT symbol, ts, open, close FROM bars", SmaCross(), BacktestConfig(timeframe="1m", risk=OFF))
    with pytest.raises(QEError, match="exactly one SELECT|does not parse"):
        run_backtest(con, "DROP TABLE bars", SmaCross(), BacktestConfig(timeframe="1m", risk=OFF))


def test_several_symbols_interleave_in_time_and_history_is_per_symbol() -> None:
    es, nq = _bars([(4000.0 + i, 4001.0 + i, 3999.0 + i, 4000.0 + i) for i in range(5)]), _bars(
        [(17000.0 + i, 17001.0 + i, 16999.0 + i, 17000.0 + i) for i in range(5)], start="2024-01-02T15:02")
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for sym, b in (("ES", es), ("NQ", nq)):
        con.register(f"a_{sym}", pa.table({"symbol": [sym] * 5, "ts": pa.array(b["ts"]).cast(pa.timestamp("ns", tz="UTC")),
                                           "open": b["open"], "high": b["high"], "low": b["low"], "close": b["close"]}))
    seen = []

    class Watch(Strategy):
        history_size = 3

        def on_bar(self, bar):  # noqa: ANN001, ANN201
            seen.append((bar.ts, bar.symbol, len(self.history(bar.symbol)), bar["close"]))

    run_backtest(con, "SELECT * FROM a_ES UNION ALL SELECT * FROM a_NQ", Watch(), BacktestConfig(timeframe="1m", risk=OFF))
    assert [s[0] for s in seen] == sorted(s[0] for s in seen)
    assert [s[1] for s in seen][:4] == ["ES", "ES", "ES", "NQ"]  # NQ starts two minutes later; same minute: ES first
    assert max(s[2] for s in seen) == 3
    assert seen[0][3] == 4000.0


def test_functional_strategy_form() -> None:
    con = _connection(_bars([(4000.0, 4001.0, 3999.0, 4000.0), (4002.0, 4003.0, 4001.0, 4002.0)]))

    def buy_first(bar, engine):  # noqa: ANN001, ANN202
        return market("ES", 1) if not engine.orders else None

    result = run_backtest(con, "SELECT * FROM bars", buy_first, BacktestConfig(timeframe="1m", risk=OFF))
    assert result.tables["fills"].column("price").to_pylist() == [4002.0]
    assert result.strategy.endswith("buy_first")


def test_orders_need_a_known_instrument_or_an_override() -> None:
    con = _connection(_bars([(100.0, 101.0, 99.0, 100.0)] * 3), symbol="SPX")
    plan = {0: [market("SPX", 1)]}
    with pytest.raises(QEError, match="not a listed root"):
        run_backtest(con, "SELECT * FROM bars", Script(plan), BacktestConfig(timeframe="1m", risk=OFF))
    config = BacktestConfig(timeframe="1m", risk=OFF, instruments={"SPX": {"multiplier": 100, "tick_size": 0.01, "fee_per_side": 1.0,
                                                                 "initial_margin": 5000}})
    result = run_backtest(con, "SELECT * FROM bars", Script(plan), config)
    assert result.tables["fills"].column("commission").to_pylist() == [1.0]
    assert result.tables["fills"].column("multiplier").to_pylist() == [100.0]
    assert OrderType.MARKET.value == "MARKET"


# -- declared strategy parameters ------------------------------------------------------------------------
def test_strategy_parameters_are_declared_by_the_init_signature_and_coerced():
    from engine.strategy import checked_params, declared_params

    class Breakout(Strategy):
        def __init__(self, lookback: int = 20, band: float = 1.5, short: bool = False, tag: str = "b") -> None:
            super().__init__(lookback=lookback, band=band, short=short, tag=tag)

    assert {n: (p.type, p.default) for n, p in declared_params(Breakout).items()} == {
        "lookback": ("int", 20), "band": ("double", 1.5), "short": ("bool", False), "tag": ("str", "b")}
    # text from --param k=v and JSON values both coerce to the declared types
    assert checked_params(Breakout, {"lookback": "30", "band": 2, "short": "yes"}) == {
        "lookback": 30, "band": 2.0, "short": True}
    with pytest.raises(ConfigError, match=r"^Breakout: unknown parameter\(s\) look_back; valid: lookback \(int, "
                                          r"default 20\), band \(double, default 1.5\), short \(bool, default False\), "
                                          r"tag \(str, default 'b'\)$"):
        checked_params(Breakout, {"look_back": 30})
    with pytest.raises(ConfigError, match=r"^Breakout: parameter 'lookback' must be int, not 2.5$"):
        checked_params(Breakout, {"lookback": 2.5})
    # a strategy that declares nothing accepts nothing
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) x; valid: none"):
        checked_params(Strategy, {"x": 1})


def test_strategies_may_declare_parameters_as_class_attributes_or_optional_arguments():
    from engine.strategy import checked_params, declared_params

    class Threshold(Strategy):  # keeps Strategy.__init__: its public class attributes are its parameters
        history_size = 0
        threshold = 0.5
        side = "long"

    assert {n: (p.type, p.default) for n, p in declared_params(Threshold).items()} == {
        "threshold": ("double", 0.5), "side": ("str", "long")}
    assert Threshold(**checked_params(Threshold, {"threshold": "0.7"})).threshold == 0.7
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) history_size"):
        checked_params(Threshold, {"history_size": "5"})  # an engine setting, not a parameter

    class Band(Strategy):
        def __init__(self, width: float | None = None, **extra) -> None:  # **extra declares nothing more
            super().__init__(width=width)

    assert declared_params(Band)["width"].default is None
    assert checked_params(Band, {"width": "2"}) == {"width": 2.0}
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) height; valid: width \(double, default None\)"):
        checked_params(Band, {"height": "1"})


@pytest.mark.parametrize(("text", "expected"), [("true", True), ("0", False), ("no", False), ("YES", True)])
def test_boolean_parameters_accept_only_truth_words(text, expected):
    from engine.strategy import checked_params

    class Flag(Strategy):
        def __init__(self, short: bool = False) -> None:
            super().__init__(short=short)

    assert checked_params(Flag, {"short": text}) == {"short": expected}
    for bad in ("2", "maybe", 2, 0.0, None):
        with pytest.raises(ConfigError, match="parameter 'short' must be bool"):
            checked_params(Flag, {"short": bad})


def test_text_parameters_keep_the_text_as_typed():
    from engine.runner import parse_params
    from engine.strategy import checked_params

    class Named(Strategy):
        def __init__(self, label: str = "a", n: int = 1) -> None:
            super().__init__(label=label, n=n)

    assert checked_params(Named, parse_params(["label=1.50", "n=3"])) == {"label": "1.50", "n": 3}
