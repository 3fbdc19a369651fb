"""The look-ahead lint refuses templates that could read later bars."""

from __future__ import annotations

import pytest
import sqlglot

from warehouse.errors import QEError
from warehouse.features.lint import lint_lookahead

ALLOWED = [
    "SELECT sum(x) OVER (PARTITION BY symbol ORDER BY ts ROWS BETWEEN 19 PRECEDING AND CURRENT ROW) FROM base",
    "SELECT lag(c, 1) OVER (PARTITION BY symbol ORDER BY ts) FROM base",
    "SELECT b.ts FROM base AS b JOIN sessions AS p ON p.symbol = b.symbol AND p.sid = b.sid - 1",
    "SELECT b.ts FROM base AS b JOIN totals AS t USING (symbol, blk)",
]
REFUSED = [
    ("SELECT lead(c) OVER (PARTITION BY symbol ORDER BY ts) FROM base", "LEAD"),
    ("SELECT lag(c, -1) OVER (PARTITION BY symbol ORDER BY ts) FROM base", "negative offset"),
    ("SELECT avg(c) OVER (PARTITION BY symbol ORDER BY ts ROWS BETWEEN 2 PRECEDING AND 2 FOLLOWING) FROM base", "FOLLOWING"),
    ("SELECT max(h) OVER (PARTITION BY symbol ORDER BY ts ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING) FROM base", "FOLLOWING"),
    ("SELECT max(h) OVER (PARTITION BY symbol) FROM base", "whole partition"),
    ("SELECT b.ts FROM base AS b JOIN sessions AS n ON n.symbol = b.symbol AND n.sid = b.sid + 1", "later row or session"),
    ("SELECT b.ts FROM base AS b JOIN base AS n ON n.symbol = b.symbol AND n.ts > b.ts", "inequality"),
]


@pytest.mark.parametrize("sql", ALLOWED)
def test_point_in_time_constructs_pass(sql):
    lint_lookahead("t.sql", sqlglot.parse_one(sql, read="duckdb"))


@pytest.mark.parametrize("sql, reason", REFUSED)
def test_look_ahead_constructs_are_refused_with_the_file_and_construct(sql, reason):
    with pytest.raises(QEError, match=reason) as info:
        lint_lookahead("sql/features/bad.sql", sqlglot.parse_one(sql, read="duckdb"))
    assert str(info.value).startswith("sql/features/bad.sql: look-ahead:")


def test_named_windows_are_resolved():
    ok = "SELECT sum(x) OVER w FROM base WINDOW w AS (PARTITION BY symbol ORDER BY ts ROWS BETWEEN 4 PRECEDING AND CURRENT ROW)"
    lint_lookahead("t.sql", sqlglot.parse_one(ok, read="duckdb"))
    bad = "SELECT sum(x) OVER w FROM base WINDOW w AS (PARTITION BY symbol)"
    with pytest.raises(QEError, match="whole partition"):
        lint_lookahead("t.sql", sqlglot.parse_one(bad, read="duckdb"))


def test_inherited_named_windows_keep_their_order():
    ok = ("SELECT sum(x) OVER w20 FROM base WINDOW w AS (PARTITION BY symbol ORDER BY ts), "
          "w20 AS (w ROWS BETWEEN 19 PRECEDING AND CURRENT ROW)")
    lint_lookahead("t.sql", sqlglot.parse_one(ok, read="duckdb"))
