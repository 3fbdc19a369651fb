"""Keep Python's cyclic garbage collector off the bar-close path of a live session.

A live process holds a large, long-lived heap (the features' tails and prepared statements, pyarrow and
DuckDB wrappers, ib_async's state, the kernel's orders and equity points). CPython's oldest-generation
collection walks every tracked object of that heap: measured in the live-loop benchmark, 16 such collections
of ~100 ms each, which land wherever the allocation counters say, including between a bar's close and its
orders (the kernel's p99 was 87 ms against a median of 12 ms).

The policy: once the session is warmed up, the heap that exists is *frozen* (:func:`gc.freeze`: moved to a
permanent generation the collector never walks), so automatic collections only walk what was allocated since
(one bar's worth: sub-millisecond). Cycles that die among the frozen objects would never be reclaimed, so
every ``every`` decided bars the session, right after a decision (its orders are sent; the next bar is a whole
interval away), unfreezes, collects everything and freezes again (:meth:`GcPolicy.after_bar`).
"""

from __future__ import annotations

import gc
import logging
import time

__all__ = ["GcPolicy"]

log = logging.getLogger(__name__)


class GcPolicy:
    """Freeze the warmed-up heap; collect it in full only between bars, every ``every`` decided bars.

    Parameters
    ----------
    every : int
        Decided bars between full collections (60: hourly on one-minute bars).
    """

    def __init__(self, every: int = 60) -> None:
        self.every = every
        self._since = 0
        self.collections: list[float] = []  # seconds of each full collection (for the log and the benchmark)
        self.active = False

    def start(self) -> None:
        """Collect once and freeze what survives (call after the warm-up, before the first live bar)."""
        self._full()
        self.active = True

    def after_bar(self) -> None:
        """Count a decided bar; every ``every`` bars, a full collection (off the bar-close path)."""
        if not self.active:
            return
        self._since += 1
        if self._since >= self.every:
            self._full()

    def stop(self) -> None:
        """Give the frozen objects back to the collector (the session is over)."""
        if self.active:
            gc.unfreeze()
            self.active = False

    def _full(self) -> None:
        started = time.perf_counter()
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self._since = 0
        self.collections.append(time.perf_counter() - started)
        log.debug("full garbage collection between bars: %.0f ms, %d objects frozen", 1000 * self.collections[-1],
                  gc.get_freeze_count())
