"""A disk memo of the feature templates' checked renders, shared by every process.

Building a registry renders the five family templates and ``base.sql`` (Jinja) and checks each render: one SELECT,
its projections against the header, no look-ahead (a sqlglot parse of ~100 KB of SQL). That is ~0.7 s per parameter
set, paid by every process that builds one (a features build builds one, a live session four). The outcome is a pure
function of the template's text, its parameters, the other templates it imports and the checking code, so a passing
check is kept on disk under a hash of all of them and the next process reads it instead: the rendered SQL and what
the check derived from it. A failing check is never kept (its error is raised again, from the templates, every time).

Location: ``$QE_CACHE_DIR``, else ``$XDG_CACHE_HOME/quant-engine``, else ``~/.cache/quant-engine``; each entry is
one JSON file under ``checked-sql/<code version>/``, written atomically (a temporary file renamed), so concurrent
processes never read a half-written entry. The first entry of a new code version removes the folders of the older
ones (each holds ~1.5 MB). An unreadable entry, or a directory that cannot be written, only costs the check again;
so does an install whose sources cannot be read (the cache is then off). A kept entry is trusted as checked: its
SQL runs without the look-ahead lint running again.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import sqlglot

from warehouse.store import write_text_atomic

#: The modules whose code decides a check's outcome (rendering and checking), besides every SQL template.
_CHECKING_CODE = ("warehouse/templates.py", "warehouse/features/registry.py", "warehouse/features/lint.py",
                  "warehouse/features/headers.py", "warehouse/features/checked_cache.py")


def cache_dir() -> Path:
    """Where the entries live (``checked-sql/`` under it)."""
    configured = os.environ.get("QE_CACHE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "quant-engine"


def _code_version() -> str:
    """A hash of every SQL template, the checking code, the versions of Jinja and sqlglot, and the Python build and
    platform (the templates compute constants with the platform's libm)."""
    digest = hashlib.sha256(f"jinja2 {jinja2.__version__} sqlglot {sqlglot.__version__} python {sys.version} "
                            f"{platform.platform()}".encode())
    root = Path(__file__).resolve().parents[2]
    for name in _CHECKING_CODE:
        digest.update(name.encode() + b"\0" + (root / name).read_bytes())
    sql = resources.files("sql")
    for path in sorted(_sql_files(sql), key=lambda p: p[0]):
        digest.update(path[0].encode() + b"\0" + path[1])
    return digest.hexdigest()


def _sql_files(folder, prefix: str = "") -> list[tuple[str, bytes]]:  # noqa: ANN001 (an importlib Traversable)
    out = []
    for entry in folder.iterdir():
        if entry.is_dir():
            out.extend(_sql_files(entry, f"{prefix}{entry.name}/"))
        elif entry.name.endswith(".sql"):
            out.append((prefix + entry.name, entry.read_bytes()))
    return out


try:
    # Once, at import: the code this process runs (a later edit on disk is another process's version).
    _VERSION: str | None = _code_version()
except Exception:  # noqa: BLE001 (sources not readable as files, e.g. a zipped install: no cache)
    _VERSION = None


def checked(kind: str, inputs: dict[str, Any], check: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The outcome of ``check()`` (a JSON-able dict) for ``inputs``, read from disk when a process kept it before.

    Parameters
    ----------
    kind : str
        What is checked (part of the key).
    inputs : dict
        Everything the outcome depends on besides the templates and the checking code: the template's text and
        its parameters. Serialized as sorted JSON (values that JSON cannot hold by their ``repr``).
    check : callable
        Renders and checks; raises on a failing check (nothing is kept then).
    """
    if _VERSION is None:
        return check()
    key = hashlib.sha256("\0".join([kind, json.dumps(inputs, sort_keys=True, default=repr)]).encode()).hexdigest()
    folder = cache_dir() / "checked-sql"
    path = folder / _VERSION[:24] / f"{key}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    outcome = check()
    try:
        if not path.parent.is_dir():
            for old in folder.glob("*"):  # entries of other code versions are never read again
                if old.is_dir() and old.name != path.parent.name:
                    shutil.rmtree(old, ignore_errors=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(outcome))
    except OSError:
        pass  # a read-only or full disk: the check runs again next time
    return outcome
