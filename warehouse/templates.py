"""Render the SQL templates shipped in the ``sql`` package.

Templates are Jinja with ``StrictUndefined`` (a missing parameter is an error, never an empty string) and
must render to exactly one ``SELECT`` (or ``WITH ... SELECT``): Python owns every DDL statement. sqlglot
checks that on every render, so a template that drifts into DDL fails loudly at the first use. The verdict is kept
per rendered text (a process renders the same feature SQL many times), and a template that composes SELECTs
rendered before (:func:`render_composed`) is checked as its skeleton plus those parts: parsing the composed
feature query again cost ~0.1-0.2 s per family and render.
"""

from __future__ import annotations

import math
from functools import lru_cache
from importlib import resources
from typing import Any

import jinja2
import sqlglot
from sqlglot import exp

from warehouse.errors import QEError


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(_load_template),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    # Constants of the recursive filters (block length, decay) are computed at render time.
    env.globals.update(ln=math.log, exp=math.exp, sqrt=math.sqrt, pi=math.pi)
    # A bare 0.154... literal is a DECIMAL in DuckDB (and overflows in products); render floats as DOUBLE.
    env.filters["double"] = lambda value: f"CAST({float(value)!r} AS DOUBLE)"
    return env


def _load_template(name: str) -> str:
    path = resources.files("sql").joinpath(name)
    if not path.is_file():
        raise QEError(f"SQL template not found: sql/{name}")
    return path.read_text(encoding="utf-8")


def render_string(text: str, **params: Any) -> str:
    """Render template text that imports the shipped macros (composed queries, tests); same SELECT check."""
    return _checked("<string>", _environment().from_string(text), params)


def render(name: str, **params: Any) -> str:
    """Render ``sql/<name>`` with ``params`` and check that it is a single SELECT.

    Raises
    ------
    QEError
        If the template is missing, a parameter is undefined, or the result is not one SELECT.
    """
    return _checked(f"sql/{name}", _environment().get_template(name), params)


def render_composed(name: str, selects: dict[str, str | list[str]], **params: Any) -> str:
    """Render ``sql/<name>``, whose parameters ``selects`` are SELECTs it embeds (each placed on lines of its own
    inside parentheses, e.g. as a CTE body), checking the parts and the template apart.

    Each part must be exactly one SELECT, and so must the template rendered with every part replaced by
    ``SELECT 1``: then the whole is one SELECT, and a part already checked (every family's SQL, rendered once
    per process) is not parsed again inside the composition.

    Raises
    ------
    QEError
        As :func:`render`; the message names the part that is not a SELECT.
    """
    label = f"sql/{name}"
    template = _environment().get_template(name)
    skeleton = {}
    for key, value in selects.items():
        for part in value if isinstance(value, list) else [value]:
            # A part ending in ';' parses as one SELECT alone but not inside the template's parentheses.
            if part.rstrip().endswith(";") or not _one_select(part):
                raise QEError(f"{label}: its part {key!r} is not exactly one SELECT")
        skeleton[key] = ["SELECT 1"] * len(value) if isinstance(value, list) else "SELECT 1"
    _checked(label, template, {**params, **skeleton})
    return _rendered(label, template, {**params, **selects})


def _rendered(label: str, template: jinja2.Template, params: dict[str, Any]) -> str:
    try:
        return template.render(**params)
    except jinja2.UndefinedError as exc:
        raise QEError(f"{label}: {exc}") from exc


def _checked(label: str, template: jinja2.Template, params: dict[str, Any]) -> str:
    sql = _rendered(label, template, params)
    if not _one_select(sql):
        raise QEError(f"{label}: a template must render to exactly one SELECT")
    return sql


def render_parsed(label: str, text: str | None = None, **params: Any) -> tuple[str, exp.Query]:
    """Render template ``text`` (None: the template file ``label``, ``sql/...``) like :func:`render_string` /
    :func:`render` and also return its parse tree (one parse for the SELECT check and the caller's own
    inspection of the query)."""
    template = _environment().from_string(text) if text is not None else \
        _environment().get_template(label.removeprefix("sql/"))
    sql = _rendered(label, template, params)
    verdict, statements = _parse_checked(sql)
    if not verdict:
        raise QEError(f"{label}: a template must render to exactly one SELECT")
    return sql, statements[0]


#: SELECT-check verdicts by rendered text (bounded: cleared when full).
_VERDICTS: dict[str, bool] = {}
_MAX_VERDICTS = 512


def note_select(sql: str) -> None:
    """Record that ``sql`` was checked as exactly one SELECT (by a caller that kept the verdict of an earlier
    process: :mod:`warehouse.features.checked_cache`), so that composing it does not parse it again."""
    _keep_verdict(sql, True)


def _keep_verdict(sql: str, verdict: bool) -> bool:
    if len(_VERDICTS) >= _MAX_VERDICTS:
        _VERDICTS.clear()
    _VERDICTS[sql] = verdict
    return verdict


def _one_select(sql: str) -> bool:
    """``sql`` parses (sqlglot, DuckDB dialect) as exactly one query (SELECT, WITH ... SELECT, set operation)."""
    verdict = _VERDICTS.get(sql)
    if verdict is None:
        verdict, _ = _parse_checked(sql)
    return verdict


def _parse_checked(sql: str) -> tuple[bool, list[exp.Expression]]:
    """Parse ``sql`` and keep its verdict (:func:`_one_select`): (the verdict, the statements)."""
    statements = [s for s in sqlglot.parse(sql, read="duckdb") if s is not None]
    return _keep_verdict(sql, len(statements) == 1 and isinstance(statements[0], exp.Query)), statements
