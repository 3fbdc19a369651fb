"""Tiny strategies for the walk-forward tests (an importable module, so worker processes can build them)."""

from __future__ import annotations

import os
from pathlib import Path

from engine.strategy import Strategy


class Direction(Strategy):
    """Hold ``direction * quantity`` contracts of every symbol from the first bar on (0 stays flat)."""

    history_size = 0

    def __init__(self, direction: int = 1, quantity: int = 1) -> None:
        if direction not in (-1, 0, 1):
            raise ValueError(f"direction must be -1, 0 or 1, not {direction!r}")
        super().__init__(direction=direction, quantity=quantity)

    def on_bar(self, bar):
        return self.target_position(bar.symbol, self.direction * self.quantity)


class PidProbe(Direction):
    """:class:`Direction` that leaves a file named after its process id in ``probe`` (a directory)."""

    def __init__(self, direction: int = 1, probe: str = "") -> None:
        super().__init__(direction=direction)
        self.params["probe"] = self.probe = probe

    def on_start(self) -> None:
        Path(self.probe, str(os.getpid())).touch()


class Broken(Direction):
    """Fails on its first bar when ``fail`` is true."""

    def __init__(self, direction: int = 1, fail: bool = False) -> None:
        super().__init__(direction=direction)
        self.params["fail"] = self.fail = fail

    def on_bar(self, bar):
        if self.fail:
            raise RuntimeError("broken on purpose")
        return super().on_bar(bar)
