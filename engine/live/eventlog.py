"""Every event of a live session in ``<session_dir>/events.log``: one line each, account ids masked.

The session's modules log through :mod:`logging` as everywhere else; :class:`EventLog` adds a file handler to
their loggers for the length of the session. One line per record (a traceback or a multi-line message is
folded with `` | ``), so that ``grep`` and ``tail -f`` show whole events; times in UTC. Account ids are
masked by the same filter as ib_async's log (:mod:`engine.adapters.ib.logmask`), which learns every account
the gateway reports as the handler connects.

ib_async logs every broker message it handles at INFO, as whole object reprs (``openOrder``, ``orderStatus``,
``execDetails``, ``commissionReport``, ``position``, ``updatePortfolio``: half a dozen long lines per order),
which buried the session's own events. Those go to ``broker.log`` beside it (the raw record, for a dispute
with the broker); ``events.log`` keeps ib_async's warnings and errors and its connection lines
(``ib_async.client``: connecting, connected, logged on, disconnected).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from engine.adapters.ib.logmask import install as account_mask

__all__ = ["EVENTS_LOG", "BROKER_LOG", "DEFAULT_LOGGERS", "OneLineFormatter", "EventLog"]

EVENTS_LOG = "events.log"
#: ib_async's INFO records (every broker message it handles), one line each
BROKER_LOG = "broker.log"
#: the broker library's loggers whose INFO records go to :data:`BROKER_LOG` only (its connection lines stay)
_BROKER = "ib_async"
_BROKER_CONNECTION = "ib_async.client"
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


def _not_broker_chatter(record: logging.LogRecord) -> bool:
    """False for ib_async's INFO-and-below records other than its connection lines (they go to broker.log)."""
    if record.levelno >= logging.WARNING or not record.name.startswith(_BROKER):
        return True
    return record.name == _BROKER_CONNECTION


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
        mask = account_mask([])
        self.handler.addFilter(mask)
        self.handler.addFilter(_not_broker_chatter)
        self.broker_handler = logging.FileHandler(self.path.with_name(BROKER_LOG), encoding="utf-8")
        self.broker_handler.setLevel(level)
        self.broker_handler.setFormatter(OneLineFormatter())
        self.broker_handler.addFilter(mask)
        self._levels: dict[str, int] = {}
        for name in loggers:
            logger = logging.getLogger(name)
            self._levels[name] = logger.level
            if logger.getEffectiveLevel() > level:
                logger.setLevel(level)
            logger.addHandler(self.handler)
            if name == _BROKER:
                logger.addHandler(self.broker_handler)

    def close(self) -> None:
        for name, old in self._levels.items():
            logger = logging.getLogger(name)
            logger.removeHandler(self.handler)
            logger.removeHandler(self.broker_handler)
            logger.setLevel(old)
        self._levels = {}
        self.handler.close()
        self.broker_handler.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
