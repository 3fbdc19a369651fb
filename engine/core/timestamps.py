"""Timestamps as the engine carries them: integer nanoseconds since the Unix epoch, UTC."""

from __future__ import annotations

import numpy as np

__all__ = ["iso_utc"]


def iso_utc(ns: int) -> str:
    """``2024-03-01T14:30:00.000000000Z`` for messages (nanoseconds since the epoch, UTC)."""
    return np.datetime64(ns, "ns").astype(str) + "Z"
