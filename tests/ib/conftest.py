"""Fixtures for the Interactive Brokers tests: the gateway simulator on an ephemeral loopback port, the real
ib_async client, and a log watcher that fails a test when ib_async's decoder drops a message."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timezone
from typing import Any

import pytest

#: The simulator's clock in these tests: Monday 2 March 2026, 15:00 UTC (10:00 ET), CME trading date 2026-03-02.
CLOCK = datetime(2026, 3, 2, 15, 0, tzinfo=timezone.utc)
TODAY = date(2026, 3, 2)


class LogWatch(logging.Handler):
    """Collects ib_async's log records (a malformed message is otherwise dropped with only a log line)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def errors(self, logger: str) -> list[str]:
        return [r.getMessage() for r in self.records if r.name == logger and r.levelno >= logging.ERROR]


@pytest.fixture
def ib_log() -> LogWatch:
    """Watch ib_async's loggers; after the test, assert its decoder logged no error."""
    watch = LogWatch()
    root = logging.getLogger("ib_async")
    old_level = root.level
    root.setLevel(logging.INFO)
    root.addHandler(watch)
    yield watch
    root.removeHandler(watch)
    root.setLevel(old_level)
    assert watch.errors("ib_async.Decoder") == [], "ib_async's decoder dropped a message"
    # a status for an order the client does not know means the gateway routed it to the wrong session
    assert [m for m in watch.errors("ib_async.wrapper") if "No order found" in m] == []


def run(coro_fn: Callable[..., Awaitable[Any]], *args: Any, timeout: float = 20.0) -> Any:
    """Run one async test body with a hard time limit (a hung socket fails the test, never the suite)."""
    async def bounded() -> Any:
        return await asyncio.wait_for(coro_fn(*args), timeout)
    return asyncio.run(bounded())


async def until(condition: Callable[[], bool], timeout: float = 3.0, what: str = "condition") -> None:
    """Wait (polling the event loop) until ``condition()`` holds; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)
