"""A backtest run as one self-contained HTML report.

The report is a single file that opens offline: inline CSS, a small inline vanilla-JS SVG plotter and the
chart data embedded as JSON (no CDN, fonts or scripts from elsewhere). It shows the run's facts, the
metrics, the equity and drawdown curves, monthly returns, the trade list and the risk events.

Everything that comes from the run (query, parameters, symbols, event messages) is escaped by Jinja's
autoescape; the embedded JSON goes through ``tojson``, which escapes ``<``, ``>``, ``&`` and ``'``.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
import pyarrow as pa

from engine.results.metrics import ANNUALIZED_METRICS, annualized_note, drawdown, monthly_returns
from warehouse.store import write_text_atomic

#: At most this many points per chart series reach the HTML.
MAX_CHART_POINTS = 2000
#: At most this many trades / events are listed (the rest is counted).
MAX_TRADES = 500
MAX_EVENTS = 500
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
DASH = "—"
#: A stretch without equity points longer than this is drawn narrow (the time axis is broken there): the
#: sample's 2014-2020 hole would otherwise squeeze six years of trading into two thin slivers.
GAP_DAYS = 30

#: Metric name -> (label, format). Formats: pct, money, ratio, int, days. Unknown names use ``ratio``.
METRIC_FORMATS: dict[str, tuple[str, str]] = {
    "total_return": ("Total return", "pct"),
    "cagr": ("CAGR", "pct"),
    "volatility": ("Volatility (ann.)", "pct"),
    "sharpe": ("Sharpe", "ratio"),
    "sortino": ("Sortino", "ratio"),
    "volatility_bars": ("Volatility (bar returns, ann.)", "pct"),
    "sharpe_bars": ("Sharpe (bar returns)", "ratio"),
    "max_drawdown": ("Max drawdown", "pct"),
    "max_drawdown_duration_days": ("Max drawdown duration", "days"),
    "max_drawdown_duration_bars": ("Max drawdown duration (bars)", "int"),
    "trades": ("Closed trades", "int"),
    "win_rate": ("Win rate", "pct"),
    "profit_factor": ("Profit factor", "ratio"),
    "avg_trade": ("Average trade", "money"),
    "avg_win": ("Average win", "money"),
    "avg_loss": ("Average loss", "money"),
    "exposure": ("Exposure", "pct"),
    "turnover": ("Turnover", "ratio"),
    "annual_turnover": ("Turnover (annual)", "ratio"),
    "commissions": ("Commissions", "money"),
    "slippage": ("Slippage", "money"),
    "net_pnl": ("Net P&L", "money"),
    "final_equity": ("Final equity", "money"),
    "trading_days": ("Trading days", "int"),
    "bars": ("Bars", "int"),
}


# -- public API ------------------------------------------------------------------------------------------


def render_report(run: dict, tables: dict[str, pa.Table], metrics: dict[str, float]) -> str:
    """Render one run as a self-contained HTML document.

    Parameters
    ----------
    run : dict
        One row of ``RUNS`` (``run_id``, ``strategy``, ``params`` JSON, ``query``, ``timeframe``,
        ``data_start``, ``data_end``, ``symbols``, ``initial_capital``, ``final_equity``, ...).
    tables : dict of str to pyarrow.Table
        ``equity``, ``trades``, ``fills``, ``orders`` and ``events`` with the ``RUN_*`` schemas; missing
        keys and empty tables are allowed.
    metrics : dict of str to float
        Metric name -> value (NaN shown as a dash).

    Returns
    -------
    str
        The HTML document.
    """
    equity = equity_frame(tables.get("equity"))
    initial = _initial_capital(run, equity)
    context = {
        "title": f"Run {run.get('run_id') or ''} · {run.get('strategy') or ''}".strip(" ·"),
        "facts": run_facts(run, tables),
        "params": _pretty_json(run.get("params")),
        "query": run.get("query") or "",
        "metrics": metric_rows(metrics),
        "chart_data": chart_data(equity, initial),
        "gap_notes": [f"{_fmt_date(a)} → {_fmt_date(b)}" for a, b in data_gaps(equity)],
        "gap_days": GAP_DAYS,
        "monthly": monthly_rows(equity, initial),
        "trades": trade_rows(tables.get("trades")),
        "events": event_summary(tables.get("events")),
        "months": MONTHS,
        "generated_at": _fmt_ts(dt.datetime.now(dt.UTC)),
    }
    return _template().render(**context)


def write_report(path: Path, run: dict, tables: dict[str, pa.Table], metrics: dict[str, float]) -> Path:
    """Render the report and write it atomically (temporary file + rename).

    Parameters
    ----------
    path : Path
        Destination ``.html`` file; parent directories are created.
    run, tables, metrics
        As for :func:`render_report`.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    html = render_report(run, tables, metrics)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, html)
    return path


# -- data preparation ------------------------------------------------------------------------------------


def equity_frame(table: pa.Table | None) -> pd.DataFrame:
    """The equity curve as a pandas frame sorted by ``ts`` (empty frame when there is none).

    Parameters
    ----------
    table : pyarrow.Table or None
        ``RUN_EQUITY`` rows.

    Returns
    -------
    pandas.DataFrame
        At least ``ts`` (UTC), ``trading_date`` and ``equity``.
    """
    if table is None or table.num_rows == 0:
        return pd.DataFrame(
            {
                "ts": pd.Series([], dtype="datetime64[us, UTC]"),
                "trading_date": pd.Series([], dtype="object"),
                "equity": pd.Series([], dtype="float64"),
            }
        )
    frame = table.to_pandas()
    return frame.sort_values("ts", kind="stable").reset_index(drop=True)


def downsample(x: np.ndarray, y: np.ndarray, max_points: int = MAX_CHART_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Reduce a series to at most ``max_points`` points, keeping each bucket's minimum and maximum.

    The first and last points are always kept, and every extreme (e.g. a drawdown trough) survives
    because each bucket contributes both its lowest and its highest point, in time order.

    Parameters
    ----------
    x, y : numpy.ndarray
        Equal-length coordinates, ``x`` ascending.
    max_points : int
        Upper bound on the number of points returned (at least 4).

    Returns
    -------
    tuple of numpy.ndarray
        The kept ``x`` and ``y``.
    """
    x = np.asarray(x)
    y = np.asarray(y, dtype="float64")
    n = len(y)
    if n <= max_points:
        return x, y
    buckets = max(1, (max(max_points, 4) - 2) // 2)
    edges = np.linspace(1, n - 1, buckets + 1).astype(np.int64)
    low = np.where(np.isnan(y), np.inf, y)
    high = np.where(np.isnan(y), -np.inf, y)
    keep = [0, n - 1]
    for start, stop in itertools.pairwise(edges):
        if stop > start:
            keep.append(start + int(np.argmin(low[start:stop])))
            keep.append(start + int(np.argmax(high[start:stop])))
    index = np.unique(np.asarray(keep, dtype=np.int64))
    return x[index], y[index]


def chart_data(equity: pd.DataFrame, initial_capital: float, max_points: int = MAX_CHART_POINTS) -> dict[str, Any]:
    """Downsampled equity and drawdown series for the inline plotter.

    Parameters
    ----------
    equity : pandas.DataFrame
        From :func:`equity_frame`.
    initial_capital : float
        Capital at the start of the run: the first peak of the drawdown.
    max_points : int
        Upper bound on the points per series.

    Returns
    -------
    dict
        ``{"equity": {"x": [...], "y": [...]}, "drawdown": {...}, "points": n, "gaps": [[start, end], ...]}``;
        ``x`` and the gaps (see :func:`data_gaps`) in epoch ms.
    """
    if equity.empty:
        return {"equity": {"x": [], "y": []}, "drawdown": {"x": [], "y": []}, "points": 0, "gaps": []}
    dd = drawdown(equity, initial_capital=initial_capital)
    return {
        "equity": _series(equity["ts"], equity["equity"], max_points),
        "drawdown": _series(dd["ts"], dd["drawdown"], max_points),
        "points": len(equity),
        "gaps": [[int(a), int(b)] for a, b in data_gaps(equity)],
    }


def data_gaps(equity: pd.DataFrame, days: int = GAP_DAYS) -> list[tuple[int, int]]:
    """``(last point before, first point after)`` in epoch ms of every hole longer than ``days`` in ``equity``.

    Computed on the full series (before downsampling), so a gap is found whatever the chart keeps.
    """
    if len(equity) < 2:
        return []
    millis = _epoch_ms(equity["ts"])
    wide = np.flatnonzero(np.diff(millis) > days * 86_400_000)
    return [(int(millis[i]), int(millis[i + 1])) for i in wide]


def _series(ts: pd.Series, values: pd.Series, max_points: int) -> dict[str, list]:
    millis = _epoch_ms(ts)
    x, y = downsample(millis, values.to_numpy(dtype="float64"), max_points)
    return {"x": [int(v) for v in x], "y": [_json_float(v) for v in y]}


def monthly_rows(equity: pd.DataFrame, initial_capital: float) -> list[dict[str, Any]]:
    """Monthly returns as a years x months grid with the compounded year total.

    Parameters
    ----------
    equity : pandas.DataFrame
        From :func:`equity_frame`.
    initial_capital : float
        Capital at the start of the run.

    Returns
    -------
    list of dict
        One dict per year: ``year``, ``cells`` (12 cells, each ``{"value", "text", "cls", "alpha"}``)
        and ``total`` (same shape).
    """
    if equity.empty:
        return []
    monthly = monthly_returns(equity, initial_capital)
    rows = []
    for year, group in monthly.groupby("year", sort=True):
        by_month = {int(m): float(r) for m, r in zip(group["month"], group["return"])}
        cells = [_return_cell(by_month.get(month)) for month in range(1, 13)]
        total = float(np.prod([1.0 + r for r in by_month.values()]) - 1.0) if by_month else None
        rows.append({"year": int(year), "cells": cells, "total": _return_cell(total)})
    return rows


def _return_cell(value: float | None) -> dict[str, Any]:
    if value is None or not math.isfinite(value):
        return {"value": None, "text": "", "cls": "empty", "alpha": 0.0}
    cls = "pos" if value > 0 else "neg" if value < 0 else "flat"
    alpha = round(min(1.0, abs(value) / 0.10) * 0.55 + 0.1, 3) if value != 0 else 0.0
    return {"value": value, "text": f"{value * 100:+.2f}%", "cls": cls, "alpha": alpha}


def metric_rows(metrics: dict[str, float]) -> list[dict[str, str]]:
    """Metrics formatted for display, known metrics first in a fixed order.

    Parameters
    ----------
    metrics : dict of str to float
        Metric name -> value.

    Returns
    -------
    list of dict
        ``{"name", "label", "value"}`` per metric.
    """
    names = [n for n in METRIC_FORMATS if n in metrics] + sorted(n for n in metrics if n not in METRIC_FORMATS)
    too_short = annualized_note(metrics)
    rows = []
    for name in names:
        label, kind = METRIC_FORMATS.get(name, (name.replace("_", " ").capitalize(), "ratio"))
        value = too_short if too_short and name in ANNUALIZED_METRICS else format_value(metrics[name], kind)
        rows.append({"name": name, "label": label, "value": value})
    return rows


def format_value(value: Any, kind: str) -> str:
    """Format one number for display; NaN and None become a dash.

    Parameters
    ----------
    value : Any
        The number.
    kind : str
        ``pct`` (fraction shown as percent), ``money`` (2 decimals with separators), ``ratio``
        (2 decimals), ``int`` or ``days``.

    Returns
    -------
    str
        The text.
    """
    number = _float(value)
    if math.isnan(number):
        return DASH
    if math.isinf(number):
        return "∞" if number > 0 else "−∞"
    if kind == "pct":
        return f"{number * 100:.2f}%"
    if kind == "money":
        return f"{number:,.2f}"
    if kind == "int":
        return f"{number:,.0f}"
    if kind == "days":
        return f"{number:,.0f} days" if number == int(number) else f"{number:,.1f} days"
    return f"{number:,.2f}"


def trade_rows(table: pa.Table | None, limit: int = MAX_TRADES) -> dict[str, Any]:
    """The first ``limit`` trades formatted for the trade list.

    Parameters
    ----------
    table : pyarrow.Table or None
        ``RUN_TRADES`` rows.
    limit : int
        How many trades to list.

    Returns
    -------
    dict
        ``rows`` (formatted dicts), ``total``, ``open`` (still held at the end), ``hidden`` (trades not
        listed) and ``count_text``: the count the metrics use (closed trades) beside the rows listed.
    """
    if table is None or table.num_rows == 0:
        return {"rows": [], "total": 0, "open": 0, "hidden": 0, "count_text": "No trades."}
    if "entry_ts" in table.column_names:
        table = table.sort_by([("entry_ts", "ascending")])
    rows = [_trade_row(t) for t in table.slice(0, limit).to_pylist()]
    still_open = table.column("exit_ts").null_count if "exit_ts" in table.column_names else 0
    closed = table.num_rows - still_open
    text = f"{table.num_rows:,} trade{'s' if table.num_rows != 1 else ''}: {closed:,} closed"
    if still_open:
        text += f", {still_open:,} still open at the end of the data (not in the metrics, which count closed trades)"
    return {"rows": rows, "total": table.num_rows, "open": still_open, "hidden": max(0, table.num_rows - limit),
            "count_text": text + "."}


def _trade_row(trade: dict) -> dict[str, Any]:
    direction = trade.get("direction")
    pnl = _float(trade.get("pnl"))
    return {
        "id": trade.get("trade_id"),
        "symbol": trade.get("symbol") or "",
        "direction": "Long" if direction == 1 else "Short" if direction == -1 else str(direction),
        "qty": _fmt_int(trade.get("max_quantity")),
        "entry_ts": _fmt_ts(trade.get("entry_ts")),
        "exit_ts": _fmt_ts(trade.get("exit_ts")) if trade.get("exit_ts") is not None else "open",
        "entry_price": _fmt_price(trade.get("entry_price")),
        "exit_price": _fmt_price(trade.get("exit_price")),
        "pnl": format_value(pnl, "money"),
        "pnl_cls": "pos" if pnl > 0 else "neg" if pnl < 0 else "",
        "commission": format_value(trade.get("commission"), "money"),
        "rolls": _fmt_int(trade.get("rolls")),
    }


def event_summary(table: pa.Table | None, limit: int = MAX_EVENTS) -> dict[str, Any]:
    """Risk events grouped by ``kind`` and ``code`` with counts, plus the first ``limit`` events.

    Parameters
    ----------
    table : pyarrow.Table or None
        ``RUN_EVENTS`` rows.
    limit : int
        How many individual events to list.

    Returns
    -------
    dict
        ``groups`` (kind, code, count, first, last, example message), ``rows``, ``total``, ``hidden``.
    """
    if table is None or table.num_rows == 0:
        return {"groups": [], "rows": [], "total": 0, "hidden": 0}
    frame = table.to_pandas().sort_values("ts", kind="stable")
    frame["kind"] = frame["kind"].fillna("")
    frame["code"] = frame["code"].fillna("")
    groups = []
    for (kind, code), group in frame.groupby(["kind", "code"], sort=True):
        groups.append(
            {
                "kind": kind,
                "code": code,
                "count": len(group),
                "first": _fmt_ts(group["ts"].iloc[0]),
                "last": _fmt_ts(group["ts"].iloc[-1]),
                "message": _text(group["message"].iloc[0]),
            }
        )
    groups.sort(key=lambda g: (-g["count"], g["kind"], g["code"]))
    rows = [
        {
            "ts": _fmt_ts(e["ts"]),
            "kind": e["kind"],
            "code": e["code"],
            "symbol": _text(e.get("symbol")),
            "order_id": _fmt_int(e.get("order_id")),
            "message": _text(e.get("message")),
        }
        for e in frame.head(limit).to_dict("records")
    ]
    return {"groups": groups, "rows": rows, "total": len(frame), "hidden": max(0, len(frame) - limit)}


def run_facts(run: dict, tables: dict[str, pa.Table]) -> list[tuple[str, str]]:
    """Label/value pairs for the report header.

    Parameters
    ----------
    run : dict
        One ``RUNS`` row.
    tables : dict of str to pyarrow.Table
        The run's tables (orders and fills are counted).

    Returns
    -------
    list of tuple of str
        ``(label, text)`` pairs; empty values are left out.
    """
    facts = [
        ("Run", _text(run.get("run_id"))),
        ("Status", _text(run.get("status"))),
        ("Kind", _text(run.get("kind"))),
        ("Strategy", _text(run.get("strategy"))),
        ("Symbols", _text(run.get("symbols"))),
        ("Timeframe", _text(run.get("timeframe"))),
        ("Data", f"{_fmt_ts(run.get('data_start'))} → {_fmt_ts(run.get('data_end'))}"),
        ("Bars", _fmt_int(run.get("bars"))),
        ("Initial capital", format_value(run.get("initial_capital"), "money")),
        ("Final equity", format_value(run.get("final_equity"), "money")),
        ("Orders", _order_counts(tables.get("orders"))),
        ("Fills", _fmt_int(tables["fills"].num_rows) if tables.get("fills") is not None else ""),
        ("Code version", _text(run.get("code_version"))),
        ("Parent run", _text(run.get("parent_run_id"))),
        ("Created", _fmt_ts(run.get("created_at"))),
    ]
    return [(label, value) for label, value in facts if value not in ("", DASH, f"{DASH} → {DASH}")]


def _initial_capital(run: dict, equity: pd.DataFrame) -> float:
    """The run's initial capital; the first equity point when the run row lacks a usable one."""
    initial = _float(run.get("initial_capital"))
    if math.isfinite(initial) and initial > 0:
        return initial
    if not equity.empty and float(equity["equity"].iloc[0]) > 0:
        return float(equity["equity"].iloc[0])
    return 1.0


def _order_counts(table: pa.Table | None) -> str:
    if table is None or table.num_rows == 0:
        return ""
    counts = pd.Series(table.column("status").to_pylist()).fillna("?").value_counts()
    detail = ", ".join(f"{count:,} {status.lower()}" for status, count in counts.items())
    return f"{table.num_rows:,} ({detail})"


# -- formatting helpers ----------------------------------------------------------------------------------


def _float(value: Any) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _json_float(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _fmt_int(value: Any) -> str:
    number = _float(value)
    return "" if math.isnan(number) else f"{number:,.0f}"


def _fmt_price(value: Any) -> str:
    number = _float(value)
    if math.isnan(number):
        return DASH
    text = f"{number:,.6f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(2, '0')}"


def _fmt_date(millis: int) -> str:
    return dt.datetime.fromtimestamp(millis / 1000, dt.UTC).strftime("%Y-%m-%d")


def _fmt_ts(value: Any) -> str:
    """A timestamp as ``YYYY-MM-DD HH:MM[:SS]`` UTC (dates as ``YYYY-MM-DD``; strings unchanged)."""
    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return DASH
    if isinstance(value, str):
        return value
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value.isoformat()
    stamp = pd.Timestamp(value)
    if pd.isna(stamp):
        return DASH
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.strftime("%Y-%m-%d %H:%M:%S" if stamp.second or stamp.microsecond else "%Y-%m-%d %H:%M") + " UTC"


def _epoch_ms(ts: pd.Series) -> np.ndarray:
    stamps = pd.to_datetime(ts, utc=True)
    return (stamps.astype("datetime64[us, UTC]").astype("int64") // 1000).to_numpy()


def _pretty_json(text: Any) -> str:
    if text is None or text == "":
        return ""
    try:
        return json.dumps(json.loads(text), indent=2, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return str(text)


@functools.lru_cache(maxsize=1)
def _template() -> jinja2.Template:
    source = resources.files("engine.results").joinpath("templates/report.html.j2").read_text(encoding="utf-8")
    env = jinja2.Environment(
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.from_string(source)
