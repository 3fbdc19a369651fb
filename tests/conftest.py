"""Shared fixtures: a fresh warehouse per test and the real data in ../shared/data."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from warehouse import Warehouse

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
LEAN = SHARED / "real" / "lean-es-cme"
DATABENTO = SHARED / "databento"


def pytest_configure(config: pytest.Config) -> None:
    """Checked feature templates are kept in a cache of this test process, not in the user's (~/.cache)."""
    os.environ["QE_CACHE_DIR"] = tempfile.mkdtemp(prefix="qe_test_cache_")


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(os.environ.pop("QE_CACHE_DIR", ""), ignore_errors=True)


@pytest.fixture
def wh(tmp_path: Path) -> Warehouse:
    """An empty warehouse in a temporary directory."""
    warehouse = Warehouse(tmp_path / "qe_data")
    yield warehouse
    warehouse.close()


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    """Write a small CSV (header + rows) and return its path."""
    path.write_text("\n".join([header, *rows]) + "\n")
    return path
