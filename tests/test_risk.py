"""The portfolio risk manager (engine.risk) and its wiring into the backtester, end to end.

Every run reads a small hand-built bar table from DuckDB through the public ``run_backtest``; expected
quantities, money, timestamps and messages are worked out by hand in the comments (never by the engine).

Terms from the contract tables (warehouse/data): multipliers ES 50, MES 5, NQ 20, CL 1000; fees per contract
per side ES = NQ = 0.85 + 1.38 + 0.02 = 2.25, CL = 0.85 + 1.50 + 0.02 = 2.37; initial margin from 2024
ES 13,750, NQ 19,360. Flat prices used throughout: ES 4000 (200,000 notional per contract), MES 4000
(20,000), NQ 17000 (340,000), CL 75 (75,000).

Unless a test says otherwise bars are hourly on Tuesday 2024-01-16 (UTC, winter: ET = UTC - 5), all inside
the CME trading date 2024-01-16 (session 18:00 ET Jan 15 .. 17:00 ET Jan 16), and an order decided on a bar
is submitted at its close and (market, ``next_open``) filled at the next bar's open.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.backtest.run import BacktestConfig, BacktestResult, run_backtest
from engine.core.instruments import InstrumentBook
from engine.core.orders import Order, limit, market, oco, stop
from engine.risk import (
    Denial,
    RiskLimits,
    RiskManager,
    RiskState,
    volatility_scaled_contracts,
    week_of,
)
from engine.runner import load_config
from engine.strategy import Strategy
from warehouse import Warehouse
from warehouse.errors import ConfigError

CAPITAL = 1_000_000.0
MULT = {"ES": 50.0, "MES": 5.0, "NQ": 20.0, "CL": 1000.0}

#: every limit and breaker off; each test switches on the ones it studies
LOOSE = {"max_position_size": None, "max_portfolio_exposure": None, "max_single_position_pct": None,
         "max_correlated_exposure": None, "max_daily_loss": None, "max_weekly_loss": None, "max_drawdown": None,
         "check_margin": False, "volatility_scaling": False}


def limits(**kw) -> RiskLimits:
    return RiskLimits(**{**LOOSE, **kw})


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def ns(text: str) -> int:
    return int(utc(text).timestamp()) * 1_000_000_000


T = [f"2024-01-16 {h:02d}:00" for h in range(14, 22)]  # T[0] 14:00 .. T[7] 21:00 UTC

Row = tuple  # (symbol, ts text, open, high, low, close, volume)


def flat(symbol: str, times: list[str], price: float, volume: int = 1000) -> list[Row]:
    return [(symbol, t, price, price, price, price, volume) for t in times]


def make_table(con: duckdb.DuckDBPyConnection, rows: list[Row]) -> None:
    con.execute("SET TimeZone='UTC'")
    con.execute("CREATE TABLE bars (symbol VARCHAR, ts TIMESTAMPTZ, open DOUBLE, high DOUBLE, low DOUBLE, "
                "close DOUBLE, volume BIGINT)")
    for r in rows:
        assert r[4] <= min(r[2], r[5]) and r[3] >= max(r[2], r[5]), f"inconsistent bar {r}"
    con.executemany("INSERT INTO bars VALUES (?, ?, ?, ?, ?, ?, ?)", [(r[0], utc(r[1]), *r[2:]) for r in rows])


Plan = dict[str, Callable]  # bar ts text -> fn(engine) -> orders (or None), run on the bars of symbol `on`


def plan_strategy(plan: Plan, on: str) -> Callable:
    by_ns = {ns(k): v for k, v in plan.items()}

    def strategy(bar, engine):
        todo = by_ns.get(bar.ts) if bar.symbol == on else None
        return todo(engine) if todo is not None else None

    return strategy


def run(rows: list[Row], plan: Plan, risk: RiskLimits, *, on: str = "ES", timeframe: str = "1h",
        **config) -> BacktestResult:
    con = duckdb.connect()
    try:
        make_table(con, rows)
        return run_backtest(con, "SELECT * FROM bars", plan_strategy(plan, on),
                            BacktestConfig(timeframe=timeframe, risk=risk, **config))
    finally:
        con.close()


def orders(result: BacktestResult) -> list[dict]:
    return result.tables["orders"].to_pylist()


def events(result: BacktestResult, kind: str | None = None) -> list[dict]:
    return [e for e in result.tables["events"].to_pylist() if kind is None or e["kind"] == kind]


def denials(result: BacktestResult) -> list[tuple]:
    """(ts, code, symbol, order_id, message) of every denial event."""
    return [(e["ts"], e["code"], e["symbol"], e["order_id"], e["message"]) for e in events(result, "denial")]


def statuses(result: BacktestResult) -> list[tuple]:
    """(symbol, quantity, status, detail) of every order, in submission order."""
    return [(o["symbol"], o["quantity"], o["status"], o["detail"]) for o in orders(result)]


def assert_denied(result: BacktestResult, order_id: int, ts: str, code: str, message: str) -> None:
    """The order is DENIED with detail ``CODE: message`` and one denial event carries the same."""
    o = orders(result)[order_id]
    assert (o["status"], o["detail"], o["filled_quantity"]) == ("DENIED", f"{code}: {message}", 0)
    found = [d for d in denials(result) if d[3] == order_id]
    assert found == [(utc(ts), code, o["symbol"], order_id, message)]


# =========================================================================================================
# 1. Pre-trade limits: a denial with a stable code and the numbers, never an exception
# =========================================================================================================
def test_max_position_size_counts_position_and_working_orders():
    rows = flat("ES", T[:4], 4000.0)
    plan = {
        T[0]: lambda e: [market("ES", 12),  # 0: |0 + 0 + 12| = 12 > 10
                         market("ES", 6),  # 1: accepted (working)
                         market("ES", 5),  # 2: |0 + 6 + 5| = 11 > 10: the working order counts
                         market("ES", 4)],  # 3: |0 + 6 + 4| = 10: accepted
        T[2]: lambda e: [market("ES", -25),  # 4: long 10 -> -15: a reversal is checked on its projected size
                         market("ES", 1),  # 5: 11 > 10
                         market("ES", -20)],  # 6: long 10 -> -10: a reversal within the limit is accepted
    }
    result = run(rows, plan, limits(max_position_size=10))
    assert_denied(result, 0, T[0], "MAX_POSITION_SIZE", "requested=12, limit=10")
    assert_denied(result, 2, T[0], "MAX_POSITION_SIZE", "requested=11, limit=10 (worst case: position +0, "
                                                        "working buys 6, working sells 0, order +5)")
    assert_denied(result, 4, T[2], "MAX_POSITION_SIZE", "requested=15, limit=10")
    assert_denied(result, 5, T[2], "MAX_POSITION_SIZE", "requested=11, limit=10")
    assert [o["status"] for o in orders(result)] == ["DENIED", "FILLED", "DENIED", "FILLED", "DENIED", "DENIED",
                                                     "FILLED"]
    assert [e["code"] for e in events(result, "denial")] == ["MAX_POSITION_SIZE"] * 4
    # +6 +4 at T1's open, -20 at T3's open: short 10
    assert result.tables["positions"].to_pylist()[-1]["quantity"] == -10


def test_max_single_position_notional_against_current_equity():
    rows = flat("ES", T[:4], 4000.0)
    plan = {
        T[0]: lambda e: [market("ES", 3), market("ES", 2)],
        T[2]: lambda e: [market("ES", 1)],
    }
    result = run(rows, plan, limits(max_single_position_pct=0.5))
    # T0: 3 * 50 * 4000 = 600,000 > 0.5 * 1,000,000 = 500,000; 2 contracts = 400,000 pass.
    assert_denied(result, 0, T[0], "MAX_SINGLE_POSITION",
                  "notional=600000.00, limit=500000.00 (0.5 of equity 1000000.00)")
    assert orders(result)[1]["status"] == "FILLED"
    # T2: equity = 1,000,000 - 2 * 2.25 = 999,995.50 (flat prices) -> limit 499,997.75; 3 contracts 600,000.
    assert_denied(result, 2, T[2], "MAX_SINGLE_POSITION",
                  "notional=600000.00, limit=499997.75 (0.5 of equity 999995.50)")


def test_max_portfolio_exposure_sums_every_symbol():
    times = T[:4]
    rows = flat("CL", times, 75.0) + flat("ES", times, 4000.0)  # same ts: CL comes before ES
    plan = {
        T[0]: lambda e: [market("CL", 2)],  # 2 * 1000 * 75 = 150,000
        T[2]: lambda e: [market("ES", 2),  # 150,000 + 400,000 = 550,000
                         market("ES", 1)],  # 150,000 + 200,000 = 350,000: passes
    }
    result = run(rows, plan, limits(max_portfolio_exposure=0.5))
    # equity at T2 = 1,000,000 - 2 * 2.37 = 999,995.26 -> limit 499,997.63. ES 2 alone (400,000) is under it.
    assert_denied(result, 1, T[2], "MAX_PORTFOLIO_EXPOSURE",
                  "notional=550000.00, limit=499997.63 (0.5 of equity 999995.26)")
    assert [o["status"] for o in orders(result)] == ["FILLED", "DENIED", "FILLED"]


def test_max_correlated_exposure_equity_index_pair_without_energy():
    times = T[:4]
    rows = flat("CL", times, 75.0) + flat("ES", times, 4000.0) + flat("MES", times, 4000.0) + flat("NQ", times, 17000.0)
    plan = {  # decided on NQ's bars, the last of each timestamp
        T[0]: lambda e: [market("NQ", 1),  # 0: equity_index 340,000
                         market("CL", 3)],  # 1: energy 225,000
        T[2]: lambda e: [market("ES", 1),  # 2: equity_index 340,000 + 200,000 = 540,000 > limit
                         market("MES", 1),  # 3: 340,000 + 20,000 = 360,000 passes (with CL it would be 585,000)
                         market("CL", 2)],  # 4: energy 5 * 75,000 = 375,000 passes (NQ, MES do not count)
    }
    result = run(rows, plan, limits(max_correlated_exposure=0.5), on="NQ")
    # equity at T2 = 1,000,000 - 2.25 (NQ) - 3 * 2.37 (CL) = 999,990.64 -> limit 499,995.32
    assert_denied(result, 2, T[2], "MAX_CORRELATED_EXPOSURE",
                  "group=equity_index, notional=540000.00, limit=499995.32 (0.5 of equity 999990.64)")
    assert [o["status"] for o in orders(result)] == ["FILLED", "FILLED", "DENIED", "FILLED", "FILLED"]


def test_margin_counts_open_positions_in_another_root():
    times = T[:4]
    rows = flat("ES", times, 4000.0) + flat("NQ", times, 17000.0)
    plan = {
        T[0]: lambda e: [market("NQ", 4)],  # 4 * 19,360 = 77,440 <= 100,000
        T[2]: lambda e: [market("ES", 2),  # 2 * 13,750 + 77,440 = 104,940 > equity
                         market("ES", 1),  # 13,750 + 77,440 = 91,190 passes
                         market("ES", 1)],  # the working 1 counts: 104,940 again
    }
    result = run(rows, plan, limits(check_margin=True), on="NQ", initial_capital=100_000.0)
    # equity at T2 = 100,000 - 4 * 2.25 = 99,991
    assert_denied(result, 1, T[2], "MARGIN", "required=104940.00, equity=99991.00")
    assert_denied(result, 3, T[2], "MARGIN", "required=104940.00, equity=99991.00")
    assert [o["status"] for o in orders(result)] == ["FILLED", "DENIED", "FILLED", "DENIED"]


def test_a_protective_stop_does_not_make_room_under_the_position_size_limit():
    rows = flat("ES", T[:4], 4000.0)
    plan = {
        T[0]: lambda e: [market("ES", 2)],  # long 2, filled at T1's open
        T[1]: lambda e: [stop("ES", -2, 3900.0),  # protective stop: never reached (flat 4000)
                         market("ES", 2)],  # worst case max(|2 + 2|, |2 - 2|) = 4 > 2
    }
    result = run(rows, plan, limits(max_position_size=2))
    assert_denied(result, 2, T[1], "MAX_POSITION_SIZE", "requested=4, limit=2 (worst case: position +2, "
                                                        "working buys 0, working sells 2, order +2)")
    assert result.tables["positions"].to_pylist()[-1]["quantity"] == 2


def test_margin_of_a_held_position_is_not_freed_by_an_unfilled_exit_order():
    times = T[:4]
    rows = flat("ES", times, 4000.0) + flat("NQ", times, 17000.0)
    plan = {
        T[0]: lambda e: [market("ES", 2)],  # 2 * 13,750 = 27,500 <= 40,000
        T[1]: lambda e: [stop("ES", -2, 3900.0),  # the stop does not reduce the margin the position needs
                         market("NQ", 1)],  # 2 * 13,750 + 1 * 19,360 = 46,860 > equity
    }
    result = run(rows, plan, limits(check_margin=True), initial_capital=40_000.0)
    # equity at T1 = 40,000 - 2 * 2.25 = 39,995.50 (ES flat at 4000: no unrealized P&L)
    assert_denied(result, 2, T[1], "MARGIN", "required=46860.00, equity=39995.50")
    assert [o["status"] for o in orders(result)][:3] == ["FILLED", "OPEN", "DENIED"]


def test_a_resting_buy_does_not_let_sells_pass_as_reducing():
    rows = flat("ES", T[:5], 4000.0)
    plan = {
        T[0]: lambda e: [limit("ES", 2, 3000.0)],  # far buy limit, never reached
        T[1]: lambda e: [market("ES", -2)],  # flat: not reducing; worst case max(|0 + 2|, |0 - 2|) = 2 <= 2
        T[2]: lambda e: [market("ES", -2)],  # short 2: worst case max(|-2 + 2|, |-2 - 2|) = 4 > 2
    }
    result = run(rows, plan, limits(max_position_size=2))
    assert [o["status"] for o in orders(result)] == ["OPEN", "FILLED", "DENIED"]
    assert_denied(result, 2, T[2], "MAX_POSITION_SIZE", "requested=4, limit=2 (worst case: position -2, "
                                                        "working buys 2, working sells 0, order -2)")
    assert result.tables["positions"].to_pylist()[-1]["quantity"] == -2


def test_reducing_state_keeps_only_exits_that_cannot_cross_flat_together():
    # Long 3; working sells -2 and -2 (submitted in that order) and a buy +1. A daily-loss trip cancels what
    # could add risk in the worst case: the buy, and the second sell (2 + 2 = 4 > 3 would cross flat).
    manager_rows = [("ES", T[0], 4000, 4000, 4000, 4000, 1000), ("ES", T[1], 4000, 4000, 4000, 4000, 1000),
                    ("ES", T[2], 4000, 4000, 3900, 3900, 1000), ("ES", T[3], 3900, 3900, 3900, 3900, 1000)]
    plan = {T[0]: lambda e: [market("ES", 3)],
            T[1]: lambda e: [limit("ES", -2, 4500.0), limit("ES", -2, 4600.0), limit("ES", 1, 3000.0)]}
    # T2 close 3900: equity 1,000,000 - 6.75 - 3 * 50 * 100 = 984,993.25 <= 0.99 * 1,000,000 = 990,000: trips
    result = run(manager_rows, plan, limits(max_daily_loss=0.01))
    assert [(o["status"], o["detail"]) for o in orders(result)] == [
        ("FILLED", ""), ("OPEN", ""), ("CANCELLED", "DAILY_LOSS"), ("CANCELLED", "DAILY_LOSS")]


def test_reducing_state_keeps_both_legs_of_a_protective_oco_pair():
    # Long 1 with a take-profit limit -1 and a stop -1 in one OCO group: only one can fill, together they
    # cannot cross flat, so a daily-loss trip keeps both (cancelling the stop would leave the position bare).
    rows = [("ES", T[0], 4000, 4000, 4000, 4000, 1000), ("ES", T[1], 4000, 4000, 4000, 4000, 1000),
            ("ES", T[2], 4000, 4000, 3900, 3900, 1000), ("ES", T[3], 3900, 3900, 3900, 3900, 1000)]
    plan = {T[0]: lambda e: [market("ES", 1)],
            T[1]: lambda e: oco(limit("ES", -1, 4500.0), stop("ES", -1, 3000.0), group="exit")}
    # T2 close 3900: equity 1,000,000 - 2.25 - 50 * 100 = 994,997.75 <= 0.996 * 1,000,000 = 996,000: trips
    result = run(rows, plan, limits(max_daily_loss=0.004))
    assert [e["code"] for e in events(result, "breaker")] == ["DAILY_LOSS"]
    assert [(o["status"], o["oca_group"]) for o in orders(result)] == [
        ("FILLED", None), ("OPEN", "exit"), ("OPEN", "exit")]


@settings(max_examples=300, deadline=None)
@given(held=st.integers(-6, 6), working=st.lists(st.integers(-4, 4).filter(bool), max_size=4),
       quantity=st.integers(-8, 8).filter(bool), size=st.integers(0, 8), state=st.sampled_from(list(RiskState)))
def test_property_an_accepted_order_keeps_every_fill_combination_within_the_size_limit(held, working, quantity,
                                                                                        size, state):
    # Oracle: every subset of the working orders plus the new one may fill, in any combination (brute force).
    manager = RiskManager(limits(max_position_size=size), BOOK)
    if state is not RiskState.ACTIVE:
        manager.set_state(state, "property")
    book = FakeAccount(positions={"ES": held}, working={"ES": list(working)}, prices={"ES": 4000.0})
    if manager.check(Order("ES", quantity), book, 19738) is not None:
        return
    assert state is not RiskState.HALTED
    orders_ = [*working, quantity]
    reachable = [held + sum(q for k, q in enumerate(orders_) if mask >> k & 1) for mask in range(1 << len(orders_))]
    before = [held + sum(q for k, q in enumerate(working) if mask >> k & 1) for mask in range(1 << len(working))]
    worst_before = max(abs(p) for p in before)
    if state is RiskState.REDUCING or max(abs(p) for p in reachable) > size:
        # only a reducing order may pass: it never makes any combination larger or cross flat
        assert max(abs(p) for p in reachable) <= worst_before
        assert all(p * held >= 0 for p in reachable[1 << len(working):])


def test_margin_check_of_a_symbol_without_a_bar_yet_is_no_market_data_not_a_table_lookup():
    # MES's margin table starts 2019-05-06; its first bar here is 2019-05-07 (both covered). An MES order on
    # ES's 2019-05-01 bar has no price yet: NO_MARKET_DATA, never a margin lookup for 2019-05-01.
    rows = flat("ES", ["2019-05-01 14:00", "2019-05-01 15:00"], 2900.0) + flat("MES", ["2019-05-07 14:00"], 2900.0)
    plan = {"2019-05-01 14:00": lambda e: [market("MES", 1)]}
    result = run(rows, plan, limits(check_margin=True))
    assert_denied(result, 0, "2019-05-01 14:00", "NO_MARKET_DATA", "no price of MES seen yet")


class HoldTwo(Strategy):
    """Long 2 ES with a protective stop, then asks for a target of 2 on every bar."""

    history_size = 0

    def on_bar(self, bar):  # noqa: ANN001, ANN201
        if bar.ts == ns(T[0]):
            return market("ES", 2)
        if bar.ts == ns(T[1]):
            return stop("ES", -2, 3900.0)
        return self.target_position("ES", 2)


def test_target_position_is_not_moved_by_a_resting_protective_stop():
    # Long 2 from T1's open; the sell stop -2 rests (never reached at 4000). A target of 2 is already held:
    # no order (counting the stop as a sale would buy 2 more, position 4).
    con = duckdb.connect()
    try:
        make_table(con, flat("ES", T[:5], 4000.0))
        result = run_backtest(con, "SELECT * FROM bars", HoldTwo(),
                              BacktestConfig(timeframe="1h", risk=limits(max_position_size=10)))
    finally:
        con.close()
    assert [(o["quantity"], o["order_type"], o["status"]) for o in orders(result)] == [
        (2, "MARKET", "FILLED"), (-2, "STOP", "OPEN")]
    assert result.tables["positions"].to_pylist()[-1]["quantity"] == 2


def test_no_market_data_is_a_denial_from_the_risk_manager_and_the_engine():
    rows = flat("ES", T[:4], 4000.0) + flat("NQ", T[1:4], 17000.0)  # NQ's first bar is T1
    plan = {T[0]: lambda e: [market("NQ", 1)],  # no NQ bar seen yet
            T[2]: lambda e: [market("NQ", 1)]}  # NQ's T1 bar seen: accepted
    result = run(rows, plan, limits(max_single_position_pct=1.0))
    assert_denied(result, 0, T[0], "NO_MARKET_DATA", "no price of NQ seen yet")
    assert orders(result)[1]["status"] == "FILLED"
    # With every limit off the engine itself still refuses an order it cannot price.
    result = run(rows, plan, RiskLimits.off())
    assert_denied(result, 0, T[0], "NO_MARKET_DATA", "no bar of NQ seen yet")


def test_denials_never_raise_from_the_risk_manager():
    manager = RiskManager(RiskLimits(), InstrumentBook())
    book = FakeAccount(prices={"ES": 4000.0}, equity=CAPITAL)
    day = 19738  # 2024-01-16
    # default limits: 1 ES = 200,000 > 0.05 * 1,000,000 = 50,000
    assert manager.check(Order("ES", 1), book, day) == Denial(
        "MAX_SINGLE_POSITION", "notional=200000.00, limit=50000.00 (0.05 of equity 1000000.00)")
    assert str(manager.check(Order("ES", 11), book, day)) == "MAX_POSITION_SIZE: requested=11, limit=10"
    assert manager.check(Order("NQ", 1), book, day).code == "NO_MARKET_DATA"
    # MES: 2 * 5 * 4000 = 40,000 <= 50,000
    assert manager.check(Order("MES", 2), FakeAccount(prices={"MES": 4000.0}, equity=CAPITAL), day) is None


# =========================================================================================================
# 2. Orders that reduce risk always pass (ACTIVE and REDUCING); HALTED refuses everything
# =========================================================================================================
@dataclass
class FakeAccount:
    """A minimal AccountView: positions, working orders (a signed quantity, or a list of them), prices, equity."""

    positions: dict[str, int] = field(default_factory=dict)
    working: dict[str, int | list[int]] = field(default_factory=dict)
    prices: dict[str, float] = field(default_factory=dict)
    equity: float = CAPITAL

    def position(self, symbol: str) -> int:
        return self.positions.get(symbol, 0)

    def working_buys_sells(self, symbol: str) -> tuple[int, int]:
        quantities = self.working.get(symbol, [])
        quantities = quantities if isinstance(quantities, list) else [quantities]
        return sum(q for q in quantities if q > 0), -sum(q for q in quantities if q < 0)

    def symbols_at_risk(self) -> set[str]:
        return set(self.positions) | set(self.working)

    def price(self, symbol: str) -> float | None:
        return self.prices.get(symbol)


def test_reducing_orders_pass_even_over_a_limit_in_active_state():
    rows = [("ES", T[0], 4000, 4000, 4000, 4000, 1000), ("ES", T[1], 4000, 4000, 4000, 4000, 1000),
            ("ES", T[2], 4000, 4100, 4000, 4100, 1000), ("ES", T[3], 4100, 4100, 4100, 4100, 1000)]
    plan = {T[0]: lambda e: [market("ES", 2)],  # 400,000 = 0.4 * 1,000,000: at the limit is allowed
            T[2]: lambda e: [market("ES", 1), market("ES", -1)]}
    result = run(rows, plan, limits(max_single_position_pct=0.4))
    # T2 close 4100: notional 2 * 50 * 4100 = 410,000; equity 1,000,000 - 4.50 + 2 * 50 * 100 = 1,009,995.50,
    # limit 403,998.20 -> over the limit after the move: a buy (3 * 50 * 4100 = 615,000) is refused, a sell
    # (reducing) passes.
    assert_denied(result, 1, T[2], "MAX_SINGLE_POSITION",
                  "notional=615000.00, limit=403998.20 (0.4 of equity 1009995.50)")
    assert [o["status"] for o in orders(result)] == ["FILLED", "DENIED", "FILLED"]


def test_states_reducing_and_halted_in_the_manager():
    manager = RiskManager(RiskLimits(max_position_size=3), InstrumentBook())
    book = FakeAccount(positions={"ES": 8}, working={"ES": -1}, prices={"ES": 4000.0})  # over the size limit
    day = 19738
    # ACTIVE: long 8 with a working sell of 1; a sell of 2 reduces (1 + 2 <= 8: passes although 8 > 3);
    # a buy of 1 adds: worst case max(|8 + 1|, |8 - 1|) = 9 > 3, refused
    assert manager.check(Order("ES", -2), book, day) is None
    assert manager.check(Order("ES", 1), book, day).code == "MAX_POSITION_SIZE"
    manager.set_state(RiskState.REDUCING, "test")
    assert manager.check(Order("ES", -7), book, day) is None  # 1 + 7 = 8: to flat with the working sell
    assert manager.check(Order("ES", 1), book, day) == Denial(
        "REDUCING", "only risk-reducing orders (test); position=8, working buys=0, working sells=1, order=+1")
    assert manager.check(Order("ES", -8), book, day).code == "REDUCING"  # 1 + 8 = 9 > 8 could flip: not reducing
    assert manager.check(Order("NQ", 1), book, day).code == "REDUCING"
    manager.set_state(RiskState.HALTED, "test")
    for order in (Order("ES", -1), Order("ES", -7), Order("ES", 1), Order("NQ", -1)):
        assert manager.check(order, book, day) == Denial("HALTED", "kill switch active (test); reset required")


# =========================================================================================================
# 3. Defaults and the strict configuration
# =========================================================================================================
def test_defaults_are_the_spec_defaults():
    d = RiskLimits()
    assert (d.max_position_size, d.max_portfolio_exposure, d.max_single_position_pct) == (10, 0.20, 0.05)
    assert (d.max_daily_loss, d.max_weekly_loss, d.max_drawdown, d.max_correlated_exposure) == (0.02, 0.05, 0.10, 0.15)
    assert d.correlation_groups == {
        "equity_index": ["ES", "NQ", "RTY", "YM", "MES", "MNQ"],
        "energy": ["CL", "NG"],
        "metals": ["GC", "SI"],
        "bonds": ["ZN", "ZB", "ZF"],
        "currencies": ["6E", "6J"],
    }
    assert (d.volatility_scaling, d.target_vol, d.max_vol_scale, d.min_vol_scale) == (True, 0.15, 2.0, 0.25)
    assert d.check_margin is True
    assert BacktestConfig().risk == d


def test_unknown_key_is_a_validation_error_naming_it():
    with pytest.raises(ValidationError, match="max_positon_size"):
        RiskLimits(max_positon_size=3)
    with pytest.raises(ValidationError, match="min_vol_scale"):
        RiskLimits(min_vol_scale=3.0, max_vol_scale=2.0)


def test_limits_load_from_toml_and_unknown_keys_are_config_errors(tmp_path: Path):
    path = tmp_path / "run.toml"
    path.write_text('[backtest]\ninitial_capital = 500000\n\n[backtest.risk]\nmax_position_size = 3\n'
                    'max_drawdown = 0.2\n\n[backtest.risk.correlation_groups]\nequity_index = ["ES", "NQ"]\n')
    config = load_config(path)
    assert config.initial_capital == 500_000
    assert (config.risk.max_position_size, config.risk.max_drawdown) == (3, 0.2)
    assert config.risk.correlation_groups == {"equity_index": ["ES", "NQ"]}
    assert config.risk.max_daily_loss == 0.02  # untouched keys keep their defaults
    path.write_text("[backtest.risk]\nmax_position_size = 3\nmax_dayly_loss = 0.01\n")
    with pytest.raises(ConfigError, match=r"risk\.max_dayly_loss"):
        load_config(path)


# =========================================================================================================
# 4. Daily and weekly loss: unrealized P&L, the right bar, REDUCING, clearing on the next date / week
# =========================================================================================================
DAY0 = utc("2024-01-16 14:00")


def minute(k: int) -> str:
    return (DAY0 + timedelta(minutes=k)).strftime("%Y-%m-%d %H:%M")


def test_daily_loss_trips_on_the_first_bar_past_the_limit_then_clears_on_the_next_trading_date():
    # ES 1-minute bars from 14:00 UTC: bar k closes at 4000 - 0.25 k (one tick lower each bar), opens at the
    # previous close, for k = 0..160; then flat at 3960. Long 10 bought on bar 0 -> filled at bar 1's open
    # 4000.00. Equity at bar k's close = 1,000,000 - 10 * 2.25 + 10 * 50 * (-0.25 k) = 999,977.50 - 125 k.
    # Limit: 0.98 * 1,000,000 (start of the trading date) = 980,000.
    #   k = 159: 999,977.50 - 19,875 = 980,102.50 > 980,000
    #   k = 160: 999,977.50 - 20,000 = 979,977.50 <= 980,000  -> trips on bar 160 (16:40 UTC)
    rows = []
    for k in range(161):
        close = 4000 - 0.25 * k
        open_ = 4000 - 0.25 * max(k - 1, 0)
        rows.append(("ES", minute(k), open_, open_, close, close, 1000))
    rows += flat("ES", [minute(k) for k in range(161, 171)], 3960.0)
    # 22:59 UTC = 17:59 ET is still trading date 2024-01-16; 23:00 UTC = 18:00 ET opens 2024-01-17
    rows += flat("ES", ["2024-01-16 22:59", "2024-01-16 23:00", "2024-01-16 23:01"], 3960.0)
    plan = {
        minute(0): lambda e: [market("ES", 10), limit("ES", 1, 3000.0)],  # the limit adds risk, never reached
        minute(165): lambda e: [market("ES", 1),  # adds: REDUCING
                                market("ES", -12),  # 10 -> -2 flips side: REDUCING
                                market("ES", -2)],  # reduces: passes
        "2024-01-16 22:59": lambda e: [market("ES", 1)],  # same trading date: still REDUCING
        "2024-01-16 23:00": lambda e: [market("ES", 1)],  # next trading date: ACTIVE again
    }
    risk = limits(max_position_size=12, max_daily_loss=0.02, max_weekly_loss=0.05, max_drawdown=0.10)
    result = run(rows, plan, risk, timeframe="1m")
    [breaker] = events(result, "breaker")
    assert (breaker["ts"], breaker["code"]) == (utc(minute(160)), "DAILY_LOSS")
    assert breaker["message"] == "equity=979977.50 <= 980000.00 (day start 1000000.00, limit 0.02)"
    # the working risk-adding limit order is cancelled by the trip, on the trip bar
    limit_order = orders(result)[1]
    assert (limit_order["status"], limit_order["detail"], limit_order["ts_done"]) == (
        "CANCELLED", "DAILY_LOSS", utc(minute(160)))
    reason = "DAILY_LOSS equity=979977.50 <= 980000.00 (day start 1000000.00, limit 0.02)"
    assert_denied(result, 2, minute(165), "REDUCING", f"only risk-reducing orders ({reason}); position=10, working buys=0, working sells=0, order=+1")
    assert_denied(result, 3, minute(165), "REDUCING", f"only risk-reducing orders ({reason}); position=10, working buys=0, working sells=0, order=-12")
    assert orders(result)[4]["status"] == "FILLED"
    assert_denied(result, 5, "2024-01-16 22:59", "REDUCING",
                  f"only risk-reducing orders ({reason}); position=8, working buys=0, working sells=0, order=+1")
    assert orders(result)[6]["status"] == "FILLED"
    # back to ACTIVE at the first bar of trading date 2024-01-17
    assert [(e["ts"], e["code"], e["message"]) for e in events(result, "state") if e["code"] == "ACTIVE"] == [
        (utc("2024-01-16 23:00"), "ACTIVE", f"{reason} cleared")]


WEEK = ["2024-01-22", "2024-01-23", "2024-01-24", "2024-01-25", "2024-01-26", "2024-01-29"]  # Mon..Fri, Mon


def daily_bars(closes: list[float]) -> list[Row]:
    """ES: a flat 4000 entry bar on Monday 14:00 UTC, then one 15:00 UTC bar a day opening at the previous close."""
    rows = [("ES", f"{WEEK[0]} 14:00", 4000.0, 4000.0, 4000.0, 4000.0, 1000)]
    previous = 4000.0
    for day, close in zip(WEEK, closes):
        rows.append(("ES", f"{day} 15:00", previous, max(previous, close), min(previous, close), close, 1000))
        previous = close
    return rows


def test_weekly_loss_from_several_days_each_under_the_daily_limit():
    # Long 10 ES filled Monday 15:00 at 4000 (10 * 2.25 = 22.50 commission); each day's bar closes 30 points
    # lower: -15,000 a day. Equity at the closes and the day's limit 0.98 * equity at the start of the date:
    #   Mon 3970: 984,977.50   (day start 1,000,000.00, day limit 980,000.00; loss 1.50 %)
    #   Tue 3940: 969,977.50   (day start   984,977.50, day limit 965,277.95; loss 1.52 %)
    #   Wed 3910: 954,977.50   (day start   969,977.50, day limit 950,577.95; loss 1.55 %)
    #   Thu 3880: 939,977.50   (day start   954,977.50, day limit 935,877.95; loss 1.57 %)
    # Week limit 0.95 * 1,000,000 = 950,000: Thursday's close is the first at or below it.
    rows = daily_bars([3970.0, 3940.0, 3910.0, 3880.0, 3880.0, 3880.0])
    plan = {
        f"{WEEK[0]} 14:00": lambda e: [market("ES", 10)],
        f"{WEEK[4]} 15:00": lambda e: [market("ES", 1), market("ES", -5)],  # Friday: REDUCING
        f"{WEEK[5]} 15:00": lambda e: [market("ES", 1)],  # next Monday: a new week, ACTIVE
    }
    risk = limits(max_position_size=20, max_daily_loss=0.02, max_weekly_loss=0.05, max_drawdown=0.10)
    result = run(rows, plan, risk)
    assert [(e["ts"], e["code"], e["message"]) for e in events(result, "breaker")] == [
        (utc(f"{WEEK[3]} 15:00"), "WEEKLY_LOSS", "equity=939977.50 <= 950000.00 (week start 1000000.00, limit 0.05)")]
    reason = "WEEKLY_LOSS equity=939977.50 <= 950000.00 (week start 1000000.00, limit 0.05)"
    assert_denied(result, 1, f"{WEEK[4]} 15:00", "REDUCING",
                  f"only risk-reducing orders ({reason}); position=10, working buys=0, working sells=0, order=+1")
    assert orders(result)[2]["status"] == "FILLED"  # -5 reduces; filled at Monday's open
    # (the entry into REDUCING has no state event yet: see test_breaker_trip_records_the_state_it_moves_to)
    assert [e["ts"] for e in events(result, "state") if e["code"] == "ACTIVE"] == [utc(f"{WEEK[5]} 15:00")]
    assert orders(result)[3]["status"] == "OPEN"  # accepted on the last bar (no later bar to fill it)
    assert week_of(19744) == week_of(19748) != week_of(19751)  # Mon 2024-01-22, Fri 01-26, Mon 01-29


def test_weekly_loss_reached_while_reducing_for_the_day_keeps_reducing_for_the_week():
    # Mon 3970: 984,977.50; Tue 3940: 969,977.50; Wed 3870: 934,977.50 <= the day's limit 950,577.95 (and
    # below the week's 950,000): DAILY_LOSS trips (it is checked first). Wednesday 16:00 the strategy sells
    # its 10 (reducing) -> filled Wed 17:00 at 3870: realized 10 * 50 * -130 = -65,000, commissions 45.00 ->
    # equity 934,955.00, flat. Thursday is a new trading date, but the week's loss is already past 5 %:
    # the state must stay REDUCING until the next week and Thursday's buy is refused.
    rows = daily_bars([3970.0, 3940.0, 3870.0])
    rows += flat("ES", [f"{WEEK[2]} 16:00", f"{WEEK[2]} 17:00"], 3870.0)
    rows += flat("ES", [f"{WEEK[3]} 15:00", f"{WEEK[3]} 16:00", f"{WEEK[5]} 15:00"], 3870.0)
    plan = {
        f"{WEEK[0]} 14:00": lambda e: [market("ES", 10)],
        f"{WEEK[2]} 16:00": lambda e: [market("ES", -10)],
        f"{WEEK[3]} 15:00": lambda e: [market("ES", 1)],
        f"{WEEK[5]} 15:00": lambda e: [market("ES", 1)],
    }
    risk = limits(max_position_size=20, max_daily_loss=0.02, max_weekly_loss=0.05, max_drawdown=0.10)
    result = run(rows, plan, risk)
    assert [(e["ts"], e["code"], e["message"]) for e in events(result, "breaker")] == [
        (utc(f"{WEEK[2]} 15:00"), "DAILY_LOSS", "equity=934977.50 <= 950577.95 (day start 969977.50, limit 0.02)"),
        (utc(f"{WEEK[3]} 15:00"), "WEEKLY_LOSS", "equity=934955.00 <= 950000.00 (week start 1000000.00, limit 0.05)"),
    ]
    assert orders(result)[2]["status"] == "DENIED" and orders(result)[2]["detail"].startswith("REDUCING")
    # (the entry into REDUCING has no state event yet: see test_breaker_trip_records_the_state_it_moves_to)
    assert [e["ts"] for e in events(result, "state") if e["code"] == "ACTIVE"] == [utc(f"{WEEK[5]} 15:00")]
    assert orders(result)[3]["status"] == "OPEN"


def test_breaker_trip_records_the_state_it_moves_to():
    rows = daily_bars([3970.0, 3940.0, 3910.0, 3880.0, 3880.0, 3880.0])
    plan = {f"{WEEK[0]} 14:00": lambda e: [market("ES", 10)]}
    risk = limits(max_position_size=20, max_daily_loss=0.02, max_weekly_loss=0.05, max_drawdown=0.10)
    result = run(rows, plan, risk)
    reason = "WEEKLY_LOSS equity=939977.50 <= 950000.00 (week start 1000000.00, limit 0.05)"
    assert [(e["ts"], e["kind"], e["code"], e["message"]) for e in events(result) if e["kind"] in ("breaker", "state")] == [
        (utc(f"{WEEK[3]} 15:00"), "breaker", "WEEKLY_LOSS", reason.removeprefix("WEEKLY_LOSS ")),
        (utc(f"{WEEK[3]} 15:00"), "state", "REDUCING", reason),
        (utc(f"{WEEK[5]} 15:00"), "state", "ACTIVE", f"{reason} cleared"),
    ]


# =========================================================================================================
# 5. Drawdown circuit breaker -> kill switch, end to end, with partial fills in flight; manual kill switch
# =========================================================================================================
def test_drawdown_kill_switch_end_to_end_with_partial_fills_and_the_run_ledger(tmp_path: Path):
    # CL 75, ES 4000, NQ 17000 hourly T0..T6, volume 10 a bar; participation 0.5 -> 5 contracts per bar and
    # symbol. ES falls to 3790 on T2 (open 4000, close 3790) and stays there.
    # T0 (decided on NQ's bar, the last of each timestamp):
    #   0 ES +12 market, 1 NQ +6 market, 2 CL -4 market, 3 ES +2 limit 3000, 4 CL -1 limit 200 (never reached)
    # T1: CL -4 filled (all), ES +5 of 12, NQ +5 of 6 at the opens.
    # T2: ES +5 more at the open 4000 (long 10, 2 still working), then the close 3790:
    #   ES unrealized 10 * 50 * (3790 - 4000) = -105,000; commissions ES 10 * 2.25 = 22.50, NQ 5 * 2.25 = 11.25,
    #   CL 4 * 2.37 = 9.48 -> 43.23; equity = 1,000,000 - 105,000 - 43.23 = 894,956.77
    #   <= 0.90 * peak 1,000,000 = 900,000 -> MAX_DRAWDOWN on ES's T2 bar -> kill switch:
    #   cancels 0 (10 of 12 filled), 1 (5 of 6 filled), 3 and 4; flattens CL +4, ES -10, NQ -5 (orders 5, 6, 7,
    #   in the order the positions were opened: CL, ES, NQ).
    # T3: CL +4, ES -5, NQ -5 filled; T4: ES -5 filled -> flat everywhere.
    # Strategy buys on T2..T5 are refused (HALTED): orders 8..11.
    times = T[:7]
    es = [("ES", T[0], 4000, 4000, 4000, 4000, 10), ("ES", T[1], 4000, 4000, 4000, 4000, 10),
          ("ES", T[2], 4000, 4000, 3790, 3790, 10)] + flat("ES", times[3:], 3790.0, 10)
    rows = flat("CL", times, 75.0, 10) + es + flat("NQ", times, 17000.0, 10)
    plan = {T[0]: lambda e: [market("ES", 12), market("NQ", 6), market("CL", -4), limit("ES", 2, 3000.0),
                             limit("CL", -1, 200.0)]}
    for t in T[2:6]:
        plan[t] = lambda e: [market("NQ", 1)]
    risk = limits(max_drawdown=0.10, check_margin=True)
    wh = Warehouse(tmp_path / "wh")
    try:
        make_table(wh.connect(), rows)
        result = run_backtest(wh, "SELECT * FROM bars", plan_strategy(plan, "NQ"),
                              BacktestConfig(timeframe="1h", risk=risk, participation=0.5))
        run_id = result.run_id
        assert run_id is not None

        [breaker] = events(result, "breaker")
        assert (breaker["ts"], breaker["code"], breaker["message"]) == (
            utc(T[2]), "MAX_DRAWDOWN", "equity=894956.77 <= 900000.00 (peak 1000000.00, limit 0.1)")
        [kill] = events(result, "kill_switch")
        assert (kill["ts"], kill["code"], kill["message"]) == (utc(T[2]), "KILL_SWITCH", "triggered: MAX_DRAWDOWN")

        got = [(o["order_id"], o["symbol"], o["quantity"], o["status"], o["filled_quantity"], o["origin"])
               for o in orders(result)]
        assert got == [
            (0, "ES", 12, "CANCELLED", 10, "strategy"),  # partially filled when the breaker tripped
            (1, "NQ", 6, "CANCELLED", 5, "strategy"),
            (2, "CL", -4, "FILLED", -4, "strategy"),
            (3, "ES", 2, "CANCELLED", 0, "strategy"),
            (4, "CL", -1, "CANCELLED", 0, "strategy"),
            (5, "CL", 4, "FILLED", 4, "kill_switch"),
            (6, "ES", -10, "FILLED", -10, "kill_switch"),
            (7, "NQ", -5, "FILLED", -5, "kill_switch"),
            (8, "NQ", 1, "DENIED", 0, "strategy"),
            (9, "NQ", 1, "DENIED", 0, "strategy"),
            (10, "NQ", 1, "DENIED", 0, "strategy"),
            (11, "NQ", 1, "DENIED", 0, "strategy"),
        ]
        for o in orders(result)[:5]:
            if o["status"] == "CANCELLED":
                assert (o["ts_done"], o["detail"]) == (utc(T[2]), "kill switch")
        reason = "MAX_DRAWDOWN equity=894956.77 <= 900000.00 (peak 1000000.00, limit 0.1)"
        assert [d[1] for d in denials(result)] == ["HALTED"] * 4
        assert denials(result)[0][4] == f"kill switch active ({reason}); reset required"
        # the flattening of ES takes two bars at 5 contracts a bar
        es_flat = [(f["ts"], f["quantity"], f["price"]) for f in result.tables["fills"].to_pylist() if f["order_id"] == 6]
        assert es_flat == [(utc(T[3]), -5, 3790.0), (utc(T[4]), -5, 3790.0)]
        # realized ES 10 * 50 * -210 = -105,000; commissions ES 20 * 2.25 + NQ 10 * 2.25 + CL 8 * 2.37 = 86.46
        assert result.final_equity == pytest.approx(1_000_000 - 105_000 - 86.46, abs=1e-6)

        # -- the run ledger, with SQL: nothing stayed open
        con = wh.connect()
        [(open_orders,)] = con.execute("SELECT count(*) FROM run_orders WHERE run_id = ? AND status = 'OPEN'",
                                       [run_id]).fetchall()
        assert open_orders == 0
        last = con.execute(
            "SELECT symbol, quantity FROM run_positions p WHERE run_id = $1 AND ts = "
            "(SELECT max(ts) FROM run_positions q WHERE q.run_id = $1 AND q.symbol = p.symbol) ORDER BY symbol",
            [run_id]).fetchall()
        assert last == [("CL", 0), ("ES", 0), ("NQ", 0)]
        net = con.execute("SELECT symbol, sum(quantity) FROM run_fills WHERE run_id = ? GROUP BY symbol ORDER BY symbol",
                          [run_id]).fetchall()
        assert net == [("CL", 0), ("ES", 0), ("NQ", 0)]
        by_origin = con.execute(
            "SELECT origin, status, count(*) FROM run_orders WHERE run_id = ? GROUP BY ALL ORDER BY ALL", [run_id]).fetchall()
        assert by_origin == [("kill_switch", "FILLED", 3), ("strategy", "CANCELLED", 4), ("strategy", "DENIED", 4),
                             ("strategy", "FILLED", 1)]
        grouped = con.execute(
            "SELECT kind, code, count(*) FROM run_events WHERE run_id = ? AND kind <> 'state' GROUP BY ALL ORDER BY ALL",
            [run_id]).fetchall()
        assert grouped == [("breaker", "MAX_DRAWDOWN", 1), ("denial", "HALTED", 4), ("kill_switch", "KILL_SWITCH", 1)]
    finally:
        wh.close()


class ManualKill(Strategy):
    """Holds ES 2 and NQ 1 with a working ES limit; kill switch on T2, a refused buy on T3, reset and buy on T4."""

    def on_bar(self, bar):
        if bar.symbol != "NQ":
            return None
        if bar.ts == ns(T[0]):
            return [market("ES", 2), market("NQ", 1), limit("ES", 1, 3000.0)]
        if bar.ts == ns(T[2]):
            self.engine.kill_switch("manual")
        if bar.ts == ns(T[3]):
            return market("ES", 1)
        if bar.ts == ns(T[4]):
            self.engine.reset_kill_switch()
            return market("ES", 1)
        return None


def manual_kill_run() -> BacktestResult:
    times = T[:6]
    rows = flat("ES", times, 4000.0) + flat("NQ", times, 17000.0)
    con = duckdb.connect()
    try:
        make_table(con, rows)
        return run_backtest(con, "SELECT * FROM bars", ManualKill(),
                            BacktestConfig(timeframe="1h", risk=limits(max_drawdown=0.10, max_position_size=10)))
    finally:
        con.close()


def test_manual_kill_switch_from_a_strategy_and_reset():
    result = manual_kill_run()
    got = [(o["symbol"], o["quantity"], o["status"], o["filled_quantity"], o["origin"]) for o in orders(result)]
    assert got == [
        ("ES", 2, "FILLED", 2, "strategy"),  # T1 open
        ("NQ", 1, "FILLED", 1, "strategy"),
        ("ES", 1, "CANCELLED", 0, "strategy"),  # the working limit, cancelled by the kill switch on T2
        ("ES", -2, "FILLED", -2, "kill_switch"),  # flattened at T3's open
        ("NQ", -1, "FILLED", -1, "kill_switch"),
        ("ES", 1, "DENIED", 0, "strategy"),  # T3: HALTED
        ("ES", 1, "FILLED", 1, "strategy"),  # T4 after the reset: filled at T5's open
    ]
    assert orders(result)[5]["detail"] == "HALTED: kill switch active (kill switch: manual); reset required"
    assert [(e["kind"], e["code"], e["message"]) for e in events(result)] == [
        ("kill_switch", "KILL_SWITCH", "triggered: manual"),
        ("state", "HALTED", "kill switch: manual"),
        ("denial", "HALTED", "kill switch active (kill switch: manual); reset required"),
        ("state", "ACTIVE", "reset by user"),
    ]
    positions = result.tables["positions"].to_pylist()
    assert [(p["ts"], p["symbol"], p["quantity"]) for p in positions][-3:] == [
        (utc(T[3]), "ES", 0), (utc(T[3]), "NQ", 0), (utc(T[5]), "ES", 1)]


def test_signal_close_kill_switch_flattens_a_later_streamed_symbol_at_its_own_close():
    # Rows come ordered by (ts, symbol): ES before NQ. Long 1 NQ bought on ES's T1 bar: filled at NQ's own T1
    # close 17000. The kill switch on ES's T2 bar flattens NQ at NQ's T2 close 16900 (not its stale T1 close
    # 17000). Result: (16900 - 17000) * 20 - 2 * 2.25 = -2,004.50.
    rows = flat("ES", T[:4], 4000.0) + [("NQ", T[0], 17100, 17100, 17100, 17100, 1000),
                                        ("NQ", T[1], 17100, 17100, 17000, 17000, 1000),
                                        ("NQ", T[2], 17000, 17000, 16900, 16900, 1000),
                                        ("NQ", T[3], 16900, 16900, 16900, 16900, 1000)]
    plan = {T[1]: lambda e: [market("NQ", 1)], T[2]: lambda e: e.kill_switch("test")}
    result = run(rows, plan, RiskLimits.off(), fill="signal_close")
    assert [(f["ts"], f["quantity"], f["price"]) for f in result.tables["fills"].to_pylist()] == [
        (utc(T[2]), 1, 17000.0), (utc(T[3]), -1, 16900.0)]
    assert result.final_equity == CAPITAL - 2_004.50


def test_manual_kill_switch_is_stamped_with_the_current_bar():
    result = manual_kill_run()
    stamps = [(e["ts"], e["kind"], e["code"]) for e in events(result)]
    assert stamps == [(utc(T[2]), "kill_switch", "KILL_SWITCH"), (utc(T[2]), "state", "HALTED"),
                      (utc(T[3]), "denial", "HALTED"), (utc(T[4]), "state", "ACTIVE")]
    assert orders(result)[2]["ts_done"] == utc(T[2])


def gap_rows() -> list[Row]:
    # ES long 4 at 4000 (T1), two buy limits 3900 and 3890 working; T2 gaps down to open 3700: both limits fill
    # at the open 3700 on the same bar.
    return [("ES", T[0], 4000, 4000, 4000, 4000, 1000), ("ES", T[1], 4000, 4000, 4000, 4000, 1000),
            ("ES", T[2], 3700, 3700, 3690, 3700, 1000)] + flat("ES", T[3:6], 3700.0)


def gap_run() -> BacktestResult:
    plan = {T[0]: lambda e: [market("ES", 4), limit("ES", 1, 3900.0), limit("ES", 1, 3890.0)]}
    return run(gap_rows(), plan, limits(max_drawdown=0.05))


def test_kill_switch_tripped_by_one_of_several_fills_on_a_bar_still_flattens_everything():
    # After the first limit fill (5 long, re-marked at 3700): 5 * 50 * -300 = -75,000 -> equity 924,988.75
    # <= 950,000 -> MAX_DRAWDOWN. The second limit filled on the same bar (6 long) must be flattened too.
    result = gap_run()
    assert [e["code"] for e in events(result, "breaker")] == ["MAX_DRAWDOWN"]
    assert result.tables["positions"].to_pylist()[-1]["quantity"] == 0


def test_breaker_tripped_by_a_fill_is_stamped_with_the_fill_bar():
    result = gap_run()
    assert [e["ts"] for e in events(result, "breaker")] == [utc(T[2])]


def test_denied_and_accepted_orders_share_the_submission_time():
    plan = {T[0]: lambda e: [market("ES", 1), market("ES", 20)]}
    result = run(flat("ES", T[:3], 4000.0), plan, limits(max_position_size=10))
    assert [o["ts_submitted"] for o in orders(result)] == [utc(T[1]), utc(T[1])]


# =========================================================================================================
# 6. Volatility scaling and sizing
# =========================================================================================================
@pytest.mark.parametrize(
    ("signal", "equity", "price", "multiplier", "vol", "expected"),
    [
        # ES 4000 x 50 = 200,000 a contract; equity 1,000,000; target 0.15
        (1.0, 1e6, 4000.0, 50.0, 0.30, 2),  # above target: scale 0.5 -> 500,000 / 200,000 = 2.5 -> 2
        (1.0, 1e6, 4000.0, 50.0, 0.15, 5),  # at target: scale 1 -> 5
        (1.0, 1e6, 4000.0, 50.0, 0.10, 7),  # below target: scale 1.5 -> 7.5 -> 7
        (1.0, 4e5, 4000.0, 50.0, 0.10, 3),  # 400,000 * 1.5 / 200,000 = 3 exactly (0.15 / 0.10 is 1.4999...)
        (1.0, 1e6, 4000.0, 50.0, 0.05, 10),  # scale 3.0 clipped to max 2.0 -> 10
        (1.0, 1e6, 4000.0, 50.0, 1.00, 1),  # scale 0.15 clipped to min 0.25 -> 1.25 -> 1
        (1.0, 1e6, 4000.0, 50.0, None, 1),  # missing vol -> min scale 0.25 -> 1
        (1.0, 1e6, 4000.0, 50.0, math.nan, 1),
        (1.0, 1e6, 4000.0, 50.0, 0.0, 1),
        (1.0, 1e6, 4000.0, 50.0, -0.2, 1),
        (-0.6, 1e6, 4000.0, 50.0, 0.10, -4),  # 0.6 * 1,000,000 * 1.5 / 200,000 = 4.5 -> -4
        (-1.0, 1e6, 4000.0, 50.0, 0.05, -10),
        (0.5, 1e6, 17000.0, 20.0, 0.20, 1),  # NQ 340,000: 0.5 * 0.75 * 1e6 / 340,000 = 1.10 -> 1
        (1.0, 1e6, 75.0, 1000.0, 0.40, 5),  # CL 75,000: scale 0.375 -> 375,000 / 75,000 = 5
        (0.0, 1e6, 4000.0, 50.0, 0.10, 0),
        (1.0, 1e6, 0.0, 50.0, 0.10, 0),
        (math.nan, 1e6, 4000.0, 50.0, 0.10, 0),  # no signal (e.g. a feature still warming up)
    ],
)
def test_volatility_scaled_contracts(signal, equity, price, multiplier, vol, expected):
    assert volatility_scaled_contracts(signal, equity, price, multiplier, vol) == expected


def test_volatility_scaled_contracts_uses_the_given_target_and_bounds():
    # target 0.20, vol 0.40 -> 0.5, bounds [0.1, 0.4] -> 0.4: 1,000,000 * 0.4 / 200,000 = 2
    assert volatility_scaled_contracts(1.0, 1e6, 4000.0, 50.0, 0.40, target_vol=0.20, min_vol_scale=0.1,
                                       max_vol_scale=0.4) == 2


SIZING_TIMES = T[:3]


@pytest.mark.parametrize(
    ("risk", "holdings", "capital", "signal", "vol", "expected"),
    [
        # vol 0.10 -> scale 1.5 -> 1,000,000 * 1.5 / 200,000 = 7.5 -> 7 ES before the caps
        ({}, {}, CAPITAL, 1.0, 0.10, 7),
        ({"max_position_size": 5}, {}, CAPITAL, 1.0, 0.10, 5),
        ({"max_position_size": 5}, {}, CAPITAL, -1.0, 0.10, -5),
        ({"max_position_size": 5}, {"ES": 3}, CAPITAL, 1.0, 0.10, 5),  # a target position, not an order size
        # 0.5 * 1,000,000 = 500,000 -> 2 contracts (400,000)
        ({"max_single_position_pct": 0.5}, {}, CAPITAL, 1.0, 0.10, 2),
        # NQ 1 held (340,000), equity 999,997.75: 0.7 -> 699,998.43: room 359,998 -> 1 ES
        ({"max_portfolio_exposure": 0.7}, {"NQ": 1}, CAPITAL, 1.0, 0.10, 1),
        # same with CL 3 (225,000) held: energy is not equity_index -> still 1; equity 1e6 - 2.25 - 7.11
        ({"max_correlated_exposure": 0.7}, {"NQ": 1, "CL": 3}, CAPITAL, 1.0, 0.10, 1),
        # margin: 100,000 - 4 * 2.25 = 99,991; NQ 4 x 19,360 = 77,440 -> room 22,551 -> 1 ES (13,750);
        # scaling off: signal * max_position_size = 10 before the cap
        ({"check_margin": True, "max_position_size": 10, "volatility_scaling": False}, {"NQ": 4}, 100_000.0, 1.0, None, 1),
        ({"max_position_size": 10, "volatility_scaling": False}, {}, CAPITAL, -0.6, None, -6),  # -0.6 * 10
    ],
)
def test_sized_target_is_capped_by_every_limit(risk, holdings, capital, signal, vol, expected):
    times = SIZING_TIMES
    rows = flat("CL", times, 75.0) + flat("ES", times, 4000.0) + flat("NQ", times, 17000.0)
    seen = []
    plan = {T[0]: lambda e: [market(s, q) for s, q in holdings.items()] or None,
            T[2]: lambda e: seen.append(e.sized_target("ES", signal, vol))}
    result = run(rows, plan, limits(**{"volatility_scaling": True, **risk}), on="NQ", initial_capital=capital)
    assert all(o["status"] == "FILLED" for o in orders(result))
    assert seen == [expected]


def test_sized_target_in_reducing_state_does_not_add():
    manager = RiskManager(limits(max_position_size=10), InstrumentBook())
    manager.set_state(RiskState.REDUCING, "test")
    book = FakeAccount(positions={"ES": 4}, prices={"ES": 4000.0})
    assert manager.cap_contracts("ES", 8, book) == 4  # cannot add
    assert manager.cap_contracts("ES", 1, book) == 1  # may reduce
    assert manager.cap_contracts("ES", -3, book) == 0  # may go flat, not flip


def test_negative_prices_count_as_notional():
    # CL traded below zero in April 2020: notional is |Q| * multiplier * |price|.
    # 10 CL at -10: 100,000 > 0.05 * 1,000,000 = 50,000
    manager = RiskManager(limits(max_single_position_pct=0.05, max_portfolio_exposure=0.05), InstrumentBook())
    denial = manager.check(Order("CL", 10), FakeAccount(prices={"CL": -10.0}), 18372)
    assert denial == Denial("MAX_SINGLE_POSITION", "notional=100000.00, limit=50000.00 (0.05 of equity 1000000.00)")
    # a position at a negative price does not make room for another symbol: 40,000 + 20,000 > 50,000
    book = FakeAccount(positions={"CL": 4}, prices={"CL": -10.0, "MES": 4000.0})
    assert manager.check(Order("MES", 1), book, 18372).code == "MAX_PORTFOLIO_EXPOSURE"


# =========================================================================================================
# 7. Property tests
# =========================================================================================================
SYMBOLS = ["ES", "MES", "NQ", "CL", "GC"]
BOOK = InstrumentBook()

optional_fraction = st.one_of(st.none(), st.floats(0.01, 2.0))


@st.composite
def risk_limits(draw) -> RiskLimits:
    return RiskLimits(
        max_position_size=draw(st.one_of(st.none(), st.integers(0, 12))),
        max_portfolio_exposure=draw(optional_fraction),
        max_single_position_pct=draw(optional_fraction),
        max_correlated_exposure=draw(optional_fraction),
        check_margin=draw(st.booleans()),
    )


@st.composite
def accounts(draw) -> FakeAccount:
    held = draw(st.lists(st.sampled_from(SYMBOLS), unique=True, max_size=4))
    return FakeAccount(
        positions={s: draw(st.integers(-8, 8)) for s in held},
        working={s: draw(st.integers(-4, 4)) for s in draw(st.lists(st.sampled_from(SYMBOLS), unique=True, max_size=3))},
        prices={s: draw(st.floats(10.0, 20000.0)) for s in SYMBOLS if s in held or draw(st.booleans())},
        equity=draw(st.floats(10_000.0, 5_000_000.0)),
    )


@settings(max_examples=300, deadline=None)
@given(limits_=risk_limits(), book=accounts(), state=st.sampled_from(list(RiskState)), symbol=st.sampled_from(SYMBOLS),
       quantity=st.integers(-15, 15).filter(bool), more=st.integers(1, 20))
def test_property_a_denied_order_stays_denied_when_made_larger(limits_, book, state, symbol, quantity, more):
    manager = RiskManager(limits_, BOOK)
    if state is not RiskState.ACTIVE:
        manager.set_state(state, "property")
    day = 19738
    first = manager.check(Order(symbol, quantity), book, day)
    assume(first is not None)
    larger = quantity + more if quantity > 0 else quantity - more
    assert manager.check(Order(symbol, larger), book, day) is not None


class RandomOrders(Strategy):
    """Submits the given (bar index, symbol, quantity) market orders on NQ's bars and audits every fill."""

    history_size = 0

    def __init__(self, script: dict[int, list[tuple[str, int]]], limits_: RiskLimits) -> None:
        super().__init__()
        self.script = script
        self.limits = limits_
        self.k = -1
        self.before: tuple[float, int] = (0.0, 0)  # (equity at the check, position before) of the order in flight
        self.violations: list[str] = []
        self.fills = 0

    def on_bar(self, bar):
        if bar.symbol != "NQ":
            return
        self.k += 1
        for symbol, quantity in self.script.get(self.k, ()):
            # signal_close: a market order fills completely inside submit, so on_fill sees this order
            self.before = (self.engine.equity, self.position(symbol))
            self.submit(Order(symbol, quantity))
        return

    def on_fill(self, fill):
        self.fills += 1
        lim = self.limits
        engine = self.engine
        held = {s: p.quantity for s, p in engine.portfolio.positions.items()}
        if lim.max_position_size is not None and abs(held.get(fill.symbol, 0)) > lim.max_position_size:
            self.violations.append(f"size {fill.symbol} {held}")
        equity, before = self.before
        after = held.get(fill.symbol, 0)
        if abs(after) <= abs(before) and after * before >= 0:
            return  # the order reduced risk: allowed whatever the exposure
        # notional at the prices of the check = the fill prices (signal_close: filled at the checked close)
        notional = {s: abs(q) * MULT[s] * engine.portfolio.positions[s].mark for s, q in held.items()}
        group = {"ES": "eq", "NQ": "eq", "MES": "eq", "CL": "en"}
        eps = 1e-6
        if lim.max_single_position_pct is not None and notional.get(fill.symbol, 0) > lim.max_single_position_pct * equity + eps:
            self.violations.append(f"single {fill.symbol} {notional}")
        if lim.max_portfolio_exposure is not None and sum(notional.values()) > lim.max_portfolio_exposure * equity + eps:
            self.violations.append(f"portfolio {notional}")
        in_group = sum(v for s, v in notional.items() if group[s] == group[fill.symbol])
        if lim.max_correlated_exposure is not None and in_group > lim.max_correlated_exposure * equity + eps:
            self.violations.append(f"group {fill.symbol} {notional}")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.integers(1, 6),
    single=st.floats(0.1, 1.0), portfolio=st.floats(0.2, 2.0), group=st.floats(0.15, 1.5),
    steps=st.lists(st.tuples(st.integers(-40, 40), st.integers(-40, 40), st.integers(-40, 40)), min_size=12, max_size=12),
    script=st.dictionaries(st.integers(0, 11), st.lists(st.tuples(st.sampled_from(["ES", "MES", "NQ", "CL"]),
                                                                  st.integers(-5, 5).filter(bool)), max_size=3),
                           max_size=10),
)
def test_property_b_no_sequence_of_orders_takes_exposure_past_a_limit(size, single, portfolio, group, steps, script):
    # Random walks (in ticks) for ES, MES, NQ and CL; random market orders; fills at the checked close.
    start = {"ES": 4000.0, "MES": 4000.0, "NQ": 17000.0, "CL": 75.0}
    tick = {"ES": 0.25, "MES": 0.25, "NQ": 0.25, "CL": 0.01}
    rows, price = [], dict(start)
    for k, moves in enumerate(steps):
        ts = (DAY0 + timedelta(minutes=k)).strftime("%Y-%m-%d %H:%M")
        for s, m in zip(("ES", "NQ", "CL"), moves):
            new = round(price[s] + m * tick[s] * (4 if s != "CL" else 1), 2)
            rows.append((s, ts, price[s], max(price[s], new), min(price[s], new), new, 1000))
            price[s] = new
        rows.append(("MES", ts, *rows[-3][2:6], 1000))  # MES follows ES
    rows.sort(key=lambda r: (r[1], r[0]))
    risk = limits(max_position_size=size, max_single_position_pct=single, max_portfolio_exposure=portfolio,
                  max_correlated_exposure=group, check_margin=True)
    strategy = RandomOrders(script, risk)
    con = duckdb.connect()
    try:
        make_table(con, rows)
        run_backtest(con, "SELECT * FROM bars", strategy, BacktestConfig(timeframe="1m", risk=risk, fill="signal_close"))
    finally:
        con.close()
    assert strategy.violations == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    contracts=st.integers(1, 10), long=st.booleans(), kind=st.sampled_from(["daily", "drawdown"]),
    limit_=st.floats(0.005, 0.03),
    moves=st.lists(st.integers(-40, 40), min_size=5, max_size=60),
)
# a rise to a new peak, then a fall: equity peaks at 300,000 - 22.50 + 10 * 50 * 50 = 324,977.50 on bar 5;
# the limit 0.98 * 324,977.50 = 318,477.95 is first crossed on bar 7 (314,977.50), long before 0.98 * 300,000
@example(contracts=10, long=True, kind="drawdown", limit_=0.02, moves=[40] * 5 + [-40] * 5)
def test_property_c_loss_limits_trip_at_the_first_bar_past_the_limit(contracts, long, kind, limit_, moves):
    # One trading date of ES 1-minute bars, a random walk in ticks; N contracts bought (or sold) on bar 0 and
    # filled at bar 1's open (= bar 0's close, 4000). The test marks equity itself and finds the first bar
    # whose close puts it at or below the limit; the breaker event must be on that bar.
    capital = 300_000.0
    closes, rows, previous = [], [], 4000.0
    rows.append(("ES", minute(0), 4000.0, 4000.0, 4000.0, 4000.0, 1000))
    for k, m in enumerate(moves, start=1):
        close = previous + 0.25 * m
        rows.append(("ES", minute(k), previous, max(previous, close), min(previous, close), close, 1000))
        closes.append(close)
        previous = close
    sign = 1 if long else -1
    commission = contracts * 2.25
    expected, peak = None, capital
    for k, close in enumerate(closes, start=1):
        equity = capital - commission + sign * contracts * 50.0 * (close - 4000.0)
        if kind == "daily":
            tripped = equity <= capital * (1 - limit_)
        else:
            tripped = equity <= peak * (1 - limit_)
            peak = max(peak, equity)
        if tripped:
            expected = (k, equity)
            break
    risk = limits(max_daily_loss=limit_) if kind == "daily" else limits(max_drawdown=limit_)
    result = run(rows, {minute(0): lambda e: [market("ES", sign * contracts)]}, risk, timeframe="1m",
                 initial_capital=capital)
    breakers = events(result, "breaker")
    if expected is None:
        assert breakers == []
    else:
        k, equity = expected
        assert [(b["ts"], b["code"]) for b in breakers] == [
            (utc(minute(k)), "DAILY_LOSS" if kind == "daily" else "MAX_DRAWDOWN")]
        assert breakers[0]["message"].startswith(f"equity={equity:.2f} <= ")
