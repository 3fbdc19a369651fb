"""Declared outputs of a feature template, read from its header.

A family template under ``sql/features/`` starts with a Jinja comment that declares what it outputs::

    {#- features
    family: price_action
    category: price action
    ret_1    | double | n=1  | first=1 | simple return c / c[t-1] - 1
    logret_1 | double | n=1  | first=1 | log return ln(c / c[t-1])
    -#}

Each output line is ``name | type | window | warm-up | description``; ``type`` is ``int`` or ``double``.
The registry is built from these headers and checked against the rendered SQL, never kept beside them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePath

from warehouse.errors import QEError

_HEADER = re.compile(r"\{#-?\s*features\s*\n(?P<body>.*?)-?#\}", re.S)
TYPES = ("int", "double")


@dataclass(frozen=True)
class FeatureSpec:
    """One declared output column of a feature template."""

    name: str
    family: str
    category: str
    type: str
    window: str
    warmup: str
    description: str
    template: str


def parse_header(template_name: str, text: str) -> list[FeatureSpec]:
    """Declared features of a template; a malformed header is an error naming the file and line."""
    match = _HEADER.search(text)
    if match is None:
        raise QEError(f"sql/{template_name}: no '{{#- features ... #}}' header")
    family = category = None
    specs: list[FeatureSpec] = []
    first_line = text[: match.start("body")].count("\n") + 1
    for offset, raw in enumerate(match.group("body").splitlines()):
        line = raw.strip()
        where = f"sql/{template_name}:{first_line + offset}"
        if not line:
            continue
        if line.startswith("family:"):
            family = line.split(":", 1)[1].strip()
            continue
        if line.startswith("category:"):
            category = line.split(":", 1)[1].strip()
            continue
        parts = [p.strip() for p in line.split("|")]
        if len(parts) != 5:
            raise QEError(f"{where}: expected 'name | type | window | warm-up | description', got {line!r}")
        name, kind, window, warmup, description = parts
        if kind not in TYPES:
            raise QEError(f"{where}: type of {name} must be int or double, not {kind!r}")
        if family is None or category is None:
            raise QEError(f"{where}: 'family:' and 'category:' must come before the outputs")
        specs.append(FeatureSpec(name, family, category, kind, window, warmup, description, str(PurePath(template_name))))
    if not specs:
        raise QEError(f"sql/{template_name}: the header declares no outputs")
    return specs
