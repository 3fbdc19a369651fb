"""Attribution of a live (or paper) run against the backtest of the same strategy, query and bars.

:func:`attribute` replays the run's bars through the simulator (the run's strategy and parameters, its query
limited to ``data_start <= ts <= data_end``, its configuration: the same fill convention, fees and risk
limits), matches the two runs' orders one to one (``sql/run_attribution.sql``: same decided bar, symbol,
signed quantity and order type, k-th with k-th) and splits the P&L gap between them into its causes.

The decomposition
-----------------
Both runs see the same bars, so they end with the same mark :math:`M_s` per symbol (the last close of ``s``
in the span). A run's net P&L is the sum over its fills :math:`f` of what each fill is worth at that mark,
net of its commission (the cash-flow form of realized + unrealized - commissions; roll legs included, since
the old contract's legs net to zero contracts)::

    P&L = sum_f [ q_f * (M_s - p_f) * m_f - c_f ]

with :math:`q` signed contracts, :math:`p` the fill price, :math:`m` the multiplier and :math:`c` the
commission. Grouping each run's fills by order and pairing the orders gives, exactly::

    live P&L - backtest P&L = fill_price + fill_quantity + commission + signal + rolls + unexplained

    fill_price    = sum over equal signals of -q_B * (p_L - p_B) * m          (= -slippage)
    fill_quantity = sum over equal signals with q_L != q_B of
                    (q_L - q_B) * (M - p_L) * m   (both filled), q_L (M - p_L) m or -q_B (M - p_B) m (one did)
    commission    = sum over equal signals of -(c_L - c_B)
    signal        = sum over orders only live decided of  q_L (M - p_L) m - c_L
                  - sum over orders only the backtest decided of q_B (M - p_B) m - c_B
    rolls         = the same fill value summed over the roll legs (fills of kind roll_out/roll_in: a live
                    run's are broker orders, left out of the order pairing; a backtest's have no order), live
                    minus backtest
    unexplained   = the rest: zero (to rounding) whenever both runs' books follow the identity above; a
                    non-zero value means a fill is missing from a ledger, or a run was marked elsewhere (e.g.
                    a live fill booked after the last bar, which marks the position at its fill price)

where ``L``/``B`` are live/backtest, ``p`` an order's average fill price and ``q`` its filled quantity. Live
and backtest P&L are ``final_equity - initial_capital`` of their ``runs`` rows, computed independently of
the fills' valuation, which is what makes ``unexplained`` a check and not a plug.

What the live loop records for this
-----------------------------------
* The ``runs`` row (kind ``live`` or ``paper``): ``strategy`` as :func:`engine.strategy.strategy_name`
  gives it, ``params``, ``query`` (the SQL as given, not bounded: the replay bounds it), ``config`` (a
  :class:`~engine.backtest.run.BacktestConfig` dump, with the fill convention the replay is to use; other
  keys are ignored here), ``timeframe``, ``data_start``/``data_end`` (open times of the first and last bar
  the strategy saw: it must start from the same state as a backtest started at ``data_start``),
  ``initial_capital`` and ``final_equity`` (the kernel portfolio's, marked to the last close).
* ``orders`` and ``fills`` from the kernel (:func:`engine.results.tables.run_tables`): ``ts_submitted`` is
  the close of the bar the order was decided on; every broker fill keeps its ``order_id``; a live roll's
  legs are broker orders too (``origin``/``kind`` ``roll_out``, ``roll_in``), a backtest's are fills without one.
* ``executions`` (``RUN_EXECUTIONS``), one row per :class:`engine.adapters.ib.handler.FillRecord` ``r`` of
  order ``o``: ``order_id = o.order_id``, ``exec_id = r.exec_id``, ``order_ref = r.order_ref``,
  ``symbol``/``contract``/``quantity``/``price``/``commission`` from ``r.fill`` (IB's commission),
  ``commission_estimate = r.commission_estimate``, ``decided_ts = o.ts_submitted``, ``sent_at`` the wall
  clock when ``placeOrder`` was called for ``o`` (the same on each of its executions), ``filled_at`` the
  execution's time as IB reports it (``r.fill.ts``). Without it the latencies are NULL; the P&L split does
  not need it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from engine.backtest.run import BacktestConfig, run_backtest
from engine.kernel import ROLL_ORIGINS
from engine.results.ledger import latest_run_id, ledger_table, load_run, record_run
from engine.runner import make_strategy
from warehouse import schemas
from warehouse.errors import QEError
from warehouse.templates import render

if TYPE_CHECKING:
    from warehouse import Warehouse

__all__ = ["Attribution", "attribute", "attribution_table", "replay_query", "LIVE_KINDS", "CAUSES"]

#: ``runs.kind`` of the runs that can be attributed.
LIVE_KINDS = ("live", "paper")

#: The causes of the P&L gap, in the order they are reported.
CAUSES = ("signal", "fill_price", "fill_quantity", "commission", "rolls", "unexplained")


@dataclass(frozen=True)
class Attribution:
    """A live run against the backtest of the same bars: per order, and the P&L gap split by cause.

    Attributes
    ----------
    live_run_id, backtest_run_id : str
        ``backtest_run_id`` is the recorded attribution run (kind ``attribution``, parent the live run), or
        ``<live_run_id>/backtest`` when the replay was not recorded.
    orders : pyarrow.Table
        One row per order of either run (the columns of ``sql/run_attribution.sql``: signal, fill prices and
        quantities, slippage and commissions in currency, latencies in ms, the per-order effects).
    live_pnl, backtest_pnl : float
        ``final_equity - initial_capital`` of each run, currency.
    effects : dict of str to float
        Currency, keys :data:`CAUSES`; their sum is ``live_pnl - backtest_pnl``.
    marks : dict of str to float
        The end-of-run mark of each symbol (its last close in the span), raw contract price.
    """

    live_run_id: str
    backtest_run_id: str
    orders: pa.Table
    live_pnl: float
    backtest_pnl: float
    effects: dict[str, float]
    marks: dict[str, float] = field(default_factory=dict)

    @property
    def gap(self) -> float:
        """Live net P&L minus backtest net P&L, currency."""
        return self.live_pnl - self.backtest_pnl

    @property
    def unexplained(self) -> float:
        """The part of the gap no cause explains, currency (zero to rounding when the ledgers are whole)."""
        return self.effects["unexplained"]

    def summary(self) -> dict[str, Any]:
        """Counts and totals: orders equal / only live / only backtest, slippage, commissions, latency, effects."""
        rows = self.orders.to_pylist()
        count = {kind: sum(r["signal"] == kind for r in rows) for kind in ("equal", "only_live", "only_backtest")}
        latencies = sorted(r["latency_ms"] for r in rows if r["latency_ms"] is not None)
        return {
            "live_run_id": self.live_run_id,
            "backtest_run_id": self.backtest_run_id,
            "orders": count,
            "live_pnl": self.live_pnl,
            "backtest_pnl": self.backtest_pnl,
            "gap": self.gap,
            "effects": dict(self.effects),
            "slippage": sum(r["slippage"] for r in rows),
            "commission_live": sum(r["live_commission"] for r in rows),
            "commission_backtest": sum(r["backtest_commission"] for r in rows),
            "latency_ms_median": latencies[len(latencies) // 2] if latencies else None,
            "latency_ms_max": latencies[-1] if latencies else None,
            "marks": dict(self.marks),
        }


def replay_query(query: str, data_start: datetime, data_end: datetime) -> str:
    """The run's ``query`` limited to the bars it traded: ``data_start <= ts <= data_end`` (bar open times).

    The feed orders it by ``ts, symbol`` (the wrapper has no ORDER BY of its own).
    """
    body = query.strip().rstrip(";")
    return (f"SELECT * FROM (\n{body}\n) AS live_bars\n"
            f"WHERE ts >= TIMESTAMPTZ '{data_start.isoformat()}' AND ts <= TIMESTAMPTZ '{data_end.isoformat()}'")


def attribute(wh: Warehouse, run_id: str, *, record: bool = True) -> Attribution:
    """Replay live/paper run ``run_id``'s bars through the backtest and attribute the P&L gap.

    Parameters
    ----------
    wh : Warehouse
        Holds the run, its bars (the query reads them) and the roll table.
    run_id : str
        A run of kind ``live`` or ``paper`` (``latest``: the most recent top-level run).
    record : bool
        Record the replay as a run of kind ``attribution`` with ``parent_run_id = run_id`` (the ledger view
        ``run_attribution`` then shows the comparison); False leaves the ledger untouched.

    Returns
    -------
    Attribution
        See the module docstring for the decomposition.

    Raises
    ------
    QEError
        Unknown run, a run that is not live or paper, or one without bars (no ``data_start``).
    """
    if run_id == "latest":
        run_id = latest_run_id(wh)
    run, tables, _ = load_run(wh, run_id)
    if run["kind"] not in LIVE_KINDS:
        raise QEError(f"run {run_id} is a {run['kind']} run; attribution compares a live or paper run "
                      "with its backtest")
    if run["data_start"] is None or run["data_end"] is None:
        raise QEError(f"run {run_id} saw no bar: nothing to attribute")
    config = _backtest_config(run)
    query = replay_query(run["query"], run["data_start"], run["data_end"])
    strategy = make_strategy(run["strategy"], json.loads(run["params"] or "{}"))
    timeframe = run["timeframe"]
    if f"features_{timeframe}" in run["query"]:
        # a session computes its bars' features in memory: the batch build stores them (only the new dates)
        # so the backtest reads the same rows from the warehouse
        from warehouse.features.materialize import build_features

        build_features(wh, timeframe)
    replay = run_backtest(wh, query, strategy, config, record=False)
    if record:
        record_run(wh, replay, kind="attribution", parent_run_id=run_id)
    else:
        replay.run_id = f"{run_id}/backtest"
    marks = _marks(wh, query)
    executions = tables.get("executions", schemas.RUN_EXECUTIONS.empty_table())
    orders = attribution_table(
        live={"orders": tables["orders"], "fills": tables["fills"], "executions": executions},
        backtest={"orders": replay.tables["orders"], "fills": replay.tables["fills"]},
        live_run_id=run_id, backtest_run_id=replay.run_id, marks=marks,
    )
    live_pnl = float(run["final_equity"]) - float(run["initial_capital"])
    backtest_pnl = replay.final_equity - config.initial_capital
    rolls = _roll_value(tables["fills"], marks) - _roll_value(replay.tables["fills"], marks)
    return Attribution(run_id, replay.run_id, orders, live_pnl, backtest_pnl,
                       _effects(orders, rolls, live_pnl - backtest_pnl), marks)


def attribution_table(live: dict[str, pa.Table], backtest: dict[str, pa.Table], *, live_run_id: str,
                      backtest_run_id: str, marks: dict[str, float] | None = None) -> pa.Table:
    """The per-order comparison (``sql/run_attribution.sql``) of two runs' in-memory ledger tables.

    ``live`` and ``backtest`` hold ``orders`` and ``fills`` (and for live ``executions``) with the ledger
    schemas; their ``run_id`` columns are overwritten with the ids given. ``marks`` (symbol -> end-of-run
    mark) values the orders only one run decided and partial fills; without it those effects are NULL.
    """
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        for key, schema in (("orders", schemas.RUN_ORDERS), ("fills", schemas.RUN_FILLS),
                            ("executions", schemas.RUN_EXECUTIONS)):
            parts = [ledger_table(side.get(key, schema.empty_table()), rid, schema)
                     for side, rid in ((live, live_run_id), (backtest, backtest_run_id))]
            con.register(f"_attr_{key}", pa.concat_tables(parts))
        con.register("_attr_pairs", pa.table({"live_run_id": [live_run_id], "backtest_run_id": [backtest_run_id]}))
        if marks is not None:
            con.register("_attr_marks", pa.table({"live_run_id": [live_run_id] * len(marks), "symbol": list(marks),
                                                  "mark": pa.array(list(marks.values()), pa.float64())}))
        sql = render("run_attribution.sql", runs="runs", orders="_attr_orders", fills="_attr_fills",
                     executions="_attr_executions", pairs="_attr_pairs",
                     marks="_attr_marks" if marks is not None else None)
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()


def _backtest_config(run: dict[str, Any]) -> BacktestConfig:
    """The run's configuration as a backtest's: its :class:`BacktestConfig` keys (a live session's other keys,
    e.g. the broker's, stay out) and its timeframe."""
    stored = json.loads(run["config"] or "{}")
    known = {k: v for k, v in stored.items() if k in BacktestConfig.model_fields}
    known["timeframe"] = run["timeframe"] or known.get("timeframe")
    return BacktestConfig.model_validate(known)


def _marks(wh: Warehouse, query: str) -> dict[str, float]:
    """Symbol -> its last close over the replayed bars: the mark both runs end on."""
    sql = f"SELECT symbol, CAST(arg_max(close, ts) AS DOUBLE) FROM ({query}) GROUP BY symbol"
    return dict(wh.connect().sql(sql).fetchall())


def _roll_value(fills: pa.Table, marks: dict[str, float]) -> float:
    """sum q (M - p) m - c over a run's roll legs, currency: the fills of kind ``roll_out``/``roll_in`` (a live
    run's legs are broker orders, a backtest's are booked without one) and any other fill without an order."""
    legs = fills.filter(pc.or_kleene(pc.is_null(fills["order_id"]),
                                     pc.is_in(fills["kind"], value_set=pa.array(list(ROLL_ORIGINS)))))
    return sum((f["quantity"] * (marks.get(f["symbol"], math.nan) - f["price"]) * f["multiplier"] - f["commission"]
                for f in legs.to_pylist()), 0.0)  # a float when there is no leg


def _effects(orders: pa.Table, rolls: float, gap: float) -> dict[str, float]:
    """The gap by cause (:data:`CAUSES`), currency; ``unexplained`` is what the others leave of ``gap``."""
    effects = {
        "signal": _column_sum(orders, "signal_effect"),
        "fill_price": _column_sum(orders, "price_effect"),
        "fill_quantity": _column_sum(orders, "quantity_effect"),
        "commission": _column_sum(orders, "commission_effect"),
        "rolls": rolls,
    }
    effects["unexplained"] = gap - math.fsum(effects.values())
    return effects


def _column_sum(table: pa.Table, name: str) -> float:
    return math.fsum(v for v in table.column(name).to_pylist() if v is not None)
