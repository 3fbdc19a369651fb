"""Account ids out of every log line, ib_async's included.

ib_async logs whole ``Trade``, ``Position`` and ``Fill`` objects at INFO, account numbers and all. The
house rule is that no log line shows more than an account's last 3 characters, so the handler installs this
filter on the ``ib_async`` loggers before it connects: it masks anything shaped like an IB account id
(``DU``/``DF``/``U``/``F``/``I`` and 4+ digits, the forms IB issues) and, exactly, every account the gateway
reported.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from engine.adapters.ib.safety import mask

__all__ = ["AccountMask", "install"]

#: what IB account ids look like: individual U..., paper DU..., advisor F.../DF..., IBroker I...
_SHAPED = re.compile(r"\b(?:DU|DF|U|F|I)\d{4,}\b")


class AccountMask(logging.Filter):
    """Rewrites each record's message with every known account id masked (``DU1234567`` -> ``******567``)."""

    def __init__(self) -> None:
        super().__init__()
        self._accounts: set[str] = set()
        self._pattern: re.Pattern[str] = _SHAPED

    def add(self, accounts: Iterable[str]) -> None:
        new = {a for a in accounts if len(a) > 3} - self._accounts
        if new:
            self._accounts |= new
            # longest first, so that one id that is a prefix of another does not leave a tail visible
            alternatives = [re.escape(a) for a in sorted(self._accounts, key=len, reverse=True)]
            self._pattern = re.compile("|".join([*alternatives, _SHAPED.pattern]))

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        masked = self._pattern.sub(lambda m: mask(m.group(0)), text)
        if masked != text:
            record.msg, record.args = masked, None
        return True


_MASK = AccountMask()


def install(accounts: Iterable[str], loggers: Iterable[str] = ("ib_async", "engine.adapters.ib")) -> AccountMask:
    """Mask ``accounts`` in the records of ``loggers`` and of their child loggers."""
    _MASK.add(accounts)
    for name in loggers:
        for logger in _with_children(name):
            if _MASK not in logger.filters:
                logger.addFilter(_MASK)
    return _MASK


def _with_children(name: str) -> list[logging.Logger]:
    # Logger filters apply only to records created on that very logger, not to its children's records.
    found = [logging.getLogger(name)]
    prefix = name + "."
    for child, logger in list(logging.root.manager.loggerDict.items()):
        if child.startswith(prefix) and isinstance(logger, logging.Logger):
            found.append(logger)
    return found
