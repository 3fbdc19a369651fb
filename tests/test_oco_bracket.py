"""One-cancels-other groups and bracket orders in the simulated broker, through ``run_backtest``.

Bars, terms and conventions as in tests/test_execution.py (whose ``run`` helper builds the DuckDB feed): ES tick
0.25, multiplier 50, 2.25 commission per contract per side; hourly bars on 2024-01-16; an order decided on a
bar works from the next bar. Every expected price and amount is worked out by hand in the comments.
"""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.results.ledger import load_run, record_run, run_path
from engine.core.orders import Order, bracket, limit, market, oco, stop, stop_limit
from engine.risk import RiskLimits
from tests.test_execution import CAPITAL, T0, T1, T2, T3, T4, brief, fills, orders, run, utc
from warehouse import Warehouse

SIGNAL = (T0, 4000, 4004, 3996, 4002)
LONG_1 = lambda: bracket("ES", 1, entry=4000.0, take_profit=4010.0, stop_loss=3990.0)  # noqa: E731


def by_id(result) -> dict[int, dict]:  # noqa: ANN001
    return {o["order_id"]: o for o in orders(result)}


def position(result) -> int:  # noqa: ANN001
    return fills(result)[-1]["position_after"] if fills(result) else 0


def run_exits(bars: list[tuple], quantity: int, *legs: Order, group: str = "exit"):  # noqa: ANN201
    """A market entry of ``quantity`` decided on T0 (filled at T1's open), then ``legs`` as one OCO group on T1."""
    return run(bars, {T0: lambda: market("ES", quantity), T1: lambda: oco(*legs, group=group)})


# -- (a) both legs reachable in one bar: the path decides ----------------------------------------------------
# Entry: buy limit 4000 on T1 (O 4003 H 4004 L 3998: the path O->H->L reaches 4000 on the way down; the rest of
# T1's path, 4000 -> 3998 -> 4002, touches neither exit). T2: O 4001 H 4012 L 3989 C 4005 spans both exits.
ENTRY_BAR = (T1, 4003, 4004, 3998, 4002)


@pytest.mark.parametrize("intrabar", ["ohlc", "adaptive"])
def test_take_profit_reached_first_fills_and_cancels_the_stop(intrabar):
    # O->H->L->C: 4001 -> 4012 passes the take-profit 4010 before 4012 -> 3989 passes the stop 3990.
    # Adaptive: the open is nearer the high (4001 - 3989 = 12 > 4012 - 4001 = 11), so it keeps O->H->L->C.
    result = run([SIGNAL, ENTRY_BAR, (T2, 4001, 4012, 3989, 4005)], {T0: LONG_1}, intrabar=intrabar)
    assert brief(result) == [(utc(T1), 1, 4000.0), (utc(T2), -1, 4010.0)]
    entry, take_profit, stop_loss = by_id(result).values()
    assert (take_profit["status"], take_profit["parent_id"], take_profit["oca_group"]) == ("FILLED", 0, "bracket:0")
    assert (stop_loss["status"], stop_loss["filled_quantity"], stop_loss["detail"]) == ("CANCELLED", 0, "OCO sibling filled")
    assert stop_loss["ts_done"] == utc(T2) and (stop_loss["parent_id"], stop_loss["oca_group"]) == (0, "bracket:0")
    assert (entry["parent_id"], entry["oca_group"]) == (None, None)
    assert position(result) == 0
    # (4010 - 4000) * 50 = 500, minus 2 sides * 2.25 = 495.50
    assert result.final_equity == pytest.approx(CAPITAL + 495.5)


@pytest.mark.parametrize(("intrabar", "exit_fill", "pnl"), [
    # O->H->L->C: 3999 -> 4012 reaches 4010 first: +10 points * 50 - 4.50 = +495.50
    ("ohlc", (utc(T2), -1, 4010.0), 495.5),
    # adaptive: open nearer the low (3999 - 3989 = 10 < 4012 - 3999 = 13) -> O->L->H->C: 3999 -> 3989 reaches the
    # stop 3990 first (a sell stop touched on the way down fills at its trigger): -10 * 50 - 4.50 = -504.50
    ("adaptive", (utc(T2), -1, 3990.0), -504.5),
])
def test_adaptive_path_lets_the_stop_win_when_the_open_is_nearer_the_low(intrabar, exit_fill, pnl):
    result = run([SIGNAL, ENTRY_BAR, (T2, 3999, 4012, 3989, 4005)], {T0: LONG_1}, intrabar=intrabar)
    assert brief(result) == [(utc(T1), 1, 4000.0), exit_fill]
    assert sorted(o["status"] for o in orders(result)) == ["CANCELLED", "FILLED", "FILLED"]
    assert position(result) == 0
    assert result.final_equity == pytest.approx(CAPITAL + pnl)


def test_oco_pair_of_plain_orders_fills_only_the_leg_reached_first():
    # The bars of test_execution.py::test_stop_loss_and_take_profit_inside_one_bar_both_fill, where the two
    # independent exits both fill; as one OCO group only one does. Long 1 at T1's open 4003; T2 O 4004 H 4009
    # L 3997: O->H reaches the sell limit 4008 first (filled at 4008), the stop 3998 is cancelled.
    bars = [SIGNAL, (T1, 4003, 4005, 4001, 4004), (T2, 4004, 4009, 3997, 4000)]
    result = run_exits(bars, 1, stop("ES", -1, 3998.0), limit("ES", -1, 4008.0), group="exit-1")
    assert brief(result) == [(utc(T1), 1, 4003.0), (utc(T2), -1, 4008.0)]
    stop_leg = by_id(result)[1]
    assert (stop_leg["status"], stop_leg["detail"], stop_leg["oca_group"]) == ("CANCELLED", "OCO sibling filled", "exit-1")
    assert position(result) == 0
    # (4008 - 4003) * 50 = 250, minus 4.50
    assert result.final_equity == pytest.approx(CAPITAL + 245.5)


# -- (b) partial fills reduce the sibling ---------------------------------------------------------------------
# Volume participation 0.1: capacity floor(0.1 * V) contracts per bar. Entry market 3 at T1's open 4000 (V 30:
# capacity 3); T1 (H 4005, L 3995) reaches neither exit. T2 (V 10: capacity 1) reaches the take-profit 4010
# first: 1 of 3 fills; the stop is reduced from -3 to -2. T3 (V 30) falls from 3996 to 3985 through the stop 3990.
PARTIAL_BARS = [
    (T0, 4000, 4004, 3996, 4002, 30),
    (T1, 4000, 4005, 3995, 4002, 30),
    (T2, 4001, 4012, 3989, 4005, 10),
    (T3, 3995, 3996, 3985, 3990, 30),
]
LONG_3 = lambda: bracket("ES", 3, take_profit=4010.0, stop_loss=3990.0)  # noqa: E731


def test_partial_fill_of_one_leg_reduces_the_sibling_by_the_filled_contracts():
    result = run(PARTIAL_BARS[:3], {T0: LONG_3}, participation=0.1)
    assert brief(result) == [(utc(T1), 3, 4000.0), (utc(T2), -1, 4010.0)]
    _, take_profit, stop_loss = by_id(result).values()
    # a partly filled order shows as OPEN in the ledger
    assert (take_profit["quantity"], take_profit["filled_quantity"], take_profit["status"]) == (-3, -1, "OPEN")
    assert (stop_loss["quantity"], stop_loss["filled_quantity"], stop_loss["status"]) == (-2, 0, "OPEN")
    assert stop_loss["detail"] == "reduced by 1: OCO sibling filled"
    assert position(result) == 2


def test_reduced_sibling_fills_the_rest_and_cancels_the_partly_filled_leg():
    result = run(PARTIAL_BARS, {T0: LONG_3}, participation=0.1)
    # T3: O->H->L: 3995 -> 3996 -> 3985 passes 3990 on the way down: the stop's 2 fill at 3990 (capacity 3).
    assert brief(result) == [(utc(T1), 3, 4000.0), (utc(T2), -1, 4010.0), (utc(T3), -2, 3990.0)]
    _, take_profit, stop_loss = by_id(result).values()
    assert (take_profit["status"], take_profit["filled_quantity"], take_profit["detail"]) == (
        "CANCELLED", -1, "OCO sibling filled")
    assert (stop_loss["status"], stop_loss["quantity"], stop_loss["filled_quantity"]) == ("FILLED", -2, -2)
    assert position(result) == 0
    # realized: 1 * (4010 - 4000) * 50 + 2 * (3990 - 4000) * 50 = 500 - 1000 = -500
    # commission: 6 contract-sides * 2.25 = 13.50
    assert result.final_equity == pytest.approx(CAPITAL - 513.5)


# -- children and the entry's bar --------------------------------------------------------------------------------
def test_exit_can_fill_in_the_entry_bar_after_the_entry():
    # Market entry at T1's open 4000; T1 then rises to 4011 through the take-profit 4010: filled in the same bar.
    result = run([SIGNAL, (T1, 4000, 4011, 3995, 4005)],
                 {T0: lambda: bracket("ES", 1, take_profit=4010.0, stop_loss=3990.0)})
    assert brief(result) == [(utc(T1), 1, 4000.0), (utc(T1), -1, 4010.0)]
    assert by_id(result)[2]["status"] == "CANCELLED"
    assert result.final_equity == pytest.approx(CAPITAL + 495.5)


@pytest.mark.parametrize(("bar", "expected", "final_position"), [
    # O->H->L: 4005 -> 4012 passes 4010 BEFORE the entry fills (4012 -> 3995 reaches 4000): no exit; the rest of
    # the path 4000 -> 3995 -> 4000 touches neither 4010 nor 3990. Long 1 at the end of the bar.
    ((T1, 4005, 4012, 3995, 4000), [(utc(T1), 1, 4000.0)], 1),
    # 4005 -> 4006 -> 3988: the entry fills at 4000 on the way down, the rest 4000 -> 3988 passes the stop 3990
    # after it: stopped out in the entry bar at 3990.
    ((T1, 4005, 4006, 3988, 3995), [(utc(T1), 1, 4000.0), (utc(T1), -1, 3990.0)], 0),
])
def test_exits_see_only_the_path_after_the_entry_fill_point(bar, expected, final_position):
    result = run([SIGNAL, bar], {T0: LONG_1})
    assert brief(result) == expected
    assert position(result) == final_position


def test_unfilled_entry_never_activates_its_exits():
    # Buy limit 3985: T1 (L 3989) and T2 (L 3987) never reach it, though both exit prices trade. No fills.
    bars = [SIGNAL, (T1, 4003, 4012, 3989, 4000), (T2, 4000, 4011, 3987, 3995)]
    seen = []
    plan = {T0: lambda: bracket("ES", 1, entry=3985.0, take_profit=4010.0, stop_loss=3990.0),
            T2: lambda engine: seen.append(([o.order_id for o in engine.handler.working_orders("ES")],
                                            engine.handler.working_buys_sells("ES")))}
    result = run(bars, plan)
    assert fills(result) == []
    assert seen == [([0], (1, 0))]  # only the entry works: 1 contract to buy at worst, the exits are held
    for child in list(by_id(result).values())[1:]:
        assert (child["status"], child["filled_quantity"]) == ("OPEN", 0)
        assert child["detail"] == "held until the bracket entry is done"


def test_cancelling_the_unfilled_entry_cancels_its_exits():
    bars = [SIGNAL, (T1, 4003, 4012, 3989, 4000), (T2, 4000, 4011, 3980, 3995)]
    family = []
    plan = {T0: lambda: family.extend(bracket("ES", 1, entry=3985.0, take_profit=4010.0, stop_loss=3990.0)) or family,
            T1: lambda engine: engine.cancel(family[0]) and None}
    result = run(bars, plan)
    # T2 would have filled the entry at 3985 and stopped it out: nothing, every order cancelled at T1's bar.
    assert fills(result) == []
    statuses = [(o["status"], o["detail"]) for o in orders(result)]
    assert statuses == [("CANCELLED", "cancelled by strategy"), ("CANCELLED", "bracket entry cancelled unfilled"),
                        ("CANCELLED", "bracket entry cancelled unfilled")]


def test_entry_cancelled_after_a_partial_fill_sizes_the_exits_to_the_filled_contracts():
    # Buy 3 at market, capacity floor(0.1 * 10) = 1 on T1: 1 at 4000. Cancelled on T1: the exits work for -1.
    # T2 reaches the take-profit 4010 (capacity 1): flat.
    bars = [(T0, 4000, 4004, 3996, 4002, 10), (T1, 4000, 4005, 3995, 4002, 10), (T2, 4001, 4012, 3999, 4005, 10)]
    family = []
    plan = {T0: lambda: family.extend(bracket("ES", 3, take_profit=4010.0, stop_loss=3990.0)) or family,
            T1: lambda engine: engine.cancel(family[0]) and None}
    result = run(bars, plan, participation=0.1)
    assert brief(result) == [(utc(T1), 1, 4000.0), (utc(T2), -1, 4010.0)]
    entry, take_profit, stop_loss = by_id(result).values()
    assert (entry["status"], entry["filled_quantity"]) == ("CANCELLED", 1)
    assert (take_profit["quantity"], take_profit["status"]) == (-1, "FILLED")
    assert (stop_loss["quantity"], stop_loss["status"]) == (-1, "CANCELLED")
    assert position(result) == 0
    # (4010 - 4000) * 50 - 2 * 2.25
    assert result.final_equity == pytest.approx(CAPITAL + 495.5)


# -- risk and the kill switch -----------------------------------------------------------------------------------
def test_working_oco_group_counts_once_per_side():
    # After the entry (T1 open 4000) the two exits work: 1 contract could be sold at worst, not 2; an extra
    # independent sell limit adds its own 1.
    seen = []
    plan = {T0: LONG_1, T1: lambda engine: [limit("ES", -1, 4020.0)],
            T2: lambda engine: seen.append((engine.handler.working_buys_sells("ES"), engine.working_quantity("ES")))}
    result = run([SIGNAL, (T1, 4000, 4004, 3996, 4002), (T2, 4002, 4004, 3996, 4002)], plan)
    assert brief(result) == [(utc(T1), 1, 4000.0)]
    assert seen == [((0, 2), -2)]


def test_bracket_exits_are_not_risk_checked_as_added_exposure():
    # max_position_size 1: the entry (0 -> 1) passes; its two exits never count as extra contracts.
    limits = RiskLimits.off().model_copy(update={"max_position_size": 1})
    result = run([SIGNAL, ENTRY_BAR, (T2, 4001, 4012, 3989, 4005)], {T0: LONG_1}, risk=limits)
    assert brief(result) == [(utc(T1), 1, 4000.0), (utc(T2), -1, 4010.0)]
    assert result.tables["events"].num_rows == 0


def test_denied_entry_denies_its_exits():
    limits = RiskLimits.off().model_copy(update={"max_position_size": 1})
    result = run([SIGNAL, ENTRY_BAR], {T0: lambda: bracket("ES", 2, take_profit=4010.0, stop_loss=3990.0)},
                 risk=limits)
    assert fills(result) == []
    statuses = [(o["order_id"], o["status"], o["parent_id"]) for o in orders(result)]
    assert statuses == [(0, "DENIED", None), (1, "DENIED", 0), (2, "DENIED", 0)]
    assert by_id(result)[1]["detail"] == "bracket entry denied: MAX_POSITION_SIZE: requested=2, limit=1"


def test_kill_switch_cancels_a_partly_filled_bracket_without_releasing_exits_and_flattens():
    # Buy 3, capacity 1 on T1: 1 at 4000. Kill switch on T1: the entry and both held exits are cancelled (the
    # exits stay at -3, unreleased), and the kill switch's market sell of 1 fills at T2's open 4001.
    bars = [(T0, 4000, 4004, 3996, 4002, 10), (T1, 4000, 4005, 3995, 4002, 10), (T2, 4001, 4012, 3989, 4005, 10)]
    plan = {T0: LONG_3, T1: lambda engine: engine.kill_switch("test")}
    result = run(bars, plan, participation=0.1)
    assert brief(result) == [(utc(T1), 1, 4000.0), (utc(T2), -1, 4001.0)]
    entry, take_profit, stop_loss, flatten = by_id(result).values()
    assert (entry["status"], entry["filled_quantity"], entry["detail"]) == ("CANCELLED", 1, "kill switch")
    for child in (take_profit, stop_loss):
        assert (child["status"], child["quantity"], child["filled_quantity"], child["detail"]) == (
            "CANCELLED", -3, 0, "kill switch")
    assert (flatten["origin"], flatten["quantity"], flatten["status"]) == ("kill_switch", -1, "FILLED")
    # (4001 - 4000) * 50 - 2 * 2.25
    assert result.final_equity == pytest.approx(CAPITAL + 45.5)


# -- vocabulary errors ------------------------------------------------------------------------------------------------
def test_oco_legs_need_one_symbol_and_one_size():
    with pytest.raises(ValueError, match="one symbol with one absolute quantity"):
        oco(limit("ES", -2, 4010.0), stop("ES", -1, 3990.0), group="g")
    with pytest.raises(ValueError, match="one symbol"):
        oco(limit("ES", -1, 4010.0), stop("NQ", -1, 3990.0), group="g")


def test_bracket_take_profit_must_be_on_the_profit_side():
    with pytest.raises(ValueError, match="must be above"):
        bracket("ES", 1, take_profit=3990.0, stop_loss=4010.0)
    with pytest.raises(ValueError, match="must be below"):
        bracket("ES", -1, take_profit=4010.0, stop_loss=3990.0)


def test_a_bracket_exit_cannot_be_submitted_without_its_entry():
    with pytest.raises(Exception, match="submitted with their entry"):
        run([SIGNAL, ENTRY_BAR], {T0: lambda: LONG_1()[1]})


# -- ledger ------------------------------------------------------------------------------------------------------
def test_ledger_records_parent_and_group_and_reads_runs_recorded_before_them(tmp_path):
    result = run([SIGNAL, ENTRY_BAR, (T2, 4001, 4012, 3989, 4005)], {T0: LONG_1})
    wh = Warehouse(tmp_path / "wh")
    run_id = record_run(wh, result)
    rows = wh.sql(f"SELECT order_id, parent_id, oca_group FROM run_orders WHERE run_id = '{run_id}' ORDER BY 1")
    assert rows.to_pylist() == [{"order_id": 0, "parent_id": None, "oca_group": None},
                                {"order_id": 1, "parent_id": 0, "oca_group": "bracket:0"},
                                {"order_id": 2, "parent_id": 0, "oca_group": "bracket:0"}]
    wh.close()
    # A run recorded before the columns existed: its orders file lacks them; it still loads, with NULLs.
    path = run_path(wh.root, "run_orders", run_id)
    old = pq.read_table(path).drop_columns(["parent_id", "oca_group"])
    pq.write_table(old, path)
    wh = Warehouse(tmp_path / "wh")
    rows = wh.sql("SELECT order_id, parent_id, oca_group FROM run_orders ORDER BY 1").to_pylist()
    assert rows == [{"order_id": k, "parent_id": None, "oca_group": None} for k in range(3)]
    _, tables, _ = load_run(wh, run_id)
    assert tables["orders"].column("parent_id").null_count == 3
    assert tables["orders"].column("status").to_pylist() == ["FILLED", "FILLED", "CANCELLED"]
    wh.close()


# -- (d) property: an OCO exit pair never overshoots ------------------------------------------------------------
PRICE = st.integers(min_value=-80, max_value=80).map(lambda k: 4000 + k / 4)  # on the 0.25 grid around 4000


@st.composite
def random_bar(draw, ts: str) -> tuple:
    points = [draw(PRICE) for _ in range(4)]
    open_, close = points[0], points[1]
    high = max(open_, close, points[2], points[3])
    low = min(open_, close, points[2], points[3])
    return (ts, open_, high, low, close, draw(st.integers(min_value=0, max_value=60)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.integers(min_value=1, max_value=4),
    side=st.sampled_from([1, -1]),
    distance=st.integers(min_value=1, max_value=40),
    bars=st.tuples(*(random_bar(ts) for ts in (T1, T2, T3, T4))),
    participation=st.sampled_from([None, 0.05, 0.1, 1.0]),
    intrabar=st.sampled_from(["ohlc", "adaptive"]),
    use_bracket=st.booleans(),
)
def test_oco_exit_pair_never_crosses_zero(size, side, distance, bars, participation, intrabar, use_bracket):
    # A position of size * side is opened at T1's open and protected by an OCO pair (take-profit and stop
    # `distance` ticks away from the signal close 4002 on either side); whatever the bars, the exits can only
    # bring it back to flat, never past it.
    profit, loss = 4002 + side * distance / 4, 4002 - side * distance / 4
    if use_bracket:
        plan = {T0: lambda: bracket("ES", size * side, take_profit=profit, stop_loss=loss)}
    else:
        plan = {T0: lambda: [market("ES", size * side),
                             *oco(limit("ES", -size * side, profit), stop("ES", -size * side, loss), group="exit")]}
    result = run([(T0, 4000, 4004, 3996, 4002, 60), *bars], plan, participation=participation, intrabar=intrabar)
    positions = [f["position_after"] for f in fills(result)]
    assert all(0 <= p * side <= size for p in positions)
    exits = [o for o in orders(result) if o["order_id"] > 0]
    assert sum(abs(o["filled_quantity"]) for o in exits) <= sum(abs(f["quantity"]) for f in fills(result)
                                                                    if f["order_id"] == 0)


# -- conventions shared with the other order types ---------------------------------------------------------------
def test_signal_close_entry_releases_exits_from_the_next_bar_only():
    # fill = "signal_close": the market entry fills at T0's close 4002. T0 itself traded 4012 (above the
    # take-profit 4010) before its close, but the exits exist only from then on: they work from T1, which stays
    # between 3998 and 4006. Long 1 at the end.
    bars = [(T0, 4000, 4012, 3996, 4002), (T1, 4003, 4006, 3998, 4005)]
    result = run(bars, {T0: lambda: bracket("ES", 1, take_profit=4010.0, stop_loss=3990.0)}, fill="signal_close")
    assert brief(result) == [(utc(T1), 1, 4002.0)]  # stamped at T0's close (= T1's open time)
    assert [o["status"] for o in orders(result)] == ["FILLED", "OPEN", "OPEN"]
    assert [o["detail"] for o in orders(result)][1:] == ["", ""]  # released (working), no longer held


def test_held_exits_move_with_their_entry_on_a_roll():
    # The roll shifts working orders' prices by (new contract's price - old's); an entry's held exits move too.
    from engine.execution.simulated import BacktestExecutionHandler
    from engine.data.feed import BAR_NS
    from engine.core.instruments import InstrumentBook

    handler = BacktestExecutionHandler(InstrumentBook({}), BAR_NS["1h"])
    entry, take_profit, stop_loss = bracket("ES", 1, entry=4000.0, take_profit=4010.0, stop_loss=3990.0)
    handler.submit(entry, ("ES", 0, 4001.0, 4002.0, 4000.5, 4001.5, 100, 19738, "ESH4"))
    moved = handler.shift_orders("ES", 20.25)
    assert moved == [entry, take_profit, stop_loss]
    assert (entry.limit_price, take_profit.limit_price, stop_loss.stop_price) == (4020.25, 4030.25, 4010.25)


def test_two_legs_on_the_same_stretch_of_the_path_the_nearer_one_fills():
    # Sell only one of two targets (IB's OCA example): sell limits 4008 (submitted first) and 4006. T2 rises from
    # its open 4001 to 4012 in one move, passing 4006 before 4008: the 4006 leg fills, although submitted second.
    bars = [SIGNAL, (T1, 4001, 4004, 3998, 4001), (T2, 4001, 4012, 3999, 4005)]
    result = run_exits(bars, 1, limit("ES", -1, 4008.0), limit("ES", -1, 4006.0))
    assert brief(result) == [(utc(T1), 1, 4001.0), (utc(T2), -1, 4006.0)]
    assert [o["status"] for o in orders(result)] == ["FILLED", "CANCELLED", "FILLED"]


def test_stop_limit_leg_is_placed_on_the_path_where_its_limit_fills():
    # Short 1 at T1's open 4001; exits: buy stop-limit (trigger 4004, limit 4005) and buy limit 3995 (take-profit).
    # T2 O 4001 H 4006 L 3994 (O->H->L): the rise triggers at 4004 and fills the limit at once at 4004 (the
    # triggered limit's first price 4004 <= 4005), before the fall reaches 3995. Loss (4001 - 4004) * 50 - 4.50.
    bars = [SIGNAL, (T1, 4001, 4003, 3998, 4001), (T2, 4001, 4006, 3994, 4000)]
    result = run_exits(bars, -1, limit("ES", 1, 3995.0), stop_limit("ES", 1, 4004.0, 4005.0))
    assert brief(result) == [(utc(T1), -1, 4001.0), (utc(T2), 1, 4004.0)]
    assert result.final_equity == pytest.approx(CAPITAL - 154.5)
