"""``qe demo``: the shipped sample data end to end, offline.

Ingests the real LEAN ES bars (with the Dec-2013 ESZ3 -> ESH4 roll) and the real Databento ESH1
fixtures, plus a deterministic SYNTHETIC five-root universe, builds rolls and continuous series, and
prints what a user wants to see first: coverage per root, the roll table, and a few queries.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pyarrow.parquet as pq
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from engine.output import print_table
from engine.risk import RiskLimits
from engine.synthetic import synthetic_universe
from loaders.ingest import ingest
from warehouse import Warehouse
from warehouse.lock import holds_write_lock


def sample_data_dir() -> Path:
    """Directory of the real sample data shipped as package data."""
    return Path(str(resources.files("engine").joinpath("sample_data")))


@holds_write_lock  # ingest, rolls, features and the recorded backtest as one writer
def run_demo(wh: Warehouse, console: Console) -> None:
    """Run the demo against ``wh`` (idempotent: a second run changes nothing)."""
    samples = sample_data_dir()
    console.print(Text.assemble(("quant-engine demo", "bold"), f" — warehouse {wh.root}"))
    console.print("Sample data: real CME ES bars (LEAN), real Databento ESH1 fixtures, and a SYNTHETIC 5-root universe.")
    synthetic = wh.root / "samples" / "synthetic_universe.parquet"
    synthetic.parent.mkdir(parents=True, exist_ok=True)
    if not synthetic.exists():
        pq.write_table(synthetic_universe(), synthetic)
    reports = ingest(wh, [samples / "lean-es-cme", samples / "databento", synthetic])
    failed = [r for r in reports if r.error]
    loaded = sum(r.rows_loaded for r in reports)
    unchanged = sum(r.rows_unchanged for r in reports)
    quarantined = sum(r.rows_quarantined for r in reports)
    console.print(
        f"Ingested {len(reports)} files: {loaded:,} rows loaded, {unchanged:,} already present, "
        f"{quarantined:,} quarantined, {len(failed)} unreadable."
    )
    for r in failed:
        console.print(Text(f"  {r.error}", style="red"))

    print_table(
        wh.sql(
            """
            WITH all_bars AS (
                SELECT '1m' AS timeframe, * FROM contract_bars_1m UNION ALL
                SELECT '1h', * FROM contract_bars_1h UNION ALL
                SELECT '1d', * FROM contract_bars_1d UNION ALL
                SELECT '1s', * FROM contract_bars_1s
            )
            SELECT symbol, timeframe, count(DISTINCT contract) AS contracts, count(*) AS bars,
                   CAST(min(ts) AS DATE) AS first_day, CAST(max(ts) AS DATE) AS last_day,
                   CASE WHEN bool_or(source LIKE '%synthetic%') THEN 'SYNTHETIC' ELSE 'real' END AS data
            FROM all_bars GROUP BY symbol, timeframe ORDER BY data, symbol, timeframe
            """
        ),
        console,
        title="Coverage per root and timeframe",
    )
    print_table(
        wh.sql(
            """
            SELECT symbol, roll_ts, signal_date, from_contract, to_contract, from_price, to_price,
                   round(to_price - from_price, 4) AS spread, rule, basis_timeframe AS price_basis
            FROM rolls ORDER BY symbol, roll_ts
            """
        ),
        console,
        title="Rolls (volume crossover, effective at the next session open)",
    )
    query = """SELECT trading_date, contract, open, high, low, close, volume
FROM session_bars_1d WHERE symbol = 'ES' AND trading_date BETWEEN '2013-12-01' AND '2013-12-21'
ORDER BY trading_date"""
    console.print(f"[bold]Sample query[/bold] (CME session bars of the continuous ES, raw prices):\n[cyan]{escape(query)}[/cyan]")
    print_table(wh.sql(query), console)
    query = """SELECT r.ts, r.contract, r.close AS raw_close, a.close AS ratio_adjusted, d.close AS diff_adjusted
FROM bars_1d r JOIN bars_1d_adj_ratio a USING (symbol, ts) JOIN bars_1d_adj_diff d USING (symbol, ts)
WHERE r.symbol = 'ES' AND r.ts BETWEEN '2013-12-10' AND '2013-12-19' ORDER BY r.ts"""
    console.print(f"[bold]Back-adjusted vs raw around the ESZ3 -> ESH4 roll[/bold]:\n[cyan]{escape(query)}[/cyan]")
    print_table(wh.sql(query), console)
    _demo_features(wh, console)
    _demo_backtest(wh, console)
    console.print(
        "Next: [bold]qe sql \"SELECT * FROM features_1m LIMIT 10\"[/bold], [bold]qe features list[/bold], "
        "[bold]qe backtest -q \"SELECT * FROM bars_1m WHERE symbol = 'ES'\" -p fast=10 -p slow=40 --capital 10000000[/bold], "
        "[bold]qe runs[/bold], [bold]qe report latest[/bold], [bold]qe ingest PATH[/bold]."
    )


def _demo_features(wh: Warehouse, console: Console) -> None:
    """Build the feature catalog on the 1-minute bars of every symbol and show a few columns."""
    from warehouse.features.materialize import build_features
    from warehouse.features.registry import build_registry

    registry = build_registry()
    if not registry.features:
        return
    report = build_features(wh, "1m", registry=registry)
    console.print(
        f"Features: {len(registry.features)} catalog columns on 1-minute bars, {len(report.built)} symbol(s) built, "
        f"{len(report.skipped)} unchanged ({report.rows:,} rows)."
    )
    wanted = [n for n in ("logret_1", "rsi_14", "rel_volume_20", "rv_cc_20", "atr_14", "adx_14", "minute_of_day", "is_rth")
              if n in registry.by_name]
    if wanted:
        query = (f"SELECT symbol, ts, {', '.join(wanted)} FROM features_1m WHERE symbol = 'ES' "
                 "AND ts >= '2013-12-18 14:30' ORDER BY ts LIMIT 8")
        console.print(f"[bold]A few features[/bold] (ratio-adjusted continuous ES):\n[cyan]{escape(query)}[/cyan]")
        print_table(wh.sql(query), console)


#: The demo account: 10,000,000 with the house risk limits, except a tight 0.3 % daily loss limit so the
#: loss breaker has something to do on ten sessions of data.
DEMO_CAPITAL = 10_000_000.0
DEMO_RISK = RiskLimits(max_daily_loss=0.003)
#: The universe is chosen with SQL: every root of the five correlation groups, on the 2024 sessions of the
#: sample data (the SYNTHETIC five-root universe; the real ES bars are years apart and would be held across
#: the gap).
DEMO_UNIVERSE = "SELECT root FROM contracts WHERE correlation_group IN ('equity_index', 'energy', 'metals', 'bonds', 'currencies')"
DEMO_START = "2024-01-01"


def _demo_backtest(wh: Warehouse, console: Console) -> None:
    """The composite signal on a SQL-selected multi-root universe through the risk manager, with its report."""
    from engine.backtest import BacktestConfig, run_backtest
    from engine.ledger import load_run
    from engine.report import write_report
    from engine.signals import signal_query
    from engine.strategies.signal_follower import SignalFollower

    composite = signal_query("composite", "1m", params={"capital": DEMO_CAPITAL, "max_contracts": 3})
    query = (f"SELECT * FROM (\n{composite}\n) AS s\nWHERE s.symbol IN ({DEMO_UNIVERSE}) AND s.ts >= '{DEMO_START}'\n"
             "ORDER BY s.ts, s.symbol")
    console.print(
        "[bold]Portfolio backtest[/bold]: the composite of the four signal generators (momentum, mean reversion, "
        "breakout, volatility regime; SQL over features_1m, volatility-scaled targets of at most 3 contracts) on the "
        f"universe [cyan]{DEMO_UNIVERSE}[/cyan] from {DEMO_START} (SYNTHETIC sample roots), through the risk manager (house limits on "
        f"{DEMO_CAPITAL:,.0f}, daily loss limit 0.3 %), next-bar-open fills, 1-tick slippage, fees and margins from "
        "the contract tables. See the query with [bold]qe signals show composite[/bold]."
    )
    config = BacktestConfig(initial_capital=DEMO_CAPITAL, slippage={"model": "fixed", "ticks": 1}, risk=DEMO_RISK)
    result = run_backtest(wh, query, SignalFollower(), config)
    m = result.metrics
    bars = int(result.timings["bars"])
    console.print(
        f"Run {result.run_id}: {bars:,} bars of {', '.join(result.symbols)}; total return {m['total_return']:+.2%}, "
        f"Sharpe {m['sharpe']:.2f}, max drawdown {m['max_drawdown']:.2%}, {int(m['trades'])} trades, commissions "
        f"{m['commissions']:,.2f}, slippage {m['slippage']:,.2f}; event loop "
        f"{result.timings['loop_s'] / max(bars, 1) * 1e6:.2f} µs/bar."
    )
    print_table(
        wh.sql(
            "SELECT symbol, kind, count(*) AS fills, sum(abs(quantity)) AS contracts, round(sum(commission), 2) AS commission, "
            "round(sum(realized_pnl), 2) AS realized FROM run_fills WHERE run_id = $run GROUP BY ALL ORDER BY ALL",
            {"run": result.run_id},
        ),
        console,
        title="Fills by symbol and kind (rolls traded at the roll table's prices)",
    )
    print_table(
        wh.sql(
            "SELECT kind, code, count(*) AS events, count(DISTINCT symbol) AS symbols, min(ts) AS first, "
            "any_value(message) AS example FROM run_events WHERE run_id = $run GROUP BY ALL ORDER BY kind, events DESC",
            {"run": result.run_id},
        ),
        console,
        title="Risk denials, breakers and state changes, grouped by reason",
    )
    run, tables, metrics = load_run(wh, result.run_id)
    path = write_report(wh.root / "reports" / f"{result.run_id}.html", run, tables, metrics)
    console.print(f"HTML report (open it in a browser, works offline): [bold]{escape(str(path))}[/bold]")
