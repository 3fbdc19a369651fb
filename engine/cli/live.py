"""``qe live``: trade a strategy bar by bar from the same SQL a backtest runs, and the operator's commands.

``qe live --strategy module:Class --query-file q.sql [-p k=v] [-c live.toml] [--paper | --live]`` runs the
session (:mod:`engine.live.session`); ``status``, ``kill``, ``flatten``, ``reset`` act on a running one from
another terminal; ``attribution`` compares a live or paper run with the backtest of the same bars.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

live_app = typer.Typer(rich_markup_mode=None, invoke_without_command=True,
                       help="Trade from the same SQL as a backtest (paper first); status, kill, flatten, reset.")


@live_app.callback()
def live(
    ctx: typer.Context,
    strategy: Annotated[Optional[str], typer.Option("--strategy", "-s", help="module:Class or file.py:Class.")] = None,
    query: Annotated[Optional[str], typer.Option("--query", "-q", help="The backtest's SELECT (bars joined with features and signals).")] = None,
    query_file: Annotated[Optional[Path], typer.Option("--query-file", help="Read the query from a file.")] = None,
    param: Annotated[Optional[list[str]], typer.Option("--param", "-p", help="Strategy parameter key=value (repeatable).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML live configuration (strict): [ib], [live], [backtest.risk] ...")] = None,
    paper: Annotated[bool, typer.Option("--paper", help="Trade the paper account (the default).")] = False,
    live_money: Annotated[bool, typer.Option("--live", help="Trade the live account: real money.")] = False,
) -> None:
    """Run a live (or paper) session; with a sub-command, act on the running one."""
    if ctx.invoked_subcommand is not None:
        return
    from engine.cli.main import _existing_warehouse
    from engine.live.session import run_live_command
    from warehouse.errors import QEError

    if paper and live_money:
        raise QEError("give one of --paper and --live")
    if strategy is None:
        raise QEError("qe live needs --strategy module:Class (and --query or --query-file)")
    if (query is None) == (query_file is None):
        raise QEError("give exactly one of --query and --query-file")
    text = query if query is not None else query_file.read_text(encoding="utf-8")
    run_live_command(_existing_warehouse(), strategy=strategy, query=text, params=param, config=config,
                     live=live_money)


#: The per-order columns ``qe live attribution`` prints (``--json`` gives every column).
ATTRIBUTION_COLUMNS = ("decided_ts", "symbol", "quantity", "order_type", "signal", "live_order_id",
                       "backtest_order_id", "live_filled", "backtest_filled", "live_price", "backtest_price",
                       "price_diff", "slippage", "live_commission", "backtest_commission", "commission_diff",
                       "send_latency_ms", "fill_latency_ms", "pnl_gap")


@live_app.command("attribution")
def attribution(
    run_id: Annotated[str, typer.Argument(help="A live or paper run id (or 'latest').")],
    record: Annotated[bool, typer.Option("--record/--no-record", help="Record the replayed backtest as a run of kind 'attribution' (the run_attribution view shows it).")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary and every order as JSON.")] = False,
    limit: Annotated[int, typer.Option(help="Orders shown in the table.")] = 200,
) -> None:
    """A live or paper run against the backtest of the same strategy, query and bars: order by order
    (signal, slippage, latency, commission) and the P&L gap split by cause."""
    import json

    from engine.cli.main import _existing_warehouse, console
    from engine.cli.output import format_cell, print_table
    from engine.live.attribution import CAUSES, attribute
    from rich.table import Table
    from rich.text import Text

    result = attribute(_existing_warehouse(), run_id, record=record)
    summary = result.summary()
    if as_json:
        payload = {**summary, "orders": result.orders.to_pylist()}
        console.print_json(json.dumps(payload, default=str))
        return
    counts = summary["orders"]
    print_table(result.orders.select(list(ATTRIBUTION_COLUMNS)), console, limit=limit,
                title=f"Orders: live {result.live_run_id} vs backtest {result.backtest_run_id} "
                      f"({counts['equal']} equal, {counts['only_live']} only live, "
                      f"{counts['only_backtest']} only backtest)")
    gap = Table(title=Text("P&L gap by cause (live - backtest)"), header_style="bold")
    gap.add_column(Text("cause"))
    gap.add_column(Text("currency"), justify="right")
    rows = [("live P&L", result.live_pnl), ("backtest P&L", result.backtest_pnl), ("gap", result.gap),
            *((cause, result.effects[cause]) for cause in CAUSES)]
    for name, value in rows:
        gap.add_row(Text(name), Text(format_cell(round(value, 6))))
    console.print(gap)
    if summary["latency_ms_median"] is not None:
        console.print(f"latency bar close -> filled: median {format_cell(summary['latency_ms_median'])} ms, "
                      f"max {format_cell(summary['latency_ms_max'])} ms", markup=False)
