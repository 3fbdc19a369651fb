"""When to try again after IB went away, and when to stop trading while it is away.

Neither ib_async nor TWS reconnects by itself. After a drop (network cut, the nightly restart, a silent
socket found by the heartbeat) the handler waits ``min(max_s, initial_s * factor**k) + U(0, jitter_s)``
before attempt ``k`` (jitter spreads out many clients restarting at once), forever; once it has been away
longer than ``halt_after_s`` it halts trading (reason ``DISCONNECTED``), which only :meth:`reset` lifts.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["ReconnectPolicy", "HALT_DISCONNECTED"]

#: reason code of a halt caused by a disconnection longer than the policy allows
HALT_DISCONNECTED = "DISCONNECTED"


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """Capped exponential backoff with jitter, a heartbeat and a halt limit (all in seconds).

    Attributes
    ----------
    initial_s, factor, max_s : float
        Delay before attempt ``k`` (0-based): ``min(max_s, initial_s * factor**k)``.
    jitter_s : float
        Plus a uniform random ``[0, jitter_s)``.
    halt_after_s : float
        Halt trading once disconnected this long.
    heartbeat_s : float or None
        Ask IB for its time this often; no answer within ``heartbeat_s`` means the socket is dead. None: off.
    seed : int or None
        Seed of the jitter (tests).
    """

    initial_s: float = 1.0
    factor: float = 2.0
    max_s: float = 60.0
    jitter_s: float = 3.0
    halt_after_s: float = 120.0
    heartbeat_s: float | None = 30.0
    seed: int | None = None

    def delays(self) -> Iterator[float]:
        """The waits before attempts 0, 1, 2, ... (endless)."""
        rng = random.Random(self.seed)
        delay = self.initial_s
        while True:
            yield min(delay, self.max_s) + rng.uniform(0.0, self.jitter_s)
            delay = min(delay * self.factor, self.max_s)
