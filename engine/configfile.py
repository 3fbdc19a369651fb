"""Reading a config file: TOML (or JSON by suffix), one table of it, pydantic errors as one line."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from warehouse.errors import ConfigError

__all__ = ["read_table", "one_line"]


def read_table(path: Path, table: str, what: str = "config file") -> dict[str, Any]:
    """The ``[table]`` of a TOML/JSON file, or the whole file when it has no such table.

    Raises
    ------
    ConfigError
        The file is missing or does not parse.
    """
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return data.get(table, data)


def one_line(where: str, exc: ValidationError) -> ConfigError:
    """The first validation problem as ``where: field.path: message`` (the input value is never shown)."""
    first = exc.errors()[0]
    place = ".".join(str(p) for p in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    return ConfigError(f"{where}: {place + ': ' if place else ''}{message}")
