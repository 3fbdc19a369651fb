"""The vectorized path (``engine.backtest.vectorized.run_vectorized``): parity with the event engine, hand-worked money.

Parity: the same rule -- an SMA(5)/SMA(20) sign computed in SQL as a ``target`` column -- runs through
``run_vectorized`` and through the event engine with a strategy that reads the same column and returns
``self.target_position(bar.symbol, bar.target)``. Every table must match (orders, fills with their reversal
splits, positions, trades, events; equity per point to 1e-6), for both fill conventions, with and without
slippage, with ES and NQ interleaved and with a contract roll in the middle (roll-table prices and the
fallback). Money in the hand-worked case comes from the comments, not from the engine.
"""

from __future__ import annotations


import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from engine.backtest.run import BacktestConfig, run_backtest
from engine.strategy import Strategy
from engine.backtest.vectorized import run_vectorized
from tests.backtest_oracle import random_walk_bars
from warehouse.errors import ConfigError, QEError

ES_FEE = 0.85 + 1.38 + 0.02  # fees.csv: IB commission + exchange + regulatory, per contract per side
NS_MIN = 60_000_000_000

# SMA(5) vs SMA(20) of the close per symbol, +1 above / -1 at or below, NULL until 20 bars exist.
SMA_QUERY = """
SELECT *,
       CASE WHEN row_number() OVER w >= 20 THEN
            CASE WHEN avg(close) OVER (w ROWS 4 PRECEDING) > avg(close) OVER (w ROWS 19 PRECEDING) THEN 1 ELSE -1 END
       END AS target
FROM bars
WINDOW w AS (PARTITION BY symbol ORDER BY ts)
"""


def _config(**fields) -> BacktestConfig:
    """A run configuration with the event engine's pre-trade risk checks switched off: the vectorized path has
    none, so parity is about execution and accounting only."""
    from engine.risk import RiskLimits

    off = getattr(RiskLimits, "off", None)
    risk = off() if off is not None else RiskLimits(max_position_size=1_000_000, check_margin=False)
    return BacktestConfig(risk=risk, **fields)


class FollowTarget(Strategy):
    """The event-driven twin of the vectorized path: trade to the bar's ``target`` column."""

    history_size = 0

    def on_bar(self, bar):
        if bar.target is None:
            return None
        return self.target_position(bar.symbol, int(bar.target))


def _table(symbol: str, bars: dict[str, np.ndarray], contract: list[str] | None = None,
           target: list | None = None) -> pa.Table:
    columns = {
        "symbol": pa.array([symbol] * len(bars["close"])),
        "ts": pa.array(bars["ts"]).cast(pa.timestamp("ns", tz="UTC")),
        "open": bars["open"], "high": bars["high"], "low": bars["low"], "close": bars["close"],
        "volume": bars["volume"],
    }
    if contract is not None:
        columns["contract"] = pa.array(contract, pa.string())
    if target is not None:
        columns["target"] = pa.array(target, pa.int64())
    return pa.table(columns)


def _connection(*tables: pa.Table, rolls: list[tuple] | None = None) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("bars_arrow", pa.concat_tables(tables))
    con.execute("CREATE TABLE bars AS SELECT * FROM bars_arrow")
    con.unregister("bars_arrow")
    if rolls is not None:
        con.execute("CREATE TABLE rolls (symbol VARCHAR, from_contract VARCHAR, to_contract VARCHAR, "
                    "from_price DOUBLE, to_price DOUBLE)")
        con.executemany("INSERT INTO rolls VALUES (?, ?, ?, ?, ?)", rolls)
    return con


def _two_symbols(n: int, seed: int, roll_at: int | None = None, jump: float = 12.5) -> list[pa.Table]:
    """ES and NQ random walks on the 0.25 grid, same minutes; with ``roll_at`` the contract changes there and
    the new contract trades ``jump`` points higher (a calendar spread), as a real roll does."""
    out = []
    for symbol, start, s in (("ES", 4000.0, seed), ("NQ", 15000.0, seed + 1)):
        bars = random_walk_bars(n, seed=s, start_price=start)
        contract = None
        if roll_at is not None:
            after = np.arange(n) >= roll_at
            for key in ("open", "high", "low", "close"):
                bars[key] = bars[key] + np.where(after, jump, 0.0)
            contract = [f"{symbol}H4" if not a else f"{symbol}M4" for a in after]
        out.append(_table(symbol, bars, contract))
    return out


def _assert_same_run(event, vector) -> None:
    """Every ledger table equal; floats to 1e-6 (equity per point), everything else exactly."""
    for name in ("orders", "fills", "positions", "trades", "events", "equity"):
        a, b = event.tables[name], vector.tables[name]
        assert a.schema == b.schema, name
        assert a.num_rows == b.num_rows, name
        for column in a.column_names:
            x, y = a.column(column), b.column(column)
            if pa.types.is_floating(x.type):
                xa = x.to_numpy(zero_copy_only=False)
                ya = y.to_numpy(zero_copy_only=False)
                np.testing.assert_allclose(ya, xa, rtol=0, atol=1e-6, err_msg=f"{name}.{column}")
                assert np.array_equal(np.isnan(xa), np.isnan(ya)), f"{name}.{column}"
            else:
                assert x.to_pylist() == y.to_pylist(), f"{name}.{column}"
    assert vector.final_equity == pytest.approx(event.final_equity, abs=1e-6)
    for key in ("total_return", "sharpe", "max_drawdown", "commissions", "slippage", "trades", "net_pnl"):
        np.testing.assert_allclose(vector.metrics[key], event.metrics[key], rtol=1e-9, atol=1e-9, err_msg=key)


def _both(con: duckdb.DuckDBPyConnection, config: BacktestConfig, query: str = SMA_QUERY):
    return run_backtest(con, query, FollowTarget(), config), run_vectorized(con, query, "target", config)


# -- parity ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fill", ["next_open", "signal_close"])
@pytest.mark.parametrize("ticks", [0, 1])
def test_parity_two_symbols_interleaved_with_a_roll(fill: str, ticks: int) -> None:
    # ES rolls at the roll table's prices; NQ has no roll-table row: last close / new open + a warning.
    con = _connection(*_two_symbols(3000, seed=5, roll_at=1500), rolls=[("ES", "ESH4", "ESM4", 4001.25, 4013.75)])
    config = _config(timeframe="1m", fill=fill, slippage={"model": "fixed", "ticks": ticks})
    event, vector = _both(con, config)

    fills = vector.tables["fills"]
    assert fills.num_rows > 300
    legs = fills.filter(pc.not_equal(fills.column("kind"), "order")).to_pylist()
    es_legs = [f for f in legs if f["symbol"] == "ES"]
    assert [(f["kind"], f["contract"]) for f in es_legs] == [("roll_out", "ESH4"), ("roll_in", "ESM4")]
    side = 1 if es_legs[1]["quantity"] > 0 else -1
    assert es_legs[0]["price"] == 4001.25 - side * 0.25 * ticks
    assert es_legs[1]["price"] == 4013.75 + side * 0.25 * ticks
    assert [f["commission"] for f in es_legs] == [ES_FEE, ES_FEE]
    assert [e["code"] for e in vector.tables["events"].to_pylist()] == ["ROLL_PRICE_FALLBACK"]
    assert vector.tables["events"].column("symbol").to_pylist() == ["NQ"]
    # a reversal is one order of 2 contracts booked as two fills (closing then opening)
    assert fills.num_rows > vector.tables["orders"].num_rows + 4
    assert set(vector.tables["orders"].column("quantity").to_pylist()) == {-2, -1, 1, 2}

    if fill == "signal_close" and ticks:
        # The event engine marks a position filled at the close to its slipped fill price until the next close
        # (see test_signal_close_equity_is_marked_to_the_close_not_the_slipped_fill); every other point and
        # every other table agrees.
        _assert_same_run(event, vector)
    else:
        _assert_same_run(event, vector)


def test_parity_on_the_fills_trades_and_equity_the_brief_names() -> None:
    # The explicit comparisons (fills: ts, quantity, price, commission; trades: pnl; equity per point; final).
    con = _connection(*_two_symbols(2000, seed=9, roll_at=1200), rolls=[("ES", "ESH4", "ESM4", 3990.0, 4002.5),
                                                                     ("NQ", "NQH4", "NQM4", 15010.0, 15022.5)])
    config = _config(timeframe="1m", slippage={"model": "fixed", "ticks": 1})
    event, vector = _both(con, config)
    for column in ("ts", "quantity", "price", "commission", "kind", "contract"):
        assert vector.tables["fills"].column(column).to_pylist() == event.tables["fills"].column(column).to_pylist()
    np.testing.assert_allclose(vector.tables["trades"].column("pnl").to_numpy(zero_copy_only=False),
                               event.tables["trades"].column("pnl").to_numpy(zero_copy_only=False), atol=1e-9)
    np.testing.assert_allclose(vector.tables["equity"].column("equity").to_numpy(),
                               event.tables["equity"].column("equity").to_numpy(), atol=1e-6)
    assert vector.final_equity == pytest.approx(event.final_equity, abs=1e-6)
    assert vector.tables["events"].num_rows == 0  # both rolls found in the table


@pytest.mark.parametrize("fill", ["next_open", "signal_close"])
def test_parity_with_latency_nulls_larger_targets_and_close_at_end(fill: str) -> None:
    # Targets in -3..3 (adds, partial reductions, reversals), NULL = keep; latency of 90 s delays every fill two
    # bars (orders overlap); close_at_end cancels the orders still working and liquidates at the last close.
    rng = np.random.default_rng(3)
    tables = []
    for symbol, start in (("ES", 4000.0), ("NQ", 15000.0)):
        bars = random_walk_bars(400, seed=int(rng.integers(1000)), start_price=start)
        target = rng.integers(-3, 4, 400).astype(object)
        target[rng.random(400) < 0.6] = None
        target[390:] = None
        target[390] = 3  # a position at the end ...
        # ... and orders on the last bars (with next_open they never fill)
        target[398], target[399] = -2, 1
        tables.append(_table(symbol, bars, target=list(target)))
    con = _connection(*tables)
    query = "SELECT * FROM bars"
    for latency in (0.0, 90_000.0):
        config = _config(timeframe="1m", fill=fill, latency_ms=latency, close_at_end=True,
                         slippage={"model": "fixed", "ticks": 2})
        event, vector = _both(con, config, query)
        _assert_same_run(event, vector)
        orders = vector.tables["orders"].to_pylist()
        assert [o["origin"] for o in orders[-2:]] == ["end_of_run"] * 2
        if fill == "next_open":
            # per symbol: the last-bar order (and with 90 s latency the one before it too) was still working
            cancelled = [o for o in orders if o["status"] == "CANCELLED"]
            assert len(cancelled) == (2 if latency == 0 else 4)
            assert {o["detail"] for o in cancelled} == {"end of data"}
        assert vector.tables["positions"].to_pylist()[-1]["quantity"] == 0


def test_signal_close_equity_is_marked_to_the_close_not_the_slipped_fill() -> None:
    con = _connection(*_two_symbols(600, seed=2))
    config = _config(timeframe="1m", fill="signal_close", slippage={"model": "fixed", "ticks": 1})
    event, vector = _both(con, config)
    np.testing.assert_allclose(vector.tables["equity"].column("equity").to_numpy(),
                               event.tables["equity"].column("equity").to_numpy(), atol=1e-6)


# -- hand-worked ------------------------------------------------------------------------------------------------

# Six ES bars, one minute apart from 2024-01-02 15:00 UTC (trading date 2024-01-02), targets 0,1,1,-1,0,0:
#
#  bar  open    close   target  next_open: order decided -> filled at the next open
#   0   4000.00 4001.00   0
#   1   4001.00 4002.00   1     buy 1            -> bar 2 open 4002.50 (slipped 1 tick: 4002.75)
#   2   4002.50 4003.00   1
#   3   4003.25 4001.00  -1     sell 2 (reverse) -> bar 4 open 4000.75 (slipped: 4000.50)
#   4   4000.75 4000.00   0     buy 1 (flatten)  -> bar 5 open 3999.50 (slipped: 3999.75)
#   5   3999.50 3999.00   0
HAND = [(4000.0, 4001.0), (4001.0, 4002.0), (4002.5, 4003.0), (4003.25, 4001.0), (4000.75, 4000.0), (3999.5, 3999.0)]
HAND_TARGETS = [0, 1, 1, -1, 0, 0]


def _hand_connection() -> duckdb.DuckDBPyConnection:
    ts0 = np.datetime64("2024-01-02T15:00", "ns").astype(np.int64)
    bars = {
        "ts": ts0 + np.arange(6, dtype=np.int64) * NS_MIN,
        "open": np.array([o for o, _ in HAND]), "close": np.array([c for _, c in HAND]),
        "high": np.array([max(o, c) + 1 for o, c in HAND]), "low": np.array([min(o, c) - 1 for o, c in HAND]),
        "volume": np.full(6, 100, dtype=np.int64),
    }
    return _connection(_table("ES", bars, target=HAND_TARGETS))


def test_hand_worked_next_open_with_one_tick_slippage() -> None:
    con = _hand_connection()
    config = _config(timeframe="1m", slippage={"model": "fixed", "ticks": 1}, initial_capital=100_000.0)
    result = run_vectorized(con, "SELECT * FROM bars", "target", config)
    fills = result.tables["fills"].to_pylist()
    # buy 1 @ 4002.75 (ref 4002.50); sell 2 @ 4000.50 split into close 1 + open 1; buy 1 @ 3999.75 (ref 3999.50)
    assert [(f["order_id"], f["quantity"], f["price"], f["reference_price"]) for f in fills] == [
        (0, 1, 4002.75, 4002.5), (1, -1, 4000.5, 4000.75), (1, -1, 4000.5, 4000.75), (2, 1, 3999.75, 3999.5)]
    # commission once per side per contract: 2.25, then 4.50 for the 2-lot split 2.25 / 2.25, then 2.25
    assert [f["commission"] for f in fills] == pytest.approx([ES_FEE, ES_FEE, ES_FEE, ES_FEE])
    # slippage 1 tick = 0.25 * 50 = 12.50 per contract
    assert [f["slippage"] for f in fills] == pytest.approx([12.5, 12.5, 12.5, 12.5])
    # long closed: (4000.50 - 4002.75) * 50 = -112.50; short closed: (3999.75 - 4000.50) * -1 * 50 = +37.50
    assert [f["realized_pnl"] for f in fills] == pytest.approx([0.0, -112.5, 0.0, 37.5])
    assert [f["position_after"] for f in fills] == [1, 0, -1, 0]
    assert [f["trade_id"] for f in fills] == [0, 0, 1, 1]
    ts0 = np.datetime64("2024-01-02T15:00", "us").astype(object)
    assert [f["ts"].replace(tzinfo=None) for f in fills] == [
        ts0 + np.timedelta64(m, "m").astype(object) for m in (2, 4, 4, 5)]
    assert {f["trading_date"].isoformat() for f in fills} == {"2024-01-02"}
    trades = result.tables["trades"].to_pylist()
    assert [t["direction"] for t in trades] == [1, -1]
    assert [t["gross_pnl"] for t in trades] == pytest.approx([-112.5, 37.5])
    assert [t["commission"] for t in trades] == pytest.approx([2 * ES_FEE, 2 * ES_FEE])
    assert [t["pnl"] for t in trades] == pytest.approx([-112.5 - 2 * ES_FEE, 37.5 - 2 * ES_FEE])
    # equity per bar (marked at the close):
    #  bars 0, 1 flat                               100000
    #  bar 2: -2.25 + (4003.00 - 4002.75) * 50   = 100010.25
    #  bar 3: -2.25 + (4001.00 - 4002.75) * 50   =  99910.25
    #  bar 4: -112.50 - 6.75 + (4000.50 - 4000.00) * 50 = 99905.75 (short 1 @ 4000.50)
    #  bar 5: -112.50 + 37.50 - 9.00             =  99916.00
    equity = result.tables["equity"].column("equity").to_pylist()
    assert equity == pytest.approx([100_000.0, 100_000.0, 100_010.25, 99_910.25, 99_905.75, 99_916.0])
    assert result.final_equity == pytest.approx(99_916.0)
    orders = result.tables["orders"].to_pylist()
    assert [(o["quantity"], o["status"], o["avg_fill_price"]) for o in orders] == [
        (1, "FILLED", 4002.75), (-2, "FILLED", 4000.5), (1, "FILLED", 3999.75)]
    # the same by the event engine
    event = run_backtest(con, "SELECT * FROM bars", FollowTarget(), config)
    _assert_same_run(event, result)


def test_hand_worked_signal_close_without_slippage() -> None:
    # Fills at the signal bar's close, stamped at the bar's end (ts + 1 minute):
    #   bar 1: buy 1 @ 4002.00; bar 3: sell 2 @ 4001.00 (close long: (4001 - 4002) * 50 = -50); bar 4: buy 1 @ 4000.00
    #   (close short: (4000 - 4001) * -1 * 50 = +50). Commissions 4 * 2.25 = 9.00: final = 100000 - 9 = 99991.00.
    con = _hand_connection()
    config = _config(timeframe="1m", fill="signal_close", initial_capital=100_000.0)
    result = run_vectorized(con, "SELECT * FROM bars", "target", config)
    fills = result.tables["fills"].to_pylist()
    assert [(f["quantity"], f["price"], f["realized_pnl"]) for f in fills] == [
        (1, 4002.0, 0.0), (-1, 4001.0, -50.0), (-1, 4001.0, 0.0), (1, 4000.0, 50.0)]
    assert sum(f["commission"] for f in fills) == pytest.approx(4 * ES_FEE)
    assert result.final_equity == pytest.approx(100_000.0 - 4 * ES_FEE)
    # equity: bar 1 long at 4002 marked 4002 -> -2.25; bar 2: +50 - 2.25; bar 3: -50 - 6.75; bar 4/5: -9
    assert result.tables["equity"].column("equity").to_pylist() == pytest.approx(
        [100_000.0, 99_997.75, 100_047.75, 99_943.25, 99_991.0, 99_991.0])
    event = run_backtest(con, "SELECT * FROM bars", FollowTarget(), config)
    _assert_same_run(event, result)


def test_a_run_with_risk_limits_says_they_were_not_checked() -> None:
    con = _hand_connection()
    result = run_vectorized(con, "SELECT * FROM bars", "target", BacktestConfig(timeframe="1m"))
    events = result.tables["events"].to_pylist()
    assert [(e["kind"], e["code"]) for e in events] == [("warning", "RISK_NOT_CHECKED")]
    assert result.tables["fills"].num_rows == 4  # traded all the same
    quiet = run_vectorized(con, "SELECT * FROM bars", "target", _config(timeframe="1m"))
    assert quiet.tables["events"].num_rows == 0


def test_last_order_never_fills_with_next_open_and_stays_open() -> None:
    con = _hand_connection()
    result = run_vectorized(con, "SELECT symbol, ts, open, high, low, close, CASE WHEN ts = (SELECT max(ts) FROM bars) "
                                 "THEN 1 END AS target FROM bars", "target", _config(timeframe="1m"))
    assert result.tables["orders"].column("status").to_pylist() == ["OPEN"]
    assert result.tables["fills"].num_rows == 0
    assert result.final_equity == 1_000_000.0


# -- errors and the ledger --------------------------------------------------------------------------------------


def test_unsupported_configuration_is_a_clear_error() -> None:
    con = _hand_connection()
    with pytest.raises(ConfigError, match=r"\[backtest.slippage\] model = 'none' \| 'fixed', not 'proportional'"):
        run_vectorized(con, "SELECT * FROM bars", "target",
                       BacktestConfig(timeframe="1m", slippage={"model": "proportional", "bps": 1}))
    with pytest.raises(ConfigError, match=r"remove participation = 0.1 from \[backtest\]"):
        run_vectorized(con, "SELECT * FROM bars", "target", BacktestConfig(timeframe="1m", participation=0.1))
    with pytest.raises(ConfigError, match="timeframe"):
        run_vectorized(con, "SELECT * FROM bars", "target")
    with pytest.raises(QEError, match="no signal column 'signal'"):
        run_vectorized(con, "SELECT * FROM bars", "signal", BacktestConfig(timeframe="1m"))
    with pytest.raises(QEError, match="missing: high, low"):
        run_vectorized(con, "SELECT symbol, ts, open, close, target FROM bars", "target", BacktestConfig(timeframe="1m"))
    with pytest.raises(QEError, match="whole contracts"):
        run_vectorized(con, "SELECT * REPLACE (target + 0.5 AS target) FROM bars", "target",
                       BacktestConfig(timeframe="1m"))
    with pytest.raises(QEError, match="ordered by ts"):
        run_vectorized(con, "SELECT * FROM bars ORDER BY ts DESC", "target", BacktestConfig(timeframe="1m"))


def test_unordered_rows_are_put_in_ts_symbol_order() -> None:
    tables = _two_symbols(300, seed=4)
    con = _connection(*tables)
    query = SMA_QUERY.replace("FROM bars\n", "FROM (SELECT * FROM bars ORDER BY random())\n")
    config = _config(timeframe="1m", slippage={"model": "fixed", "ticks": 1})
    event = run_backtest(con, SMA_QUERY, FollowTarget(), config)
    vector = run_vectorized(con, query, "target", config)
    _assert_same_run(event, vector)


def test_recorded_in_the_warehouse_ledger_as_vectorized(wh) -> None:
    from engine.results.ledger import load_run
    from engine.results.report import render_report

    ts0 = np.datetime64("2024-01-02T15:00", "us")
    values = ", ".join(f"('ES', TIMESTAMPTZ '{ts0 + np.timedelta64(i, 'm')}+00', {o}, {max(o, c) + 1}, {min(o, c) - 1}, "
                       f"{c}, 100, {t})" for i, ((o, c), t) in enumerate(zip(HAND, HAND_TARGETS)))
    query = f"SELECT * FROM (VALUES {values}) AS b(symbol, ts, open, high, low, close, volume, target)"
    result = run_vectorized(wh, query, "target", BacktestConfig(timeframe="1m"))
    assert result.run_id is not None
    run, tables, metrics = load_run(wh, result.run_id)
    assert run["kind"] == "vectorized"
    assert run["strategy"] == "vectorized:target"
    assert tables["fills"].num_rows == 4
    assert metrics["final_equity"] == pytest.approx(result.final_equity)
    assert result.final_equity == pytest.approx(99_916.0 + 12.5 * 4 + 900_000.0)  # the hand case without slippage
    assert "<html" in render_report(run, tables, metrics).lower()
    again = run_vectorized(wh, query, "target", BacktestConfig(timeframe="1m"), record=False)
    assert again.run_id is None


# -- speed ------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_million_bars_with_a_roll() -> None:
    # speed is measured by bench/, not asserted here (a loaded machine must not fail correctness tests)
    n = 1_000_000
    bars = random_walk_bars(n, seed=7)
    contract = ["ESH4"] * (n // 2) + ["ESM4"] * (n - n // 2)
    con = _connection(_table("ES", bars, contract), rolls=[("ES", "ESH4", "ESM4", 4000.0, 4010.0)])
    con.execute(f"CREATE TABLE sig AS {SMA_QUERY}")
    config = _config(timeframe="1m", slippage={"model": "fixed", "ticks": 1})
    result = run_vectorized(con, "SELECT * FROM sig", "target", config)
    assert result.timings["bars"] == n
    assert result.tables["fills"].num_rows > 100_000
    assert result.tables["equity"].num_rows == n
