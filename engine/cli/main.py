"""The ``qe`` command line: one verb per command, one error handler.

Expected errors (:class:`warehouse.errors.QEError`, bad options) print ``Error: <one line>`` and exit 1;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from warehouse.errors import QEError

# rich_markup_mode=None: help is printed as written ("[backtest.risk]" is text, not markup) and flags show no
# value placeholder (rich help shows "--debug <bool>").
app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="quant-engine: futures bars, SQL features, backtests.")
rolls_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Roll tables and continuous series.")
app.add_typer(rolls_app, name="rolls")
features_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                           help="The feature catalog as SQL: build, list, show, lineage.")
app.add_typer(features_app, name="features")

def _mount_signals() -> None:
    from engine.cli.signals import signals_app

    app.add_typer(signals_app, name="signals", help="Signal generators as SQL: list, params, show, build.")


_mount_signals()


def _mount_live() -> None:
    from engine.cli.live import live_app

    app.add_typer(live_app, name="live")


_mount_live()

def _consoles() -> tuple[Console, Console]:
    from engine.cli.output import make_console

    return make_console(), make_console(stderr=True)


console, err_console = _consoles()


class _State:
    warehouse: Optional[str] = None
    debug: bool = False


state = _State()


@app.callback()
def _main(
    warehouse: Annotated[Optional[str], typer.Option("--warehouse", "-w", help="Warehouse directory (default $QE_WAREHOUSE or ./qe_data).")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    lock_timeout: Annotated[Optional[float], typer.Option(
        "--lock-timeout", min=0,
        help="Seconds a writing command waits for the warehouse write lock (default $QE_LOCK_TIMEOUT or 600).")] = None,
) -> None:
    from warehouse import lock

    state.warehouse = warehouse
    state.debug = debug
    lock.set_default_timeout(lock_timeout)
    lock.set_command(_command_label(sys.argv[1:]))


_GROUPS = ("rolls", "features", "signals", "live")
_VALUED_OPTIONS = ("--warehouse", "-w", "--lock-timeout")


def _command_label(argv: list[str]) -> str:
    """``qe ingest`` / ``qe features build``: what a lock holder is, for a waiting writer's message."""
    words: list[str] = []
    skip = False
    for arg in argv:
        if skip or arg.startswith("-"):
            skip = not skip and arg in _VALUED_OPTIONS
            continue
        words.append(arg)
        if len(words) == 2 or words[0] not in _GROUPS:
            break
    return " ".join(["qe", *words])


def _warehouse():  # noqa: ANN202
    from warehouse import Warehouse

    return Warehouse(state.warehouse)


def _existing_warehouse():  # noqa: ANN202
    """The warehouse of a command that reads it: one that is not there is an error, never created empty."""
    from warehouse.coverage import missing_warehouse_message
    from warehouse.layout import resolve_root

    root = resolve_root(state.warehouse)
    if not root.is_dir():
        raise QEError(missing_warehouse_message(root))
    return _warehouse()


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or directories (DBN, LEAN zip, CSV, Parquet).")],
    timeframe: Annotated[Optional[str], typer.Option("--timeframe", "-t", help="1s|1m|1h|1d; overrides what the file implies.")] = None,
    fmt: Annotated[Optional[str], typer.Option("--format", "-f", help="dbn|lean|csv|parquet; overrides detection.")] = None,
) -> None:
    """Load bar files into the warehouse: validate, quarantine bad rows, write partitions atomically."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from loaders.detect import expand_paths
    from loaders.ingest import ingest as run_ingest

    wh = _warehouse()
    files = expand_paths(list(paths))
    with Progress(
        TextColumn("[bold]ingest"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.description}"),
        console=err_console, transient=True, disable=not err_console.is_terminal,
    ) as progress:
        task = progress.add_task("", total=len(files))
        reports = run_ingest(wh, files, timeframe=timeframe, fmt=fmt,
                             on_file=lambda r: progress.update(task, advance=1, description=Path(r.path).name))
    _print_ingest_summary(reports)
    failed = [r for r in reports if r.error]
    if len(failed) == 1:
        raise QEError(_failure_line(failed[0]))
    if failed:
        # One plain line per file (a table cell may be wrapped), then the count as the final line.
        for r in failed:
            _print_error(_failure_line(r))
        not_written = sum(r.failed_at == "write" for r in failed)
        counts = [f"{n} of {len(reports)} file(s) could not be {verb}"
                  for n, verb in ((len(failed) - not_written, "read"), (not_written, "written")) if n]
        raise QEError("; ".join(counts))


def _failure_line(report) -> str:  # noqa: ANN001
    """``<path>: <reason>`` of a file that failed (readers' messages already start with the path)."""
    error = str(report.error)
    return error if error.startswith(report.path) else f"{report.path}: {error}"


def _print_ingest_summary(reports) -> None:  # noqa: ANN001
    table = Table(title="Ingest summary", show_lines=False)
    for col in ("file", "format", "read", "loaded", "unchanged", "quarantined (by rule)"):
        table.add_column(col, justify="right" if col in ("read", "loaded", "unchanged") else "left")
    for r in reports:
        name = _short(r.path)
        if r.error:
            what = "not written" if r.failed_at == "write" else "not read"
            table.add_row(Text(name), r.format or "?", "-", "-", "-", Text(f"{what}: {r.error.split(': ', 1)[-1]}", style="red"))
            continue
        rules = ", ".join(f"{rule} {n}" for rule, n in sorted(r.quarantined.items())) or "0"
        table.add_row(Text(name), r.format, f"{r.rows_read:,}", f"{r.rows_loaded:,}", f"{r.rows_unchanged:,}", Text(rules))
    console.print(table)
    for r in reports:
        for note in r.notes:
            if not note.startswith("DBN v"):  # the decoder's header line is detail, not news
                console.print(f"  {_short(r.path)}: {note}", highlight=False, markup=False)
    total_q = sum(r.rows_quarantined for r in reports)
    console.print(
        f"{sum(r.rows_loaded for r in reports):,} rows loaded, {sum(r.rows_unchanged for r in reports):,} unchanged, "
        f"{total_q:,} quarantined" + ("  (see: qe sql \"SELECT * FROM quarantine\")" if total_q else "")
    )


def _short(path: str) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return path


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="A SQL query over the warehouse views.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="table|csv|json|parquet")] = "table",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write to this file instead of stdout.")] = None,
    limit: Annotated[int, typer.Option(help="Rows shown in table format.")] = 50,
) -> None:
    """Run ad-hoc SQL against every warehouse view."""
    import duckdb

    from engine.cli.output import write_result

    from warehouse.coverage import has_bars, unbuilt_features, unbuilt_features_message

    wh = _existing_warehouse()
    try:
        result = wh.sql(query)
    except duckdb.Error as exc:
        unbuilt = unbuilt_features(wh.root, query)
        if unbuilt:  # the binder names a feature column; the cause is the missing build
            raise QEError(f"{unbuilt_features_message(unbuilt)} (SQL error: {sql_error_text(exc)})") from exc
        raise QEError(f"SQL error: {sql_error_text(exc)}") from exc
    write_result(result, fmt, out, console, limit)
    if not has_bars(wh.root):  # on stderr: a csv/json answer on stdout stays clean
        err_console.print(f"note: the warehouse {wh.root} holds no bars yet (load some with qe ingest PATH or qe demo; "
                          "another warehouse: --warehouse DIR or QE_WAREHOUSE)", markup=False, highlight=False)


def sql_error_text(exc: Exception) -> str:
    """DuckDB's message on one line, with its hints (``Did you mean "bars_1m_adj_ratio"?``) kept.

    The ``LINE 1: ...`` excerpt and its caret line are dropped: they only make sense on their own lines.
    """
    lines = [line.strip() for line in str(exc).splitlines()]
    kept = [line for line in lines if line and not line.startswith("LINE ") and set(line) != {"^"}]
    return " ".join(kept)


@app.command()
def contracts() -> None:
    """List contract specifications (tick, multiplier, hours, margins and fees in effect today)."""
    import tempfile

    from engine.cli.output import print_table
    from warehouse import Warehouse
    from warehouse.layout import resolve_root

    # The specs ship with the code: they need no warehouse, and listing them must not create one.
    scratch = None if resolve_root(state.warehouse).is_dir() else tempfile.TemporaryDirectory()
    wh = Warehouse(scratch.name) if scratch else _warehouse()
    print_table(
        wh.sql(
            """
            SELECT c.root, c.ib_exchange AS exchange, c.databento_venue AS venue, c.currency, c.tick_size,
                   c.tick_value, c.multiplier, c.rth_open_et || '-' || c.rth_close_et AS rth_et,
                   c.correlation_group AS "group", c.contract_months AS months, c.expiry_rule,
                   CAST(m.initial_margin AS DECIMAL(18, 2)) AS initial_margin,
                   CAST(m.maintenance_margin AS DECIMAL(18, 2)) AS maintenance_margin,
                   CAST(f.total_per_side AS DECIMAL(18, 2)) AS fees_per_side
            FROM contracts c
            LEFT JOIN (SELECT root, arg_max(initial_margin, effective_date) AS initial_margin,
                              arg_max(maintenance_margin, effective_date) AS maintenance_margin
                       FROM margins WHERE effective_date <= current_date GROUP BY root) m USING (root)
            LEFT JOIN (SELECT root, arg_max(total_per_side, effective_date) AS total_per_side
                       FROM fees WHERE effective_date <= current_date GROUP BY root) f USING (root)
            ORDER BY c.correlation_group, c.root
            """
        ),
        console,
        title="Contracts (margins and fees in effect today)",
    )


@rolls_app.command("build")
def rolls_build(
    rule: Annotated[Optional[str], typer.Option("--rule", help="volume | open_interest | expiry:N | databento")] = None,
    symbols: Annotated[Optional[list[str]], typer.Option("--symbols", "-s", help="Roots to rebuild (default all).")] = None,
) -> None:
    """Recompute the roll table and continuous series with a rule."""
    from engine.cli.output import print_table
    from warehouse.coverage import check_symbols_known
    from warehouse.errors import MissingEvidenceError
    from warehouse.rolls import build_rolls

    wh = _existing_warehouse()
    check_symbols_known(wh.root, symbols)
    try:
        table = build_rolls(wh, symbols=symbols, rule=rule)
    except MissingEvidenceError as exc:
        # The roots with evidence were built: show them, then fail (exit 1) naming the refused roots.
        if exc.built.num_rows:
            print_table(exc.built, console, title=f"Rolls ({exc.built.num_rows})")
        raise
    print_table(table, console, title=f"Rolls ({table.num_rows})")


@rolls_app.command("show")
def rolls_show(
    symbols: Annotated[Optional[list[str]], typer.Option("--symbols", "-s", help="Roots to show (default all).")] = None,
) -> None:
    """Show the roll table."""
    from engine.cli.output import print_table

    wh = _existing_warehouse()
    rows = wh.sql("SELECT * FROM rolls ORDER BY symbol, roll_ts")
    if symbols:
        import pyarrow.compute as pc

        rows = rows.filter(pc.is_in(rows["symbol"], value_set=__import__("pyarrow").array(symbols)))
    print_table(rows, console, title="Rolls")


@features_app.command("build")
def features_build(
    timeframe: Annotated[str, typer.Option("--timeframe", "-t", help="1m|1h|1d")] = "1m",
    symbols: Annotated[Optional[list[str]], typer.Option("--symbols", "-s", help="Symbols (default all).")] = None,
    full: Annotated[bool, typer.Option("--full", help="Recompute every symbol, changed or not.")] = False,
) -> None:
    """Materialize the features to Parquet (only symbols whose bars changed, unless --full; a symbol whose bars
    changed only from some trading date on gets just the rows from that date, from a bounded tail)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from warehouse.features.materialize import build_features

    wh = _existing_warehouse()
    with Progress(
        TextColumn(f"[bold]features {timeframe}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.description}"), console=err_console, transient=True, disable=not err_console.is_terminal,
    ) as progress:
        task = progress.add_task("", total=None)
        report = build_features(
            wh, timeframe, symbols=symbols, full=full,
            on_symbol=lambda sym, done, total: progress.update(task, completed=done, total=total, description=sym),
        )
    console.print(
        f"features_{timeframe}: built {len(report.built)} symbol(s) ({report.rows:,} rows; "
        f"{report.partitions_written} partition(s) written, {report.partitions_unchanged} unchanged; "
        f"{len(report.tail)} from a bounded tail, only their changed rows), "
        f"{len(report.skipped)} unchanged symbol(s) skipped"
    )


@features_app.command("list")
def features_list() -> None:
    """Every feature: name, family, type, window, warm-up and description."""
    import pyarrow as pa

    from engine.cli.output import print_table
    from warehouse.features.registry import build_registry

    registry = build_registry()
    rows = [
        {"#": i, "name": f.name, "family": f.family, "type": f.type, "window": f.window, "warm_up": f.warmup,
         "description": f.description}
        for i, f in enumerate(registry.features, start=1)
    ]
    print_table(pa.Table.from_pylist(rows) if rows else pa.table({"name": pa.array([], pa.string())}), console,
                title="Features", limit=1000)


@features_app.command("show")
def features_show(
    name: Annotated[str, typer.Argument(help="Feature name.")],
    timeframe: Annotated[str, typer.Option("--timeframe", "-t", help="1m|1h|1d: the bars the SQL reads.")] = "1m",
) -> None:
    """The rendered SQL of the family that computes NAME, and its lineage."""
    from rich.syntax import Syntax

    from warehouse.features.registry import build_registry

    registry = build_registry(timeframe=timeframe)
    spec = registry.spec(name)
    console.print(f"[bold]{spec.name}[/bold] ({spec.family}, {spec.type}; window {spec.window}; warm-up {spec.warmup})")
    console.print(spec.description, markup=False, highlight=False)
    console.print(f"reads: {', '.join(registry.lineage(name)) or '-'}   template: sql/{spec.template}")
    console.print(Syntax(registry.family_of(name).sql, "sql", word_wrap=True))


@features_app.command("lineage")
def features_lineage(name: Annotated[str, typer.Argument(help="Feature name.")]) -> None:
    """Which of open, high, low, close, volume, ts feature NAME reads."""
    from warehouse.features.registry import build_registry

    registry = build_registry()
    console.print(f"{name}: {', '.join(registry.lineage(name)) or '-'}", markup=False, highlight=False)


@app.command()
def download(
    roots: Annotated[list[str], typer.Argument(help="Roots, e.g. ES NQ CL.")],
    start: Annotated[str, typer.Option(help="First day, YYYY-MM-DD.")],
    end: Annotated[str, typer.Option(help="Day after the last, YYYY-MM-DD.")],
    schema: Annotated[list[str], typer.Option("--schema", help="ohlcv-1m|ohlcv-1h|ohlcv-1d|definition (repeatable)")] = ["ohlcv-1m"],  # noqa: B006
    rank: Annotated[int, typer.Option(help="Continuous rank (0 = front).")] = 0,
    roll_rule: Annotated[str, typer.Option("--roll-rule", help="Databento continuous rule: v (volume), n (open interest), c (calendar).")] = "v",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before spending money.")] = False,
) -> None:
    """Download GLBX.MDP3 continuous bars from Databento (shows the cost first), then ingest them."""
    from loaders.download import DatabentoClient, DownloadPlan, run_download

    wh = _warehouse()
    plan = DownloadPlan.create(roots=roots, start=start, end=end, schemas=schema, rank=rank, roll_rule=roll_rule)
    run_download(wh, DatabentoClient.from_environment(), plan, confirm=None if yes else _confirm, console=console)


def _confirm(message: str) -> bool:
    if not sys.stdin.isatty():
        raise QEError("download needs confirmation; run it in a terminal or pass --yes")
    return typer.confirm(message)


@app.command()
def backtest(
    query: Annotated[Optional[str], typer.Option("--query", "-q", help="SELECT returning symbol, ts, open, high, low, close (+ volume, contract, features).")] = None,
    query_file: Annotated[Optional[Path], typer.Option("--query-file", help="Read the query from a file.")] = None,
    strategy: Annotated[str, typer.Option("--strategy", "-s", help="module:Class or file.py:Class (or a function).")] = "engine.strategies.sma_cross:SmaCross",
    param: Annotated[Optional[list[str]], typer.Option("--param", "-p", help="Strategy parameter key=value (repeatable).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML/JSON run configuration (strict).")] = None,
    timeframe: Annotated[Optional[str], typer.Option("--timeframe", "-t", help="Bar length; inferred from the query's views when omitted.")] = None,
    fill: Annotated[Optional[str], typer.Option("--fill", help="next_open (default) or signal_close.")] = None,
    capital: Annotated[Optional[float], typer.Option("--capital", help="Initial capital.")] = None,
    report: Annotated[Optional[Path], typer.Option("--report", help="HTML report path (default <warehouse>/reports/<run>.html).")] = None,
    signal: Annotated[Optional[str], typer.Option("--signal", help="Vectorized path: the query's target-position column (no strategy, no risk checks).")] = None,
) -> None:
    """Run a strategy over the bars a SQL query returns; record the run and write its HTML report."""
    from engine.backtest.run import run_backtest
    from engine.runner import load_config, make_strategy, parse_params
    from warehouse.coverage import check_query_data

    if (query is None) == (query_file is None):
        raise QEError("give exactly one of --query and --query-file")
    text = query if query is not None else query_file.read_text(encoding="utf-8")
    cfg = load_config(config, timeframe=timeframe, fill=fill, initial_capital=capital)
    wh = _existing_warehouse()
    check_query_data(wh.root, text)
    if signal is not None:
        from engine.backtest.vectorized import run_vectorized

        result = run_vectorized(wh, text, signal, cfg)
    else:
        result = run_backtest(wh, text, make_strategy(strategy, parse_params(param)), cfg)
    path = _write_report(wh, result.run_id, report)
    _print_run(result.run_id, result.metrics, result.timings, path, result.tables.get("events"))
    if not result.metrics.get("trades"):
        _warn_if_signal_never_set(wh, text, signal)


def _warn_if_signal_never_set(wh, query: str, signal: Optional[str]) -> None:  # noqa: ANN001
    """A run without trades whose signal column is NULL on every row of a symbol: say why (warm-up)."""
    from engine.signals.checks import all_null_symbols, null_signal_warning, warm_up

    con = wh.connect()
    column = signal or "signal"
    if column not in con.sql(f"SELECT * FROM ({query}) LIMIT 0").columns:
        return
    empty = all_null_symbols(con, query, f'"{column}"')
    if empty:
        err_console.print(f"warning: {null_signal_warning('backtest', empty, warm_up(query), column)}",
                          markup=False, highlight=False)


@app.command()
def walkforward(
    query: Annotated[str, typer.Option("--query", "-q", help="SELECT returning the bars (as for qe backtest).")],
    strategy: Annotated[str, typer.Option("--strategy", "-s", help="module:Class (must be importable by worker processes).")] = "engine.strategies.sma_cross:SmaCross",
    grid: Annotated[Optional[list[str]], typer.Option("--grid", "-g", help="Parameter values key=v1,v2,... (repeatable).")] = None,
    train_days: Annotated[int, typer.Option("--train-days", help="Trading dates in each training window.")] = 20,
    test_days: Annotated[int, typer.Option("--test-days", help="Trading dates in each test window.")] = 5,
    anchored: Annotated[bool, typer.Option("--anchored", help="Training always starts at the first date.")] = False,
    metric: Annotated[str, typer.Option("--metric", help="In-sample metric to maximise.")] = "sharpe",
    processes: Annotated[int, typer.Option("--processes", help="Worker processes for the grid.")] = 2,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML/JSON run configuration (strict).")] = None,
    timeframe: Annotated[Optional[str], typer.Option("--timeframe", "-t", help="Bar length; inferred from the query's views when omitted.")] = None,
) -> None:
    """Walk-forward: choose parameters in each training window, trade them out of sample, stitch and record."""
    from engine.cli.output import print_table
    from engine.runner import load_config, parse_params
    from engine.backtest.walkforward import walk_forward
    from warehouse.coverage import check_query_data

    values: dict[str, list] = {}
    for key, value in parse_params(grid).items():
        values[key] = list(parse_params([f"v={v}" for v in str(value).split(",")]).values()) if isinstance(value, str) else [value]
    cfg = load_config(config, timeframe=timeframe)
    wh = _existing_warehouse()
    check_query_data(wh.root, query)
    result = walk_forward(wh, query, strategy, values, train_days=train_days, test_days=test_days, anchored=anchored,
                          metric=metric, config=cfg, processes=processes)
    import pyarrow as pa

    rows = [{"window": w.index, "train": f"{w.train_start} .. {w.train_end}", "test": f"{w.test_start} .. {w.test_end}",
             "params": ", ".join(f"{k}={v}" for k, v in w.params.items()), f"in-sample {metric}": round(w.in_sample, 4),
             "test return %": round(w.test_metrics.get("total_return", float("nan")) * 100, 3)} for w in result.windows]
    print_table(pa.Table.from_pylist(rows), console, title="Walk-forward windows")
    path = _write_report(wh, result.run_id, None)
    _print_run(result.run_id, result.stitched.metrics, result.stitched.timings, path)


@app.command("risk")
def risk_cmd(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML/JSON run configuration (strict).")] = None,
) -> None:
    """The risk limits a run would use: the house defaults, or the [backtest.risk] table of a config file."""
    from engine.runner import load_config

    limits = load_config(config).risk
    table = Table(title=Text("Risk limits" + (f" ({config})" if config else " (house defaults)")))
    table.add_column("limit")
    table.add_column("value", justify="right")
    table.add_column("meaning")
    meaning = {
        "max_position_size": "contracts per symbol, position + working orders",
        "max_portfolio_exposure": "sum of notionals / equity",
        "max_single_position_pct": "one symbol's notional / equity",
        "max_daily_loss": "REDUCING below (1 - x) * equity at the trading date's start",
        "max_weekly_loss": "REDUCING below (1 - x) * equity at the week's start",
        "max_drawdown": "kill switch below (1 - x) * peak equity",
        "max_correlated_exposure": "sum of notionals in one correlation group / equity",
        "check_margin": "initial margin of all positions + the order <= equity",
        "flatten_on_loss_limit": "daily/weekly breakers also flatten",
        "volatility_scaling": "size = equity * clip(target_vol / vol) / notional",
        "target_vol": "annualized", "max_vol_scale": "", "min_vol_scale": "", "vol_column": "feature column",
    }
    for name, value in limits.model_dump().items():
        if name == "correlation_groups":
            continue
        table.add_row(name, Text("off" if value is None else str(value)), meaning.get(name, ""))
    console.print(table)
    groups = Table(title="Correlation groups")
    groups.add_column("group")
    groups.add_column("roots")
    for group, roots in limits.correlation_groups.items():
        groups.add_row(Text(group), Text(" ".join(roots)))
    console.print(groups)


@app.command("report")
def report_cmd(
    run_id: Annotated[str, typer.Argument(help="Run id (or 'latest').")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="HTML path (default <warehouse>/reports/<run>.html).")] = None,
) -> None:
    """Write the self-contained HTML report of a recorded run."""
    wh = _existing_warehouse()
    path = _write_report(wh, run_id, out)
    console.print(f"Report: {path}", markup=False)


@app.command()
def runs(limit: Annotated[int, typer.Option(help="Most recent N runs.")] = 20) -> None:
    """Recorded runs with their headline metrics (query them all with qe sql ... FROM runs / run_metrics)."""
    from engine.results.metrics import MIN_TRADING_DATES_ANNUALIZED
    from engine.cli.output import print_table

    wh = _existing_warehouse()
    table = wh.sql(
        """
        SELECT r.run_id, r.kind, r.strategy, r.timeframe, r.symbols, r.bars, CAST(r.final_equity AS DECIMAL(18, 2)) AS final_equity,
               round(max(m.value) FILTER (WHERE m.name = 'total_return') * 100, 2) AS return_pct,
               CASE WHEN max(m.value) FILTER (WHERE m.name = 'trading_days') < $min_days
                    THEN 'n/m (' || CAST(max(m.value) FILTER (WHERE m.name = 'trading_days') AS BIGINT) || ' days)'
                    ELSE CAST(round(max(m.value) FILTER (WHERE m.name = 'sharpe'), 2) AS VARCHAR) END AS sharpe,
               round(max(m.value) FILTER (WHERE m.name = 'max_drawdown') * 100, 2) AS max_dd_pct,
               CAST(max(m.value) FILTER (WHERE m.name = 'trades') AS BIGINT) AS trades
        FROM runs r LEFT JOIN run_metrics m USING (run_id)
        GROUP BY ALL ORDER BY r.run_id DESC LIMIT $limit
        """,
        {"limit": limit, "min_days": MIN_TRADING_DATES_ANNUALIZED},
    )
    print_table(table, console, title="Runs")
    if any(str(v).startswith("n/m") for v in table.column("sharpe").to_pylist()):
        console.print(f"sharpe n/m: not meaningful on fewer than {MIN_TRADING_DATES_ANNUALIZED} trading dates", markup=False)


def _write_report(wh, run_id: str, out: Optional[Path]) -> Path:  # noqa: ANN001
    from engine.results.ledger import load_run
    from engine.results.report import write_report

    run, tables, metrics = load_run(wh, run_id)
    path = out or wh.root / "reports" / f"{run['run_id']}.html"
    return write_report(path, run, tables, metrics)


def _print_run(run_id: str, metrics: dict, timings: dict, report: Path, events=None) -> None:  # noqa: ANN001
    from engine.results.metrics import ANNUALIZED_METRICS, annualized_note, gross_pnl

    table = Table(title=f"Run {run_id}", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    too_short = annualized_note(metrics)
    metrics = {**metrics, **gross_pnl(metrics)}
    for name in ("total_return", "cagr", "sharpe", "sortino", "max_drawdown", "trades", "win_rate", "profit_factor",
                 "gross_pnl", "commissions", "slippage", "net_pnl", "final_equity", "trading_days"):
        if name not in metrics:
            continue
        value = metrics[name]
        pct = name in ("total_return", "cagr", "max_drawdown", "win_rate")
        undefined = value is None or value != value  # NULL in the ledger, NaN fresh from the run
        if too_short and name in ANNUALIZED_METRICS:
            shown = too_short
        elif undefined:
            shown = "—"
        elif name in ("trades", "trading_days"):
            shown = f"{value:,.0f}"
        else:
            shown = f"{value * 100:.2f}%" if pct else f"{value:,.2f}"
        table.add_row(name, shown)
    console.print(table)
    if events is not None and events.num_rows:
        from collections import Counter

        counts = Counter(f"{k} {c}" for k, c in zip(events.column("kind").to_pylist(), events.column("code").to_pylist()))
        console.print("Risk and engine events: " + ", ".join(f"{n:,} {what}" for what, n in counts.most_common()),
                      markup=False)
    bars = timings.get("bars", 0)
    loop = timings.get("loop_s", 0.0)
    console.print(f"{int(bars):,} bars; event loop {loop:.2f} s ({loop / bars * 1e6 if bars else 0:.2f} µs/bar), "
                  f"query {timings.get('query_s', 0) + timings.get('feed_s', 0):.2f} s")
    console.print(f"Report: {report}", markup=False)


@app.command("gateway-sim")
def gateway_sim(
    port: Annotated[int, typer.Option(help="Port to listen on (0 = any free port; 7497/4002 are IB's paper ports).")] = 7497,
    account: Annotated[list[str], typer.Option("--account", help="Managed account id (repeat for several; paper ids start with DU).")] = ["DU1234567"],  # noqa: B006
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    replay: Annotated[Optional[str], typer.Option(help="Replay this root's warehouse bars (every contract).")] = None,
    timeframe: Annotated[str, typer.Option(help="Bars to replay: 1m, 1h or 1d.")] = "1m",
    speed: Annotated[float, typer.Option(help="Bar seconds per wall-clock second (60 = a 1m bar per second); 0 = as fast as possible.")] = 0.0,
) -> None:
    """Run the TWS-protocol gateway simulator (orders, fills, positions, bars) for ib_async clients; prints where it listens."""
    # The simulator lives in the IB adapter package and does not import ib_async itself.
    from engine.adapters.ib.gateway_sim.serve import run, warehouse_bars

    bars = warehouse_bars(_existing_warehouse(), replay, timeframe) if replay else []
    if replay and not bars:
        raise QEError(f"no {timeframe} bars of {replay} in the warehouse to replay")
    run(port, account, host, bars, speed or None)


@app.command()
def demo(
    paper: Annotated[bool, typer.Option("--paper", help="Paper-trade MES through the in-process IB gateway simulator on shipped real bars.")] = False,
    bars: Annotated[int, typer.Option("--bars", min=2, help="With --paper: minutes of 2013-10-10 to replay.")] = 90,
) -> None:
    """Run the pipeline on the shipped sample data: ingest, rolls, features, a recorded backtest, its report.

    Ingests the sample bars into the warehouse (creating it), builds the roll table and continuous series,
    builds the features, runs a portfolio backtest of the composite signal through the risk manager, records
    it in the run ledger and writes its HTML report. Running it again loads no bar twice (it records a new run).

    With --paper: a live paper session instead, on one MES contract, against the gateway simulator (no
    network, no account), then its summary, its attribution against the backtest and its report.
    """
    if paper:
        from engine.cli.demo import sample_data_dir
        from engine.cli.demo_paper import run_paper_demo

        wh = _warehouse()
        run_id = run_paper_demo(wh, console, sample_data_dir(), bars)
        path = _write_report(wh, run_id, None)
        console.print(Text(f"Report: {path}"))
        return
    from engine.cli.demo import run_demo

    run_demo(_warehouse(), console)


def main() -> None:
    """Entry point of ``qe`` with the single error handler.

    Usage errors are click's own (message and exit 2). Everything else that escapes a command is one
    ``Error:`` line and exit 1, or the traceback with ``--debug``.
    """
    # --debug is accepted anywhere (click knows it only before the subcommand): moved to the front.
    args = sys.argv[1:]
    debug = "--debug" in args
    if debug:
        args = ["--debug", *(a for a in args if a != "--debug")]
    try:
        app(args=args, prog_name="qe")
    except QEError as exc:
        if debug:
            raise
        _print_error(str(exc))
        sys.exit(1)
    except Exception as exc:
        if debug:
            raise
        _print_error(f"{type(exc).__name__}: {exc} (run with --debug for the traceback)")
        sys.exit(1)


def _print_error(message: str) -> None:
    """``Error: <message>`` with the message printed literally (it may hold brackets, paths, SQL)."""
    text = Text("Error:", style="red")
    text.append(f" {message}")
    err_console.print(text, highlight=False, soft_wrap=True)


if __name__ == "__main__":
    # `python -m engine.cli.main` runs this file as __main__; run the importable module instead, so that the
    # sub-apps that read `engine.cli.main.state` (qe signals: --warehouse) see this run's options.
    from engine.cli import main as _main

    _main.main()
