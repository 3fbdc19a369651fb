"""The SELECT-only check of the SQL templates (warehouse/templates.py), also for composed templates."""

from __future__ import annotations

import pytest

from warehouse.errors import QEError
from warehouse.features.incremental import shipped_registry
from warehouse.features.registry import Registry, feature_query, template_params
from warehouse.templates import render, render_composed, render_string


def test_a_template_rendering_to_anything_but_one_select_fails():
    for text in ("CREATE TABLE t AS SELECT 1", "SELECT 1; DELETE FROM t", "UPDATE t SET x = 1"):
        with pytest.raises(QEError, match="exactly one SELECT"):
            render_string(text)
    assert render_string("WITH a AS (SELECT 1 AS x) SELECT x FROM a UNION ALL SELECT 2").startswith("WITH")


def test_a_composed_template_is_the_same_text_and_checks_its_parts():
    registry = shipped_registry("1h")
    family = registry.families[0]
    composed = feature_query(Registry([family], registry.base_sql), "bars_src", "1h")
    base = render("features/base.sql", **{**template_params("1h"), "source": "bars_src"})
    assert base in composed and family.sql in composed
    # The composition's text is exactly what the fully parsed render gives.
    params = {"base_sql": base, "families": [family.sql], "features": []}
    assert render_composed("features/_compose.sql", {"base_sql": base, "families": [family.sql]}, features=[]) == \
        render("features/_compose.sql", **params)
    for bad in ("DROP TABLE bars", "SELECT 1; DELETE FROM bars", "SELECT symbol, ts FROM base;"):
        with pytest.raises(QEError, match="part 'families' is not exactly one SELECT"):
            render_composed("features/_compose.sql", {"base_sql": base, "families": [family.sql, bad]}, features=[])
    with pytest.raises(QEError, match="part 'base_sql'"):
        render_composed("features/_compose.sql", {"base_sql": "INSERT INTO t VALUES (1)", "families": []},
                        features=[])
