"""Performance metrics of a backtest (or live) run, computed from the run ledger.

Pure functions over the ledger tables (:data:`warehouse.schemas.RUN_EQUITY`, ``RUN_TRADES``,
``RUN_FILLS``), given as pyarrow Tables or pandas DataFrames; ``run_id`` columns are ignored, so callers
pass the rows of one run. Nothing here touches the warehouse.

Money conventions (``DESIGN.md``, "Data conventions"):

* Returns **compound**: a run's return is ``E_end / initial_capital - 1`` = ``prod(1 + r_d) - 1``, never a
  sum of period returns (+10 % then -10 % is -1 %, not 0).
* Daily statistics use the **CME trading date** of each equity point (the session opening 18:00 ET belongs
  to the next date), not the UTC day, and annualize by 252 trading days a year.
* Per-bar statistics annualize by :data:`warehouse.features.registry.BARS_PER_YEAR` of the run's
  timeframe (trading bars per day x 252), never by a hard-coded 252.
* Sortino divides by the downside deviation over **all** periods (periods above the risk-free rate count as
  zero), not by the standard deviation of the negative periods only.

Units: returns, volatilities, drawdowns, exposure and turnover are fractions (0.12 = 12 %); ``*_days`` are
calendar days; P&L, commissions, slippage and equity are in the account currency.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

from warehouse.errors import QEError
from warehouse.features.registry import BARS_PER_YEAR

if TYPE_CHECKING:
    from engine.results.equity import (
        EquitySummary,  # annotations only: this module imports no engine code at run time
    )

#: Trading days per year: daily statistics annualize by trading days (CME dates), not calendar days.
TRADING_DAYS_PER_YEAR = 252

#: A standard deviation at or below this fraction of the largest |return| is rounding noise of a constant
#: series (e.g. equity growing by exactly 1 % a day); a Sharpe ratio over it would be a meaningless 1e15.
_ZERO_STD_RTOL = 1e-12

#: Stable metric keys of :func:`compute_metrics`, in reporting order.
METRIC_KEYS = (
    "total_return",
    "cagr",
    "volatility",
    "sharpe",
    "sortino",
    "volatility_bars",
    "sharpe_bars",
    "max_drawdown",
    "max_drawdown_duration_days",
    "max_drawdown_duration_bars",
    "trades",
    "win_rate",
    "profit_factor",
    "avg_trade",
    "avg_win",
    "avg_loss",
    "exposure",
    "turnover",
    "annual_turnover",
    "commissions",
    "slippage",
    "final_equity",
    "trading_days",
    "bars",
    "net_pnl",
)

#: Keys that can be NaN (undefined), with the reason; every other key is always a finite number
#: (or +inf for ``cagr`` overflow on absurd growth over a few days).
NAN_METRICS = {
    "cagr": "no equity point, or final equity < 0",
    "volatility": "fewer than 2 trading days",
    "sharpe": "fewer than 2 trading days, or zero std of daily returns",
    "sortino": "fewer than 2 trading days, or no day below the risk-free rate (downside deviation 0)",
    "volatility_bars": "fewer than 2 equity points",
    "sharpe_bars": "fewer than 2 equity points, or zero std of bar returns",
    "win_rate": "no closed trade",
    "profit_factor": "no losing closed trade",
    "avg_trade": "no closed trade",
    "avg_win": "no winning closed trade",
    "avg_loss": "no losing closed trade",
    "exposure": "no equity point",
    "turnover": "no equity point, or mean equity <= 0",
    "annual_turnover": "no equity point, or mean equity <= 0",
}

TableLike = pa.Table | pd.DataFrame

#: Fewest CME trading dates on which annualized metrics are shown as numbers. An annualized ratio scales a
#: few days' mean and spread by sqrt(252) (or compounds a few days' return to a year): on 10 days one good
#: or bad day gives a "Sharpe" of +-100. About three months (60 dates) is the least on which they say anything.
MIN_TRADING_DATES_ANNUALIZED = 60

#: Metrics scaled to a year, hidden below :data:`MIN_TRADING_DATES_ANNUALIZED` trading dates.
ANNUALIZED_METRICS = frozenset({"cagr", "volatility", "sharpe", "sortino", "volatility_bars", "sharpe_bars",
                                "annual_turnover"})


def gross_pnl(metrics: dict[str, float | None]) -> dict[str, float]:
    """``{"gross_pnl": net_pnl + commissions + slippage}``: the P&L before costs, to print beside them.

    Slippage is already inside the fill prices, so both costs are added back to the net. Empty when a
    component is missing or undefined.
    """
    parts = [metrics.get(k) for k in ("net_pnl", "commissions", "slippage")]
    if any(v is None or v != v for v in parts):
        return {}
    return {"gross_pnl": float(sum(parts))}


def annualized_note(metrics: dict[str, float | None]) -> str | None:
    """What to print instead of an annualized metric of a run too short for one, else None.

    Parameters
    ----------
    metrics : dict
        A run's metrics, with ``trading_days`` (the number of CME trading dates).

    Returns
    -------
    str or None
        ``"not meaningful (10 trading dates; needs 60)"`` when ``trading_days`` is below
        :data:`MIN_TRADING_DATES_ANNUALIZED`, else ``None`` (also when the count is unknown).
    """
    days = metrics.get("trading_days")
    if days is None or days != days or days >= MIN_TRADING_DATES_ANNUALIZED:
        return None
    return f"not meaningful ({int(days)} trading dates; needs {MIN_TRADING_DATES_ANNUALIZED})"


class UnknownTimeframeError(QEError, ValueError):
    """The run's timeframe has no bars-per-year entry, so per-bar statistics cannot be annualized."""


#: Timeframes the warehouse resamples or stores beyond the feature catalog's three: Globex trades 1,380 minutes
#: a day (23 h), so 1s = 1,380 x 60 x 252, 5m = 276 x 252, 15m = 92 x 252.
_RESAMPLED_BARS_PER_YEAR = {"1s": 20_865_600, "5m": 69_552, "15m": 23_184}


def bars_per_year(timeframe: str) -> int:
    """Annualization factor of per-bar statistics: trading bars per day x 252.

    Raises
    ------
    UnknownTimeframeError
        (a ``ValueError``) naming ``timeframe`` when it is not a key of ``BARS_PER_YEAR``.
    """
    per_year = {**BARS_PER_YEAR, **_RESAMPLED_BARS_PER_YEAR}
    try:
        return per_year[timeframe]
    except KeyError:
        known = ", ".join(sorted(per_year))
        raise UnknownTimeframeError(f"unknown timeframe {timeframe!r}: bars per year are known for {known}") from None


def daily_equity(equity: TableLike, initial_capital: float) -> pd.Series:
    """Equity at the end of each CME trading date.

    ``E_d`` = equity of the last point (largest ``ts``) whose ``trading_date`` is ``d``.

    Parameters
    ----------
    equity : pyarrow.Table or pandas.DataFrame
        ``RUN_EQUITY`` rows of one run (``ts``, ``trading_date``, ``equity`` are read).
    initial_capital : float
        Starting equity in currency; validated (> 0) but not part of the result.

    Returns
    -------
    pandas.Series
        ``E_d`` in currency, named ``equity``, indexed by ``trading_date`` (``datetime.date``), sorted
        ascending. Empty when there is no equity point.
    """
    _check_capital(initial_capital)
    return _daily_equity(_equity_frame(equity))


def daily_returns(equity: TableLike, initial_capital: float) -> pd.Series:
    """Compounding daily returns over CME trading dates.

    ``r_d = E_d / E_{d-1} - 1`` with ``E_{-1} = initial_capital``, where ``E_d`` is :func:`daily_equity`.
    They compound: ``prod(1 + r_d) - 1 = E_end / initial_capital - 1``.

    Returns
    -------
    pandas.Series
        Fractions, named ``return``, indexed by ``trading_date`` (``datetime.date``), sorted ascending.
    """
    _check_capital(initial_capital)
    return _daily_returns(_daily_equity(_equity_frame(equity)), initial_capital)


def drawdown(equity: TableLike, *, initial_capital: float | None = None) -> pd.DataFrame:
    """Running peak and drawdown at every equity point.

    ``peak_t = max(initial_capital, E_0, ..., E_t)`` (``initial_capital`` only when given: the run starts
    with it, so a first bar that loses money is already under water) and
    ``drawdown_t = E_t / peak_t - 1`` (a fraction <= 0; 0 at a new high).

    Returns
    -------
    pandas.DataFrame
        Columns ``ts`` (UTC), ``equity`` and ``peak`` (currency), ``drawdown`` (fraction), one row per
        equity point, sorted by ``ts``.
    """
    frame = _equity_frame(equity)
    if initial_capital is not None:
        _check_capital(initial_capital)
    values = frame["equity"].to_numpy(dtype=float)
    peak = _running_peak(values, initial_capital)
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = values / peak - 1.0
    return pd.DataFrame({"ts": frame["ts"], "equity": values, "peak": peak, "drawdown": dd})


def monthly_returns(equity: TableLike, initial_capital: float) -> pd.DataFrame:
    """Compounded return of each calendar month of the CME trading date.

    ``R_m = prod(1 + r_d) - 1`` over the daily returns ``r_d`` (:func:`daily_returns`) whose trading date
    falls in month ``m``; equivalently ``E_last(m) / E_last(m-1) - 1``, the first month against
    ``initial_capital``. Months without a trading date in the run have no row.

    Returns
    -------
    pandas.DataFrame
        Columns ``year`` and ``month`` (int), ``return`` (fraction), sorted by (year, month).
    """
    rets = daily_returns(equity, initial_capital)
    if rets.empty:
        return pd.DataFrame({"year": pd.Series(dtype="int64"), "month": pd.Series(dtype="int64"),
                             "return": pd.Series(dtype="float64")})
    frame = pd.DataFrame({
        "year": [d.year for d in rets.index],
        "month": [d.month for d in rets.index],
        "growth": 1.0 + rets.to_numpy(),
    })
    out = frame.groupby(["year", "month"], sort=True)["growth"].prod().sub(1.0).rename("return").reset_index()
    return out.astype({"year": "int64", "month": "int64", "return": "float64"})


def compute_metrics(
    equity: TableLike,
    trades: TableLike | None,
    fills: TableLike | None,
    *,
    initial_capital: float,
    timeframe: str,
    risk_free_annual: float = 0.0,
) -> dict[str, float]:
    """Every metric of a run, keyed by the stable names of :data:`METRIC_KEYS`.

    Notation: ``E_t`` equity points (``RUN_EQUITY.equity``, sorted by ``ts``), ``E_{-1} = initial_capital``
    before the first point, ``E_end`` the last point (``initial_capital`` when there is none); ``r_d`` the
    daily returns of :func:`daily_returns` over ``N = n_days`` CME trading dates; ``r_b`` the per-bar returns
    ``E_t / E_{t-1} - 1`` (first point against ``initial_capital``) over ``B`` equity points; ``K`` =
    ``BARS_PER_YEAR[timeframe]``; ``rf`` = ``risk_free_annual``, ``rf_d = (1 + rf)**(1/252) - 1``,
    ``rf_b = (1 + rf)**(1/K) - 1``; ``std`` has ``ddof=1``.

    Parameters
    ----------
    equity, trades, fills : pyarrow.Table or pandas.DataFrame
        ``RUN_EQUITY``, ``RUN_TRADES`` and ``RUN_FILLS`` rows of one run; ``trades`` and ``fills`` may be
        empty or ``None``.
    initial_capital : float
        Starting equity, currency, > 0.
    timeframe : str
        Bar timeframe of the run (a key of ``BARS_PER_YEAR``), for per-bar annualization.
    risk_free_annual : float
        Annual risk-free rate as a fraction (0.04 = 4 %), compounded down to days / bars.

    Returns
    -------
    dict[str, float]
        All of :data:`METRIC_KEYS`. Undefined metrics are ``math.nan`` (which ones and when:
        :data:`NAN_METRICS`); the dict never holds ``None``.

        * ``total_return`` = ``E_end / initial_capital - 1`` (= ``prod(1 + r_d) - 1``), fraction.
        * ``cagr`` = ``(E_end / initial_capital)**(252 / N) - 1``: annualized by trading days, because ``N``
          counts CME trading dates and a year has 252 of them (calendar days would count weekends and
          holidays the strategy could not trade). Fraction.
        * ``volatility`` = ``std(r_d) * sqrt(252)``, fraction a year.
        * ``sharpe`` = ``mean(r_d - rf_d) / std(r_d) * sqrt(252)``.
        * ``sortino`` = ``mean(r_d - rf_d) / DD * sqrt(252)`` with the downside deviation
          ``DD = sqrt(sum(min(0, r_d - rf_d)**2) / N)`` over **all** ``N`` days (days above ``rf_d`` count as 0).
        * ``volatility_bars`` = ``std(r_b) * sqrt(K)``; ``sharpe_bars`` = ``mean(r_b - rf_b) / std(r_b) * sqrt(K)``.
        * ``max_drawdown`` = ``max_t(1 - E_t / peak_t)``, ``peak_t`` as in :func:`drawdown` with
          ``initial_capital`` as the first peak; a positive fraction (0.12 for -12 %), 0 without a drawdown.
        * ``max_drawdown_duration_days``: a drawdown episode runs from the point where the peak was set to the
          first point with ``E_t >= peak`` (or to the last point if equity never regains the peak); its length
          is the ``ts`` difference in calendar days (fractional). ``initial_capital`` as a peak sits one bar
          of ``timeframe`` before the first point (the run starts with it at the first bar's open). The longest
          episode's length; 0 without a drawdown.
        * ``max_drawdown_duration_bars``: the same longest episode counted in equity points (index
          difference, the initial-capital peak at index -1).
        * ``trades`` = closed trades (``exit_ts`` not NULL); the trade statistics below use closed trades and
          their ``pnl`` (currency, net of commission): ``win_rate`` = #(pnl > 0) / trades; ``profit_factor`` =
          ``sum(pnl > 0) / |sum(pnl < 0)|``; ``avg_trade`` = mean pnl; ``avg_win`` = mean of pnl > 0;
          ``avg_loss`` = mean of pnl < 0 (negative). A zero-pnl trade is neither a win nor a loss but counts
          in ``trades``, ``win_rate``'s denominator and ``avg_trade``.
        * ``exposure`` = fraction of equity points with ``gross_notional > 0``.
        * ``turnover`` = ``sum_fills(|quantity| * price * multiplier) / mean_t(E_t)`` (roll legs included):
          traded notional in multiples of the average equity; ``annual_turnover`` = ``turnover * 252 / N``.
        * ``commissions``, ``slippage`` = sums over fills (currency); ``final_equity`` = ``E_end``;
          ``net_pnl`` = ``E_end - initial_capital`` (currency); ``trading_days`` = ``N``; ``bars`` = ``B``.

    Raises
    ------
    UnknownTimeframeError
        (a ``ValueError``) when ``timeframe`` has no bars-per-year entry.
    ValueError
        When ``initial_capital`` is not a positive finite number.
    """
    k = bars_per_year(timeframe)  # first: a bad timeframe fails even on an empty run
    _check_capital(initial_capital)
    eq = _equity_frame(equity)
    values = eq["equity"].to_numpy(dtype=float)
    n_bars = len(values)
    e_end = float(values[-1]) if n_bars else float(initial_capital)

    daily = _daily_equity(eq)
    r_d = _daily_returns(daily, initial_capital).to_numpy()
    n_days = len(r_d)
    r_b = _returns(values, initial_capital)

    rf_d = (1.0 + risk_free_annual) ** (1.0 / TRADING_DAYS_PER_YEAR) - 1.0
    rf_b = (1.0 + risk_free_annual) ** (1.0 / k) - 1.0

    growth = e_end / initial_capital
    if n_days == 0 or growth < 0:
        cagr = math.nan  # no time elapsed, or a negative base with a fractional power
    else:
        with np.errstate(over="ignore"):
            cagr = float(np.power(growth, TRADING_DAYS_PER_YEAR / n_days) - 1.0)

    peak = _running_peak(values, initial_capital)
    with np.errstate(divide="ignore", invalid="ignore"):
        max_dd = float(np.max(1.0 - values / peak)) if n_bars else 0.0
    dd_days, dd_bars = _longest_drawdown(eq["ts"], values, initial_capital, _bar_length(timeframe))

    metrics: dict[str, float] = {
        "total_return": growth - 1.0,
        "cagr": cagr,
        "volatility": _volatility(r_d, TRADING_DAYS_PER_YEAR),
        "sharpe": _sharpe(r_d, rf_d, TRADING_DAYS_PER_YEAR),
        "sortino": _sortino(r_d, rf_d, TRADING_DAYS_PER_YEAR),
        "volatility_bars": _volatility(r_b, k),
        "sharpe_bars": _sharpe(r_b, rf_b, k),
        "max_drawdown": max(max_dd, 0.0),
        "max_drawdown_duration_days": dd_days,
        "max_drawdown_duration_bars": dd_bars,
    }
    metrics.update(_trade_metrics(_frame(trades)))

    notional_held = eq["gross_notional"].to_numpy(dtype=float) if n_bars else np.empty(0)
    metrics["exposure"] = float(np.mean(notional_held > 0)) if n_bars else math.nan
    mean_equity = float(np.mean(values)) if n_bars else math.nan
    _fill_metrics(metrics, fills, mean_equity, n_days)
    metrics["final_equity"] = e_end
    metrics["trading_days"] = float(n_days)
    metrics["bars"] = float(n_bars)
    metrics["net_pnl"] = e_end - float(initial_capital)
    return {key: float(metrics[key]) for key in METRIC_KEYS}


def compute_metrics_streaming(
    summary: EquitySummary,
    trades: TableLike | None,
    fills: TableLike | None,
    *,
    initial_capital: float,
    timeframe: str,
    risk_free_annual: float = 0.0,
) -> dict[str, float]:
    """:func:`compute_metrics` of an equity ledger that was never held in memory whole.

    ``summary`` is an :class:`engine.results.equity.EquitySummary` the equity points were fed to in time order, one
    chunk at a time (the backtester does it while spilling a long run's equity to Parquet;
    :func:`engine.results.equity.summarize_equity` does it for a table or a file). ``trades`` and ``fills`` are the
    run's tables, as for :func:`compute_metrics`.

    Returns the same keys with the same definitions (see :func:`compute_metrics`). Every value equals the one
    :func:`compute_metrics` computes from the full table, exactly for the daily statistics, drawdowns, counts
    and trade statistics; up to floating-point summation order (relative ~1e-13) for the per-bar
    ``volatility_bars`` / ``sharpe_bars`` (chunk moments merged with Chan's formula) and for ``turnover``
    (the mean equity is a sum of chunk sums).
    """
    k = bars_per_year(timeframe)
    _check_capital(initial_capital)
    if float(summary.initial_capital) != float(initial_capital):
        raise ValueError(f"the summary was built with initial capital {summary.initial_capital}, not {initial_capital}")
    n_bars = int(summary.points)
    e_end = float(summary.last_equity) if n_bars else float(initial_capital)

    r_d = _returns(summary.daily_equity(), initial_capital)
    n_days = len(r_d)

    rf_d = (1.0 + risk_free_annual) ** (1.0 / TRADING_DAYS_PER_YEAR) - 1.0
    rf_b = (1.0 + risk_free_annual) ** (1.0 / k) - 1.0

    growth = e_end / initial_capital
    if n_days == 0 or growth < 0:
        cagr = math.nan
    else:
        with np.errstate(over="ignore"):
            cagr = float(np.power(growth, TRADING_DAYS_PER_YEAR / n_days) - 1.0)

    # per-bar returns from their merged moments (same NaN rules as _volatility / _std / _sharpe)
    count = int(summary.returns_count)
    if count >= 2:
        std_b = math.sqrt(summary.returns_m2 / (count - 1)) if summary.returns_m2 >= 0 else math.nan
        volatility_bars = std_b * math.sqrt(k)
        sharpe_bars = ((summary.returns_mean - rf_b) / std_b * math.sqrt(k)
                       if std_b > _ZERO_STD_RTOL * float(summary.returns_absmax) else math.nan)
    else:
        volatility_bars = sharpe_bars = math.nan

    max_dd = float(summary.max_drawdown) if n_bars else 0.0
    dd_days, dd_bars = _longest_drawdown_streaming(summary, _bar_length(timeframe))

    metrics: dict[str, float] = {
        "total_return": growth - 1.0,
        "cagr": cagr,
        "volatility": _volatility(r_d, TRADING_DAYS_PER_YEAR),
        "sharpe": _sharpe(r_d, rf_d, TRADING_DAYS_PER_YEAR),
        "sortino": _sortino(r_d, rf_d, TRADING_DAYS_PER_YEAR),
        "volatility_bars": volatility_bars,
        "sharpe_bars": sharpe_bars,
        "max_drawdown": max(max_dd, 0.0),
        "max_drawdown_duration_days": dd_days,
        "max_drawdown_duration_bars": dd_bars,
    }
    metrics.update(_trade_metrics(_frame(trades)))
    metrics["exposure"] = summary.exposed / n_bars if n_bars else math.nan
    mean_equity = summary.equity_sum / n_bars if n_bars else math.nan
    _fill_metrics(metrics, fills, mean_equity, n_days)
    metrics["final_equity"] = e_end
    metrics["trading_days"] = float(n_days)
    metrics["bars"] = float(n_bars)
    metrics["net_pnl"] = e_end - float(initial_capital)
    return {key: float(metrics[key]) for key in METRIC_KEYS}


# --- internals -----------------------------------------------------------------------------------------


def _fill_metrics(metrics: dict[str, float], fills: TableLike | None, mean_equity: float, n_days: int) -> None:
    """``turnover``, ``annual_turnover``, ``commissions`` and ``slippage`` from the fills."""
    fl = _frame(fills)
    if len(fl):
        traded = float(np.sum(np.abs(_floats(fl, "quantity")) * _floats(fl, "price") * _floats(fl, "multiplier")))
        commissions = float(np.sum(_floats(fl, "commission")))
        slippage = float(np.sum(_floats(fl, "slippage")))
    else:
        traded = commissions = slippage = 0.0
    # Turnover relative to a non-positive account size has no meaning.
    turnover = traded / mean_equity if mean_equity > 0 else math.nan
    metrics["turnover"] = turnover
    metrics["annual_turnover"] = turnover * TRADING_DAYS_PER_YEAR / n_days if n_days else math.nan
    metrics["commissions"] = commissions
    metrics["slippage"] = slippage


def _check_capital(initial_capital: float) -> None:
    if not (isinstance(initial_capital, (int, float)) and math.isfinite(initial_capital) and initial_capital > 0):
        raise ValueError(f"initial_capital must be a positive finite number, not {initial_capital!r}")


def _frame(table: TableLike | None) -> pd.DataFrame:
    """One conversion to pandas; ``None`` is an empty table."""
    if table is None:
        return pd.DataFrame()
    if isinstance(table, pa.Table):
        return table.to_pandas()
    if isinstance(table, pd.DataFrame):
        return table
    raise TypeError(f"expected a pyarrow.Table or pandas.DataFrame, got {type(table).__name__}")


def _equity_frame(equity: TableLike) -> pd.DataFrame:
    """Equity rows with ``ts`` as UTC timestamps and ``trading_date`` as ``datetime.date``, sorted by ts."""
    frame = _frame(equity)
    columns = ["ts", "trading_date", "equity", "gross_notional"]
    if frame.empty and not set(columns) <= set(frame.columns):
        return pd.DataFrame({"ts": pd.Series(dtype="datetime64[us, UTC]"), "trading_date": pd.Series(dtype=object),
                             "equity": pd.Series(dtype=float), "gross_notional": pd.Series(dtype=float)})
    missing = [c for c in ("ts", "trading_date", "equity") if c not in frame.columns]
    if missing:
        raise ValueError(f"equity table lacks column(s) {', '.join(missing)}")
    out = pd.DataFrame({
        "ts": pd.to_datetime(frame["ts"], utc=True),
        # Arrow date32 arrives as datetime.date already; a pandas caller may hand datetime64 dates.
        "trading_date": [d.date() if isinstance(d, pd.Timestamp) else d for d in frame["trading_date"]],
        "equity": frame["equity"].astype(float),
        "gross_notional": frame["gross_notional"].astype(float) if "gross_notional" in frame else 0.0,
    })
    # The ledger is sorted already; a stable sort makes "last point of a date" safe for any caller.
    return out.sort_values("ts", kind="stable").reset_index(drop=True)


def _daily_equity(eq: pd.DataFrame) -> pd.Series:
    last = eq.groupby("trading_date", sort=True)["equity"].last()
    last.index = pd.Index(list(last.index), dtype=object, name="trading_date")
    return last.astype(float).rename("equity")


def _returns(values: np.ndarray, initial_capital: float) -> np.ndarray:
    """``E_t / E_{t-1} - 1`` with ``E_{-1} = initial_capital``."""
    previous = np.concatenate(([float(initial_capital)], values[:-1]))
    with np.errstate(divide="ignore", invalid="ignore"):
        return values / previous - 1.0


def _daily_returns(daily: pd.Series, initial_capital: float) -> pd.Series:
    return pd.Series(_returns(daily.to_numpy(dtype=float), initial_capital), index=daily.index, name="return")


def _running_peak(values: np.ndarray, initial_capital: float | None) -> np.ndarray:
    if initial_capital is None or not len(values):
        return np.maximum.accumulate(values) if len(values) else values.astype(float)
    return np.maximum.accumulate(np.concatenate(([float(initial_capital)], values)))[1:]


def _std(r: np.ndarray) -> float:
    """Sample std (ddof=1), NaN below 2 periods or when it is rounding noise of a constant series."""
    if len(r) < 2:
        return math.nan
    std = float(np.std(r, ddof=1))
    if not std > _ZERO_STD_RTOL * float(np.max(np.abs(r))):
        return math.nan
    return std


def _volatility(r: np.ndarray, periods_per_year: int) -> float:
    if len(r) < 2:
        return math.nan
    return float(np.std(r, ddof=1)) * math.sqrt(periods_per_year)


def _sharpe(r: np.ndarray, rf: float, periods_per_year: int) -> float:
    std = _std(r)
    if math.isnan(std):
        return math.nan
    return float(np.mean(r - rf)) / std * math.sqrt(periods_per_year)


def _sortino(r: np.ndarray, rf: float, periods_per_year: int) -> float:
    if len(r) < 2:
        return math.nan
    excess = r - rf
    # Downside deviation over ALL periods: a day above rf contributes 0 and still counts in N. Using the
    # std of the negative days only (the old engine) ignores how rare the losses are.
    downside = math.sqrt(float(np.mean(np.minimum(excess, 0.0) ** 2)))
    if downside == 0.0:
        return math.nan
    return float(np.mean(excess)) / downside * math.sqrt(periods_per_year)


def _bar_length(timeframe: str) -> pd.Timedelta:
    """``"1m"`` / ``"1h"`` / ``"1d"`` (any count) as a duration."""
    match = re.fullmatch(r"(\d+)([mhd])", timeframe)
    if match is None:
        raise UnknownTimeframeError(f"cannot read a bar length from timeframe {timeframe!r}")
    unit = {"m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
    return pd.Timedelta(**{unit: int(match.group(1))})


def _longest_drawdown(ts: pd.Series, values: np.ndarray, initial_capital: float,
                      bar: pd.Timedelta) -> tuple[float, float]:
    """(calendar days, points) of the longest drawdown episode by calendar time; (0, 0) without one.

    An episode starts at the point that set the peak and ends at the first point with ``E >= peak``, or
    at the last point when equity never regains it. The initial capital is the peak at index -1, one bar
    before the first point.
    """
    if not len(values):
        return 0.0, 0.0
    times = ts.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()  # naive UTC datetime64 for arithmetic
    peak, peak_ts, peak_i = float(initial_capital), times[0] - bar.to_timedelta64(), -1
    best = (0.0, 0.0)
    under = False
    for i, e in enumerate(values):
        if e >= peak:
            if under:
                best = max(best, (_days(times[i] - peak_ts), float(i - peak_i)))
                under = False
            peak, peak_ts, peak_i = float(e), times[i], i
        else:
            under = True
    if under:
        last = len(values) - 1
        best = max(best, (_days(times[last] - peak_ts), float(last - peak_i)))
    return best


def _longest_drawdown_streaming(summary: EquitySummary, bar: pd.Timedelta) -> tuple[float, float]:
    """:func:`_longest_drawdown` from an ``EquitySummary``: its finished episodes, plus the two it leaves open.

    The summary holds the longest finished episode that started at a point; the episode that starts at the
    initial capital (one bar before the first point, the same datetime arithmetic as the reference) and the
    one still open at the last point are measured here.
    """
    if not summary.points:
        return 0.0, 0.0

    def at(ts_us: int) -> np.datetime64:
        return np.datetime64(int(ts_us), "us")

    initial_ts = at(summary.first_ts) - bar.to_timedelta64()
    best = tuple(summary.dd_best)
    if summary.dd_initial_end is not None:
        end_ts, end_i = summary.dd_initial_end
        best = max(best, (_days(at(end_ts) - initial_ts), float(end_i + 1)))
    last = summary.points - 1
    if last > summary.dd_peak_i:  # under water at the end
        if summary.dd_peak_i == -1:
            best = max(best, (_days(at(summary.last_ts) - initial_ts), float(last + 1)))
        else:
            best = max(best, (_days(at(summary.last_ts) - at(summary.dd_peak_ts)), float(last - summary.dd_peak_i)))
    return best


def _days(delta: np.timedelta64) -> float:
    return float(delta / np.timedelta64(1, "s")) / 86_400.0


def _floats(frame: pd.DataFrame, column: str) -> np.ndarray:
    return frame[column].to_numpy(dtype=float)


def _trade_metrics(trades: pd.DataFrame) -> dict[str, float]:
    if len(trades):
        closed = trades["exit_ts"].notna().to_numpy()
        pnl = _floats(trades, "pnl")[closed]
    else:
        pnl = np.empty(0)
    wins, losses = pnl[pnl > 0], pnl[pnl < 0]
    gross_loss = float(-np.sum(losses))
    return {
        "trades": float(len(pnl)),
        "win_rate": len(wins) / len(pnl) if len(pnl) else math.nan,
        "profit_factor": float(np.sum(wins)) / gross_loss if gross_loss > 0 else math.nan,
        "avg_trade": float(np.mean(pnl)) if len(pnl) else math.nan,
        "avg_win": float(np.mean(wins)) if len(wins) else math.nan,
        "avg_loss": float(np.mean(losses)) if len(losses) else math.nan,
    }
