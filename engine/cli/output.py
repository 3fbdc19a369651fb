"""Printing and exporting query results.

Everything printed here is data, so it is printed literally: cells, headers and titles are rich ``Text``,
never markup (a value such as ``c[t] / c[t-1]`` or ``[bold]`` must show as typed).
"""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table
from rich.text import Text

from warehouse.errors import QEError

#: Width of a console that is not a terminal (a log, a pipe, CI): wide enough that no table is cut. Rich
#: tables take only the width they need, so this never pads a line.
UNBOUNDED_WIDTH = 100_000

#: Significant digits of a float cell: enough to show every tick and multiplier exactly (ZF 0.0078125,
#: 6J 12,500,000), few enough to hide binary noise (0.1 + 0.2 shows as 0.3).
FLOAT_DIGITS = 12


def make_console(stderr: bool = False) -> Console:
    """A console on stdout (or stderr): the terminal's width on a terminal, unbounded otherwise.

    When the output is not a terminal, rich would cut tables to 80 columns (or ``$COLUMNS``) and truncate
    file names and messages; a log or a pipe gets every character instead.
    """
    probe = Console(stderr=stderr)
    if probe.is_terminal:
        return probe
    return Console(stderr=stderr, width=UNBOUNDED_WIDTH)


def print_table(table: pa.Table, console: Console, title: str | None = None, limit: int = 50) -> None:
    """Render the first ``limit`` rows of ``table`` as a rich table (with a row count)."""
    view = Table(title=Text(title) if title is not None else None, header_style="bold")
    for field in table.schema:
        numeric = (pa.types.is_integer(field.type) or pa.types.is_floating(field.type)
                   or pa.types.is_decimal(field.type))
        view.add_column(Text(field.name), justify="right" if numeric else "left")
    for row in table.slice(0, limit).to_pylist():
        view.add_row(*(Text(format_cell(v)) for v in row.values()))
    console.print(view)
    if table.num_rows > limit:
        console.print(f"({table.num_rows:,} rows, first {limit} shown; use --format csv or --out for all)")
    else:
        console.print(f"({table.num_rows:,} rows)")


def format_cell(value: object) -> str:
    """One value as shown in a table.

    ``NULL`` for a missing value; a float with thousands separators and up to :data:`FLOAT_DIGITS`
    significant digits, never with an exponent (6E's tick is 0.00005); a decimal (how money
    columns are typed) with all its places, so cents show as ``1,234.50``; anything else as ``str``.
    """
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return _format_float(value)
    if isinstance(value, Decimal):
        return format(value, ",f")
    return str(value)


def write_result(table: pa.Table, fmt: str, out: Path | None, console: Console, limit: int = 50) -> None:
    """Write ``table`` as table / csv / json / parquet to ``out`` or stdout."""
    if fmt == "table":
        if out is not None:
            raise QEError("--out needs --format csv, json or parquet")
        print_table(table, console, limit=limit)
    elif fmt == "csv":
        sink = out if out is not None else sys.stdout.buffer
        pacsv.write_csv(table, sink)
    elif fmt == "json":
        text = json.dumps(table.to_pylist(), default=str, indent=None)
        if out is not None:
            out.write_text(text + "\n")
        else:
            sys.stdout.write(text + "\n")
    elif fmt == "parquet":
        if out is None:
            raise QEError("--format parquet needs --out FILE")
        pq.write_table(table, out)
    else:
        raise QEError(f"unknown format {fmt!r}; choose table, csv, json or parquet")


def _format_float(value: float) -> str:
    """Shortest exact digits of ``value`` (Python's ``repr``), rounded to :data:`FLOAT_DIGITS` if longer."""
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    exact = Decimal(repr(value))
    if len(exact.as_tuple().digits) > FLOAT_DIGITS:
        exact = Decimal(format(value, f".{FLOAT_DIGITS}g"))
    return format(exact.normalize(), ",f")  # normalize: 12,500,000 not 12,500,000.0
