"""One hash group for the windows of a multi-symbol feature query.

Why: DuckDB's window operator spreads its input over radix partitions ("hash groups") by the hash of the
``PARTITION BY`` key and then prepares every window function once per hash group. That fixed cost (~0.05 ms per
function and group, whatever the rows: 60 lags over 60 rows of 5 symbols take 14 ms in 5 groups, 2.4 ms in
one) is what the per-bar live statements and the bounded-tail append pay most: a few hundred window functions
over a handful of rows per symbol, 5 to 15 symbols side by side.

How: ``PARTITION BY symbol`` becomes ``PARTITION BY <a BIGINT per symbol>``, the integers chosen so that their
hashes agree in bits 40-47, which is where DuckDB 1.5 takes the radix bits from (4 bits for inputs below ~2M
rows, up to 8 here). Each symbol keeps its own partition (the map is one-to-one; a symbol outside it fails the
query), so every value is the same; only the work is shared. Should a DuckDB release hash or partition
differently, the statements stay correct and only lose the saving (``bench/bench_features_live.py`` shows it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

import duckdb

__all__ = ["one_hash_group", "same_group_keys"]

#: ``PARTITION BY symbol`` (or ``alias.symbol``) as the whole key of a window: composite keys are left alone.
_BY_SYMBOL = re.compile(r"\bPARTITION BY\s+((?:\w+\.)?symbol)(?=\s+ORDER BY\b)", re.IGNORECASE)
#: The hash bits that pick a window's radix partition (DuckDB 1.5: bits 48 - radix_bits .. 47, radix_bits <= 8).
_GROUP_BITS_SHIFT, _GROUP_BITS_MASK = 40, 0xFF
#: Beyond this many symbols the CASE per row costs more than the groups it saves; the SQL is left as it is.
MAX_SYMBOLS = 256


@lru_cache(maxsize=8)
def same_group_keys(count: int) -> tuple[int, ...]:
    """``count`` non-negative integers whose DuckDB ``hash`` (as BIGINT) agree in the radix bits (40-47)."""
    con = duckdb.connect()
    try:
        # about one integer in 256 qualifies; scan enough for any count up to MAX_SYMBOLS
        rows = con.execute(
            f"SELECT i FROM range(0, $n) AS r(i) WHERE (hash(i::BIGINT) >> {_GROUP_BITS_SHIFT}) & {_GROUP_BITS_MASK} "
            f"= (hash(0::BIGINT) >> {_GROUP_BITS_SHIFT}) & {_GROUP_BITS_MASK} ORDER BY i LIMIT $count",
            {"n": 1024 * count + 65_536, "count": count}).fetchall()
    finally:
        con.close()
    keys = tuple(int(r[0]) for r in rows)
    if len(keys) < count:  # not expected from any reasonable hash; the caller then keeps the plain keys
        return ()
    return keys


def one_hash_group(sql: str, symbols: Sequence[str]) -> str:
    """``sql`` with each window partitioned by symbol alone partitioned by the symbol's key of
    :func:`same_group_keys` instead: the same rows and values, one window hash group for all ``symbols``.

    Parameters
    ----------
    sql : str
        A rendered feature query whose relations hold only rows of ``symbols``.
    symbols : sequence of str
        Every symbol the query reads; another symbol fails the query (``error``), never shares a partition.
    """
    names = sorted(set(symbols))
    if len(names) < 2 or len(names) > MAX_SYMBOLS:
        return sql  # one symbol is one group already
    keys = same_group_keys(len(names))
    if not keys:
        return sql
    branches = " ".join(f"WHEN '{name.replace(chr(39), chr(39) * 2)}' THEN {key}::BIGINT"
                        for name, key in zip(names, keys))

    def keyed(match: re.Match) -> str:
        column = match.group(1)
        return (f"PARTITION BY (CASE {column} {branches} "
                f"ELSE error('symbol ' || {column} || ' has no window partition key') END)")

    return _BY_SYMBOL.sub(keyed, sql)
