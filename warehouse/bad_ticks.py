"""Thresholds of the bad-tick rules (``bad_tick_scale``, ``bad_tick_spike``), per product class.

The values live in ``warehouse/data/bad_ticks.csv`` (one row per ``correlation_group`` of ``contracts.csv``
plus ``default`` for roots the specs do not list); the rules themselves are in ``loaders/bad_ticks.py``.

- ``scale_tolerance``: how close ``log10`` of a price ratio must be to a non-zero integer ``k`` to count as
  a scale error (×10^k). 0.2 accepts ratios within ×/÷1.58 of 10, 100, 0.1, 0.01…, i.e. a ratio of at
  least 6.3 (or at most 1/6.3) from one bar to the next: far beyond any exchange price limit.
- ``spike_log_return``: a bar whose close is more than this (natural log) away from the previous close,
  and whose next close comes back to within half of it of the previous one, is an isolated spike. CME
  daily limits for equity index futures are about 7-20 %; 0.15 (16 %) in one bar and straight back is
  not a market move. Energy gets more room (0.35) because crude and natural gas have moved that much.
"""

from __future__ import annotations

import functools

import pyarrow as pa
from pydantic import BaseModel, Field

from warehouse.contracts import _read_rows, specs_table

DEFAULT_CLASS = "default"


class BadTickLimits(BaseModel):
    """One row of ``bad_ticks.csv``.

    Attributes
    ----------
    product_class : str
        A ``correlation_group`` of ``contracts.csv``, or ``default``.
    scale_tolerance : float
        Largest ``|log10(ratio) - k|`` that still counts as a ×10^k scale error; in (0, 0.5).
    spike_log_return : float
        Smallest ``|ln(close / previous close)|`` that can be a spike; > 0.
    """

    product_class: str
    scale_tolerance: float = Field(gt=0, lt=0.5)
    spike_log_return: float = Field(gt=0)


@functools.cache
def _limits() -> dict[str, BadTickLimits]:
    rows = {row.product_class: row for _, row in _read_rows("bad_ticks.csv", BadTickLimits)}
    if DEFAULT_CLASS not in rows:
        raise ValueError(f"warehouse/data/bad_ticks.csv: needs a {DEFAULT_CLASS!r} row")
    return rows


def default_limits() -> BadTickLimits:
    """The thresholds of a root that ``contracts.csv`` does not list."""
    return _limits()[DEFAULT_CLASS]


def limits_table() -> pa.Table:
    """Per root: ``root``, ``scale_tolerance``, ``spike_log_return`` (its product class's row, else ``default``)."""
    specs = specs_table()
    limits = _limits()
    chosen = [limits.get(group, limits[DEFAULT_CLASS]) for group in specs["correlation_group"].to_pylist()]
    return pa.table(
        {
            "root": specs["root"],
            "scale_tolerance": pa.array([row.scale_tolerance for row in chosen], pa.float64()),
            "spike_log_return": pa.array([row.spike_log_return for row in chosen], pa.float64()),
        }
    )
