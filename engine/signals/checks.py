"""A signal that is NULL on every bar: detected and explained with the history it needs.

A generator's ``signal`` is NULL until every feature it reads has warmed up. On a short sample (the composite
reads ``rv_pctrank_20_240``: 260 bars of history; the shipped 1h sample has 193 ES bars) it is NULL on every
row, and a build or a backtest over it trades nothing without saying why. These helpers say why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlglot
from sqlglot import exp


@dataclass(frozen=True)
class WarmUp:
    """The most history any feature a query reads needs: ``bars`` rows, for ``feature``."""

    bars: int
    feature: str


def warm_up(sql: str) -> WarmUp | None:
    """The longest warm-up among the catalog features ``sql`` reads, from their declared ``first=N``.

    A feature whose first non-NULL row is row ``N`` (0-based) needs ``N + 1`` bars. Warm-ups counted in
    sessions (``first=D1+1``) are skipped: they do not translate to a bar count. ``None`` when the query reads
    no catalog feature or does not parse.
    """
    from warehouse.features.registry import build_registry

    try:
        names = {c.name for c in sqlglot.parse_one(sql, read="duckdb").find_all(exp.Column)}
    except sqlglot.errors.ParseError:
        return None
    best: WarmUp | None = None
    for spec in build_registry().features:
        first = spec.warmup.split("=", 1)[-1]
        if spec.name in names and first.isdigit() and (best is None or int(first) + 1 > best.bars):
            best = WarmUp(int(first) + 1, spec.name)
    return best


def all_null_symbols(con: Any, relation: str, column: str = "signal") -> dict[str, int]:
    """``{symbol: rows}`` of every symbol of ``relation`` whose ``column`` is NULL on every row."""
    rows = con.sql(f"SELECT symbol, count(*) AS n FROM ({relation}) GROUP BY symbol "
                   f"HAVING count({column}) = 0 ORDER BY symbol").fetchall()
    return {symbol: int(n) for symbol, n in rows}


def null_signal_warning(label: str, empty: dict[str, int], needs: WarmUp | None, column: str = "signal") -> str:
    """``<label>: signal is NULL on every row of ES (193 bars; rv_pctrank_20_240 needs 260 bars of history)``."""
    had = ", ".join(f"{symbol} ({n:,} bars)" for symbol, n in empty.items())
    why = (f"; its features need {needs.bars:,} bars of history ({needs.feature})" if needs
           else "; its features have not warmed up")
    return f"{label}: {column} is NULL on every row of {had}{why}, so nothing can trade"
