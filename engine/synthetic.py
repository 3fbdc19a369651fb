"""A deterministic SYNTHETIC multi-root universe for the demo (never mixed with real data).

A year of hourly bars per root over its CME sessions, for a backtest long enough for annualized metrics.
Prices follow a seeded geometric random walk snapped to the root's tick grid; each later contract trades at a
small constant premium (carry). Volume migrates from the expiring contract to the next one before each roll,
so every roll is a real volume crossover to detect.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pyarrow as pa

from warehouse.contracts import contract_symbol, load_specs
from warehouse.sessions import trading_sessions

#: Root -> (starting price, annualized volatility).
UNIVERSE: dict[str, tuple[float, float]] = {
    "NQ": (16000.0, 0.22),
    "CL": (75.0, 0.35),
    "GC": (2050.0, 0.15),
    "ZN": (111.0, 0.06),
    "6E": (1.09, 0.07),
}
SOURCE = "SYNTHETIC demo universe (seeded random walk)"


def _snap(values: np.ndarray, tick: float) -> np.ndarray:
    """Round to the tick grid (and keep the float exactly k * tick)."""
    return np.round(values / tick) * tick


#: CME month codes -> month numbers.
_MONTH_CODES = {code: i for i, code in enumerate("FGHJKMNQUVXZ", start=1)}
#: The front contract rolls this many trading sessions before its expiry (volume moves to the next one over
#: the :data:`_MIGRATION` sessions before that).
_ROLL_LEAD = 6
_MIGRATION = 4


def synthetic_hourly_universe(start: date = date(2023, 1, 3), sessions: int = 250, seed: int = 11) -> pa.Table:
    """Per-contract hourly bars for :data:`UNIVERSE` over ``sessions`` CME trading days (about a year).

    Each root lists its real contract months (quarterly NQ and ZN, monthly CL, GC and 6E as in the contract
    table); at every bar the front and the next contract trade, and volume migrates to the next one over
    the sessions before the front's roll, ``_ROLL_LEAD`` sessions before its expiry, so each roll is a real
    volume crossover. The price is one seeded random walk per root (the next contract at a small premium).

    Returns
    -------
    pyarrow.Table
        Columns ``symbol`` (the contract, e.g. ``NQH3``), ``ts`` (UTC bar open), ``open high low close``,
        ``volume`` and ``source`` (``SYNTHETIC ...``), in the generic loader's format.
    """
    rng = np.random.default_rng(seed)
    specs = load_specs()
    parts: list[pa.Table] = []
    for root, (price0, vol) in UNIVERSE.items():
        tick = specs[root].tick_size
        days = trading_sessions(root, start, start + timedelta(days=sessions * 2)).head(sessions)
        chain = _contract_chain(root, specs[root].contract_months, days.trading_date.iloc[0].date())
        hours = [_hours(row) for row in days.itertuples()]
        session_of_bar = np.repeat(np.arange(len(days)), [len(h) for h in hours])
        ts = np.concatenate(hours)
        n = len(ts)
        sigma = vol / np.sqrt(23 * 252)  # per hourly bar: annual vol / sqrt(bars per year)
        path = price0 * np.exp(np.cumsum(rng.normal(0.0, sigma, n)))
        base_volume = rng.poisson(12_000, n) + 1
        wiggle = np.abs(rng.normal(0.0, sigma, n)) * path
        dates = [d.date() for d in days.trading_date]
        front = np.searchsorted([roll for _, roll in chain], dates, side="right")  # index of each session's front
        for k, (contract, _) in enumerate(chain[: int(front.max()) + 2]):
            share = _share(k, front, chain, dates)[session_of_bar]
            live = share > 0
            if not live.any():
                continue
            close = _snap(path * (1 + 0.001 * k), tick)[live]  # each later contract 0.1 % dearer (carry)
            open_ = np.concatenate([[close[0]], close[:-1]])
            high = np.maximum(open_, close) + _snap(wiggle[live], tick)
            low = np.minimum(open_, close) - _snap(wiggle[live][::-1], tick)
            parts.append(pa.table({
                "symbol": pa.array([contract] * int(live.sum())),
                "ts": pa.array(ts[live].astype("datetime64[us]")).cast(pa.timestamp("us", tz="UTC")),
                "open": open_, "high": high, "low": low, "close": close,
                "volume": np.maximum(1, (base_volume[live] * share[live]).astype(np.int64)),
                "source": pa.array([SOURCE] * int(live.sum())),
            }))
    return pa.concat_tables(parts)


def _contract_chain(root: str, months: str, first_day: date) -> list[tuple[str, date]]:
    """``(contract, last session as front)`` for the listed months from ``first_day`` on, over two years."""
    from warehouse.contracts import expiry_date

    chain = []
    for year in (first_day.year, first_day.year + 1, first_day.year + 2):
        for code in months:
            expiry = expiry_date(root, year, _MONTH_CODES[code])
            roll = expiry - timedelta(days=round(_ROLL_LEAD * 7 / 5))  # trading sessions -> calendar days
            if roll > first_day:
                chain.append((contract_symbol(root, year, _MONTH_CODES[code]), roll))
    return chain


def _share(k: int, front: np.ndarray, chain: list[tuple[str, date]], dates: list[date]) -> np.ndarray:
    """Share of each session's volume in contract ``k``: all of it as front, migrating to the next near the roll."""
    share = np.zeros(len(dates))
    for i, (f, day) in enumerate(zip(front, dates)):
        left = (chain[f][1] - day).days * 5 / 7  # sessions before the front's roll, roughly
        moving = min(1.0, max(0.0, 1 - left / _MIGRATION)) * 0.9  # 0 -> 0.9 of the volume over the migration
        share[i] = (1 - moving) if k == f else moving + 0.05 if k == f + 1 else 0.0
    return share


def _hours(row) -> np.ndarray:  # noqa: ANN001
    """Hourly bar opens of one session: whole hours from its open while a full hour fits before its close."""
    first = np.datetime64(row.open_utc.replace(tzinfo=None).ceil("h"), "h")
    last = np.datetime64(row.close_utc.replace(tzinfo=None), "m")
    stamps = np.arange(first, np.datetime64(last, "h") + 1, np.timedelta64(1, "h"))
    return stamps[stamps + np.timedelta64(1, "h") <= last].astype("datetime64[m]")
