"""Performance metrics (engine/results/metrics.py) against hand-worked numbers and an independent loop oracle.

Expected values never come from the code under test: either the arithmetic is written out in comments, or
``_oracle`` (plain Python loops, below) recomputes them from the raw points.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.results.metrics import (
    METRIC_KEYS,
    NAN_METRICS,
    UnknownTimeframeError,
    compute_metrics,
    daily_equity,
    daily_returns,
    drawdown,
    monthly_returns,
)
from warehouse.schemas import RUN_EQUITY, RUN_FILLS, RUN_TRADES

ET = ZoneInfo("America/New_York")
SQRT252 = math.sqrt(252)


# --- builders --------------------------------------------------------------------------------------------


def equity_table(points: list[tuple[datetime, date, float]], notional: list[float] | None = None) -> pa.Table:
    """RUN_EQUITY rows from (ts UTC, trading_date, equity); the other money columns are filler."""
    n = len(points)
    return pa.table(
        {
            "run_id": ["r1"] * n,
            "ts": [p[0] for p in points],
            "trading_date": [p[1] for p in points],
            "equity": [float(p[2]) for p in points],
            "cash": [float(p[2]) for p in points],
            "unrealized": [0.0] * n,
            "realized": [0.0] * n,
            "commissions": [0.0] * n,
            "slippage": [0.0] * n,
            "gross_notional": notional if notional is not None else [0.0] * n,
        },
        schema=RUN_EQUITY,
    )


def daily_points(values: list[float], dates: list[date] | None = None) -> list[tuple[datetime, date, float]]:
    """One point per trading date at 21:00 UTC (16:00/17:00 ET, inside that date's session)."""
    if dates is None:
        dates = [date(2024, 1, 2) + timedelta(days=i) for i in range(len(values))]
    return [(datetime(d.year, d.month, d.day, 21, tzinfo=UTC), d, v) for d, v in zip(dates, values, strict=True)]


def trades_table(rows: list[tuple[float, bool]]) -> pa.Table:
    """RUN_TRADES rows from (pnl, closed)."""
    t0 = datetime(2024, 1, 2, 15, tzinfo=UTC)
    n = len(rows)
    return pa.table(
        {
            "run_id": ["r1"] * n,
            "trade_id": list(range(n)),
            "symbol": ["ES"] * n,
            "direction": [1] * n,
            "max_quantity": [1] * n,
            "entry_ts": [t0] * n,
            "exit_ts": [t0 + timedelta(hours=1) if closed else None for _, closed in rows],
            "entry_price": [5000.0] * n,
            "exit_price": [5001.0] * n,
            "gross_pnl": [pnl + 2.5 for pnl, _ in rows],
            "commission": [2.5] * n,
            "slippage": [0.0] * n,
            "pnl": [pnl for pnl, _ in rows],
            "rolls": [0] * n,
            "bars_held": [1] * n,
        },
        schema=RUN_TRADES,
    )


def fills_table(rows: list[tuple[int, float, float, float, float]]) -> pa.Table:
    """RUN_FILLS rows from (quantity, price, multiplier, commission, slippage)."""
    t0 = datetime(2024, 1, 2, 15, tzinfo=UTC)
    n = len(rows)
    return pa.table(
        {
            "run_id": ["r1"] * n,
            "fill_id": list(range(n)),
            "order_id": list(range(n)),
            "ts": [t0 + timedelta(minutes=i) for i in range(n)],
            "trading_date": [date(2024, 1, 2)] * n,
            "symbol": ["ES"] * n,
            "contract": ["ESH4"] * n,
            "quantity": [r[0] for r in rows],
            "price": [r[1] for r in rows],
            "reference_price": [r[1] for r in rows],
            "multiplier": [r[2] for r in rows],
            "commission": [r[3] for r in rows],
            "slippage": [r[4] for r in rows],
            "realized_pnl": [0.0] * n,
            "position_after": [0] * n,
            "trade_id": [0] * n,
            "kind": ["order"] * n,
        },
        schema=RUN_FILLS,
    )


def path_from_returns(initial: float, returns: list[float]) -> list[float]:
    out, e = [], initial
    for r in returns:
        e = e * (1.0 + r)
        out.append(e)
    return out


def same(a: float, b: float, rel: float = 1e-9, abs_: float = 1e-12) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


# --- compounding -----------------------------------------------------------------------------------------


def test_daily_returns_compound_not_sum():
    # Regression: +10 % then -10 % must be -1 % (100 -> 110 -> 99), not the 0 % a summed-returns engine reports.
    eq = equity_table(daily_points([110.0, 99.0]))
    r = daily_returns(eq, 100.0)
    assert list(r.index) == [date(2024, 1, 2), date(2024, 1, 3)]
    assert r.to_list() == pytest.approx([0.10, -0.10])  # 110/100 - 1, 99/110 - 1
    m = compute_metrics(eq, None, None, initial_capital=100.0, timeframe="1d")
    assert m["total_return"] == pytest.approx(-0.01)  # 99/100 - 1
    assert m["total_return"] != pytest.approx(sum(r))  # the summed version says 0
    assert m["net_pnl"] == pytest.approx(-1.0)
    assert m["final_equity"] == 99.0
    # cagr = (99/100)**(252/2) - 1 = 0.99**126 - 1
    assert m["cagr"] == pytest.approx(0.99**126 - 1.0)


def test_monthly_returns_compound_within_month_and_chain_across_months():
    # Jan: 100 -> 110 -> 121: +10 %, +10 % -> 1.1 * 1.1 - 1 = +21 % (a sum would say 20 %).
    # Feb: 121 -> 108.9: -10 % against January's last equity.
    eq = equity_table(daily_points([110.0, 121.0, 108.9], [date(2024, 1, 30), date(2024, 1, 31), date(2024, 2, 1)]))
    m = monthly_returns(eq, 100.0)
    assert list(m.columns) == ["year", "month", "return"]
    assert m[["year", "month"]].values.tolist() == [[2024, 1], [2024, 2]]
    assert m["return"].to_list() == pytest.approx([0.21, -0.10])
    # Months chain to the total: 1.21 * 0.9 - 1 = 0.089 = 108.9 / 100 - 1.
    assert (1.21 * 0.9) - 1 == pytest.approx(compute_metrics(eq, None, None, initial_capital=100.0,
                                                              timeframe="1d")["total_return"])


def test_daily_equity_groups_by_cme_trading_date_not_utc_day():
    # 23:30 UTC on Jan 2 is 18:30 ET: the session that opens then belongs to Jan 3.
    points = [
        (datetime(2024, 1, 2, 20, 0, tzinfo=UTC), date(2024, 1, 2), 101.0),
        (datetime(2024, 1, 2, 23, 30, tzinfo=UTC), date(2024, 1, 3), 102.0),
        (datetime(2024, 1, 3, 15, 0, tzinfo=UTC), date(2024, 1, 3), 103.0),
    ]
    d = daily_equity(equity_table(points), 100.0)
    assert list(d.index) == [date(2024, 1, 2), date(2024, 1, 3)]
    assert d.to_list() == [101.0, 103.0]  # a UTC-day grouping would say Jan 2 -> 102
    assert daily_returns(equity_table(points), 100.0).to_list() == pytest.approx([0.01, 103.0 / 101.0 - 1.0])


# --- Sharpe / Sortino ------------------------------------------------------------------------------------

RETS = [0.02, -0.01, 0.03, -0.02]


def test_sharpe_and_volatility_hand_worked():
    eq = equity_table(daily_points(path_from_returns(100.0, RETS)))
    m = compute_metrics(eq, None, None, initial_capital=100.0, timeframe="1d")
    # mean = (0.02 - 0.01 + 0.03 - 0.02) / 4 = 0.005
    # deviations 0.015, -0.015, 0.025, -0.025; squares 0.000225 * 2 + 0.000625 * 2 = 0.0017; / (4 - 1)
    std = math.sqrt(0.0017 / 3)  # 0.0238048...
    assert m["volatility"] == pytest.approx(std * SQRT252, rel=1e-9)  # 0.37789
    assert m["sharpe"] == pytest.approx(0.005 / std * SQRT252, rel=1e-9)  # 3.3343
    assert m["sharpe"] == pytest.approx(3.3343, abs=1e-4)


def test_sortino_uses_downside_deviation_over_all_days():
    # Regression: the old engine divided by the std of the negative days only.
    eq = equity_table(daily_points(path_from_returns(100.0, RETS)))
    m = compute_metrics(eq, None, None, initial_capital=100.0, timeframe="1d")
    # Right: DD = sqrt((0 + 0.01**2 + 0 + 0.02**2) / 4) = sqrt(0.0005 / 4) = 0.0111803
    #        sortino = 0.005 / 0.0111803 * sqrt(252) = 0.4472136 * 15.8745079 = 7.0993
    right = 0.005 / math.sqrt(0.0005 / 4) * SQRT252
    assert m["sortino"] == pytest.approx(right, rel=1e-9)
    assert m["sortino"] == pytest.approx(7.0993, abs=1e-4)
    # Wrong: std(ddof=1) of [-0.01, -0.02]: mean -0.015, var = 2 * 0.005**2 / 1 = 0.00005, std 0.0070711
    #        sortino = 0.005 / 0.0070711 * sqrt(252) = 11.2250
    wrong = 0.005 / math.sqrt(0.00005) * SQRT252
    assert wrong == pytest.approx(11.2250, abs=1e-4)
    assert m["sortino"] != pytest.approx(wrong, rel=1e-3)
    # Also wrong: RMS over the negative days only (N = 2): sqrt(0.0005 / 2) -> 5.0200.
    assert m["sortino"] != pytest.approx(0.005 / math.sqrt(0.0005 / 2) * SQRT252, rel=1e-3)


def test_risk_free_rate_is_compounded_to_days():
    eq = equity_table(daily_points(path_from_returns(100.0, RETS)))
    m = compute_metrics(eq, None, None, initial_capital=100.0, timeframe="1d", risk_free_annual=0.05)
    rf_d = 1.05 ** (1 / 252) - 1  # 0.00019363, not 0.05 / 252 = 0.00019841
    std = math.sqrt(0.0017 / 3)  # std of r - rf_d == std of r
    assert m["sharpe"] == pytest.approx((0.005 - rf_d) / std * SQRT252, rel=1e-9)
    # Downside terms: only the two losing days fall below rf_d (0.02 and 0.03 stay above it and count 0).
    dd = math.sqrt(((-0.01 - rf_d) ** 2 + (-0.02 - rf_d) ** 2) / 4)
    assert m["sortino"] == pytest.approx((0.005 - rf_d) / dd * SQRT252, rel=1e-9)


def test_zero_std_and_no_down_day_give_nan():
    # Constant growth of exactly 1 % a day: std is rounding noise -> Sharpe NaN; no down day -> Sortino NaN.
    eq = equity_table(daily_points(path_from_returns(100.0, [0.01] * 5)))
    m = compute_metrics(eq, None, None, initial_capital=100.0, timeframe="1d")
    assert math.isnan(m["sharpe"]) and math.isnan(m["sortino"]) and math.isnan(m["sharpe_bars"])
    assert m["volatility"] == pytest.approx(0.0, abs=1e-12)
    assert m["total_return"] == pytest.approx(1.01**5 - 1)


# --- annualization by timeframe --------------------------------------------------------------------------


def test_per_bar_statistics_annualize_by_timeframe():
    # 8 one-minute bars inside one trading date; returns hand-picked.
    bar_rets = [0.001, -0.0005, 0.002, -0.001, 0.0015, 0.0, -0.002, 0.001]
    values = path_from_returns(1000.0, bar_rets)
    t0 = datetime(2024, 1, 2, 15, 0, tzinfo=UTC)
    eq = equity_table([(t0 + timedelta(minutes=i), date(2024, 1, 2), v) for i, v in enumerate(values)])
    m1 = compute_metrics(eq, None, None, initial_capital=1000.0, timeframe="1m")
    mh = compute_metrics(eq, None, None, initial_capital=1000.0, timeframe="1h")
    # Loop oracle: mean = sum / 8, std with n - 1.
    mean = sum(bar_rets) / 8  # 0.002 / 8 = 0.00025
    std = math.sqrt(sum((r - mean) ** 2 for r in bar_rets) / 7)
    assert m1["sharpe_bars"] == pytest.approx(mean / std * math.sqrt(347_760), rel=1e-9)
    assert m1["volatility_bars"] == pytest.approx(std * math.sqrt(347_760), rel=1e-9)
    assert mh["sharpe_bars"] == pytest.approx(mean / std * math.sqrt(5_796), rel=1e-9)
    # Same returns, labelled 1m vs 1h: ratio sqrt(347760 / 5796) = sqrt(60) = 7.746.
    assert m1["sharpe_bars"] / mh["sharpe_bars"] == pytest.approx(math.sqrt(60), rel=1e-12)
    assert m1["volatility_bars"] / mh["volatility_bars"] == pytest.approx(math.sqrt(60), rel=1e-12)
    assert m1["sharpe_bars"] != pytest.approx(mean / std * SQRT252)  # never 252 for intraday bars
    # One trading date: the daily ratios are undefined, whatever the timeframe.
    assert math.isnan(m1["sharpe"]) and math.isnan(m1["volatility"]) and math.isnan(m1["sortino"])


def test_daily_bars_give_the_same_ratios_both_ways():
    eq = equity_table(daily_points(path_from_returns(100.0, RETS)))
    m = compute_metrics(eq, None, None, initial_capital=100.0, timeframe="1d")
    assert m["sharpe_bars"] == pytest.approx(m["sharpe"], rel=1e-12)
    assert m["volatility_bars"] == pytest.approx(m["volatility"], rel=1e-12)


def test_unknown_timeframe_is_a_value_error_naming_it():
    eq = equity_table(daily_points([101.0]))
    with pytest.raises(ValueError, match="'2m'"):
        compute_metrics(eq, None, None, initial_capital=100.0, timeframe="2m")
    with pytest.raises(UnknownTimeframeError):
        compute_metrics(equity_table([]), None, None, initial_capital=100.0, timeframe="1w")


# --- drawdown --------------------------------------------------------------------------------------------


def test_drawdown_never_recovered_runs_to_the_last_point():
    # Tue 2 .. Tue 9 Jan (weekend 6-7): 105, 102, 110, 100, 95, 99.
    dates = [date(2024, 1, d) for d in (2, 3, 4, 5, 8, 9)]
    eq = equity_table(daily_points([105.0, 102.0, 110.0, 100.0, 95.0, 99.0], dates))
    dd = drawdown(eq, initial_capital=100.0)
    assert list(dd.columns) == ["ts", "equity", "peak", "drawdown"]
    assert dd["peak"].to_list() == [105.0, 105.0, 110.0, 110.0, 110.0, 110.0]
    assert dd["drawdown"].to_list() == pytest.approx([0.0, 102 / 105 - 1, 0.0, 100 / 110 - 1, 95 / 110 - 1,
                                                      99 / 110 - 1])
    m = compute_metrics(eq, None, None, initial_capital=100.0, timeframe="1d")
    assert m["max_drawdown"] == pytest.approx(15 / 110)  # 1 - 95/110 = 0.13636, positive
    # Episode 1: peak 105 (Jan 2) -> regained by 110 on Jan 4: 2 days, 2 bars.
    # Episode 2: peak 110 (Jan 4) never regained -> ends at the last point Jan 9: 5 calendar days, 3 bars
    # (index 2 -> index 5). An engine that only counts recovered episodes would report 2.
    assert m["max_drawdown_duration_days"] == pytest.approx(5.0)
    assert m["max_drawdown_duration_bars"] == 3.0


def test_initial_capital_is_the_first_peak():
    # 100 (initial) -> 90, 95, 100, 101 on Jan 2..5: the first bar already loses 10 %.
    eq = equity_table(daily_points([90.0, 95.0, 100.0, 101.0]))
    m = compute_metrics(eq, None, None, initial_capital=100.0, timeframe="1d")
    assert m["max_drawdown"] == pytest.approx(0.10)  # 1 - 90/100; without the initial peak it would be 0
    # The initial peak sits one 1d bar before the first point (Jan 1 21:00) and is regained on Jan 4
    # (100 >= 100): 3 calendar days, index -1 -> 2 = 3 bars.
    assert m["max_drawdown_duration_days"] == pytest.approx(3.0)
    assert m["max_drawdown_duration_bars"] == 3.0
    assert drawdown(eq)["drawdown"].to_list()[0] == 0.0  # without initial_capital the first point is the peak


def test_no_drawdown_is_zero_not_nan():
    m = compute_metrics(equity_table(daily_points([101.0, 102.0])), None, None, initial_capital=100.0,
                        timeframe="1d")
    assert m["max_drawdown"] == 0.0
    assert m["max_drawdown_duration_days"] == 0.0 and m["max_drawdown_duration_bars"] == 0.0


# --- trades, fills, exposure -----------------------------------------------------------------------------


def test_trade_statistics_hand_worked():
    # Closed pnl 100, -50, 30, -20, 0; one open trade (999) is ignored.
    tr = trades_table([(100.0, True), (-50.0, True), (30.0, True), (-20.0, True), (0.0, True), (999.0, False)])
    m = compute_metrics(equity_table(daily_points([101.0])), tr, None, initial_capital=100.0, timeframe="1d")
    assert m["trades"] == 5.0
    assert m["win_rate"] == pytest.approx(2 / 5)
    assert m["profit_factor"] == pytest.approx(130 / 70)  # (100 + 30) / |-50 - 20| = 1.857
    assert m["avg_trade"] == pytest.approx(12.0)  # 60 / 5
    assert m["avg_win"] == pytest.approx(65.0)  # 130 / 2
    assert m["avg_loss"] == pytest.approx(-35.0)  # -70 / 2


def test_no_losing_trade_profit_factor_is_nan():
    tr = trades_table([(10.0, True), (5.0, True)])
    m = compute_metrics(equity_table(daily_points([115.0])), tr, None, initial_capital=100.0, timeframe="1d")
    assert math.isnan(m["profit_factor"]) and math.isnan(m["avg_loss"])
    assert m["win_rate"] == 1.0 and m["avg_win"] == pytest.approx(7.5)


@pytest.mark.parametrize("trades", [None, RUN_TRADES.empty_table(), trades_table([(5.0, False)])])
@pytest.mark.parametrize("fills", [None, RUN_FILLS.empty_table()])
def test_empty_trades_and_fills_one_day(trades, fills):
    m = compute_metrics(equity_table(daily_points([101.0])), trades, fills, initial_capital=100.0, timeframe="1d")
    assert list(m) == list(METRIC_KEYS)
    assert all(isinstance(v, float) for v in m.values())
    assert m["trades"] == 0.0
    for key in ("win_rate", "profit_factor", "avg_trade", "avg_win", "avg_loss", "sharpe", "sortino", "volatility"):
        assert math.isnan(m[key]), key
    assert m["commissions"] == 0.0 and m["slippage"] == 0.0 and m["turnover"] == 0.0
    assert m["annual_turnover"] == 0.0
    assert m["total_return"] == pytest.approx(0.01) and m["trading_days"] == 1.0 and m["bars"] == 1.0
    assert m["cagr"] == pytest.approx(1.01**252 - 1)  # one trading day annualized: 1.01**(252/1) - 1
    assert {k for k, v in m.items() if math.isnan(v)} <= set(NAN_METRICS)


def test_no_equity_points_at_all():
    m = compute_metrics(RUN_EQUITY.empty_table(), None, None, initial_capital=100.0, timeframe="1m")
    assert m["final_equity"] == 100.0 and m["total_return"] == 0.0 and m["net_pnl"] == 0.0
    assert m["bars"] == 0.0 and m["trading_days"] == 0.0 and m["max_drawdown"] == 0.0
    assert {k for k, v in m.items() if math.isnan(v)} <= set(NAN_METRICS)
    assert daily_returns(RUN_EQUITY.empty_table(), 100.0).empty
    assert monthly_returns(RUN_EQUITY.empty_table(), 100.0).empty


def test_turnover_costs_and_exposure_hand_worked():
    fl = fills_table([
        (2, 5000.0, 50.0, 4.0, 25.0),  # |2| * 5000 * 50 = 500,000
        (-2, 5010.0, 50.0, 4.0, 25.0),  # |-2| * 5010 * 50 = 501,000
        (1, 100.0, 1000.0, 2.5, 10.0),  # roll leg or another root: 100,000
    ])
    eq = equity_table(daily_points([100_000.0, 101_000.0, 102_000.0, 101_000.0]), notional=[0.0, 5e5, 5e5, 0.0])
    m = compute_metrics(eq, None, fl, initial_capital=100_000.0, timeframe="1d")
    # mean equity = (100,000 + 101,000 + 102,000 + 101,000) / 4 = 101,000
    assert m["turnover"] == pytest.approx(1_101_000 / 101_000)  # 10.9010
    assert m["annual_turnover"] == pytest.approx(1_101_000 / 101_000 * 252 / 4)  # 4 trading days
    assert m["commissions"] == pytest.approx(10.5)  # 4 + 4 + 2.5
    assert m["slippage"] == pytest.approx(60.0)  # 25 + 25 + 10
    assert m["exposure"] == pytest.approx(0.5)  # 2 of 4 points hold notional


def test_pandas_input_and_run_id_are_accepted():
    eq = equity_table(daily_points(path_from_returns(100.0, RETS)))
    tr = trades_table([(3.0, True), (-1.0, True)])
    fl = fills_table([(1, 10.0, 5.0, 1.0, 0.5)])
    a = compute_metrics(eq, tr, fl, initial_capital=100.0, timeframe="1d")
    b = compute_metrics(eq.drop(["run_id"]).to_pandas(), tr.to_pandas(), fl.to_pandas(), initial_capital=100.0,
                        timeframe="1d")
    assert all(same(a[k], b[k], rel=0, abs_=0) for k in METRIC_KEYS)


def test_bad_initial_capital_is_refused():
    with pytest.raises(ValueError, match="initial_capital"):
        compute_metrics(equity_table(daily_points([1.0])), None, None, initial_capital=0.0, timeframe="1d")


# --- an independent oracle over an intraday run ----------------------------------------------------------


def cme_hourly_points(start_et: datetime, hours: int, values: list[float]) -> list[tuple[datetime, date, float]]:
    """Hourly bar opens in CME Globex hours (Sun 18:00 - Fri 17:00 ET, halt 17-18 ET); the session that opens
    at 18:00 ET belongs to the next calendar date."""
    out, t = [], start_et
    while len(out) < len(values):
        local = t.astimezone(ET)
        open_ = local.hour != 17 and not (local.weekday() == 4 and local.hour >= 17) and local.weekday() != 5 \
            and not (local.weekday() == 6 and local.hour < 18)
        if open_:
            td = local.date() + timedelta(days=1) if local.hour >= 18 else local.date()
            out.append((t.astimezone(UTC), td, values[len(out)]))
        t += timedelta(hours=1)
    return out


def _oracle(points, initial, bars_per_year, rf, bar_hours, trades_pnl, fills):
    """Every metric again with plain loops, straight from the definitions."""
    # daily: last equity per trading date (points are in ts order)
    last = {}
    for _, td, e in points:
        last[td] = e
    days = sorted(last)
    r_d, prev = [], initial
    for d in days:
        r_d.append(last[d] / prev - 1)
        prev = last[d]
    r_b, prev = [], initial
    for _, _, e in points:
        r_b.append(e / prev - 1)
        prev = e

    def mean(xs):
        return sum(xs) / len(xs)

    def std(xs):
        m = mean(xs)
        return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))

    rf_d = (1 + rf) ** (1 / 252) - 1
    rf_b = (1 + rf) ** (1 / bars_per_year) - 1
    down = math.sqrt(sum(min(0.0, x - rf_d) ** 2 for x in r_d) / len(r_d))
    e_end = points[-1][2]

    # drawdown: scan with the initial capital as a point one bar before the first
    seq = [(points[0][0] - timedelta(hours=bar_hours), initial)] + [(p[0], p[2]) for p in points]
    max_dd, best = 0.0, (0.0, 0.0)
    for i in range(len(seq)):
        if seq[i][1] < max(v for _, v in seq[: i + 1]):
            peak = max(v for _, v in seq[: i + 1])
            max_dd = max(max_dd, 1 - seq[i][1] / peak)
        is_peak = all(seq[i][1] >= v for _, v in seq[:i])
        if is_peak and i + 1 < len(seq) and seq[i + 1][1] < seq[i][1]:
            j = next((k for k in range(i + 1, len(seq)) if seq[k][1] >= seq[i][1]), len(seq) - 1)
            span = ((seq[j][0] - seq[i][0]).total_seconds() / 86400, float(j - i))
            best = max(best, span)

    closed = [p for p in trades_pnl if p is not None]
    wins = [p for p in closed if p > 0]
    losses = [p for p in closed if p < 0]
    traded = sum(abs(q) * px * mult for q, px, mult, _, _ in fills)
    mean_eq = mean([p[2] for p in points])
    return {
        "total_return": e_end / initial - 1,
        "cagr": (e_end / initial) ** (252 / len(days)) - 1,
        "volatility": std(r_d) * math.sqrt(252),
        "sharpe": mean([x - rf_d for x in r_d]) / std(r_d) * math.sqrt(252),
        "sortino": mean([x - rf_d for x in r_d]) / down * math.sqrt(252),
        "volatility_bars": std(r_b) * math.sqrt(bars_per_year),
        "sharpe_bars": mean([x - rf_b for x in r_b]) / std(r_b) * math.sqrt(bars_per_year),
        "max_drawdown": max_dd,
        "max_drawdown_duration_days": best[0],
        "max_drawdown_duration_bars": best[1],
        "trades": float(len(closed)),
        "win_rate": len(wins) / len(closed),
        "profit_factor": sum(wins) / -sum(losses),
        "avg_trade": mean(closed),
        "avg_win": mean(wins),
        "avg_loss": mean(losses),
        "exposure": None,  # filled by the caller (needs the notional column)
        "turnover": traded / mean_eq,
        "annual_turnover": traded / mean_eq * 252 / len(days),
        "commissions": sum(f[3] for f in fills),
        "slippage": sum(f[4] for f in fills),
        "final_equity": e_end,
        "trading_days": float(len(days)),
        "bars": float(len(points)),
        "net_pnl": e_end - initial,
    }


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_intraday_run_matches_loop_oracle(seed):
    rng = random.Random(seed)
    n = 150  # about 6.5 sessions of hourly bars, across a weekend
    values, e = [], 100_000.0
    for _ in range(n):
        e *= 1 + rng.gauss(0.0, 0.004)
        values.append(e)
    points = cme_hourly_points(datetime(2024, 3, 5, 18, 0, tzinfo=ET), n, values)
    notional = [rng.choice([0.0, 0.0, 250_000.0]) for _ in range(n)]
    trades_pnl = [rng.uniform(-500, 500) for _ in range(12)] + [None, None]
    fills = [(rng.choice([-3, -1, 1, 2]), rng.uniform(4000, 5000), 50.0, rng.uniform(1, 5), rng.uniform(0, 30))
             for _ in range(20)]
    tr = trades_table([(p if p is not None else 0.0, p is not None) for p in trades_pnl])
    got = compute_metrics(equity_table(points, notional), tr, fills_table(fills), initial_capital=100_000.0,
                          timeframe="1h", risk_free_annual=0.03)
    want = _oracle(points, 100_000.0, 5_796, 0.03, 1, trades_pnl, fills)
    want["exposure"] = sum(1 for x in notional if x > 0) / n
    assert list(got) == list(want)
    for key in METRIC_KEYS:
        assert same(got[key], want[key], rel=1e-9), (key, got[key], want[key])
    # The trading dates really are CME dates: more than one point per date, weekend skipped.
    assert got["trading_days"] == len({p[1] for p in points}) < n
    assert date(2024, 3, 9) not in {p[1] for p in points}  # a Saturday


# --- property: compounding identity ----------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        # (day-over-day equity factor, points on that trading date). Factors stay within [0.05, 20]: a path
        # that drops by 1e-8 in a day makes 1 + r lose digits to cancellation in any implementation.
        st.tuples(st.floats(min_value=0.05, max_value=20.0), st.integers(min_value=1, max_value=3)),
        min_size=1,
        max_size=40,
    ),
    st.floats(min_value=1.0, max_value=1e6),
)
def test_total_return_equals_compounded_daily_returns(path, initial):
    # Consecutive trading dates (a 3-day weekend gap every 5), hourly points inside a date, all positive.
    points, d, e = [], date(2024, 1, 2), initial
    for i, (factor, k) in enumerate(path):
        e *= factor
        for j in range(k):
            points.append((datetime(d.year, d.month, d.day, 14 + j, tzinfo=UTC), d, e * (1 + 0.001 * j)))
        d += timedelta(days=1 if i % 5 else 3)
    eq = equity_table(points)
    growth = 1.0
    for r in daily_returns(eq, initial):
        growth *= 1.0 + r
    m = compute_metrics(eq, None, None, initial_capital=initial, timeframe="1h")
    assert math.isclose(1.0 + m["total_return"], growth, rel_tol=1e-9)
    assert math.isclose(m["final_equity"], points[-1][2], rel_tol=0, abs_tol=0)
    months = 1.0
    for r in monthly_returns(eq, initial)["return"]:
        months *= 1.0 + r
    assert math.isclose(months, growth, rel_tol=1e-9)
    assert 0.0 <= m["max_drawdown"] < 1.0
    assert np.isfinite(m["total_return"])


def test_unsorted_pandas_input_is_sorted_by_ts():
    eq = equity_table(daily_points([110.0, 99.0])).to_pandas().iloc[::-1]
    assert daily_returns(eq, 100.0).to_list() == pytest.approx([0.10, -0.10])
    assert isinstance(daily_equity(eq, 100.0).index, pd.Index)


def test_resampled_timeframes_annualize_by_their_bars_per_globex_year():
    from engine.results.metrics import bars_per_year

    # Globex: 23 h = 1,380 minutes a day, 252 days: 5m bars = 276 a day, 15m = 92, 1s = 82,800.
    assert bars_per_year("5m") == 276 * 252
    assert bars_per_year("15m") == 92 * 252
    assert bars_per_year("1s") == 82_800 * 252
    assert bars_per_year("1m") == 1_380 * 252 and bars_per_year("1h") == 23 * 252
