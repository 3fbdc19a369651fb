"""``qe live``: trade a strategy bar by bar from the same SQL a backtest runs, and the operator's commands.

``qe live --strategy module:Class --query-file q.sql [-p k=v] [-c live.toml] [--paper | --live]`` runs the
session (:mod:`engine.live.session`); ``status``, ``kill``, ``flatten``, ``reset``, ``rolls`` act on a running one from
another terminal; ``attribution`` compares a live or paper run with the backtest of the same bars.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

live_app = typer.Typer(rich_markup_mode=None, invoke_without_command=True,
                       help="Trade from the same SQL as a backtest (paper first); status, kill, flatten, reset, rolls.")


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
    new: Annotated[bool, typer.Option("--new", help="Start a new run instead of resuming this strategy's current one.")] = False,
) -> None:
    """Run a live (or paper) session; with a sub-command, act on the running one."""
    if ctx.invoked_subcommand is not None:
        return
    from engine.cli.main import _existing_warehouse
    from engine.live.command import run_live_command
    from warehouse.errors import QEError

    if paper and live_money:
        raise QEError("give one of --paper and --live")
    if strategy is None:
        raise QEError("qe live needs --strategy module:Class (and --query or --query-file)")
    if (query is None) == (query_file is None):
        raise QEError("give exactly one of --query and --query-file")
    text = query if query is not None else query_file.read_text(encoding="utf-8")
    run_live_command(_existing_warehouse(), strategy=strategy, query=text, params=param, config=config,
                     live=live_money, new=new)


# -- the operator's commands (another terminal; through the session's files, see engine.live.control) ---------
_RUN_OPTION = typer.Option("--run", "-r", help="The session's run id (default: the warehouse's newest session).")


def _session(run: str | None) -> Path:
    from engine.cli.main import _existing_warehouse
    from engine.live.control import find_session

    return find_session(_existing_warehouse().root, run)


def _say(text: str, style: str = "") -> None:
    from rich.text import Text

    from engine.cli.main import console

    console.print(Text(text, style=style), highlight=False, soft_wrap=True)


def _post_and_wait(directory: Path, kind: str, timeout: float, **args: str) -> None:
    """Post a command and print the session's answer; a command the session did not take is withdrawn."""
    from engine.live.control import post_command, read_status, stale_reason, wait_for_ack, withdraw_command
    from warehouse.errors import QEError

    command = post_command(directory, kind, **args)  # type: ignore[arg-type]
    ack = wait_for_ack(directory, command, timeout)
    if ack is None:
        withdrawn = withdraw_command(directory, command)
        try:
            status = read_status(directory)
            why = stale_reason(status) or f"state {status.state}"
        except QEError:
            why = "it has written no status yet"
        what = "withdrawn" if withdrawn else "taken by the session but not answered yet"
        raise QEError(f"the session did not answer {kind} within {timeout:g} s ({why}); the command was {what}")
    _say(f"{ack.kind}: {ack.result}", "" if ack.ok else "red")
    if not ack.ok:
        raise typer.Exit(1)


@live_app.command("status")
def status_command(
    run: Annotated[Optional[str], _RUN_OPTION] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status file's JSON (with a 'stale' field).")] = False,
) -> None:
    """State, positions, working orders, P&L today, risk state, last bar and connection of a session."""
    import json

    from engine.cli.main import console
    from engine.live.control import read_status, stale_reason
    from engine.live.panel import render_status

    status = read_status(_session(run))
    stale = stale_reason(status)
    if as_json:
        print(json.dumps({**status.model_dump(mode="json"), "stale": stale}, indent=2))
        return
    console.print(render_status(status, stale))


@live_app.command("flatten")
def flatten_command(
    symbol: Annotated[str, typer.Argument(help="The symbol (root) to flatten, e.g. MES.")],
    run: Annotated[Optional[str], _RUN_OPTION] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the session's answer.", min=0)] = 10.0,
) -> None:
    """Ask the session to cancel SYMBOL's working orders and close its position at market."""
    _post_and_wait(_session(run), "flatten", timeout, symbol=symbol)


@live_app.command("reset")
def reset_command(
    run: Annotated[Optional[str], _RUN_OPTION] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the session's answer.", min=0)] = 10.0,
) -> None:
    """Release the session's kill switch (or risk halt): it may send orders again."""
    _post_and_wait(_session(run), "reset", timeout)


@live_app.command("rolls")
def rolls_command(
    run: Annotated[Optional[str], _RUN_OPTION] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the session's answer.", min=0)] = 10.0,
) -> None:
    """Ask the session to rebuild its roots' roll table now (between bars), stream the next fronts and reload
    rolled features, as it does every day in the daily halt."""
    _post_and_wait(_session(run), "rolls", timeout)


@live_app.command("kill")
def kill_command(
    run: Annotated[Optional[str], _RUN_OPTION] = None,
    reason: Annotated[str, typer.Option(help="Why (recorded in the session's risk events).")] = "operator",
    now: Annotated[bool, typer.Option("--now", help="Go to IB at once; do not wait for the session first.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds the session has to answer before IB is called directly.", min=0)] = 5.0,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="The live configuration with the [ib] table (default: the session's).")] = None,
) -> None:
    """The kill switch: the session halts, cancels and flattens; if it does not answer, IB is told directly.

    The command is always posted, so that a stuck session halts as soon as it runs again. Without an answer
    in time (or with --now) this process connects to IB with the strategy's control client id, cancels every
    working order of the account (IB's global cancel) and flattens the session's contracts at market.
    """
    from engine.cli.main import _existing_warehouse
    from engine.live.control import (pid_alive, post_command, read_session, read_status, wait_for_ack,
                                     withdraw_command)
    from warehouse.errors import QEError

    root = _existing_warehouse().root
    directory = _session(run)
    info = read_session(directory)
    command = post_command(directory, "kill", reason=reason)
    gone = not pid_alive(info.pid)  # a dead session answers nothing: no point waiting
    ack = None if now or gone else wait_for_ack(directory, command, timeout)
    if ack is not None:
        _say(f"kill: {ack.result}", "" if ack.ok else "red")
        if ack.ok:
            return
    source = config or (Path(info.config) if info.config else None)
    if source is None:
        raise QEError("the session recorded no IB configuration to reach IB with; pass --config live.toml")
    if ack is not None:
        why = "the session could not complete its kill"
    else:
        why = ("--now" if now else f"the session's process {info.pid} is gone" if gone else
               f"the session did not answer within {timeout:g} s")
    _say(f"{why}: killing at IB directly", "bold red")
    try:
        extra = [p.contract for p in read_status(directory).positions.values() if p.contract]
    except QEError:
        extra = []
    from engine.adapters.ib.accounts import load_ib_config
    from engine.adapters.ib.emergency import run_emergency_kill
    from engine.adapters.ib.journal import OrderJournal

    report = run_emergency_kill(load_ib_config(source), info.strategy, info.run_id, live=info.kind == "live",
                                journal=OrderJournal(root), contracts=extra)
    for line in report.lines():
        _say(line)
    # the positions were closed at IB by another client: a session taking the queued kill now would flatten the
    # position it still believes in and open the opposite one. It is told to halt without flattening instead.
    if withdraw_command(directory, command):
        post_command(directory, "kill", reason=reason, flatten="no")
        _say("the session halts (without flattening again) when it takes the queued command")

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
