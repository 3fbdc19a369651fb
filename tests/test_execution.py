"""Behaviour of the simulated broker (engine.execution.simulated) through the public API ``run_backtest``.

Every run reads a small hand-built bar table from an in-memory DuckDB; the strategy submits given orders on
given bars. Expected prices, quantities and money are worked out by hand in the comments (never by the
engine). ES terms from the contract tables: tick 0.25, multiplier 50, fee 0.85 + 1.38 + 0.02 = 2.25 per side.

Unless a test says otherwise the bars are hourly on Tuesday 2024-01-16 (UTC, winter), all inside the CME
trading date 2024-01-16, and an order decided on a bar is submitted at its close (= the next bar's open time).
"""

from __future__ import annotations

from datetime import date, datetime, timezone

import duckdb
import pytest

from engine.backtest.run import BacktestConfig, BacktestResult, run_backtest
from engine.core.orders import limit, market, mit, stop, stop_limit
from engine.risk import RiskLimits
from warehouse.errors import ConfigError

CAPITAL = 1_000_000.0
FEE = 2.25  # ES, per contract per side
MULT = 50.0  # ES, USD per point

T0, T1, T2, T3, T4 = (f"2024-01-16 {h}:00" for h in (14, 15, 16, 17, 18))


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def ns(text: str) -> int:
    return int(utc(text).timestamp()) * 1_000_000_000


Bar = tuple  # (ts text, open, high, low, close[, volume])
Plan = dict[str, "Order | list[Order] | Callable[[], Order | list[Order]] | Callable[[Backtester], ...]"]


def run(bars: list[Bar], plan: Plan, *, timeframe: str = "1h", others: list[tuple] = (), on: str = "ES",
        **config) -> BacktestResult:
    """Backtest ``plan`` (bar ts text -> orders submitted on that bar) over ES ``bars`` (volume 1000 unless given).

    ``others`` are bars of other symbols, ``(symbol, ts, open, high, low, close, volume)``; the plan is run on the
    bars of symbol ``on``.
    """
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    con.execute("CREATE TABLE bars (symbol VARCHAR, ts TIMESTAMPTZ, open DOUBLE, high DOUBLE, low DOUBLE, "
                "close DOUBLE, volume BIGINT)")
    rows = [("ES", utc(b[0]), *b[1:5], b[5] if len(b) > 5 else 1000) for b in bars]
    rows += [(b[0], utc(b[1]), *b[2:]) for b in others]
    for row in rows:
        assert row[4] <= min(row[2], row[5]) and row[3] >= max(row[2], row[5]), f"inconsistent bar {row}"
    con.executemany("INSERT INTO bars VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    by_ns = {ns(k): v for k, v in plan.items()}

    def strategy(bar, engine):  # noqa: ANN001, ANN202
        todo = by_ns.get(bar.ts) if bar.symbol == on else None
        if not callable(todo):
            return todo
        return todo(engine) if todo.__code__.co_argcount else todo()  # a step may take the engine (to cancel ...)

    try:
        return run_backtest(con, "SELECT symbol, ts, open, high, low, close, volume FROM bars", strategy,
                            BacktestConfig(timeframe=timeframe, **{"risk": RiskLimits.off(), **config}))
    finally:
        con.close()


def fills(result: BacktestResult) -> list[dict]:
    return result.tables["fills"].to_pylist()


def orders(result: BacktestResult) -> list[dict]:
    return result.tables["orders"].to_pylist()


def equity(result: BacktestResult) -> list[dict]:
    return result.tables["equity"].to_pylist()


def brief(result: BacktestResult) -> list[tuple]:
    """(ts, quantity, price) of every fill."""
    return [(f["ts"], f["quantity"], f["price"]) for f in fills(result)]


# Three ordinary bars used by many tests.
BASE = [
    (T0, 4000, 4004, 3996, 4002),
    (T1, 4003, 4008, 4001, 4006),
    (T2, 4006, 4010, 4004, 4009),
]


# -- MARKET: next open, signal close, latency ------------------------------------------------------------
def test_market_fills_at_next_bar_open():
    result = run(BASE, {T0: lambda: market("ES", 1)})
    # Decided on T0, submitted at T0's close (15:00), filled at T1's open 4003.
    [f] = fills(result)
    assert (f["ts"], f["quantity"], f["price"], f["reference_price"]) == (utc(T1), 1, 4003.0, 4003.0)
    assert f["commission"] == FEE and f["slippage"] == 0.0
    [o] = orders(result)
    assert (o["status"], o["filled_quantity"], o["avg_fill_price"]) == ("FILLED", 1, 4003.0)
    assert o["ts_submitted"] == utc(T1) and o["ts_done"] == utc(T1)
    # Equity: T0 flat; T1 (4006 - 4003) * 50 = 150 - 2.25; T2 (4009 - 4003) * 50 = 300 - 2.25.
    assert [e["equity"] for e in equity(result)] == [CAPITAL, CAPITAL + 147.75, CAPITAL + 297.75]
    assert result.final_equity == CAPITAL + 297.75


def test_market_signal_close_fills_at_signal_bar_close():
    result = run(BASE, {T0: lambda: market("ES", 1)}, fill="signal_close")
    # Filled at T0's close 4002, stamped at T0's close time (15:00).
    assert brief(result) == [(utc(T1), 1, 4002.0)]
    # The fill belongs to T0's equity point: marked at 4002 = T0 close -> unrealized 0, minus 2.25.
    # T1: (4006 - 4002) * 50 = 200; T2: (4009 - 4002) * 50 = 350.
    assert [e["equity"] for e in equity(result)] == [CAPITAL - 2.25, CAPITAL + 197.75, CAPITAL + 347.75]


def test_signal_close_does_not_apply_to_limit_orders():
    # A sell limit at 4002 would be marketable at T0's close 4002, but limits start on the next bar:
    # T1 opens 4003 >= 4002 -> filled at the open 4003.
    result = run(BASE, {T0: lambda: limit("ES", -1, 4002.0)}, fill="signal_close")
    assert brief(result) == [(utc(T1), -1, 4003.0)]


@pytest.mark.parametrize(
    ("latency_ms", "expected"),
    [
        (0, [(utc(T1), 1, 4003.0)]),  # submitted 15:00 -> T1 (opens 15:00)
        (1, [(utc(T2), 1, 4006.0)]),  # 15:00:00.001 -> first open at or after is T2 (16:00)
        (3_600_000, [(utc(T2), 1, 4006.0)]),  # exactly 16:00 -> T2 (at or after)
        (3_600_001, []),  # 16:00:00.001 -> no bar opens after that: never filled
    ],
)
def test_latency_delays_market_fill(latency_ms, expected):
    result = run(BASE, {T0: lambda: market("ES", 1)}, latency_ms=latency_ms)
    assert brief(result) == expected
    assert orders(result)[0]["status"] == ("FILLED" if expected else "OPEN")


def test_latency_overrides_signal_close():
    # signal_close only applies with no latency; with 1 ms the order waits for T2's open 4006.
    result = run(BASE, {T0: lambda: market("ES", 1)}, fill="signal_close", latency_ms=1)
    assert brief(result) == [(utc(T2), 1, 4006.0)]


def test_signal_close_with_participation_and_ioc():
    bars = [(T0, 4000, 4004, 3996, 4002, 25), (T1, 4003, 4008, 4001, 4006, 25), (T2, 4006, 4010, 4004, 4009, 25)]
    # GTC: floor(0.1 * 25) = 2 at T0's close 4002 (stamped 15:00); the other 2 at T1's open 4003 (T1's own
    # capacity), stamped 15:00 as well.
    result = run(bars, {T0: lambda: market("ES", 4)}, fill="signal_close", participation=0.1)
    assert brief(result) == [(utc(T1), 2, 4002.0), (utc(T1), 2, 4003.0)]
    # IOC: 2 at the close, the rest cancelled at that same moment (the close, not the bar's open).
    result = run(bars, {T0: lambda: market("ES", 4, tif="IOC")}, fill="signal_close", participation=0.1)
    assert brief(result) == [(utc(T1), 2, 4002.0)]
    [o] = orders(result)
    assert (o["status"], o["filled_quantity"], o["ts_done"]) == ("CANCELLED", 2, utc(T1))
    # FOK that does not fit: cancelled at the close, nothing filled.
    result = run(bars, {T0: lambda: market("ES", 4, tif="FOK")}, fill="signal_close", participation=0.1)
    assert fills(result) == []
    [o] = orders(result)
    assert (o["status"], o["filled_quantity"], o["ts_done"]) == ("CANCELLED", 0, utc(T1))


def test_signal_close_order_for_another_symbol_uses_its_own_close():
    # ES and NQ bars at the same times; the strategy decides on NQ's T0 bar to buy ES (seen just before, as
    # rows come ordered by ts, symbol). ES's T0 close is 4002; NQ's is 16802.
    others = [("NQ", T0, 16800, 16810, 16790, 16802, 1000), ("NQ", T1, 16803, 16812, 16795, 16808, 1000)]
    result = run(BASE[:2], {T0: lambda: market("ES", 1)}, fill="signal_close", others=others, on="NQ")
    assert brief(result) == [(utc(T1), 1, 4002.0)]


NQ_FEE, NQ_MULT = 2.25, 20.0


def test_signal_close_order_for_a_symbol_streamed_later_fills_at_its_own_close_of_the_decision_bar():
    # Rows come ordered by (ts, symbol): ES before NQ. Deciding on ES's T1 bar to buy NQ, NQ's T1 bar is not
    # known yet; its latest known close is T0's 17000, a price that no longer exists once T1 closes at 17170.
    # The order fills at NQ's own T1 close 17170, stamped at T1's close (16:00), and NQ stays there: the only
    # result is one commission, 2.25 (filling at 17000 would book (17170 - 17000) * 20 = 3,400 of profit).
    others = [("NQ", T0, 17000, 17000, 17000, 17000, 1000), ("NQ", T1, 17000, 17170, 17000, 17170, 1000),
              ("NQ", T2, 17170, 17170, 17170, 17170, 1000)]
    result = run(BASE, {T1: lambda: market("NQ", 1)}, fill="signal_close", others=others)
    assert brief(result) == [(utc(T2), 1, 17170.0)]
    assert result.final_equity == CAPITAL - NQ_FEE


def test_signal_close_order_for_a_symbol_without_a_bar_at_the_decision_time_fills_at_its_next_open():
    # NQ has no T1 bar: its close at the decision time never becomes known; the order is a market order at
    # NQ's next bar, T2, opening 17180 (never T0's stale 17000).
    others = [("NQ", T0, 17000, 17000, 17000, 17000, 1000), ("NQ", T2, 17180, 17190, 17175, 17185, 1000)]
    result = run(BASE, {T1: lambda: market("NQ", 1)}, fill="signal_close", others=others)
    assert brief(result) == [(utc(T2), 1, 17180.0)]
    # equity: -2.25 + (17185 - 17180) * 20 = 97.75
    assert result.final_equity == CAPITAL - NQ_FEE + 100.0


# -- LIMIT ------------------------------------------------------------------------------------------------
SIGNAL = (T0, 4000, 4004, 3996, 4002)


def test_limit_buy_open_already_better_fills_at_open_without_slippage():
    bars = [SIGNAL, (T1, 3998, 4001, 3995, 3999)]
    result = run(bars, {T0: lambda: limit("ES", 1, 4000.0)}, slippage={"model": "fixed", "ticks": 1})
    # Opens at 3998 <= 4000: filled at the open; limit fills never slip.
    [f] = fills(result)
    assert (f["ts"], f["price"], f["reference_price"], f["slippage"]) == (utc(T1), 3998.0, 3998.0, 0.0)


def test_limit_sell_open_already_better_fills_at_open():
    bars = [SIGNAL, (T1, 4007, 4009, 4003, 4004)]
    result = run(bars, {T0: lambda: limit("ES", -1, 4005.0)})
    assert brief(result) == [(utc(T1), -1, 4007.0)]


def test_limit_touched_intrabar_fills_at_limit():
    bars = [SIGNAL, (T1, 4003, 4006, 4000, 4002)]
    result = run(bars, {T0: lambda: limit("ES", 1, 4000.0)}, slippage={"model": "fixed", "ticks": 1})
    # Low 4000 touches the 4000 limit: filled at 4000, no slippage.
    [f] = fills(result)
    assert (f["ts"], f["price"], f["slippage"]) == (utc(T1), 4000.0, 0.0)


def test_sell_limit_touched_intrabar_fills_at_limit():
    bars = [SIGNAL, (T1, 4003, 4010, 4001, 4008)]
    result = run(bars, {T0: lambda: limit("ES", -1, 4010.0)})
    assert brief(result) == [(utc(T1), -1, 4010.0)]


def test_limit_through_requires_trading_through():
    bars = [SIGNAL, (T1, 4003, 4006, 4000, 4002), (T2, 4001, 4003, 3999.75, 4002)]
    # T1's low only touches 4000; T2's low 3999.75 trades through -> filled at the limit 4000 on T2.
    result = run(bars, {T0: lambda: limit("ES", 1, 4000.0)}, limit_through=True)
    assert brief(result) == [(utc(T2), 1, 4000.0)]
    # Without limit_through the touch on T1 is enough.
    assert brief(run(bars, {T0: lambda: limit("ES", 1, 4000.0)})) == [(utc(T1), 1, 4000.0)]


def test_limit_through_open_exactly_at_limit_is_only_a_touch():
    # T1 opens exactly at the 4000 limit and never trades below it: a touch, not a fill under limit_through.
    # T2 opens at 3999.5, better than the limit -> filled at that open.
    bars = [SIGNAL, (T1, 4000, 4004, 4000, 4003), (T2, 3999.5, 4001, 3999, 4000)]
    result = run(bars, {T0: lambda: limit("ES", 1, 4000.0)}, limit_through=True)
    assert brief(result) == [(utc(T2), 1, 3999.5)]
    # Touch rule: the open at the limit fills.
    assert brief(run(bars, {T0: lambda: limit("ES", 1, 4000.0)})) == [(utc(T1), 1, 4000.0)]


def test_limit_not_reached_keeps_working():
    bars = [SIGNAL, (T1, 4003, 4006, 4000.25, 4005), (T2, 4005, 4007, 4001, 4006)]
    result = run(bars, {T0: lambda: limit("ES", 1, 4000.0)})
    assert fills(result) == []
    [o] = orders(result)
    assert (o["status"], o["filled_quantity"], o["ts_done"], o["detail"]) == ("OPEN", 0, None, "")
    assert result.final_equity == CAPITAL


# -- STOP (with 1 tick of fixed slippage) -------------------------------------------------------------------
FIXED_1 = {"model": "fixed", "ticks": 1}


def test_buy_stop_gapped_through_fills_at_open_plus_slippage():
    bars = [SIGNAL, (T1, 4008, 4012, 4007, 4010)]
    result = run(bars, {T0: lambda: stop("ES", 1, 4005.0)}, slippage=FIXED_1)
    # Opens 4008 above the 4005 trigger: 4008 + 0.25 = 4008.25; slippage cost 0.25 * 50 = 12.5.
    [f] = fills(result)
    assert (f["ts"], f["price"], f["reference_price"], f["slippage"]) == (utc(T1), 4008.25, 4008.0, 12.5)


def test_buy_stop_moved_through_intrabar_fills_at_trigger_plus_slippage():
    bars = [SIGNAL, (T1, 4001, 4007, 3999, 4004)]
    result = run(bars, {T0: lambda: stop("ES", 1, 4005.0)}, slippage=FIXED_1)
    # High 4007 crosses 4005: 4005 + 0.25.
    [f] = fills(result)
    assert (f["price"], f["reference_price"], f["slippage"]) == (4005.25, 4005.0, 12.5)


def test_sell_stop_intrabar_and_gap():
    bars = [SIGNAL, (T1, 4001, 4003, 3993, 3996)]
    # Low 3993 crosses 3995: 3995 - 0.25 = 3994.75.
    assert brief(run(bars, {T0: lambda: stop("ES", -1, 3995.0)}, slippage=FIXED_1)) == [(utc(T1), -1, 3994.75)]
    bars = [SIGNAL, (T1, 3990, 3994, 3988, 3992)]
    # Opens 3990 below 3995: 3990 - 0.25 = 3989.75.
    assert brief(run(bars, {T0: lambda: stop("ES", -1, 3995.0)}, slippage=FIXED_1)) == [(utc(T1), -1, 3989.75)]


def test_stop_not_triggered_keeps_working():
    bars = [SIGNAL, (T1, 4001, 4004.75, 3999, 4004)]
    result = run(bars, {T0: lambda: stop("ES", 1, 4005.0)}, slippage=FIXED_1)
    assert fills(result) == [] and orders(result)[0]["status"] == "OPEN"


# -- STOP_LIMIT (limit part never slips, even with slippage configured) -----------------------------------
def test_stop_limit_triggered_and_filled_within_bar():
    bars = [SIGNAL, (T1, 4001, 4008, 4000, 4003)]
    result = run(bars, {T0: lambda: stop_limit("ES", 1, 4005.0, 4006.0)}, slippage=FIXED_1)
    # O 4001 -> H 4008 crosses the 4005 trigger; the buy limit 4006 is then marketable at 4005: filled at 4005.
    [f] = fills(result)
    assert (f["ts"], f["price"], f["slippage"]) == (utc(T1), 4005.0, 0.0)


def test_stop_limit_limit_below_trigger_reached_later_in_bar():
    bars = [SIGNAL, (T1, 4002, 4008, 4001, 4004)]
    result = run(bars, {T0: lambda: stop_limit("ES", 1, 4005.0, 4003.0)}, slippage=FIXED_1)
    # O 4002 -> H 4008 (triggers at 4005) -> L 4001 reaches the 4003 limit: filled at 4003.
    assert brief(result) == [(utc(T1), 1, 4003.0)]


def test_stop_limit_triggered_then_works_as_limit_on_later_bars():
    bars = [
        SIGNAL,
        (T1, 4002, 4008, 4001, 4006),  # triggers A (4005), not B (4009); rest of path 4005-4008-4001-4006 > 4000
        (T2, 4003, 4004, 3999, 4000),  # below both stops; A is a limit now: 3999 <= 4000 -> 4000
    ]
    plan = {T0: lambda: [stop_limit("ES", 1, 4005.0, 4000.0, tag="A"), stop_limit("ES", 1, 4009.0, 4000.0, tag="B")]}
    result = run(bars, plan)
    [f] = fills(result)
    assert (f["order_id"], f["ts"], f["price"]) == (0, utc(T2), 4000.0)
    assert [(o["tag"], o["status"], o["filled_quantity"]) for o in orders(result)] == [("A", "FILLED", 1),
                                                                                         ("B", "OPEN", 0)]


def test_stop_limit_gap_over_both_prices():
    # Opens 4010, over the 4005 trigger and the 4006 limit; the low 4008 never comes back to 4006.
    # T2: opens 4007 (> 4006), low 4005 -> filled at the limit 4006.
    bars = [SIGNAL, (T1, 4010, 4012, 4008, 4011), (T2, 4007, 4009, 4005, 4006)]
    result = run(bars, {T0: lambda: stop_limit("ES", 1, 4005.0, 4006.0)}, slippage=FIXED_1)
    assert brief(result) == [(utc(T2), 1, 4006.0)]
    # Same gap but the bar comes back down to 4004: filled at 4006 within T1.
    bars = [SIGNAL, (T1, 4010, 4012, 4004, 4007)]
    assert brief(run(bars, {T0: lambda: stop_limit("ES", 1, 4005.0, 4006.0)})) == [(utc(T1), 1, 4006.0)]


# -- MIT ------------------------------------------------------------------------------------------------------
def test_mit_buy_below_market():
    bars = [SIGNAL, (T1, 4000, 4002, 3993, 3998)]
    # Falls to 3995 from above: buy at 3995 + 0.25.
    assert brief(run(bars, {T0: lambda: mit("ES", 1, 3995.0)}, slippage=FIXED_1)) == [(utc(T1), 1, 3995.25)]
    bars = [SIGNAL, (T1, 3990, 3994, 3988, 3992)]
    # Opens below the trigger: at the open 3990 + 0.25.
    assert brief(run(bars, {T0: lambda: mit("ES", 1, 3995.0)}, slippage=FIXED_1)) == [(utc(T1), 1, 3990.25)]
    bars = [SIGNAL, (T1, 4000, 4002, 3995.25, 3998)]
    # Low 3995.25 never touches 3995 (and the high above it never triggers a buy MIT).
    assert fills(run(bars, {T0: lambda: mit("ES", 1, 3995.0)})) == []


def test_mit_sell_above_market():
    bars = [SIGNAL, (T1, 4000, 4007, 3999, 4006)]
    # Rises to 4005: sell at 4005 - 0.25.
    assert brief(run(bars, {T0: lambda: mit("ES", -1, 4005.0)}, slippage=FIXED_1)) == [(utc(T1), -1, 4004.75)]
    bars = [SIGNAL, (T1, 4000, 4004.75, 3990, 3995)]
    assert fills(run(bars, {T0: lambda: mit("ES", -1, 4005.0)})) == []


# -- intrabar path ----------------------------------------------------------------------------------------------
def test_intrabar_path_ohlc_versus_adaptive():
    # Buy stop-limit: trigger 4005, limit 4003. T1: O 4002 H 4008 L 3998 C 4004; the open is nearer the low
    # (4002 - 3998 = 4 < 4008 - 4002 = 6).
    bars = [SIGNAL, (T1, 4002, 4008, 3998, 4004), (T2, 4004, 4006, 4002, 4005)]
    plan = {T0: lambda: stop_limit("ES", 1, 4005.0, 4003.0)}
    # O-H-L-C: 4002 -> 4008 triggers at 4005, then down to 3998 passes 4003: filled at 4003 on T1.
    assert brief(run(bars, plan, intrabar="ohlc")) == [(utc(T1), 1, 4003.0)]
    # Adaptive O-L-H-C: 4002 -> 3998 (not triggered) -> 4008 triggers at 4005 -> close 4004 > 4003: no fill on T1.
    # T2 (triggered, a plain limit now): opens 4004, low 4002 <= 4003 -> 4003 on T2.
    assert brief(run(bars, plan, intrabar="adaptive")) == [(utc(T2), 1, 4003.0)]


def test_adaptive_path_keeps_ohlc_when_open_nearer_the_high():
    # O 4004 H 4008 L 3998: 4004 - 3998 = 6 > 4008 - 4004 = 4, so adaptive also goes O-H-L-C:
    # 4004 -> 4008 triggers 4005 -> 3998 passes the 4003 limit: filled at 4003.
    bars = [SIGNAL, (T1, 4004, 4008, 3998, 4002)]
    plan = {T0: lambda: stop_limit("ES", 1, 4005.0, 4003.0)}
    assert brief(run(bars, plan, intrabar="adaptive")) == [(utc(T1), 1, 4003.0)]


def test_stop_loss_and_take_profit_inside_one_bar_both_fill():
    # Long 1 at T1's open 4003; then a stop-loss (sell stop 3998) and a take-profit (sell limit 4008) both work.
    # T2 spans both and they are independent orders (no OCO group), so both fill: -1 at 4008 (limit) and -1 at
    # 3998 (stop) -> short 1. In one OCO group only the first reached fills (tests/test_oco_bracket.py).
    bars = [SIGNAL, (T1, 4003, 4005, 4001, 4004), (T2, 4004, 4009, 3997, 4000)]
    plan = {T0: lambda: market("ES", 1), T1: lambda: [stop("ES", -1, 3998.0), limit("ES", -1, 4008.0)]}
    result = run(bars, plan)
    assert sorted(brief(result)) == sorted([(utc(T1), 1, 4003.0), (utc(T2), -1, 3998.0), (utc(T2), -1, 4008.0)])
    assert fills(result)[-1]["position_after"] == -1


# -- time in force ---------------------------------------------------------------------------------------------
# 1-minute bars around the CME session break (winter: the session opens 18:00 New York = 23:00 UTC).
# 21:58 and 21:59 UTC (16:58/16:59 ET) belong to trading date 2024-01-16; 23:00 and 23:01 to 2024-01-17.
SESSION_BARS = [
    ("2024-01-16 21:58", 4000, 4001, 3999, 4000),
    ("2024-01-16 21:59", 4000, 4001, 3998, 4000),
    ("2024-01-16 23:00", 3995, 3996, 3985, 3990),
    ("2024-01-16 23:01", 3990, 3992, 3988, 3991),
]


def test_day_order_expires_at_trading_date_change():
    result = run(SESSION_BARS, {"2024-01-16 21:58": lambda: limit("ES", 1, 3990.0, tif="DAY")}, timeframe="1m")
    # 21:59 low 3998 > 3990: working; 23:00 is the next trading date: expired before it could fill at 3990.
    assert fills(result) == []
    [o] = orders(result)
    assert (o["status"], o["detail"], o["ts_done"]) == ("EXPIRED", "end of trading date", utc("2024-01-16 23:00"))


def test_gtc_order_persists_across_trading_dates():
    result = run(SESSION_BARS, {"2024-01-16 21:58": lambda: limit("ES", 1, 3990.0, tif="GTC")}, timeframe="1m")
    # 23:00 opens 3995 > 3990, low 3985: filled at 3990, on trading date 2024-01-17.
    [f] = fills(result)
    assert (f["ts"], f["price"], f["trading_date"]) == (utc("2024-01-16 23:00"), 3990.0, date(2024, 1, 17))
    assert orders(result)[0]["status"] == "FILLED"


GTD_BARS = [SIGNAL, (T1, 4000, 4002, 3995, 3998), (T2, 3992, 3994, 3985, 3988)]


def test_gtd_expires_at_expire_ts_exclusive():
    result = run(GTD_BARS, {T0: lambda: limit("ES", 1, 3990.0, tif="GTD", expire_ts=ns(T2))})
    # T1 low 3995 > 3990; T2 opens at expire_ts (exclusive): expired, no fill.
    assert fills(result) == []
    [o] = orders(result)
    assert (o["status"], o["detail"], o["ts_done"]) == ("EXPIRED", "GTD expiry", utc(T2))


def test_gtd_works_before_expiry():
    result = run(GTD_BARS, {T0: lambda: limit("ES", 1, 3990.0, tif="GTD", expire_ts=ns(T2) + 1)})
    # T2 opens before expiry: open 3992 > 3990, low 3985 -> 3990.
    assert brief(result) == [(utc(T2), 1, 3990.0)]


def test_ioc_cancels_unfilled_remainder():
    bars = [SIGNAL, (T1, 4003, 4008, 4001, 4006, 25), (T2, 4006, 4010, 4004, 4009, 25)]
    result = run(bars, {T0: lambda: market("ES", 5, tif="IOC")}, participation=0.1)
    # floor(0.1 * 25) = 2 contracts at T1's open; the other 3 are cancelled (nothing on T2).
    assert brief(result) == [(utc(T1), 2, 4003.0)]
    [o] = orders(result)
    assert (o["status"], o["filled_quantity"], o["detail"]) == ("CANCELLED", 2, "IOC: remainder cancelled")


def test_ioc_not_executable_on_first_bar_is_cancelled():
    bars = [SIGNAL, (T1, 4000, 4002, 3995, 3998), (T2, 3992, 3994, 3985, 3988)]
    result = run(bars, {T0: lambda: limit("ES", 1, 3990.0, tif="IOC")})
    # T1 low 3995 > 3990: cancelled at once (T2 would have reached 3990).
    assert fills(result) == []
    [o] = orders(result)
    assert (o["status"], o["filled_quantity"], o["ts_done"]) == ("CANCELLED", 0, utc(T1))
    assert o["detail"] == "IOC: not executable on its first bar"


def test_fok_all_or_nothing():
    bars = [SIGNAL, (T1, 4003, 4008, 4001, 4006, 25), (T2, 4006, 4010, 4004, 4009, 25)]
    # Capacity floor(0.1 * 25) = 2 per bar: 5 cannot fill at once -> cancelled, nothing filled.
    result = run(bars, {T0: lambda: market("ES", 5, tif="FOK")}, participation=0.1)
    assert fills(result) == []
    [o] = orders(result)
    assert (o["status"], o["filled_quantity"]) == ("CANCELLED", 0)
    # 2 fit: filled completely.
    result = run(bars, {T0: lambda: market("ES", 2, tif="FOK")}, participation=0.1)
    assert brief(result) == [(utc(T1), 2, 4003.0)]
    assert orders(result)[0]["status"] == "FILLED"


# -- volume participation --------------------------------------------------------------------------------------
PART_BARS = [
    (T0, 4000, 4004, 3996, 4002, 25),
    (T1, 4003, 4008, 4001, 4006, 25),
    (T2, 4006, 4010, 4004, 4009, 25),
    (T3, 4009, 4012, 4007, 4011, 25),
]


def test_participation_cap_spreads_fills_over_bars():
    result = run(PART_BARS, {T0: lambda: market("ES", 5)}, participation=0.1)
    # floor(0.1 * 25) = 2 per bar: 2 @ 4003, 2 @ 4006, 1 @ 4009.
    assert brief(result) == [(utc(T1), 2, 4003.0), (utc(T2), 2, 4006.0), (utc(T3), 1, 4009.0)]
    assert [f["commission"] for f in fills(result)] == [4.5, 4.5, 2.25]
    [o] = orders(result)
    # avg = (2 * 4003 + 2 * 4006 + 4009) / 5 = 20027 / 5 = 4005.4
    assert (o["status"], o["filled_quantity"], o["avg_fill_price"]) == ("FILLED", 5, pytest.approx(4005.4))


def test_participation_partial_fill_while_working():
    result = run(PART_BARS[:3], {T0: lambda: market("ES", 5)}, participation=0.1)
    # Data ends after T2: 4 of 5 filled, the order still works (partially filled shows as OPEN).
    assert [f["quantity"] for f in fills(result)] == [2, 2]
    [o] = orders(result)
    assert (o["status"], o["filled_quantity"], o["avg_fill_price"]) == ("OPEN", 4, 4004.5)


def test_participation_cap_is_shared_by_all_orders_of_a_symbol():
    result = run(PART_BARS, {T0: lambda: [market("ES", 2), market("ES", 2)]}, participation=0.1)
    # T1: order 0 takes both contracts of capacity; order 1 waits for T2.
    assert [(f["order_id"], f["ts"], f["quantity"]) for f in fills(result)] == [(0, utc(T1), 2), (1, utc(T2), 2)]


def test_participation_floor_is_robust_to_float_error():
    bars = [(T0, 4000, 4004, 3996, 4002, 100), (T1, 4003, 4008, 4001, 4006, 100), (T2, 4006, 4010, 4004, 4009, 100)]
    # 0.29 * 100 is 28.999999999999996 in floating point; the cap is 29 contracts.
    result = run(bars, {T0: lambda: market("ES", 30)}, participation=0.29,
                 risk=RiskLimits.off().model_copy(update={"max_position_size": 50}))
    assert [(f["ts"], f["quantity"]) for f in fills(result)] == [(utc(T1), 29), (utc(T2), 1)]


# -- slippage models --------------------------------------------------------------------------------------------
def test_fixed_ticks_slippage_on_both_sides():
    plan = {T0: lambda: market("ES", 1), T1: lambda: market("ES", -1)}
    result = run(BASE, plan, slippage={"model": "fixed", "ticks": 2})
    # 2 ticks = 0.5: buy 4003 + 0.5, sell 4006 - 0.5; cost 0.5 * 50 = 25 per fill.
    assert [(f["price"], f["reference_price"], f["slippage"]) for f in fills(result)] == [
        (4003.5, 4003.0, 25.0), (4005.5, 4006.0, 25.0)]
    # Realized (4005.5 - 4003.5) * 50 = 100, minus 2 * 2.25.
    assert result.final_equity == CAPITAL + 100 - 4.5
    assert equity(result)[-1]["slippage"] == 50.0


@pytest.mark.parametrize(
    ("bps", "quantity", "price"),
    [
        (1.0, 1, 4003.5),  # 4003 * 1e-4 = 0.4003 -> 1.6 ticks -> up to 2 ticks = 0.5
        (0.5, 1, 4003.25),  # 0.20015 -> 0.8 ticks -> 1 tick
        (1.0, -1, 4002.5),  # sell: 4003 - 0.5
        (0.0, 1, 4003.0),  # no slippage
    ],
)
def test_proportional_slippage_rounds_up_to_whole_ticks(bps, quantity, price):
    result = run(BASE, {T0: lambda: market("ES", quantity)}, slippage={"model": "proportional", "bps": bps})
    assert brief(result) == [(utc(T1), quantity, price)]


def test_proportional_slippage_exact_tick_multiple_not_rounded_further():
    bars = [SIGNAL, (T1, 4000, 4004, 3998, 4002)]
    # 4000 * 6.25e-4 = 2.5 = exactly 10 ticks -> 4002.5 (not 4002.75).
    result = run(bars, {T0: lambda: market("ES", 1)}, slippage={"model": "proportional", "bps": 6.25})
    [f] = fills(result)
    assert (f["price"], f["slippage"]) == (4002.5, 125.0)


def _vol_bars(c1: float, c2: float, volume: int) -> list[Bar]:
    # Closes 4000, c1, c2 give two log returns before the fill at T3's open 4000.
    return [
        (T0, 4000, 4001, 3999, 4000),
        (T1, 4000, max(4001, c1 + 1), min(3999, c1 - 1), c1),
        (T2, c1, max(c1, c2) + 1, min(c1, c2) - 1, c2),
        (T3, 4000, 4003, 3998, 4001, volume),
    ]


def test_volatility_volume_slippage_grows_with_sigma_and_share():
    plan = {T2: lambda: market("ES", 1)}
    cfg = {"slippage": {"model": "volatility", "impact": 1.0, "window": 20}}
    # Volatile: closes 4000, 4040, 4000: r = +-ln(1.01) = +-0.0099503, mean 0,
    # sigma = sqrt(2 r^2 / 1) = 0.0140719. q = 1 of V = 100: sqrt(0.01) = 0.1.
    # offset = 4000 * 0.0140719 * 0.1 = 5.6288 -> 22.5 ticks -> 23 ticks = 5.75.
    volatile = fills(run(_vol_bars(4040, 4000, 100), plan, **cfg))
    assert (volatile[0]["price"], volatile[0]["reference_price"]) == (4005.75, 4000.0)
    # Calm: closes 4000, 4004, 4000: r = +-ln(1.001) = +-0.0009995, sigma = 0.0014135;
    # offset = 4000 * 0.0014135 * 0.1 = 0.5654 -> 2.26 ticks -> 3 ticks = 0.75.
    calm = fills(run(_vol_bars(4004, 4000, 100), plan, **cfg))
    assert calm[0]["price"] == 4000.75
    # Larger share: V = 25, sqrt(1/25) = 0.2: offset = 4000 * 0.0140719 * 0.2 = 11.2575 -> 45.03 -> 46 ticks = 11.5.
    thin = fills(run(_vol_bars(4040, 4000, 25), plan, **cfg))
    assert thin[0]["price"] == 4011.5
    assert calm[0]["slippage"] < volatile[0]["slippage"] < thin[0]["slippage"]
    assert thin[0]["slippage"] == 11.5 * MULT


def test_volatility_slippage_spread_only_without_history():
    # Submitted on the first bar: one close seen, fewer than two returns -> sigma 0; only the spread:
    # 4003 * 1e-4 = 0.4003 -> 2 ticks = 0.5.
    result = run(BASE, {T0: lambda: market("ES", 1)},
                 slippage={"model": "volatility", "impact": 1.0, "window": 20, "spread_bps": 1.0})
    assert brief(result) == [(utc(T1), 1, 4003.5)]


# -- commissions and P&L ----------------------------------------------------------------------------------------
def test_commission_once_per_side_per_contract():
    plan = {T0: lambda: market("ES", 3), T1: lambda: market("ES", -3)}
    result = run(BASE, plan)
    # Buy 3 @ 4003, sell 3 @ 4006: 3 * 2.25 each side = 6.75; 6 * 2.25 = 13.5 in total.
    assert [(f["quantity"], f["price"], f["commission"]) for f in fills(result)] == [(3, 4003.0, 6.75),
                                                                                      (-3, 4006.0, 6.75)]
    assert equity(result)[-1]["commissions"] == 13.5
    # (4006 - 4003) * 3 * 50 = 450 realized.
    assert result.final_equity == CAPITAL + 450 - 13.5
    [trade] = result.tables["trades"].to_pylist()
    assert (trade["gross_pnl"], trade["commission"], trade["pnl"]) == (450.0, 13.5, 436.5)


def test_reversal_splits_fill_and_pays_commission_once():
    plan = {T0: lambda: market("ES", 1), T1: lambda: market("ES", -2)}
    result = run(BASE, plan)
    # +1 @ 4003; the -2 @ 4006 becomes a closing -1 (realizes (4006 - 4003) * 50 = 150) and an opening -1,
    # each with half of the order's 2 * 2.25 commission.
    got = [(f["order_id"], f["quantity"], f["price"], f["commission"], f["realized_pnl"], f["position_after"])
           for f in fills(result)]
    assert got == [(0, 1, 4003.0, 2.25, 0.0, 1), (1, -1, 4006.0, 2.25, 150.0, 0), (1, -1, 4006.0, 2.25, 0.0, -1)]
    assert equity(result)[-1]["commissions"] == 6.75
    # Short 1 from 4006 marked at 4009: -150. Equity = capital + 150 - 150 - 6.75.
    assert result.final_equity == CAPITAL - 6.75
    assert [o["filled_quantity"] for o in orders(result)] == [1, -2]


def test_futures_pnl_uses_the_multiplier():
    bars = [(T0, 3998, 4001, 3996, 3999), (T1, 4000, 4006, 3999, 4004), (T2, 4010, 4012, 4008, 4011)]
    plan = {T0: lambda: market("ES", 1), T1: lambda: market("ES", -1)}
    result = run(bars, plan)
    assert brief(result) == [(utc(T1), 1, 4000.0), (utc(T2), -1, 4010.0)]
    # (4010 - 4000) * 1 * 50 = +500 gross; 2 * 2.25 commission.
    assert fills(result)[1]["realized_pnl"] == 500.0
    [trade] = result.tables["trades"].to_pylist()
    assert (trade["gross_pnl"], trade["pnl"]) == (500.0, 495.5)
    # At T1 the long is marked at 4004: (4004 - 4000) * 50 = 200 unrealized.
    eq = equity(result)
    assert (eq[1]["unrealized"], eq[1]["equity"]) == (200.0, CAPITAL + 200 - 2.25)
    assert result.final_equity == CAPITAL + 500 - 4.5


def test_close_at_end_slippage_uses_the_last_bar_volume():
    # Long 1 bought at T3's open with volatile closes (see test_volatility_volume_slippage_grows_with_sigma_and_share):
    # closes 4000, 4040, 4000, 4001 -> 3 returns: ln(1.01) = 0.0099503, ln(4000/4040) = -0.0099503,
    # ln(4001/4000) = 0.00025; mean 0.0000833, deviations 0.0098670, -0.0100336, 0.0001667:
    # sigma = sqrt((0.00009736 + 0.00010067 + 0.00000003) / 2) = 0.0099513.
    # Liquidation at the last close 4001, q = 1 of V = 100: offset = 4001 * 0.0099513 * 0.1 = 3.9815
    # -> 15.9 ticks -> 16 ticks = 4.0: sold at 3997.0 (not 4001 * 0.0099513 * 1 = 39.8 points away).
    plan = {T2: lambda: market("ES", 1)}
    result = run(_vol_bars(4040, 4000, 100), plan, close_at_end=True,
                 slippage={"model": "volatility", "impact": 1.0, "window": 20})
    last = fills(result)[-1]
    assert (last["quantity"], last["reference_price"], last["price"]) == (-1, 4001.0, 3997.0)


# -- fee and margin coverage ------------------------------------------------------------------------------
OLD = [("2012-06-05 14:00", 1300, 1302, 1299, 1301), ("2012-06-05 15:00", 1301, 1303, 1300, 1302),
       ("2012-06-05 16:00", 1302, 1304, 1301, 1303)]


def test_bars_before_the_fee_table_are_refused_before_the_first_bar():
    # fees.csv starts 2013-01-01; trading date 2012-06-05 is not covered: one ConfigError, no run.
    with pytest.raises(ConfigError, match=r"^ES: the fees table \(warehouse/data/fees.csv\) starts 2013-01-01, but "
                                          r"the query has ES bars from trading date 2012-06-05"):
        run(OLD, {OLD[0][0]: lambda: market("ES", 1)})


def test_a_fee_override_covers_older_bars_and_margins_are_checked_only_when_the_run_checks_them():
    # fee_per_side 2.00 from the run's instruments config: buy 1 at T1's open 1301, marked at 1303:
    # (1303 - 1301) * 50 - 2.00 = 98.00
    override = {"ES": {"fee_per_side": 2.0}}
    result = run(OLD, {OLD[0][0]: lambda: market("ES", 1)}, instruments=override)
    assert brief(result) == [(utc(OLD[1][0]), 1, 1301.0)]
    assert result.final_equity == CAPITAL + 98.0
    # with the margin check on, the margins table must cover the dates too
    with pytest.raises(ConfigError, match=r"^ES: the margins table .* set initial_margin under "
                                          r"\[backtest.instruments.ES\]"):
        run(OLD, {OLD[0][0]: lambda: market("ES", 1)}, instruments=override,
            risk=RiskLimits(**{**RiskLimits.off().model_dump(), "check_margin": True}))
