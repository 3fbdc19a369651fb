"""A deterministic SYNTHETIC multi-root universe for the demo (never mixed with real data).

For each root two consecutive contracts trade 1-minute bars over the same CME sessions. Prices follow a
seeded geometric random walk snapped to the root's tick grid; the deferred contract trades at a small
constant premium (carry). Volume migrates from the expiring contract to the deferred one so that a
volume crossover happens mid-sample, which gives every root a real roll to detect.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pyarrow as pa

from warehouse.contracts import contract_symbol, load_specs
from warehouse.sessions import trading_sessions

#: Root -> (starting price, annualized volatility, first contract (year, month), second contract).
UNIVERSE: dict[str, tuple[float, float, tuple[int, int], tuple[int, int]]] = {
    "NQ": (16000.0, 0.22, (2024, 3), (2024, 6)),
    "CL": (75.0, 0.35, (2024, 4), (2024, 5)),
    "GC": (2050.0, 0.15, (2024, 4), (2024, 6)),
    "ZN": (111.0, 0.06, (2024, 3), (2024, 6)),
    "6E": (1.09, 0.07, (2024, 3), (2024, 6)),
}
SOURCE = "SYNTHETIC demo universe (seeded random walk)"


def synthetic_universe(start: date = date(2024, 2, 26), sessions: int = 10, seed: int = 7) -> pa.Table:
    """Per-contract 1-minute bars for :data:`UNIVERSE` over ``sessions`` CME trading days.

    Returns
    -------
    pyarrow.Table
        Columns ``symbol`` (the contract, e.g. ``NQH4``), ``ts`` (UTC bar open), ``open high low close``,
        ``volume`` and ``source`` (``SYNTHETIC ...``), in the generic loader's format.
    """
    rng = np.random.default_rng(seed)
    specs = load_specs()
    parts: list[pa.Table] = []
    for root, (price0, vol, first, second) in UNIVERSE.items():
        tick = specs[root].tick_size
        days = trading_sessions(root, start, start + timedelta(days=2 * sessions + 10)).head(sessions)
        minutes = np.concatenate(
            [
                np.arange(np.datetime64(row.open_utc.replace(tzinfo=None), "m"), np.datetime64(row.close_utc.replace(tzinfo=None), "m"))
                for row in days.itertuples()
            ]
        )
        n = len(minutes)
        sigma = vol / np.sqrt(347_760)  # per 1-minute bar: annual vol / sqrt(bars per year)
        path = price0 * np.exp(np.cumsum(rng.normal(0.0, sigma, n)))
        session_index = np.repeat(np.arange(len(days)), [len(_session(r)) for r in days.itertuples()])
        share_second = np.clip((session_index - 2) / (len(days) - 4), 0.05, 0.95)  # crosses 0.5 mid-sample
        base_volume = rng.poisson(200, n) + 1
        for (year, month), share, premium in ((first, 1 - share_second, 0.0), (second, share_second, 0.002)):
            close = _snap(path * (1 + premium), tick)
            open_ = np.concatenate([[close[0]], close[:-1]])
            wiggle = np.abs(rng.normal(0.0, sigma, n)) * path
            high = np.maximum(open_, close) + _snap(wiggle, tick)
            low = np.minimum(open_, close) - _snap(wiggle[::-1], tick)
            volume = np.maximum(1, (base_volume * share).astype(np.int64))
            parts.append(
                pa.table(
                    {
                        "symbol": pa.array([contract_symbol(root, year, month)] * n),
                        "ts": pa.array(minutes.astype("datetime64[us]")).cast(pa.timestamp("us", tz="UTC")),
                        "open": open_,
                        "high": high,
                        "low": low,
                        "close": close,
                        "volume": volume,
                        "source": pa.array([SOURCE] * n),
                    }
                )
            )
    return pa.concat_tables(parts)


def _session(row) -> np.ndarray:  # noqa: ANN001
    return np.arange(np.datetime64(row.open_utc.replace(tzinfo=None), "m"), np.datetime64(row.close_utc.replace(tzinfo=None), "m"))


def _snap(values: np.ndarray, tick: float) -> np.ndarray:
    """Round to the tick grid (and keep the float exactly k * tick)."""
    return np.round(values / tick) * tick
