"""``qe demo``: the shipped sample data end to end, offline.

Ingests the real LEAN ES bars (with the Dec-2013 ESZ3 -> ESH4 roll) and the real Databento ESH1
fixtures, plus a deterministic SYNTHETIC five-root universe (a year of hourly bars), builds rolls,
continuous series and features, prints what a user wants to see first (coverage per root, the roll table,
a few queries), then backtests the composite signal on the synthetic roots and writes the HTML report.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pyarrow.parquet as pq
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from engine.cli.output import print_table
from engine.risk import RiskLimits
from engine.synthetic import synthetic_hourly_universe
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
    console.print("Sample data: real CME ES bars (LEAN), real Databento ESH1 fixtures, and a SYNTHETIC 5-root universe "
                  "(a year of hourly bars, seeded random walks, for the backtest).")
    synthetic = wh.root / "samples" / "synthetic_universe_1h.parquet"
    synthetic.parent.mkdir(parents=True, exist_ok=True)
    if not synthetic.exists():
        pq.write_table(synthetic_hourly_universe(), synthetic)
    reports = ingest(wh, [samples / "lean-es-cme", samples / "databento"]) + ingest(wh, [synthetic], timeframe="1h")
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
        "[bold]qe backtest -q \"SELECT * FROM bars_1h WHERE symbol = 'NQ'\" -p fast=10 -p slow=40 --capital 1000000[/bold], "
        "[bold]qe runs[/bold], [bold]qe report latest[/bold], [bold]qe ingest PATH[/bold]."
    )


def _demo_features(wh: Warehouse, console: Console) -> None:
    """Build the feature catalog on the 1-minute bars of every symbol and show a few columns."""
    from warehouse.features.materialize import build_features
    from warehouse.features.registry import build_registry

    registry = build_registry()
    if not registry.features:
        return
    for timeframe, bars in (("1m", "1-minute"), (DEMO_TIMEFRAME, "hourly")):
        report = build_features(wh, timeframe)
        console.print(
            f"Features: {len(registry.features)} catalog columns on {bars} bars, {len(report.built)} symbol(s) built, "
            f"{len(report.skipped)} unchanged ({report.rows:,} rows)."
        )
    wanted = [n for n in ("logret_1", "rsi_14", "rel_volume_20", "rv_cc_20", "atr_14", "adx_14", "minute_of_day", "is_rth")
              if n in registry.by_name]
    if wanted:
        query = (f"SELECT symbol, ts, {', '.join(wanted)} FROM features_1m WHERE symbol = 'ES' "
                 "AND ts >= '2013-12-18 14:30' ORDER BY ts LIMIT 8")
        console.print(f"[bold]A few features[/bold] (ratio-adjusted continuous ES):\n[cyan]{escape(query)}[/cyan]")
        print_table(wh.sql(query), console)


#: The demo account: 1,000,000 trading one or two contracts per root (what such an account would hold); risk
#: limits loosened from the house defaults (5 % of equity per position is less than one contract) to what
#: such an account could carry: half the equity per root, twice the equity in all, 2 % daily loss.
DEMO_CAPITAL = 1_000_000.0
DEMO_RISK = RiskLimits(max_single_position_pct=0.5, max_portfolio_exposure=2.0, max_correlated_exposure=0.6,
                       max_daily_loss=0.02)
#: The signal is traded as round(signal * 2) contracts (fixed sizing): the position changes when the signal
#: crosses +-0.25 or +-0.75, not on every wiggle of a volatility estimate. Chosen for a plausible trade count,
#: not for profit (it loses money on the synthetic data, mostly to costs).
DEMO_SIGNAL_PARAMS = {"sizing": "fixed", "max_contracts": 2}
DEMO_TIMEFRAME = "1h"
#: The universe is chosen with SQL: the SYNTHETIC roots, which have a year of hourly bars (long enough for
#: annualized metrics; the real ES hourly bars are 15 trading dates, years apart).
DEMO_UNIVERSE = "SELECT DISTINCT symbol FROM contract_bars_1h WHERE source LIKE '%synthetic%'"


def run_summary(m: dict[str, float]) -> str:
    """The run in two lines a trader reads first: activity and costs beside gross P&L, then the ratios."""
    from engine.results.metrics import annualized_note, gross_pnl

    days, trades = int(m["trading_days"]), int(m["trades"])
    gross = gross_pnl(m).get("gross_pnl", float("nan"))
    sharpe = annualized_note(m) or f"{m['sharpe']:.2f}"
    return (f"{trades:,} closed trades in {days:,} trading dates; gross P&L {gross:,.2f}, commissions "
            f"{m['commissions']:,.2f}, slippage {m['slippage']:,.2f}, net P&L {m['net_pnl']:,.2f} "
            f"({m['total_return']:+.2%})\nSharpe {sharpe}, max drawdown {m['max_drawdown']:.2%}, "
            f"costs {(m['commissions'] + m['slippage']) / max(abs(m['final_equity'] - m['net_pnl']), 1):.2%} of the "
            "initial capital")


def _demo_backtest(wh: Warehouse, console: Console) -> None:
    """The composite signal on a SQL-selected multi-root universe through the risk manager, with its report."""
    from engine.backtest.run import BacktestConfig, run_backtest
    from engine.results.ledger import load_run
    from engine.results.report import write_report
    from engine.signals.generators import signal_query
    from engine.strategies.signal_follower import SignalFollower

    composite = signal_query("composite", DEMO_TIMEFRAME, params=DEMO_SIGNAL_PARAMS)
    query = f"SELECT * FROM (\n{composite}\n) AS s\nWHERE s.symbol IN ({DEMO_UNIVERSE})\nORDER BY s.ts, s.symbol"
    console.print(
        "[bold]Portfolio backtest[/bold]: the composite of the four signal generators (momentum, mean reversion, "
        f"breakout, volatility regime; SQL over features_{DEMO_TIMEFRAME}) on hourly bars, held as round(signal x 2) "
        f"contracts, on the universe [cyan]{escape(DEMO_UNIVERSE)}[/cyan] (SYNTHETIC sample roots), through the risk "
        f"manager (an account of {DEMO_CAPITAL:,.0f}: at most half of it per root, twice it in all, 2 % daily loss), "
        "next-bar-open fills, 1-tick slippage, fees and margins from the contract tables. See the query with "
        f"[bold]qe signals show composite -t {DEMO_TIMEFRAME}[/bold]."
    )
    config = BacktestConfig(initial_capital=DEMO_CAPITAL, slippage={"model": "fixed", "ticks": 1}, risk=DEMO_RISK)
    result = run_backtest(wh, query, SignalFollower(), config)
    bars = int(result.timings["bars"])
    console.print(Text(f"Run {result.run_id}: {bars:,} bars of {', '.join(result.symbols)}; "
                       f"event loop {result.timings['loop_s'] / max(bars, 1) * 1e6:.2f} µs/bar."))
    console.print(Text(run_summary(result.metrics)))
    print_table(
        wh.sql(
            "SELECT symbol, kind, count(*) AS fills, sum(abs(quantity)) AS contracts, round(sum(commission), 2) AS commission, "
            "round(sum(realized_pnl), 2) AS realized FROM run_fills WHERE run_id = $run GROUP BY ALL ORDER BY ALL",
            {"run": result.run_id},
        ),
        console,
        title="Fills by symbol and kind (rolls traded at the roll table's prices)",
    )
    events = wh.sql(
        "SELECT kind, code, count(*) AS events, count(DISTINCT symbol) AS symbols, min(ts) AS first, "
        "any_value(message) AS example FROM run_events WHERE run_id = $run GROUP BY ALL ORDER BY kind, events DESC",
        {"run": result.run_id},
    )
    if events.num_rows:
        print_table(events, console, title="Risk denials, breakers and state changes, grouped by reason")
    else:
        console.print("No risk denials, breakers or state changes: every order was within the limits.")
    run, tables, metrics = load_run(wh, result.run_id)
    path = write_report(wh.root / "reports" / f"{result.run_id}.html", run, tables, metrics)
    console.print(f"HTML report (open it in a browser, works offline): [bold]{escape(str(path))}[/bold]")
