"""The warehouse write lock: one writer at a time, readers never wait.

Every command that writes the warehouse (ingest, downloads' ingest, roll, feature and signal builds,
recording a run) holds ``<warehouse>/.write.lock`` for its write phase. The lock is an OS advisory lock
(``fcntl.flock``), so the kernel releases it when its process ends, however it ends (``kill -9``
included): a crash never leaves the warehouse locked. Readers (``qe sql``, the views, backtest queries)
never touch it; they see each file's old or new version thanks to the atomic renames of
:mod:`warehouse.store`.

The holder writes ``{"pid", "command", "since"}`` (JSON, ``since`` in ISO UTC) into the lock file, so that a
waiter prints once::

    waiting for the warehouse lock held by PID 1234 (qe ingest) since 2026-12-07T01:02:03Z (up to 600 s)

and, if the holder does not finish within the timeout (``timeout=``, else :func:`set_default_timeout` --
the CLI's ``--lock-timeout`` -- else ``$QE_LOCK_TIMEOUT``, else 600 s), fails with one line.

The lock is re-entrant within a process (a writer calling another writer, e.g. ingest rebuilding the rolls,
does not deadlock) and serializes threads of one process. A forked child does not inherit it.

Whoever takes the lock first (outermost) sweeps what crashed writers left behind (see
:func:`warehouse.store.sweep_crash_leftovers`): no other writer can be running then, so every staging
directory and temporary file of a lock-holding writer is garbage.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from warehouse.errors import ConfigError, WarehouseError

LOCK_NAME = ".write.lock"
DEFAULT_TIMEOUT_S = 600.0
#: How often a waiter retries; the lock has no queue, so this is also the worst added latency.
POLL_S = 0.05
#: A waiter that cannot read the holder's details (being written) prints a plain message after this long.
_ANONYMOUS_AFTER_S = 1.0

F = TypeVar("F", bound=Callable[..., Any])


class LockTimeout(WarehouseError):
    """The warehouse write lock was not free within the timeout."""


@dataclass(frozen=True)
class Holder:
    """Who holds the lock: process id, command and start time (ISO UTC)."""

    pid: int
    command: str
    since: str

    def describe(self) -> str:
        return f"PID {self.pid} ({self.command}) since {self.since}"


@dataclass
class _Held:
    """This process's hold on one warehouse: a thread lock (re-entrant) and, while held, the file."""

    thread_lock: threading.RLock
    fd: int | None = None
    depth: int = 0


_held: dict[Path, _Held] = {}
_registry_guard = threading.Lock()
_default_timeout: float | None = None
_default_command: str | None = None


def set_default_timeout(seconds: float | None) -> None:
    """Timeout used when :func:`write_lock` is not given one (the CLI's ``--lock-timeout``); None: env/600 s."""
    if seconds is not None and seconds < 0:
        raise ConfigError(f"lock timeout must be >= 0 seconds, not {seconds:g}")
    global _default_timeout
    _default_timeout = seconds


def set_command(command: str | None) -> None:
    """The command name a holder records (the CLI sets ``qe ingest`` etc.); default: the program name."""
    global _default_command
    _default_command = command


def resolve_timeout(timeout: float | None = None) -> float:
    """The timeout in seconds: the argument, else the default set by the CLI, else ``$QE_LOCK_TIMEOUT``, else 600."""
    if timeout is not None:
        return float(timeout)
    if _default_timeout is not None:
        return _default_timeout
    text = os.environ.get("QE_LOCK_TIMEOUT")
    if text is None or not text.strip():
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also refuses NaN
        raise ConfigError(f"QE_LOCK_TIMEOUT={text!r}: must be a number of seconds >= 0")
    return value


def lock_path(root: Path) -> Path:
    """The lock file of the warehouse at ``root``."""
    return Path(root) / LOCK_NAME


def read_holder(root: Path) -> Holder | None:
    """The holder recorded in the lock file, or None (free, or its details are being written)."""
    try:
        data = json.loads(lock_path(root).read_text(encoding="utf-8"))
        return Holder(int(data["pid"]), str(data["command"]), str(data["since"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


@contextmanager
def write_lock(
    root: str | os.PathLike[str],
    *,
    timeout: float | None = None,
    command: str | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Hold the write lock of the warehouse at ``root`` for the ``with`` block.

    Parameters
    ----------
    root : path
        The warehouse directory.
    timeout : float, optional
        Seconds to wait for another writer (see :func:`resolve_timeout`); 0 tries once.
    command : str, optional
        What this holder is, for waiters' messages (default: :func:`set_command`'s, else the program name).
    on_wait : callable, optional
        Receives the one "waiting for the warehouse lock ..." line (default: printed to stderr).

    Raises
    ------
    LockTimeout
        When the lock stayed held by another process (or thread) for ``timeout`` seconds.
    """
    path = Path(root).resolve()
    seconds = resolve_timeout(timeout)
    with _registry_guard:
        entry = _held.setdefault(path, _Held(threading.RLock()))
    deadline = time.monotonic() + seconds
    # Another thread of this process holding it waits here; this thread holding it goes on (re-entrant).
    got = entry.thread_lock.acquire(timeout=seconds) if seconds > 0 else entry.thread_lock.acquire(blocking=False)
    if not got:
        raise LockTimeout(_timeout_message(path, seconds))
    try:
        if entry.depth == 0:
            entry.fd = _acquire_file(path, deadline, seconds, command or _default_command or _program(), on_wait)
            entry.depth = 1
            try:
                _after_acquire(path)
            except BaseException:
                _release_file(entry)
                raise
        else:
            entry.depth += 1
        try:
            yield
        finally:
            entry.depth -= 1
            if entry.depth == 0:
                _release_file(entry)
    finally:
        entry.thread_lock.release()


def holds_write_lock(func: F) -> F:
    """Decorator: run ``func(warehouse, ...)`` under the write lock of its warehouse (first argument)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        wh = args[0] if args else kwargs.get("warehouse", kwargs.get("wh"))
        with write_lock(wh.root):
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


# -- the file lock ------------------------------------------------------------------------------------------
def _acquire_file(path: Path, deadline: float, seconds: float, command: str,
                  on_wait: Callable[[str], None] | None) -> int:
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        started = time.monotonic()
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
            if time.monotonic() >= deadline:
                raise LockTimeout(_timeout_message(path, seconds))
            if not announced:
                holder = read_holder(path)
                if holder is not None or time.monotonic() - started >= _ANONYMOUS_AFTER_S:
                    who = holder.describe() if holder is not None else "another process"
                    (on_wait or _print_stderr)(f"waiting for the warehouse lock held by {who} (up to {seconds:g} s) ...")
                    announced = True
            time.sleep(min(POLL_S, max(deadline - time.monotonic(), 0.0)))
        info = {"pid": os.getpid(), "command": command,
                "since": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        return fd
    except BaseException:
        os.close(fd)
        raise


def _release_file(entry: _Held) -> None:
    fd, entry.fd, entry.depth = entry.fd, None, 0
    if fd is None:
        return
    try:
        os.ftruncate(fd, 0)  # a waiter must not read a finished holder as the current one
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _after_acquire(path: Path) -> None:
    """Sweep crash leftovers, then (tests only) hold the lock a while so a second process must wait."""
    from warehouse.store import sweep_crash_leftovers

    sweep_crash_leftovers(path)
    hold = os.environ.get("QE_TEST_LOCK_HOLD_SECONDS")
    if hold:
        time.sleep(float(hold))


def _timeout_message(path: Path, seconds: float) -> str:
    holder = read_holder(path)
    who = holder.describe() if holder is not None else "another writer"
    return (f"timed out after {seconds:g} s waiting for the warehouse lock {lock_path(path)} held by {who}; "
            "let it finish or raise --lock-timeout / QE_LOCK_TIMEOUT")


def _print_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _program() -> str:
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"


def _forget_in_child() -> None:
    # A forked child shares the parent's open lock file; closing its copy leaves the parent's lock in place
    # (flock is released only by LOCK_UN or when every copy is closed), and the child starts unlocked.
    global _registry_guard
    _registry_guard = threading.Lock()
    for path, entry in list(_held.items()):
        if entry.fd is not None:
            try:
                os.close(entry.fd)
            except OSError:
                pass
        _held[path] = _Held(threading.RLock())


os.register_at_fork(after_in_child=_forget_in_child)
