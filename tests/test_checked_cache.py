"""The disk memo of checked feature templates (warehouse.features.checked_cache): a later process reads a passing
check instead of rendering and parsing again, and gets exactly what the check gave; a failing check is never kept;
anything that changes the outcome changes the key; a damaged entry or an unwritable directory costs only the check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_feature_registry import GOOD, OTHER
from warehouse.errors import QEError
from warehouse.features import checked_cache
from warehouse.features import registry as registry_module
from warehouse.features.registry import build_registry
from warehouse.templates import _VERDICTS

TEMPLATES = [("features/01_demo.sql", GOOD), ("features/02_other.sql", OTHER)]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("QE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "checked-sql"


def _entries(cache: Path) -> list[Path]:
    return sorted(cache.glob("*/*.json")) if cache.exists() else []


def _no_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on rendering and checking a template fails the test: only kept outcomes can be used."""
    def refuse(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("a template was rendered and checked again")

    monkeypatch.setattr(registry_module, "_check_family_sql", refuse)
    monkeypatch.setattr(registry_module, "_check_base_sql", refuse)


def test_a_second_build_reads_the_kept_checks_and_equals_the_first(cache, monkeypatch):
    first = build_registry(TEMPLATES)
    assert len(_entries(cache)) == 3  # two families and base.sql
    _VERDICTS.clear()
    _no_checks(monkeypatch)
    second = build_registry(TEMPLATES)
    assert second.base_sql == first.base_sql
    assert [(f.template, f.sql, f.states, f.specs) for f in second.families] == \
        [(f.template, f.sql, f.states, f.specs) for f in first.families]
    # the kept family SQL counts as checked: composing it does not parse it again
    assert all(_VERDICTS.get(f.sql) for f in second.families)
    assert second.lineage("mom_10") == ["close"]


def test_the_shipped_templates_with_live_parameters_come_back_identical(cache, monkeypatch):
    params = {"timeframe": "1m", "filter_seeds": True, "session_seeds": True, "tod_history": "t",
              "session_history": "s", "running_rows": 2600, "filter_states": True}
    first = build_registry(**params)
    _no_checks(monkeypatch)
    second = build_registry(**params)
    assert [(f.sql, f.states) for f in second.families] == [(f.sql, f.states) for f in first.families]
    assert any(f.states for f in second.families)


def test_a_failing_check_is_never_kept_and_fails_every_time(cache):
    peek = GOOD.replace("lag(c, 10)", "lead(c, 10)")
    for _ in range(2):
        with pytest.raises(QEError, match="look-ahead"):
            build_registry([("features/01_demo.sql", peek)])
    assert _entries(cache) == []


def test_the_text_and_the_parameters_are_part_of_the_key(cache, monkeypatch):
    build_registry(TEMPLATES)
    kept = len(_entries(cache))
    build_registry(TEMPLATES, timeframe="1h")
    assert len(_entries(cache)) == kept + 3
    changed = [("features/01_demo.sql", GOOD.replace("c - lag(c, 10)", "c - lag(c, 9)")), TEMPLATES[1]]
    _no_checks(monkeypatch)
    with pytest.raises(AssertionError, match="rendered and checked again"):
        build_registry(changed)


def test_a_damaged_entry_is_checked_again_and_replaced(cache):
    first = build_registry(TEMPLATES)
    for entry in _entries(cache):
        entry.write_text('{"sql": "SELECT', encoding="utf-8")  # cut short
    again = build_registry(TEMPLATES)
    assert [f.sql for f in again.families] == [f.sql for f in first.families]
    assert all(json.loads(entry.read_text(encoding="utf-8"))["sql"] for entry in _entries(cache))
    assert not list(cache.glob("*/*.tmp"))


def test_a_cache_directory_that_cannot_be_made_only_costs_the_check(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("QE_CACHE_DIR", str(blocker / "cache"))  # mkdir under a file fails, even for root
    for _ in range(2):
        registry = build_registry(TEMPLATES)
        assert [f.name for f in registry.features][:2] == ["logret_1", "mom_10"]
    assert blocker.read_text() == "not a directory"


def test_the_first_entry_of_another_code_version_removes_the_older_ones(cache, monkeypatch):
    build_registry(TEMPLATES)
    [old] = {entry.parent for entry in _entries(cache)}
    monkeypatch.setattr(checked_cache, "_VERSION", "f" * 64)  # as after an edit of a template or the checks
    build_registry(TEMPLATES)
    assert not old.exists()
    assert {entry.parent.name for entry in _entries(cache)} == {"f" * 24}


def test_without_a_code_version_every_build_checks(cache, monkeypatch):
    monkeypatch.setattr(checked_cache, "_VERSION", None)  # sources not readable: the cache is off
    build_registry(TEMPLATES)
    assert _entries(cache) == []
