"""Declared parameters: what a signal generator or a strategy accepts, typed, with defaults.

Values given on the command line (``--param k=v``, read as JSON when they parse) or in a walk-forward grid
are coerced to the declared type; an unknown name or a value of the wrong type is one clear error that
lists what is valid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from warehouse.errors import QEError

__all__ = ["Param"]


@dataclass(frozen=True)
class Param:
    """One declared parameter: name, type (int/double/bool/str), default, description, allowed values."""

    name: str
    type: str
    default: Any
    description: str
    choices: tuple | None = None

    def coerce(self, value: Any, label: str) -> Any:
        """``value`` (a Python value or the text of ``--param k=v``) as this parameter's type, or QEError."""
        try:
            if self.type == "int":
                if isinstance(value, bool):
                    raise ValueError
                if isinstance(value, float):
                    if not value.is_integer():
                        raise ValueError
                    value = int(value)
                out: Any = int(value)
            elif self.type == "double":
                if isinstance(value, bool):
                    raise ValueError
                out = float(value)
                if not math.isfinite(out):
                    raise ValueError
            elif self.type == "bool":
                if isinstance(value, str):
                    if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                        raise ValueError
                    out = value.lower() in ("true", "1", "yes")
                elif isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
                    out = bool(value)
                else:  # 2, 0.0, None: not a truth value anyone means
                    raise ValueError
            else:
                out = str(value)
        except (TypeError, ValueError):
            raise QEError(f"{label}: parameter {self.name!r} must be {self.type}, not {value!r}") from None
        if self.choices is not None and out not in self.choices:
            allowed = ", ".join(str(c) for c in self.choices)
            raise QEError(f"{label}: parameter {self.name!r} must be one of {allowed}, not {value!r}")
        return out

    @property
    def type_text(self) -> str:
        return self.type + (" in " + ",".join(str(c) for c in self.choices) if self.choices else "")
