"""Every event of a live session in ``<session_dir>/events.log``: one line each, account ids masked.

The session's modules log through :mod:`logging` as everywhere else; :class:`EventLog` adds a file handler to
their loggers for the length of the session. One line per record (a traceback or a multi-line message is
folded with `` | ``), so that ``grep`` and ``tail -f`` show whole events; times in UTC. Account ids are
masked by the same filter as ib_async's log (:mod:`engine.adapters.ib.logmask`), which learns every account
the gateway reports as the handler connects.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from engine.adapters.ib.logmask import install as account_mask

__all__ = ["EVENTS_LOG", "DEFAULT_LOGGERS", "OneLineFormatter", "EventLog"]

EVENTS_LOG = "events.log"
#: the loggers of a live session: the engine (kernel, live loop, IB adapter), the warehouse writes, ib_async
DEFAULT_LOGGERS = ("engine", "warehouse", "loaders", "ib_async")


class OneLineFormatter(logging.Formatter):
    """``2026-03-02T15:01:00.123Z WARNING engine.live.session: message``, always one line."""

    converter = time.gmtime

    def __init__(self) -> None:
        super().__init__("%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s",
                         datefmt="%Y-%m-%dT%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        return " | ".join(line for line in super().format(record).splitlines() if line.strip())


class EventLog:
    """The session's log file, attached to ``loggers`` until :meth:`close` (or the end of a ``with``).

    Parameters
    ----------
    session_dir : Path
        The live session's directory; the file is appended to (a restarted session goes on in it).
    loggers : iterable of str
        Logger names to record; each is lowered to ``level`` while the log is open (and restored after),
        so that INFO events reach the file even where the console shows only warnings.
    level : int
    """

    def __init__(self, session_dir: Path, loggers: Iterable[str] = DEFAULT_LOGGERS, level: int = logging.INFO) -> None:
        self.path = Path(session_dir) / EVENTS_LOG
        self.handler = logging.FileHandler(self.path, encoding="utf-8")
        self.handler.setLevel(level)
        self.handler.setFormatter(OneLineFormatter())
        # a handler filter sees the records of child loggers too (a logger's own filter would not)
        self.handler.addFilter(account_mask([]))
        self._levels: dict[str, int] = {}
        for name in loggers:
            logger = logging.getLogger(name)
            self._levels[name] = logger.level
            if logger.getEffectiveLevel() > level:
                logger.setLevel(level)
            logger.addHandler(self.handler)

    def close(self) -> None:
        for name, old in self._levels.items():
            logger = logging.getLogger(name)
            logger.removeHandler(self.handler)
            logger.setLevel(old)
        self._levels = {}
        self.handler.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
