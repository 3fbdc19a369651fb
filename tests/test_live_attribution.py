"""Attribution of a paper run against the backtest of the same bars, with hand-worked numbers.

The bars (120 one-minute ES bars, open = close = p_i = 4000 + round(80 sin(i/6)) / 4) and SmaCross(2, 5)
give six orders, filled at the next bar's open, 2.25 $ per side and contract (ES fee table), multiplier 50:

    order  decided (bar close)  quantity  fill price
    0      15:13                -1        4016.50
    1      15:32                +2        3983.75   (closes the short, opens a long: two fills)
    2      15:50                -2        4017.75
    3      16:09                +2        3982.50
    4      16:28                -2        4017.25
    5      16:47                +2        3983.00
    end: long 1, last close M = p_119 = 4016.75; equity 1,000,000 + 8,550 - 24.75 + 1,687.50 = 1,010,212.75

The paper run differs by hand: order 1 filled 1.00 point higher (slippage 1.00 x 2 x 50 = 100 $), order 4
sold 0.25 higher (slippage 0.25 x -2 x 50 = -25 $), order 3 charged 2.50 a side by the broker (+0.50 $),
and order 2 never decided (so the paper run numbers its later orders 2, 3, 4). The order-2 P&L it lacks is
q (M - p) m - c = -2 x (4016.75 - 4017.75) x 50 - 4.50 = 95.50 $. Gap: -100 + 25 - 0.50 - 95.50 = -171 $.
"""

from __future__ import annotations

from datetime import timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from engine.backtest.run import BacktestConfig, run_backtest
from engine.core.instruments import EPOCH
from engine.core.orders import Fill
from engine.core.portfolio import Portfolio
from engine.live.attribution import CAUSES, attribute, attribution_table
from engine.results.ledger import record_run
from engine.results.result import RunResult
from engine.risk import RiskLimits
from engine.strategies.sma_cross import SmaCross
from warehouse import Warehouse, schemas

QUERY = """
SELECT 'ES' AS symbol, TIMESTAMPTZ '2024-01-02 15:00:00+00' + i * INTERVAL 1 MINUTE AS ts,
       p AS open, p + 1 AS high, p - 1 AS low, p AS close, 100 AS volume
FROM (SELECT i, 4000 + round(80 * sin(i / 6.0)) / 4 AS p FROM range(120) t(i))
ORDER BY ts
"""
CONFIG = BacktestConfig(timeframe="1m", initial_capital=1_000_000.0, risk=RiskLimits.off())
MARK = 4016.75
SEND_MS, FILL_MS = 150, 350  # bar close -> sent, sent -> execution report, in the paper run's executions


@pytest.fixture
def backtest(wh: Warehouse) -> RunResult:
    result = run_backtest(wh, QUERY, SmaCross(fast=2, slow=5), CONFIG, record=False)
    orders = result.tables["orders"]
    # the oracle's table above, checked first: everything below rests on it
    assert orders.column("quantity").to_pylist() == [-1, 2, -2, 2, -2, 2]
    assert orders.column("avg_fill_price").to_pylist() == [4016.5, 3983.75, 4017.75, 3982.5, 4017.25, 3983.0]
    assert result.final_equity == pytest.approx(1_010_212.75, abs=1e-9)
    return result


def _paper_run(wh: Warehouse, backtest: RunResult, fills: pa.Table, orders: pa.Table, *, query: str = QUERY,
               mark: float = MARK) -> str:
    """Record ``orders``/``fills`` as a paper run of the backtest's strategy and bars, with executions; its final
    equity from the engine's own books (a Portfolio fed the fills, marked at the last close)."""
    portfolio = Portfolio(CONFIG.initial_capital)
    for f in fills.to_pylist():
        portfolio.apply(Fill(f["order_id"], 0, f["symbol"], f["contract"], f["quantity"], f["price"], f["price"],
                             f["multiplier"], f["commission"], 0.0, f["kind"], (f["trading_date"] - EPOCH).days))
    portfolio.mark("ES", mark)
    decided = dict(zip(orders.column("order_id").to_pylist(), orders.column("ts_submitted").to_pylist()))
    ordered = fills.filter(pc.is_valid(fills.column("order_id")))  # roll legs are no broker order
    rows = [{"order_id": f["order_id"], "exec_id": f"0001f4e8.{k:08x}.01.01", "order_ref": f"qe:paper:{f['order_id']}",
             "symbol": f["symbol"], "contract": f["contract"], "decided_ts": decided[f["order_id"]],
             "sent_at": decided[f["order_id"]] + timedelta(milliseconds=SEND_MS),
             "filled_at": decided[f["order_id"]] + timedelta(milliseconds=SEND_MS + FILL_MS),
             "quantity": f["quantity"], "price": f["price"], "commission": f["commission"],
             "commission_estimate": 2.25 * abs(f["quantity"])}
            for k, f in enumerate(ordered.to_pylist())]
    executions = pa.Table.from_pylist([{"run_id": None, **r} for r in rows], schema=schemas.RUN_EXECUTIONS)
    paper = RunResult(config=CONFIG, strategy=backtest.strategy, params=backtest.params, query=query,
                      timeframe="1m", tables={"orders": orders, "fills": fills, "executions": executions},
                      metrics={}, timings={"bars": 120.0}, final_equity=portfolio.equity, symbols=["ES"],
                      data_start=backtest.data_start, data_end=backtest.data_end)
    return record_run(wh, paper, kind="paper")


def _set(table: pa.Table, name: str, values: list) -> pa.Table:
    return table.set_column(table.column_names.index(name), name, pa.array(values, table.schema.field(name).type))


def test_identical_paper_run_has_no_gap_at_all(wh: Warehouse, backtest: RunResult) -> None:
    run_id = _paper_run(wh, backtest, backtest.tables["fills"], backtest.tables["orders"])
    result = attribute(wh, run_id)
    assert result.orders.column("signal").to_pylist() == ["equal"] * 6
    assert result.orders.column("live_order_id").to_pylist() == result.orders.column("backtest_order_id").to_pylist()
    for column in ("slippage", "commission_diff", "pnl_gap", "price_effect", "quantity_effect", "signal_effect"):
        assert result.orders.column(column).to_pylist() == [0.0] * 6, column
    assert result.gap == 0.0
    assert result.effects == dict.fromkeys(CAUSES, 0.0)
    assert result.orders.column("latency_ms").to_pylist() == [SEND_MS + FILL_MS] * 6
    assert result.marks == {"ES": MARK}


def test_moved_fills_changed_commissions_and_a_missing_order_are_attributed_exactly(wh: Warehouse, backtest: RunResult) -> None:
    fills, orders = backtest.tables["fills"], backtest.tables["orders"]
    price = fills.column("price").to_pylist()
    commission = fills.column("commission").to_pylist()
    order_of_fill = fills.column("order_id").to_pylist()
    price = [p + {1: 1.00, 4: 0.25}.get(o, 0.0) for p, o in zip(price, order_of_fill)]
    commission = [2.50 if o == 3 else c for c, o in zip(commission, order_of_fill)]
    renumber = {0: 0, 1: 1, 3: 2, 4: 3, 5: 4}  # order 2 never decided: the later ones move up
    fills = _set(_set(fills, "price", price), "commission", commission)
    fills = fills.filter(pc.not_equal(fills.column("order_id"), 2))
    fills = _set(fills, "order_id", [renumber[o] for o in fills.column("order_id").to_pylist()])
    orders = orders.filter(pc.not_equal(orders.column("order_id"), 2))
    orders = _set(orders, "order_id", [renumber[o] for o in orders.column("order_id").to_pylist()])
    run_id = _paper_run(wh, backtest, fills, orders)

    result = attribute(wh, run_id)

    assert result.backtest_pnl == pytest.approx(10_212.75, abs=1e-9)
    assert result.live_pnl == pytest.approx(10_212.75 - 171.0, abs=1e-9)  # the engine's books agree with the oracle
    rows = {r["backtest_order_id"]: r for r in result.orders.to_pylist()}
    assert [(r["signal"], r["live_order_id"]) for r in rows.values()] == [
        ("equal", 0), ("equal", 1), ("only_backtest", None), ("equal", 2), ("equal", 3), ("equal", 4)]
    assert rows[1]["price_diff"] == 1.00 and rows[1]["slippage"] == 100.0
    assert rows[4]["price_diff"] == 0.25 and rows[4]["slippage"] == -25.0
    assert rows[3]["commission_diff"] == pytest.approx(0.50) and rows[3]["commission_estimate"] == 4.50
    assert rows[2]["signal_effect"] == pytest.approx(-95.50)
    assert [r["pnl_gap"] for r in rows.values()] == pytest.approx([0.0, -100.0, -95.50, -0.50, 25.0, 0.0])
    assert [r["send_latency_ms"] for r in rows.values()] == [SEND_MS] * 2 + [None] + [SEND_MS] * 3
    assert [r["fill_latency_ms"] for r in rows.values()] == [FILL_MS] * 2 + [None] + [FILL_MS] * 3
    expected = {"signal": -95.50, "fill_price": -75.0, "fill_quantity": 0.0, "commission": -0.50, "rolls": 0.0}
    assert {k: v for k, v in result.effects.items() if k != "unexplained"} == pytest.approx(expected, abs=1e-9)
    assert abs(result.unexplained) < 1e-6

    # recorded: the replay is a run of kind 'attribution' under the paper run, and the ledger view agrees
    kind, parent = wh.sql(f"SELECT kind, parent_run_id FROM runs WHERE run_id = '{result.backtest_run_id}'").to_pylist()[0].values()
    assert (kind, parent) == ("attribution", run_id)
    view = wh.sql(f"SELECT * FROM run_attribution WHERE live_run_id = '{run_id}'").to_pylist()
    assert [(r["signal"], r["live_order_id"], r["backtest_order_id"]) for r in view] == [
        (r["signal"], r["live_order_id"], r["backtest_order_id"]) for r in rows.values()]
    assert [r["slippage"] for r in view] == [r["slippage"] for r in rows.values()]
    # no mark in the view: the missing order's P&L is unknown there, the matched orders' gaps are not
    assert [r["pnl_gap"] for r in view] == pytest.approx([0.0, -100.0, None, -0.50, 25.0, 0.0])


def test_roll_legs_are_attributed_to_rolls(wh: Warehouse) -> None:
    """The same bars on ESH4, then ESM4 20 points higher from bar 70: the backtest rolls its long 1 at 16:10
    (out at ESH4's last mark 3982.50, in at ESM4's open 4004.25, no roll table). The paper run rolled in 0.25
    higher: 1 x 0.25 x 50 = 12.50 $ less; nothing else differs. The last close is 4016.75 + 20."""
    query = QUERY.replace("p AS open", "CASE WHEN i < 70 THEN 'ESH4' ELSE 'ESM4' END AS contract, p AS open").replace(
        "AS p FROM range", "+ CASE WHEN i < 70 THEN 0 ELSE 20 END AS p FROM range")
    backtest = run_backtest(wh, query, SmaCross(fast=2, slow=5), CONFIG, record=False)
    fills = backtest.tables["fills"]
    kinds = fills.column("kind").to_pylist()
    assert (kinds.count("roll_out"), kinds.count("roll_in")) == (1, 1)
    fills = _set(fills, "price", [p + 0.25 if k == "roll_in" else p for p, k in zip(fills.column("price").to_pylist(), kinds)])
    run_id = _paper_run(wh, backtest, fills, backtest.tables["orders"], query=query, mark=MARK + 20)

    result = attribute(wh, run_id, record=False)

    assert result.gap == pytest.approx(-12.50, abs=1e-9)
    assert result.effects["rolls"] == pytest.approx(-12.50, abs=1e-9)
    assert result.orders.column("pnl_gap").to_pylist() == [0.0] * 6
    assert abs(result.unexplained) < 1e-6


def test_a_partial_fill_splits_into_price_and_quantity_effects() -> None:
    """Backtest bought 2 at 100, live 1 at 101; mark 105, multiplier 5: the live order is worth
    1 x (105 - 101) x 5 = 20, the backtest's 2 x (105 - 100) x 5 = 50, gap -30 = price -2 x 1 x 5 = -10
    plus quantity (1 - 2) x (105 - 101) x 5 = -20."""
    ts = pa.array([1_704_207_600_000_000], pa.int64()).cast(schemas.TS)

    def side(filled: int, price: float) -> dict[str, pa.Table]:
        orders = pa.table({"order_id": [0], "ts_submitted": ts, "symbol": ["MES"], "quantity": [2],
                           "order_type": ["MARKET"], "status": ["FILLED" if filled == 2 else "OPEN"]})
        fills = pa.table({"fill_id": [0], "order_id": [0], "symbol": ["MES"], "quantity": [filled],
                          "price": [price], "multiplier": [5.0], "commission": [0.0]})
        return {"orders": orders, "fills": fills}

    row = attribution_table(side(1, 101.0), side(2, 100.0), live_run_id="L", backtest_run_id="B",
                            marks={"MES": 105.0}).to_pylist()[0]
    assert (row["signal"], row["price_effect"], row["quantity_effect"], row["pnl_gap"]) == ("equal", -10.0, -20.0, -30.0)


def test_qe_live_attribution_prints_the_orders_and_the_gap_by_cause(wh: Warehouse, backtest: RunResult) -> None:
    import json

    from typer.testing import CliRunner

    from engine.cli.main import app

    orders = backtest.tables["orders"]
    fills = backtest.tables["fills"]
    fills = _set(fills, "price", [p + (0.5 if o == 0 else 0.0) for p, o in
                                  zip(fills.column("price").to_pylist(), fills.column("order_id").to_pylist())])
    run_id = _paper_run(wh, backtest, fills, orders)  # order 0 sold 0.50 higher: slippage -1 x 0.5 x 50 = -25
    shown = CliRunner().invoke(app, ["-w", str(wh.root), "live", "attribution", run_id, "--no-record"])
    assert shown.exit_code == 0, shown.output
    assert "6 equal, 0 only live, 0 only backtest" in shown.output
    assert "fill_price" in shown.output and "unexplained" in shown.output
    answer = CliRunner().invoke(app, ["-w", str(wh.root), "live", "attribution", run_id, "--no-record", "--json"])
    assert answer.exit_code == 0, answer.output
    payload = json.loads(answer.output)
    assert payload["effects"]["fill_price"] == pytest.approx(25.0) and abs(payload["effects"]["unexplained"]) < 1e-6
    assert payload["orders"][0]["slippage"] == -25.0 and len(payload["orders"]) == 6
    assert wh.sql("SELECT count(*) AS n FROM runs WHERE kind = 'attribution'").column("n").to_pylist() == [0]


def test_only_live_and_paper_runs_are_attributed(wh: Warehouse) -> None:
    from warehouse.errors import QEError

    run_id = run_backtest(wh, QUERY, SmaCross(fast=2, slow=5), CONFIG).run_id
    with pytest.raises(QEError, match="is a backtest run"):
        attribute(wh, run_id)
