"""The HTML run report: self-contained, escaped, correct numbers, and it really renders in a browser."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from engine.results import report
from engine.results.metrics import drawdown, monthly_returns
from warehouse.schemas import RUN_EQUITY, RUN_EVENTS, RUN_FILLS, RUN_ORDERS, RUN_TRADES

UTC = dt.UTC
INITIAL = 100_000.0
RUN_ID = "r-2024-test"
EVIL_QUERY = "SELECT ts, close FROM bars_1h WHERE close < 5000 </pre><script>alert('pwned')</script>"

# End-of-trading-date equity: Dec 2023 +1 %, Jan 2024 +1 %, Feb 2024 -1 % (year 2024 compounds to -0.01 %).
#: (trading date, [(hour UTC on the evening before or the day itself, equity), ...])
EQUITY_DAYS = [
    (dt.date(2023, 12, 28), [(-1, 23, 100_400.0), (0, 15, 100_800.0)]),
    (dt.date(2023, 12, 29), [(-1, 23, 100_300.0), (0, 15, 101_000.0)]),
    (dt.date(2024, 1, 2), [(-1, 23, 99_000.0), (0, 15, 98_000.0)]),  # the trough: -2.97 % from 101,000
    (dt.date(2024, 1, 3), [(-1, 23, 98_500.0), (0, 15, 99_000.0)]),
    (dt.date(2024, 1, 31), [(-1, 23, 101_500.0), (0, 15, 102_010.0)]),
    (dt.date(2024, 2, 1), [(-1, 23, 101_200.0), (0, 15, 100_989.9)]),
]


def ts(day: dt.date, offset_days: int, hour: int) -> dt.datetime:
    """A bar open time in UTC: ``hour`` on ``day + offset_days``."""
    return dt.datetime.combine(day + dt.timedelta(days=offset_days), dt.time(hour), tzinfo=UTC)


def equity_table(points: list[tuple[dt.datetime, dt.date, float]]) -> pa.Table:
    """``RUN_EQUITY`` rows from (ts, trading_date, equity); cash/unrealized split is illustrative."""
    return pa.Table.from_pylist(
        [
            {
                "run_id": RUN_ID,
                "ts": t,
                "trading_date": d,
                "equity": e,
                "cash": e - 150.0,
                "unrealized": 150.0,
                "realized": e - INITIAL,
                "commissions": 2.5 * (i + 1),
                "slippage": 12.5 * (i + 1),
                "gross_notional": 240_000.0 if i % 3 else 0.0,
            }
            for i, (t, d, e) in enumerate(points)
        ],
        schema=RUN_EQUITY,
    )


def small_equity() -> pa.Table:
    return equity_table([(ts(d, off, h), d, e) for d, pts in EQUITY_DAYS for off, h, e in pts])


def trades_table(n: int = 2) -> pa.Table:
    base = dt.datetime(2023, 12, 27, 23, tzinfo=UTC)
    rows = []
    for i in range(n):
        entry = base + dt.timedelta(hours=5 * i)
        long = i % 2 == 0
        pnl = 987.5 if long else -1_262.5
        rows.append(
            {
                "run_id": RUN_ID,
                "trade_id": i + 1,
                "symbol": "ES" if long else "NQ",
                "direction": 1 if long else -1,
                "max_quantity": 2 if long else 1,
                "entry_ts": entry,
                "exit_ts": None if i == n - 1 and n > 2 else entry + dt.timedelta(hours=3),
                "entry_price": 4_780.25 if long else 16_850.5,
                "exit_price": 4_790.125 if long else 16_913.75,
                "gross_pnl": pnl + 5.0,
                "commission": 5.0,
                "slippage": 25.0,
                "pnl": pnl,
                "rolls": 1 if i == 0 else 0,
                "bars_held": 3,
            }
        )
    return pa.Table.from_pylist(rows, schema=RUN_TRADES)


def events_table() -> pa.Table:
    t0 = dt.datetime(2024, 1, 2, 14, tzinfo=UTC)
    rows = [
        ("denial", "MAX_POSITION_SIZE", "ES", 7, "order 7 would hold 6 > 5 contracts <img src=x onerror=alert(1)>"),
        ("denial", "MAX_POSITION_SIZE", "ES", 9, "order 9 would hold 6 > 5 contracts"),
        ("breaker", "DAILY_LOSS", None, None, "daily loss 2.9% >= 2.5%: trading halted"),
    ]
    return pa.Table.from_pylist(
        [
            {"run_id": RUN_ID, "ts": t0 + dt.timedelta(minutes=i), "kind": k, "code": c, "symbol": s,
             "order_id": o, "message": m}
            for i, (k, c, s, o, m) in enumerate(rows)
        ],
        schema=RUN_EVENTS,
    )


def orders_table() -> pa.Table:
    t0 = dt.datetime(2023, 12, 27, 23, tzinfo=UTC)
    return pa.Table.from_pylist(
        [
            {"run_id": RUN_ID, "order_id": i, "ts_submitted": t0, "symbol": "ES", "quantity": q,
             "order_type": "MARKET", "tif": "DAY", "status": st, "filled_quantity": abs(q) if st == "FILLED" else 0,
             "origin": "strategy"}
            for i, (q, st) in enumerate([(2, "FILLED"), (-2, "FILLED"), (6, "DENIED")], start=1)
        ],
        schema=RUN_ORDERS,
    )


def fills_table() -> pa.Table:
    t0 = dt.datetime(2023, 12, 27, 23, tzinfo=UTC)
    return pa.Table.from_pylist(
        [
            {"run_id": RUN_ID, "fill_id": i, "order_id": i, "ts": t0, "trading_date": dt.date(2023, 12, 28),
             "symbol": "ES", "contract": "ESH4", "quantity": q, "price": 4_780.25, "reference_price": 4_780.0,
             "multiplier": 50.0, "commission": 2.5, "slippage": 25.0, "realized_pnl": 0.0, "position_after": q,
             "trade_id": 1, "kind": "order"}
            for i, q in [(1, 2), (2, -2)]
        ],
        schema=RUN_FILLS,
    )


def run_row(query: str = EVIL_QUERY) -> dict:
    return {
        "run_id": RUN_ID,
        "created_at": dt.datetime(2024, 3, 1, 12, 30, tzinfo=UTC),
        "kind": "backtest",
        "strategy": "breakout<b>",
        "params": json.dumps({"lookback": 20, "note": "</script><script>alert(2)</script>"}),
        "query": query,
        "config": "{}",
        "timeframe": "1h",
        "data_start": dt.datetime(2023, 12, 27, 23, tzinfo=UTC),
        "data_end": dt.datetime(2024, 2, 1, 15, tzinfo=UTC),
        "bars": 12,
        "symbols": "ES,NQ",
        "code_version": "abc1234",
        "initial_capital": INITIAL,
        "final_equity": 100_989.9,
        "status": "completed",
        "parent_run_id": None,
    }


METRICS = {
    "total_return": 0.009899,
    "cagr": 0.5123,
    "sharpe": 1.23456,
    "sortino": math.nan,
    "max_drawdown": 0.029703,
    "max_drawdown_duration_days": 33.5,
    "trades": 2.0,
    "win_rate": 0.5,
    "profit_factor": math.inf,
    "avg_trade": -137.5,
    "commissions": 10.0,
    "final_equity": 100_989.9,
    "net_pnl": 989.9,
    "custom_thing": 0.123,
}


def full_tables() -> dict[str, pa.Table]:
    return {
        "equity": small_equity(),
        "trades": trades_table(),
        "fills": fills_table(),
        "orders": orders_table(),
        "events": events_table(),
    }


def empty_tables() -> dict[str, pa.Table]:
    return {
        "equity": RUN_EQUITY.empty_table(),
        "trades": RUN_TRADES.empty_table(),
        "fills": RUN_FILLS.empty_table(),
        "orders": RUN_ORDERS.empty_table(),
        "events": RUN_EVENTS.empty_table(),
    }


def embedded_data(html: str) -> dict:
    match = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.DOTALL)
    assert match is not None
    return json.loads(match.group(1))


# -- self-containment and escaping -----------------------------------------------------------------------


def test_report_is_self_contained() -> None:
    html = report.render_report(run_row(), full_tables(), METRICS)
    assert html.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(?:src|href|xlink:href)\s*=\s*["']?\s*(?:https?:)?//""", html, re.IGNORECASE)
    assert not re.search(r"<link\b|<script\b[^>]*\bsrc\s*=|<iframe\b|@import|url\(", html, re.IGNORECASE)
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", html)  # only the SVG namespace string


def test_user_input_is_escaped() -> None:
    html = report.render_report(run_row(), full_tables(), METRICS)
    # One inline script for data, one for the plotter: nothing the run supplied becomes markup.
    assert len(re.findall(r"<script\b", html)) == 2
    assert "<script>alert" not in html and "</pre><script>" not in html
    assert "&lt;/pre&gt;&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in html
    assert "close &lt; 5000" in html
    assert re.search(r'<pre id="run-query">SELECT ts, close FROM bars_1h WHERE close &lt; 5000 ', html)
    assert "&lt;/script&gt;&lt;script&gt;alert(2)&lt;/script&gt;" in html  # params JSON
    assert "breakout&lt;b&gt;" in html and "breakout<b>" not in html
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


# -- numbers -----------------------------------------------------------------------------------------------


def test_monthly_table_matches_hand_computed_compounding() -> None:
    # Daily ends: 100,800 101,000 | 98,000 99,000 102,010 | 100,989.9, from 100,000.
    dec = (100_800 / 100_000) * (101_000 / 100_800) - 1  # = 1 %
    jan = (98_000 / 101_000) * (99_000 / 98_000) * (102_010 / 99_000) - 1  # = 1 %
    feb = 100_989.9 / 102_010 - 1  # = -1 %
    year_2024 = (1 + jan) * (1 + feb) - 1  # -0.01 %, not the 0 % a sum would give
    assert dec == pytest.approx(0.01) and jan == pytest.approx(0.01) and feb == pytest.approx(-0.01)

    rows = report.monthly_rows(report.equity_frame(small_equity()), INITIAL)
    assert [r["year"] for r in rows] == [2023, 2024]
    y2023, y2024 = rows
    assert y2023["cells"][11]["value"] == pytest.approx(dec, abs=1e-12)
    assert all(c["value"] is None for c in y2023["cells"][:11])
    assert y2023["total"]["value"] == pytest.approx(dec, abs=1e-12)
    assert y2024["cells"][0]["value"] == pytest.approx(jan, abs=1e-12)
    assert y2024["cells"][1]["value"] == pytest.approx(feb, abs=1e-12)
    assert y2024["total"]["value"] == pytest.approx(year_2024, abs=1e-12)
    assert y2024["cells"][0]["cls"] == "pos" and y2024["cells"][1]["cls"] == "neg"

    html = report.render_report(run_row(), full_tables(), METRICS)
    row = re.search(r'<tr data-year="2024">(.*?)</tr>', html, re.DOTALL).group(1)
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", row)
    assert cells[0] == f"{jan * 100:+.2f}%" == "+1.00%"
    assert cells[1] == f"{feb * 100:+.2f}%" == "-1.00%"
    assert cells[2:12] == [""] * 10
    assert cells[12] == f"{year_2024 * 100:+.2f}%" == "-0.01%"
    assert 'class="pos" style="--a: ' in row and 'class="neg" style="--a: ' in row
    # The metrics module agrees with the hand numbers the table shows.
    monthly = monthly_returns(small_equity(), INITIAL)
    assert monthly["return"].tolist() == pytest.approx([dec, jan, feb], abs=1e-12)


def test_metrics_are_formatted() -> None:
    html = report.render_report(run_row(), full_tables(), METRICS)
    shown = dict(re.findall(r'data-metric="([a-z_]+)">([^<]*)<', html))
    assert shown["total_return"] == "0.99%"
    assert shown["cagr"] == "51.23%"
    assert shown["sharpe"] == "1.23"
    assert shown["sortino"] == "—"
    assert shown["max_drawdown"] == "2.97%"
    assert shown["max_drawdown_duration_days"] == "33.5 days"
    assert shown["trades"] == "2"
    assert shown["win_rate"] == "50.00%"
    assert shown["profit_factor"] == "∞"
    assert shown["avg_trade"] == "-137.50"
    assert shown["final_equity"] == "100,989.90"
    assert shown["custom_thing"] == "0.12"
    assert list(shown)[:2] == ["total_return", "cagr"]  # fixed reporting order, unknown names last
    assert list(shown)[-1] == "custom_thing"
    assert report.format_value(None, "money") == "—"
    assert report.format_value(float("nan"), "pct") == "—"


def test_annualized_ratios_are_not_shown_on_too_few_trading_dates() -> None:
    short = {"total_return": -0.027, "sharpe": -117.6, "cagr": -0.5, "volatility": 0.3, "trading_days": 10.0}
    shown = {r["name"]: r["value"] for r in report.metric_rows(short)}
    assert shown["sharpe"] == shown["cagr"] == shown["volatility"] == "not meaningful (10 trading dates; needs 60)"
    assert shown["total_return"] == "-2.70%" and shown["trading_days"] == "10"
    enough = {r["name"]: r["value"] for r in report.metric_rows({**short, "trading_days": 60.0})}
    assert (enough["sharpe"], enough["cagr"]) == ("-117.60", "-50.00%")


def test_charts_embed_equity_and_drawdown() -> None:
    html = report.render_report(run_row(), full_tables(), METRICS)
    data = embedded_data(html)
    assert len(data["equity"]["x"]) == 12 and data["points"] == 12
    assert data["equity"]["y"][0] == 100_400.0 and data["equity"]["y"][-1] == 100_989.9
    first = int(ts(dt.date(2023, 12, 28), -1, 23).timestamp() * 1000)
    assert data["equity"]["x"][0] == first
    assert min(data["drawdown"]["y"]) == pytest.approx(98_000 / 101_000 - 1)
    assert max(data["drawdown"]["y"]) == 0.0


def test_downsampling_keeps_the_drawdown_trough() -> None:
    rng = np.random.default_rng(7)
    n = 60_000
    values = INITIAL + np.cumsum(rng.normal(0, 40, n))
    trough = 41_234
    values[trough] = values.min() - 5_000  # a one-bar spike down: the deepest drawdown of the run
    values[17_000] = values.max() + 3_000  # and a one-bar spike up
    start = dt.datetime(2020, 1, 1, tzinfo=UTC)
    stamps = [start + dt.timedelta(minutes=i) for i in range(n)]
    table = equity_table([(t, t.date(), float(v)) for t, v in zip(stamps, values)])

    frame = report.equity_frame(table)
    data = report.chart_data(frame, INITIAL)
    full_dd = drawdown(table, initial_capital=INITIAL)
    for series in (data["equity"], data["drawdown"]):
        assert 100 < len(series["x"]) <= report.MAX_CHART_POINTS
        assert series["x"] == sorted(series["x"])
    trough_ms = int(stamps[trough].timestamp() * 1000)
    dd = data["drawdown"]
    assert min(dd["y"]) == pytest.approx(float(full_dd["drawdown"].min()), abs=0)
    assert dd["x"][int(np.argmin(dd["y"]))] == trough_ms
    assert min(data["equity"]["y"]) == values.min() and max(data["equity"]["y"]) == values.max()
    assert data["equity"]["x"][0] == int(stamps[0].timestamp() * 1000)
    assert data["equity"]["x"][-1] == int(stamps[-1].timestamp() * 1000)

    # The same through the whole report.
    html = report.render_report(run_row(), {"equity": table}, {})
    embedded = embedded_data(html)
    assert min(embedded["drawdown"]["y"]) == min(dd["y"])
    assert "60,000 equity points" in html


def test_downsample_small_and_exact_bounds() -> None:
    x = np.arange(10)
    y = np.arange(10.0)
    kept_x, kept_y = report.downsample(x, y, 2000)
    assert kept_x.tolist() == x.tolist() and kept_y.tolist() == y.tolist()
    x = np.arange(10_001)
    y = np.sin(x / 50.0)
    y[5_000] = -3.0
    kept_x, kept_y = report.downsample(x, y, 100)
    assert len(kept_x) <= 100
    assert kept_x[0] == 0 and kept_x[-1] == 10_000
    assert -3.0 in kept_y.tolist() and 5_000 in kept_x.tolist()


# -- tables ---------------------------------------------------------------------------------------------


def test_trades_and_events_listed() -> None:
    html = report.render_report(run_row(), full_tables(), METRICS)
    trades = re.search(r'<table class="trades">(.*?)</table>', html, re.DOTALL).group(1)
    first = re.findall(r"<td[^>]*>([^<]*)</td>", re.findall(r"<tr>(.*?)</tr>", trades, re.DOTALL)[1])
    assert first == ["1", "ES", "Long", "2", "2023-12-27 23:00 UTC", "2023-12-28 02:00 UTC", "4,780.25",
                     "4,790.125", "987.50", "5.00", "1"]
    assert "-1,262.50" in trades and "Short" in trades
    groups = re.search(r'<table class="event-groups">(.*?)</table>', html, re.DOTALL).group(1)
    rows = [re.findall(r"<td[^>]*>([^<]*)</td>", r) for r in re.findall(r"<tr>(.*?)</tr>", groups, re.DOTALL)[1:]]
    assert [(r[0], r[1], r[2]) for r in rows] == [("denial", "MAX_POSITION_SIZE", "2"), ("breaker", "DAILY_LOSS", "1")]
    assert "3 (2 filled, 1 denied)" in html  # orders in the header facts
    assert "No trades." not in html and "No risk events." not in html


def test_trade_list_is_capped_with_a_note() -> None:
    html = report.render_report(run_row(), {"equity": small_equity(), "trades": trades_table(520)}, METRICS)
    body = re.search(r'<table class="trades">.*?<tbody>(.*?)</tbody>', html, re.DOTALL).group(1)
    assert body.count("<tr>") == 500
    assert "Showing the first 500 of 520 trades; 20 more are not listed." in html
    assert report.trade_rows(trades_table(520), limit=520)["rows"][-1]["exit_ts"] == "open"  # still open at the end


def test_empty_trades_events_and_equity() -> None:
    html = report.render_report(run_row(query=""), empty_tables(), {})
    assert "No trades." in html and "No risk events." in html and "No metrics recorded." in html
    assert "No query recorded." in html and "No equity data." in html
    data = embedded_data(html)
    assert data["equity"] == {"x": [], "y": []} and data["drawdown"] == {"x": [], "y": []}
    html = report.render_report(run_row(), {"equity": small_equity()}, METRICS)  # missing keys are fine
    assert "No trades." in html and "No risk events." in html


def test_report_leads_with_results_and_collapses_the_query() -> None:
    html = report.render_report(run_row(), full_tables(), METRICS)
    order = [html.index(marker) for marker in ('id="metrics"', 'id="equity-chart"', 'id="drawdown-chart"',
                                               'id="trades"', 'id="run-details"', 'id="run-query"')]
    assert order == sorted(order)
    header = html[html.index("<header>"):html.index("</header>")]
    assert "<pre" not in header and "SELECT" not in header
    details = re.search(r'<section id="run-details">.*?<details>(.*?)</details>', html, re.DOTALL).group(1)
    assert '<pre id="run-query">' in details and '<pre id="run-params">' in details
    assert re.search(r"<summary>The query \(\d+ lines?\) and the parameters</summary>", details)


def test_trade_count_agrees_with_the_rows_listed() -> None:
    # trades_table(3): trades 1 and 2 closed, trade 3 still open (no exit)
    html = report.render_report(run_row(), {"equity": small_equity(), "trades": trades_table(3)}, {"trades": 2.0})
    assert ('<p class="note" id="trades-count">3 trades: 2 closed, 1 still open at the end of the data (not in the '
            'metrics, which count closed trades).</p>') in html
    assert re.search(r'<th>Closed trades</th><td data-metric="trades">2</td>', html)
    assert report.trade_rows(trades_table(2))["count_text"] == "2 trades: 2 closed."


def test_a_long_data_gap_breaks_the_time_axis() -> None:
    before = [(ts(dt.date(2013, 12, 20), 0, h), dt.date(2013, 12, 20), 1_000_000.0 + h) for h in (14, 15)]
    after = [(ts(dt.date(2020, 1, 2), 0, h), dt.date(2020, 1, 2), 1_000_100.0 + h) for h in (14, 15)]
    html = report.render_report(run_row(), {"equity": equity_table(before + after)}, METRICS)
    # 2013-12-20 15:00 UTC and 2020-01-02 14:00 UTC in epoch milliseconds
    assert embedded_data(html)["gaps"] == [[1_387_551_600_000, 1_577_973_600_000]]
    assert ("The time axis is broken where the data stops for more than 30 days (shaded): "
            "2013-12-20 → 2020-01-02.") in html
    short = report.render_report(run_row(), {"equity": small_equity()}, METRICS)
    assert embedded_data(short)["gaps"] == [] and 'id="chart-gaps"' not in short


@pytest.mark.skipif(shutil.which("node") is None, reason="no node to run the report's JavaScript")
def test_the_time_scale_draws_a_gap_narrow() -> None:
    template = (Path(report.__file__).parent / "templates" / "report.html.j2").read_text()
    source = re.search(r"(  function timeScale\(.*?\n  }\n)", template, re.DOTALL).group(1)
    # Data on [0, 100] and [900, 1000], a gap [100, 900]: the gap takes 4 % of the width, each millisecond of
    # data (200 in all) 0.96 / 200 = 0.0048.
    probe = source + """
    var s = timeScale(0, 1000, [[100, 900]]);
    console.log(JSON.stringify([s.unit(0), s.unit(50), s.unit(100), s.unit(900), s.unit(950), s.unit(1000),
                                s.time(0.76), s.segments.length]));
    """
    out = subprocess.run(["node", "-e", probe], capture_output=True, text=True, check=True).stdout
    values = json.loads(out)
    assert values == pytest.approx([0, 0.24, 0.48, 0.52, 0.76, 1, 950, 2])


#: A minimal DOM for running the report's script under node (no browser here): elements record attributes
#: and children; enough for the plotter, whose output is then inspected.
NODE_DOM = """
function node(name) { return { name: name, attrs: {}, children: [], dataset: {}, textContent: "",
  setAttribute: function (k, v) { this.attrs[k] = v; }, appendChild: function (c) { this.children.push(c); },
  addEventListener: function () {} }; }
var els = { "report-error": node("div"), "report-data": node("script"), "equity-chart": node("div"),
  "drawdown-chart": node("div") };
els["report-data"].textContent = DATA;
els["equity-chart"].dataset.kind = "money"; els["drawdown-chart"].dataset.kind = "pct";
var document = { body: { dataset: {} }, getElementById: function (id) { return els[id]; },
  createElementNS: function (ns, n) { return node(n); }, createElement: function (n) { return node(n); } };
var window = { addEventListener: function () {} };
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="no node to run the report's JavaScript")
def test_the_plotter_breaks_the_line_at_a_gap_under_node() -> None:
    before = [(ts(dt.date(2013, 12, 20), 0, h), dt.date(2013, 12, 20), 1_000_000.0 + h) for h in (14, 15, 16)]
    after = [(ts(dt.date(2020, 1, 2), 0, h), dt.date(2020, 1, 2), 999_000.0 + h) for h in (14, 15, 16)]
    html = report.render_report(run_row(), {"equity": equity_table(before + after)}, METRICS)
    data = re.search(r'id="report-data">(.*?)</script>', html, re.DOTALL).group(1)
    script = re.findall(r"<script>(.*?)</script>", html, re.DOTALL)[-1]
    probe = NODE_DOM.replace("DATA", json.dumps(data)) + script + """
    var svg = els["equity-chart"].children[0];
    console.log(JSON.stringify({ rendered: document.body.dataset.rendered, error: els["report-error"].textContent,
      line: svg.children.filter(function (c) { return c.attrs["class"] === "line"; })[0].attrs.d,
      gaps: svg.children.filter(function (c) { return c.attrs["class"] === "gap"; }).length }));
    """
    out = json.loads(subprocess.run(["node", "-e", probe], capture_output=True, text=True, check=True).stdout)
    assert (out["rendered"], out["error"], out["gaps"]) == ("ok", "", 1)
    assert out["line"].count("M") == 2 and out["line"].count("L") == 4  # two stretches of three points


def test_write_report_is_atomic(tmp_path: Path) -> None:
    target = tmp_path / "reports" / "run.html"
    assert report.write_report(target, run_row(), full_tables(), METRICS) == target
    first = target.read_text(encoding="utf-8")
    assert "data-metric=\"sharpe\"" in first
    report.write_report(target, run_row(query="SELECT 2"), empty_tables(), {})
    assert "SELECT 2" in target.read_text(encoding="utf-8")
    assert [p.name for p in target.parent.iterdir()] == ["run.html"]  # no temporary left behind


def test_template_ships_as_package_data() -> None:
    import tomllib
    from importlib import resources

    assert resources.files("engine.results").joinpath("templates/report.html.j2").is_file()
    config = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert "templates/*" in config["tool"]["setuptools"]["package-data"]["engine.results"]


# -- a real headless browser -------------------------------------------------------------------------------


def find_browser() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture
def browser() -> str:
    """Path of a headless-capable Chromium; skipped without one unless ``QE_REQUIRE_BROWSER=1``."""
    path = find_browser()
    if path is None:
        if os.environ.get("QE_REQUIRE_BROWSER") == "1":
            pytest.fail("QE_REQUIRE_BROWSER=1 but no chromium, chromium-browser or google-chrome is on PATH")
        pytest.skip("no headless browser (chromium / chromium-browser / google-chrome) on PATH")
    return path


def run_browser(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}", *args]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{browser} did not finish within 60 s: {' '.join(command)}\n{exc.stderr}")


def chart_markup(dom: str, chart_id: str) -> str:
    match = re.search(rf'<div id="{chart_id}"[^>]*>(.*?)</div>', dom, re.DOTALL)
    assert match is not None, f"#{chart_id} missing from the rendered DOM"
    return match.group(1)


def error_text(dom: str) -> str:
    match = re.search(r'<div id="report-error"[^>]*>(.*?)</div>', dom, re.DOTALL)
    assert match is not None, "#report-error missing from the rendered DOM"
    return match.group(1)


def test_report_renders_in_headless_browser(browser: str, tmp_path: Path) -> None:
    path = report.write_report(tmp_path / "report.html", run_row(), full_tables(), METRICS)
    started = time.perf_counter()
    result = run_browser(browser, tmp_path / "profile", "--dump-dom", path.as_uri())
    dom = result.stdout
    assert "<body" in dom, f"no DOM dumped (exit {result.returncode}):\n{result.stderr[-2000:]}"
    assert error_text(dom) == "", f"JavaScript error in the report: {error_text(dom)}"
    assert re.search(r'<body[^>]*data-rendered="ok"', dom), "the plotter did not finish"
    equity_svg = chart_markup(dom, "equity-chart")
    drawdown_svg = chart_markup(dom, "drawdown-chart")
    for svg in (equity_svg, drawdown_svg):
        assert "<svg" in svg and re.search(r"<(?:path|polyline)\b[^>]*\bd=\"M[\d.]+ [\d.]+L", svg)
    assert 'class="dd-area"' in drawdown_svg
    assert "&lt;script&gt;alert(&#39;pwned&#39;)" in dom or "&lt;script&gt;alert('pwned')" in dom

    shot = tmp_path / "report.png"
    run_browser(browser, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1280,2000",
                path.as_uri())
    assert shot.is_file(), "no screenshot written"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 30_000, f"screenshot is only {shot.stat().st_size} bytes"
    print(f"browser render + screenshot: {time.perf_counter() - started:.1f} s")


def test_browser_harness_detects_a_broken_report(browser: str, tmp_path: Path) -> None:
    html = report.render_report(run_row(), full_tables(), METRICS)
    broken = re.sub(r'(<script type="application/json" id="report-data">).*?(</script>)', r"\1{not json\2",
                    html, flags=re.DOTALL)
    path = tmp_path / "broken.html"
    path.write_text(broken, encoding="utf-8")
    dom = run_browser(browser, tmp_path / "profile", "--dump-dom", path.as_uri()).stdout
    assert "Report rendering failed" in error_text(dom)
    assert not re.search(r'<body[^>]*data-rendered="ok"', dom)


def test_empty_report_renders_in_headless_browser(browser: str, tmp_path: Path) -> None:
    path = report.write_report(tmp_path / "empty.html", run_row(), empty_tables(), {})
    dom = run_browser(browser, tmp_path / "profile", "--dump-dom", path.as_uri()).stdout
    assert error_text(dom) == ""
    assert re.search(r'<body[^>]*data-rendered="ok"', dom)
    assert "No equity data." in chart_markup(dom, "equity-chart")
