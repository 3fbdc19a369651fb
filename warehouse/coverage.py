"""What the warehouse holds, checked before a command runs on data that is not there.

A query over an empty view does not fail the way a user expects: ``features_1h`` before
``qe features build --timeframe 1h`` has only ``symbol`` and ``ts`` (a binder error names a feature column,
not the missing build), and ``WHERE symbol = 'FOO'`` simply returns no bars (a backtest of 0 bars exits 0).
These checks read the directory layout only (no query runs), so they cost nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

import sqlglot
from sqlglot import exp

from warehouse.errors import QEError

_FEATURE_VIEW = re.compile(r"\bfeatures_(1m|1h|1d)\b", re.IGNORECASE)


def missing_warehouse_message(root: Path) -> str:
    """The error of a read command pointed at a directory that is not there."""
    return (f"no warehouse at {root}; point at one with --warehouse DIR or QE_WAREHOUSE=DIR, "
            "or create it with qe ingest PATH or qe demo")


def has_bars(root: Path) -> bool:
    """Whether any bar partition has been written."""
    return any((Path(root) / "bars").glob("timeframe=*/symbol=*/year=*/*.parquet"))


def known_symbols(root: Path) -> set[str]:
    """Every symbol with bars in some timeframe (the ``symbol=`` partition directories)."""
    return {d.name.split("=", 1)[1] for d in (Path(root) / "bars").glob("timeframe=*/symbol=*") if d.is_dir()}


def unbuilt_features(root: Path, query: str) -> list[str]:
    """The timeframes of the ``features_<tf>`` views ``query`` names that have not been built."""
    named = sorted({m.lower() for m in _FEATURE_VIEW.findall(query)})
    return [tf for tf in named
            if not any((Path(root) / "features" / f"timeframe={tf}").glob("symbol=*/year=*/*.parquet"))]


def unbuilt_features_message(timeframes: list[str]) -> str:
    """``features_1h is empty: run qe features build --timeframe 1h`` (the wording of ``qe signals build``)."""
    return "; ".join(f"features_{tf} is empty: run qe features build --timeframe {tf}" for tf in timeframes)


def named_symbols(query: str) -> list[str]:
    """The symbols a query names in ``symbol = '...'`` or ``symbol IN ('...', ...)``, in order of appearance.

    A query that does not parse names none: the engine reports its own error for it.
    """
    try:
        trees = sqlglot.parse(query, read="duckdb")
    except sqlglot.errors.ParseError:
        return []
    found: list[str] = []
    for tree in trees:
        if tree is None:
            continue
        for node in tree.find_all(exp.EQ, exp.In):
            column, values = node.this, (node.expressions if isinstance(node, exp.In) else [node.expression])
            if isinstance(node, exp.EQ) and isinstance(column, exp.Literal):  # 'ES' = symbol
                column, values = node.expression, [node.this]
            if not (isinstance(column, exp.Column) and column.name.lower() == "symbol"):
                continue
            found += [v.this for v in values if isinstance(v, exp.Literal) and v.is_string and v.this not in found]
    return found


def check_symbols_known(root: Path, symbols: list[str] | None, what: str = "the warehouse") -> None:
    """Raise :class:`QEError` naming every symbol of ``symbols`` that has no bars in the warehouse."""
    if not symbols:
        return
    known = known_symbols(root)
    unknown = [s for s in symbols if s not in known]
    if unknown:
        have = ", ".join(sorted(known)) or "none: load bars with qe ingest PATH or qe demo"
        raise QEError(f"{what} has no bars for {', '.join(unknown)} (symbols with bars: {have})")


def check_query_data(root: Path, query: str) -> None:
    """Refuse a run whose query reads unbuilt features or names symbols the warehouse does not have."""
    unbuilt = unbuilt_features(root, query)
    if unbuilt:
        raise QEError(unbuilt_features_message(unbuilt))
    check_symbols_known(root, named_symbols(query))
