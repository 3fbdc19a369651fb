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
