"""Printing and exporting query results."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from warehouse.errors import QEError


def print_table(table: pa.Table, console: Console, title: str | None = None, limit: int = 50) -> None:
    """Render the first ``limit`` rows of ``table`` as a rich table (with a row count)."""
    view = Table(title=title, header_style="bold")
    for field in table.schema:
        numeric = pa.types.is_integer(field.type) or pa.types.is_floating(field.type)
        view.add_column(field.name, justify="right" if numeric else "left")
    for row in table.slice(0, limit).to_pylist():
        view.add_row(*(_cell(v) for v in row.values()))
    console.print(view)
    if table.num_rows > limit:
        console.print(f"({table.num_rows:,} rows, first {limit} shown; use --format csv or --out for all)")
    else:
        console.print(f"({table.num_rows:,} rows)")


def _cell(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:,.6g}" if abs(value) >= 1e6 or (value != 0 and abs(value) < 1e-3) else f"{value:,.6f}".rstrip("0").rstrip(".")
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
