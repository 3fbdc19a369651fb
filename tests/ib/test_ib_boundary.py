"""The venue boundary: only engine/adapters/ib imports ib_async (tests and bench/ may, to drive the real client)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ADAPTER = REPO / "engine" / "adapters" / "ib"


def _imports_ib_async(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "ib_async" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "ib_async":
            return True
    return False


def test_only_the_ib_adapter_imports_ib_async() -> None:
    offenders = [
        str(path.relative_to(REPO))
        for top in ("engine", "warehouse", "loaders", "sql")
        for path in sorted((REPO / top).rglob("*.py"))
        if ADAPTER not in path.parents and _imports_ib_async(path)
    ]
    assert offenders == []


def test_the_gateway_simulator_does_not_use_ib_async() -> None:
    # it must speak the protocol itself, or tests would check ib_async against ib_async
    assert [p.name for p in sorted((ADAPTER / "gateway_sim").glob("*.py")) if _imports_ib_async(p)] == []
