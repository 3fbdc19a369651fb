"""Daily bars: UTC days or CME session bars, detected per file and stored per root.

A daily file stamps its bars one way (``sql/daily_convention.sql`` counts them):

``utc_day``
    00:00 UTC, the vendors' calendar day (Databento ``ohlcv-1d``, LEAN daily).
``session``
    The CME Globex session open, 18:00 America/New_York the evening before the trading date (22:00 or 23:00
    UTC with daylight saving), as ``session_bars_1d`` stamps them. A file of bare dates (``2013-10-07``) holds
    trading dates and is stamped at their session opens.

The convention with more rows wins; rows of the other are rejected by validation as ``ts_not_aligned``. A
root keeps one convention (two would give two bars per trading date): the table ``daily_conventions``
holds it per root (no row = UTC days, all daily bars stored before conventions existed were UTC days), and
rows of a file with the other convention are quarantined as ``ts_not_aligned`` naming both.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from warehouse import layout, schemas
from warehouse.store import StagedWrites
from warehouse.templates import render

UTC_DAY = "utc_day"
SESSION = "session"
#: How each convention is named in messages.
LABELS = {UTC_DAY: "UTC days (00:00 UTC)", SESSION: "CME session opens (18:00 ET before a weekday trading date)"}


def prepare(con: duckdb.DuckDBPyConnection, table: pa.Table, ts_is_text: bool) -> tuple[pa.Table, str, list[str]]:
    """Detect the convention of a daily file and stamp bare trading dates at their session open.

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        The validation connection (UTC).
    table : pyarrow.Table
        Raw daily bar rows (``loaders.raw.RAW_COLUMNS``).
    ts_is_text : bool
        Whether ``ts`` is text (bare dates are recognised only in text).

    Returns
    -------
    (pyarrow.Table, str, list of str)
        The rows (restamped when they were bare dates), the convention and notes for the ingest summary.
    """
    con.register("raw", table)
    try:
        n, date_only, utc_day, session = con.sql(render("daily_convention.sql", ts_is_text=ts_is_text)).fetchone()
        if ts_is_text and n > 0 and date_only == n:
            restamped = con.sql(render("restamp_trading_dates.sql")).to_arrow_table()
            return restamped, SESSION, [f"{n} daily bar(s) given as trading dates, stamped at their CME session open"]
    finally:
        con.unregister("raw")
    return table, (SESSION if session > utc_day else UTC_DAY), []


def stored_conventions(root: Path) -> dict[str, str]:
    """Convention of every root with stored daily bars (recorded, else ``utc_day``)."""
    out = {p.name.removeprefix("symbol="): UTC_DAY for p in (root / "bars" / "timeframe=1d").glob("symbol=*")}
    for path in sorted((root / "daily_conventions").glob("*.parquet")):
        for row in pq.read_table(path).to_pylist():
            out[row["symbol"]] = row["convention"]
    return out


def split_conflicts(root: Path, good: pa.Table, convention: str) -> tuple[pa.Table, pa.Table]:
    """Split validated rows into those whose root has no other convention stored, and those that do.

    The second part has ``rule`` = ``ts_not_aligned`` and a ``detail`` naming both conventions.
    """
    stored = stored_conventions(root)
    other = sorted(s for s, c in stored.items() if c != convention)
    if not other or good.num_rows == 0:
        return good, good.slice(0, 0)
    mask = pc.is_in(good["symbol"], value_set=pa.array(other, pa.string()))
    clash = good.filter(mask)
    details = [
        f"{symbol} daily bars are stored as {LABELS[stored[symbol]]}, this file has {LABELS[convention]}: "
        "one convention per root"
        for symbol in clash["symbol"].to_pylist()
    ]
    rule_at = clash.schema.get_field_index("rule")
    clash = clash.set_column(rule_at, "rule", pa.array(["ts_not_aligned"] * clash.num_rows, clash.schema.field("rule").type))
    detail_at = clash.schema.get_field_index("detail")
    clash = clash.set_column(detail_at, "detail", pa.array(details, clash.schema.field("detail").type))
    return good.filter(pc.invert(mask)), clash


def record(batch: StagedWrites, root: Path, symbols: set[str], convention: str) -> None:
    """Stage ``convention`` for each root that loaded daily bars (one small file per root) in the file's
    all-or-nothing ``batch`` of writes."""
    for symbol in sorted(symbols):
        table = pa.table({"symbol": [symbol], "convention": [convention]}, schema=schemas.DAILY_CONVENTIONS)
        batch.stage_if_changed(table, root / "daily_conventions" / f"{layout.safe_name(symbol)}.parquet")
