"""Look-ahead lint: a feature at ts may read only bars with open time <= ts.

Refused at build time: ``LEAD`` and ``LAG`` with a negative offset; window frames that end ``FOLLOWING`` (or ``UNBOUNDED FOLLOWING``); aggregate
windows with no ``ORDER BY`` (they see the whole partition, future included); and joins whose condition reaches a later row or session: a join
key of the joined table equal to another table's key plus a positive offset (``nxt.sid = b.sid + 1``), or an
inequality on a time-ordered key (``u.ts > b.ts``).
"""

from __future__ import annotations

from sqlglot import exp

from warehouse.errors import QEError

ORDER_KEYS = {"ts", "sid", "rn", "trading_date", "blk"}


def lint_lookahead(label: str, tree: exp.Expression) -> None:
    """Raise :class:`QEError` naming ``label`` and the construct when ``tree`` can see the future."""
    for lead in tree.find_all(exp.Lead):
        raise QEError(f"{label}: look-ahead: {lead.sql('duckdb')} reads a later row (LEAD is refused)")
    for lag in tree.find_all(exp.Lag):
        # A negative LAG offset is a LEAD in disguise; a column offset cannot be proven non-negative here.
        offset = lag.args.get("offset")
        if isinstance(offset, exp.Neg) or (isinstance(offset, exp.Literal) and not offset.is_string and float(offset.this) < 0):
            raise QEError(f"{label}: look-ahead: {lag.sql('duckdb')} has a negative offset (reads a later row)")
    named = {
        w.this.name: w
        for select in tree.find_all(exp.Select)
        for w in (select.args.get("windows") or [])
        if isinstance(w.this, exp.Identifier)
    }
    for window in tree.find_all(exp.Window):
        func = window.this
        if not isinstance(func, exp.AggFunc) or isinstance(func, (exp.Lag, exp.Lead)):
            continue
        definition = named.get(window.args["alias"].name) if window.args.get("alias") is not None and window.args.get("order") is None else window
        # A named window may inherit its ORDER BY from another (WINDOW w20 AS (w ROWS ...)).
        seen: set[str] = set()
        while (
            definition is not None and definition.args.get("order") is None and definition.args.get("alias") is not None
            and definition.args["alias"].name not in seen
        ):
            seen.add(definition.args["alias"].name)
            definition = named.get(definition.args["alias"].name)
        if definition is not None and definition.args.get("order") is None:
            raise QEError(f"{label}: look-ahead: '{window.sql('duckdb')}' aggregates the whole partition (no ORDER BY)")
    for spec in tree.find_all(exp.WindowSpec):
        if (spec.args.get("end_side") or "").lower() == "following" or (spec.args.get("start_side") or "").lower() == "following":
            raise QEError(f"{label}: look-ahead: window frame '{spec.sql('duckdb')}' includes FOLLOWING rows")
    for join in tree.find_all(exp.Join):
        on = join.args.get("on")
        if on is None:
            continue
        joined = join.this.alias_or_name
        for cmp in on.find_all(exp.GT, exp.GTE, exp.LT, exp.LTE):
            if _keys(cmp):
                raise QEError(f"{label}: look-ahead: join condition '{cmp.sql('duckdb')}' is an inequality on a time key")
        for eq in on.find_all(exp.EQ):
            if _reaches_ahead(eq.left, eq.right, joined) or _reaches_ahead(eq.right, eq.left, joined):
                raise QEError(f"{label}: look-ahead: join condition '{eq.sql('duckdb')}' joins a later row or session")


def _keys(node: exp.Expression) -> set[str]:
    return {c.name for c in node.find_all(exp.Column) if c.name in ORDER_KEYS}


def _reaches_ahead(side: exp.Expression, other: exp.Expression, joined: str) -> bool:
    """True when ``side`` is the joined table's key and ``other`` is a key plus a positive offset (or
    ``side`` is the joined key minus a positive offset)."""
    def offset(node: exp.Expression) -> tuple[exp.Column | None, float]:
        if isinstance(node, exp.Column):
            return node, 0.0
        if isinstance(node, (exp.Add, exp.Sub)) and isinstance(node.left, exp.Column) and isinstance(node.right, exp.Literal):
            value = float(node.right.this) if not node.right.is_string else 0.0
            return node.left, value if isinstance(node, exp.Add) else -value
        return None, 0.0

    col, own = offset(side)
    ocol, theirs = offset(other)
    if col is None or ocol is None or col.name not in ORDER_KEYS or ocol.name not in ORDER_KEYS:
        return False
    if col.table != joined:
        return False
    # joined.key + own = other.key + theirs  ->  joined.key = other.key + (theirs - own)
    return theirs - own > 0
