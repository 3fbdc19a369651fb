"""Arrow schemas of the stored tables (partition columns excluded: they live in directory names)."""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")

#: How a root's stored daily bars are stamped: ``utc_day`` (00:00 UTC) or ``session`` (CME session open,
#: 18:00 ET the evening before the trading date). One row per root; a root without one has UTC days.
DAILY_CONVENTIONS = pa.schema([("symbol", pa.string()), ("convention", pa.string())])

#: Per-contract raw bars inside one (timeframe, symbol, year) partition.
BARS = pa.schema(
    [
        ("contract", pa.string()),
        ("instrument_id", pa.int64()),
        ("ts", TS),
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("volume", pa.int64()),
        ("open_interest", pa.int64()),
        ("source", pa.string()),
    ]
)

#: Open-interest samples inside one symbol partition.
OPEN_INTEREST = pa.schema(
    [("contract", pa.string()), ("ts", TS), ("open_interest", pa.int64()), ("source", pa.string())]
)

#: Rows rejected by validation, with where they came from and why.
QUARANTINE = pa.schema(
    [
        ("file", pa.string()),
        ("row", pa.int64()),
        ("table_name", pa.string()),
        ("timeframe", pa.string()),
        ("rule", pa.string()),
        ("detail", pa.string()),
        ("symbol", pa.string()),
        ("contract", pa.string()),
        ("ts", TS),
    ]
)

INGEST_LOG = pa.schema(
    [
        ("file", pa.string()),
        ("format", pa.string()),
        ("sha256", pa.string()),
        ("rows_read", pa.int64()),
        ("rows_loaded", pa.int64()),
        ("rows_unchanged", pa.int64()),
        ("rows_quarantined", pa.int64()),
        ("ingested_at", TS),
    ]
)

DEFINITIONS = pa.schema(
    [
        ("instrument_id", pa.int64()),
        ("raw_symbol", pa.string()),
        ("asset", pa.string()),
        ("exchange", pa.string()),
        ("instrument_class", pa.string()),
        ("expiration", TS),
        ("activation", TS),
        ("min_price_increment", pa.float64()),
        ("multiplier", pa.float64()),
        ("currency", pa.string()),
        ("ts_recv", TS),
        ("source", pa.string()),
    ]
)

#: Runs of one instrument id inside a continuous DBN file (ES.v.0): the front contract between first_ts and
#: last_ts. Front changes are derived across files from these runs (view ``instrument_changes``), so a roll
#: that falls between two files (e.g. monthly download chunks) is not lost.
INSTRUMENT_RUNS = pa.schema(
    [
        ("symbol", pa.string()),
        ("continuous_symbol", pa.string()),
        ("instrument_id", pa.int64()),
        ("first_ts", TS),
        ("last_ts", TS),
    ]
)

ROLLS = pa.schema(
    [
        ("symbol", pa.string()),
        ("roll_ts", TS),
        ("roll_date", pa.date32()),
        ("signal_date", pa.date32()),
        ("from_contract", pa.string()),
        ("to_contract", pa.string()),
        ("from_price", pa.float64()),
        ("to_price", pa.float64()),
        ("price_ts", TS),
        ("rule", pa.string()),
        ("basis_timeframe", pa.string()),
    ]
)

#: Front-contract segments: [valid_from, valid_to) per symbol, with back-adjustment of that segment.
FRONT = pa.schema(
    [
        ("symbol", pa.string()),
        ("contract", pa.string()),
        ("valid_from", TS),
        ("valid_to", TS),
        ("ratio_factor", pa.float64()),
        ("diff_offset", pa.float64()),
        ("rule", pa.string()),
    ]
)

#: Every contract seen, with expiry and specs (definitions where available, else rule and contracts table).
INSTRUMENTS = pa.schema(
    [
        ("symbol", pa.string()),
        ("contract", pa.string()),
        ("instrument_id", pa.int64()),
        ("first_ts", TS),
        ("last_ts", TS),
        ("bars", pa.int64()),
        ("expiry", pa.date32()),
        ("expiry_source", pa.string()),
        ("tick_size", pa.float64()),
        ("multiplier", pa.float64()),
        ("spec_source", pa.string()),
    ]
)

DATA_QUALITY = pa.schema(
    [
        ("dataset", pa.string()),
        ("symbol", pa.string()),
        ("schema_name", pa.string()),
        ("date", pa.date32()),
        ("condition", pa.string()),
        ("detail", pa.string()),
        ("recorded_at", TS),
    ]
)


def empty(schema: pa.Schema) -> pa.Table:
    """An empty table of ``schema`` (views over tables with no files yet)."""
    return schema.empty_table()


# -- run ledger ------------------------------------------------------------------------------------------
# One file per run and table: ``<root>/runs/<table>/<run_id>.parquet``. Every table carries ``run_id`` so
# cross-run questions are plain SQL (``SELECT run_id, value FROM run_metrics WHERE name = 'sharpe'``).

#: One row per run: what ran, on what data, with which code.
RUNS = pa.schema(
    [
        ("run_id", pa.string()),
        ("created_at", TS),
        ("kind", pa.string()),  # backtest | vectorized | walkforward | live | paper | attribution
        ("strategy", pa.string()),
        ("params", pa.string()),  # JSON
        ("query", pa.string()),
        ("config", pa.string()),  # JSON of the full run configuration
        ("timeframe", pa.string()),
        ("data_start", TS),
        ("data_end", TS),
        ("bars", pa.int64()),
        ("symbols", pa.string()),  # comma-separated
        ("code_version", pa.string()),
        ("initial_capital", pa.float64()),
        ("final_equity", pa.float64()),
        ("status", pa.string()),  # completed | halted | failed
        # walk-forward: the stitched run the window runs belong to; attribution: the live/paper run it replays
    ("parent_run_id", pa.string()),
    ]
)

#: Every order the strategy (or the engine: rolls, kill switch) submitted, with its final state.
RUN_ORDERS = pa.schema(
    [
        ("run_id", pa.string()),
        ("order_id", pa.int64()),
        ("ts_submitted", TS),
        ("symbol", pa.string()),
        ("quantity", pa.int64()),  # signed contracts: + buy, - sell
        ("order_type", pa.string()),
        ("tif", pa.string()),
        ("limit_price", pa.float64()),
        ("stop_price", pa.float64()),
        ("expire_ts", TS),
        ("status", pa.string()),  # FILLED | CANCELLED | EXPIRED | DENIED | OPEN (still working at the end)
        ("filled_quantity", pa.int64()),
        ("avg_fill_price", pa.float64()),
        ("ts_done", TS),
        ("origin", pa.string()),  # strategy | roll | kill_switch
        ("tag", pa.string()),
        ("detail", pa.string()),  # denial reason or cancel cause
        # linked orders (NULL for independent orders and in runs recorded before they existed):
        ("parent_id", pa.int64()),  # the bracket entry's order_id (IB parentId)
        ("oca_group", pa.string()),  # one-cancels-other group (IB ocaGroup); bracket exits: "bracket:<entry id>"
    ]
)

#: Every fill (a reversal is stored as two fills: the closing part, then the opening part).
RUN_FILLS = pa.schema(
    [
        ("run_id", pa.string()),
        ("fill_id", pa.int64()),
        ("order_id", pa.int64()),
        ("ts", TS),
        ("trading_date", pa.date32()),
        ("symbol", pa.string()),
        ("contract", pa.string()),
        ("quantity", pa.int64()),  # signed contracts
        ("price", pa.float64()),  # raw contract price, slippage included
        ("reference_price", pa.float64()),  # price before slippage
        ("multiplier", pa.float64()),
        ("commission", pa.float64()),  # currency, >= 0, once per side per contract
        ("slippage", pa.float64()),  # currency, adverse slippage cost of this fill
        ("realized_pnl", pa.float64()),  # currency, gross of commission
        ("position_after", pa.int64()),
        ("trade_id", pa.int64()),
        ("kind", pa.string()),  # order | roll_out | roll_in
    ]
)

#: Every position change (after each fill).
RUN_POSITIONS = pa.schema(
    [
        ("run_id", pa.string()),
        ("ts", TS),
        ("symbol", pa.string()),
        ("contract", pa.string()),
        ("quantity", pa.int64()),
        ("avg_price", pa.float64()),
    ]
)

#: Equity after each distinct bar timestamp, marked to the latest close of every open position.
RUN_EQUITY = pa.schema(
    [
        ("run_id", pa.string()),
        ("ts", TS),  # bar open time; the point is known at the bar's close
        ("trading_date", pa.date32()),
        ("equity", pa.float64()),  # cash + unrealized
        ("cash", pa.float64()),  # initial + realized - commissions
        ("unrealized", pa.float64()),
        ("realized", pa.float64()),  # cumulative, gross of commissions
        ("commissions", pa.float64()),  # cumulative
        ("slippage", pa.float64()),  # cumulative (already inside realized/unrealized via fill prices)
        ("gross_notional", pa.float64()),  # sum of |qty| * multiplier * mark over open positions
    ]
)

#: Round-trip trades: from flat to flat (a reversal closes one trade and opens the next).
RUN_TRADES = pa.schema(
    [
        ("run_id", pa.string()),
        ("trade_id", pa.int64()),
        ("symbol", pa.string()),
        ("direction", pa.int8()),  # +1 long, -1 short
        ("max_quantity", pa.int64()),
        ("entry_ts", TS),
        ("exit_ts", TS),  # NULL while open at the end of the run
        ("entry_price", pa.float64()),  # average entry price (first contract's raw prices)
        ("exit_price", pa.float64()),  # average exit price (last contract's raw prices)
        ("gross_pnl", pa.float64()),  # realized, before commissions (incl. roll legs)
        ("commission", pa.float64()),
        ("slippage", pa.float64()),
        ("pnl", pa.float64()),  # gross_pnl - commission
        ("rolls", pa.int64()),
        ("bars_held", pa.int64()),
    ]
)

#: Risk denials, breaker trips, state changes, kill switch, warnings.
RUN_EVENTS = pa.schema(
    [
        ("run_id", pa.string()),
        ("ts", TS),
        ("kind", pa.string()),  # denial | breaker | state | kill_switch | warning
        ("code", pa.string()),  # stable reason code, e.g. MAX_POSITION_SIZE
        ("symbol", pa.string()),
        ("order_id", pa.int64()),
        ("message", pa.string()),
    ]
)

#: A live or paper run's broker executions (none for a backtest): one row per execution report, for the
#: attribution of live against backtest (:mod:`engine.live.attribution`). The live loop writes it from the IB
#: handler's ``FillRecord`` (``fill``, ``exec_id``, ``order_ref``, ``commission_estimate``) plus its clocks.
RUN_EXECUTIONS = pa.schema(
    [
        ("run_id", pa.string()),
        ("order_id", pa.int64()),  # the engine's order number (run_orders.order_id)
        ("exec_id", pa.string()),  # the broker's execution id (IB execId), unique per execution
        ("order_ref", pa.string()),  # the deterministic orderRef the order was journaled and sent under
        ("symbol", pa.string()),
        ("contract", pa.string()),  # the exchange contract (local symbol)
        ("decided_ts", TS),  # close of the bar the order was decided on (= run_orders.ts_submitted)
        ("sent_at", TS),  # wall clock when the order was handed to the broker (placeOrder)
        ("filled_at", TS),  # wall clock of the execution report (IB execution time)
        ("quantity", pa.int64()),  # signed contracts of this execution: + bought, - sold
        ("price", pa.float64()),  # execution price, raw contract price
        ("commission", pa.float64()),  # currency, the broker's commission report for this execution
        ("commission_estimate", pa.float64()),  # currency, the fee table's cost of the same execution
    ]
)

#: Metrics in long form: one row per (run, metric).
RUN_METRICS = pa.schema([("run_id", pa.string()), ("name", pa.string()), ("value", pa.float64())])

#: Ledger table name -> schema (directory ``runs/<name>``).
RUN_TABLES: dict[str, pa.Schema] = {
    "runs": RUNS,
    "run_orders": RUN_ORDERS,
    "run_fills": RUN_FILLS,
    "run_positions": RUN_POSITIONS,
    "run_equity": RUN_EQUITY,
    "run_trades": RUN_TRADES,
    "run_events": RUN_EVENTS,
    "run_metrics": RUN_METRICS,
    "run_executions": RUN_EXECUTIONS,
}


# -- broker order journal --------------------------------------------------------------------------------
# Append-only: ``<root>/order_journal/<ns>-<uuid>.parquet``, one file per batch, written atomically BEFORE
# the batch's orders are sent to the broker, so that a restart knows every order that may be out there.

#: One row per order handed to a broker, keyed by its deterministic ``order_ref`` (run/strategy/sequence).
ORDER_JOURNAL = pa.schema(
    [
        ("journaled_at", TS),
        ("order_ref", pa.string()),
        ("run_id", pa.string()),
        ("strategy", pa.string()),
        ("order_id", pa.int64()),
        ("broker", pa.string()),  # ib
        ("account", pa.string()),  # masked to its last 3 characters
        ("symbol", pa.string()),  # root, as the strategy names it
        ("contract", pa.string()),  # the exchange contract (local symbol)
        # the order's terms, typed as in run_orders (quantity signed: + buy, - sell)
        *(RUN_ORDERS.field(name) for name in ("quantity", "order_type", "tif", "limit_price", "stop_price", "expire_ts")),
        # linked orders: the bracket entry's order_id and the OCO group, as in run_orders (older files: null)
        *(RUN_ORDERS.field(name) for name in ("parent_id", "oca_group")),
    ]
)
