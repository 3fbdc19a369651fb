"""``qe signals``: list, params, show and build the SQL signal generators (:mod:`engine.signals.generators`)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from engine.signals.generators import build_signals, registry, signal_query

# -- command line ---------------------------------------------------------------------------------------

signals_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                          help="Signal generators as SQL: list, params, show, build.")


def _console():
    from engine.cli.output import make_console

    return make_console()


def _warehouse():
    """The warehouse of the running ``qe`` (its ``--warehouse`` option), else ``$QE_WAREHOUSE`` / ``./qe_data``."""
    import sys

    from warehouse import Warehouse

    cli = sys.modules.get("engine.cli.main")
    root = getattr(getattr(cli, "state", None), "warehouse", None) if cli is not None else None
    return Warehouse(root)


def _cli_params(pairs: list[str] | None) -> dict[str, Any]:
    """``key=value`` pairs of the command line (the generator checks and converts every value)."""
    from engine.runner import parse_params

    return parse_params(pairs)


@signals_app.command("list")
def signals_list() -> None:
    """Every generator: name, class, description and parameters (with defaults)."""
    import pyarrow as pa

    from engine.cli.output import print_table

    reg = registry()
    rows = [
        {"name": g.name, "class": g.class_name, "description": g.description,
         "parameters": ", ".join(f"{p.name}={p.default}" for p in g.params)
         + (f" (+ those of {', '.join(g.uses)})" if g.uses else "")}
        for g in reg.generators.values()
    ]
    console = _console()
    print_table(pa.Table.from_pylist(rows), console, title="Signal generators", limit=1000)
    console.print("Sizing parameters of every generator: " + ", ".join(f"{p.name}={p.default}" for p in reg.sizing))


@signals_app.command("params")
def signals_params(name: Annotated[str, typer.Argument(help="Generator name or class.")]) -> None:
    """Every parameter NAME accepts (own, of the generators it uses, sizing): type, default, description."""
    import pyarrow as pa

    from engine.cli.output import print_table

    reg = registry()
    rows = [{"parameter": key, "type": p.type_text, "default": str(p.default), "description": p.description}
            for key, p in reg.parameters(name).items()]
    print_table(pa.Table.from_pylist(rows), _console(), title=f"{reg.get(name).class_name} parameters", limit=1000)


@signals_app.command("show")
def signals_show(
    name: Annotated[str, typer.Argument(help="Generator name or class.")],
    timeframe: Annotated[str, typer.Option("--timeframe", "-t", help="1m|1h|1d")] = "1m",
    symbols: Annotated[list[str] | None, typer.Option("--symbols", "-s", help="Symbols (repeatable or comma-separated; default all).")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Parameter key=value (repeatable).")] = None,
) -> None:
    """The rendered SQL of NAME (plain text on stdout: usable as `qe backtest --query`)."""
    typer.echo(signal_query(name, timeframe, symbols, _cli_params(param)))


@signals_app.command("build")
def signals_build(
    name: Annotated[str, typer.Argument(help="Generator name or class.")],
    timeframe: Annotated[str, typer.Option("--timeframe", "-t", help="1m|1h|1d")] = "1m",
    symbols: Annotated[list[str] | None, typer.Option("--symbols", "-s", help="Symbols (repeatable or comma-separated; default all).")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Parameter key=value (repeatable).")] = None,
) -> None:
    """Materialize the signals of NAME to Parquet under <warehouse>/signals/NAME/timeframe=TF/ (view signals_NAME_TF)."""
    report = build_signals(_warehouse(), name, timeframe, symbols, _cli_params(param))
    _console().print(
        f"signals {report.name} {report.timeframe}: {report.rows:,} rows for {len(report.symbols)} symbol(s) "
        f"({', '.join(report.symbols) or '-'}), {report.files} file(s) in {report.path} ({report.seconds:.2f} s)",
        markup=False, highlight=False,
    )
    if report.warning:
        from engine.cli.output import make_console

        make_console(stderr=True).print(f"warning: {report.warning}", markup=False, highlight=False)
