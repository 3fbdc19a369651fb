"""Venue adapters: everything that speaks a broker's or data vendor's wire protocol lives below here.

:func:`live_execution_handler` is the one door from the engine to a broker; it imports the venue package
only when asked, so nothing outside ``engine/adapters/<venue>/`` imports a venue library.
"""

from __future__ import annotations

from typing import Any

from warehouse.errors import ConfigError

__all__ = ["BROKERS", "live_execution_handler"]

#: brokers the project trades through
BROKERS = ("ib",)
_NOT_SUPPORTED = {
    "schwab": "Schwab is not supported: quant-engine trades through Interactive Brokers (broker 'ib')",
}


def live_execution_handler(broker: str, **options: Any):  # noqa: ANN201 - the venue's handler type
    """The execution handler of ``broker`` (``"ib"``: :class:`engine.adapters.ib.handler.IBExecutionHandler`).

    Raises
    ------
    ConfigError
        A broker the project does not trade through (one line, e.g. for Schwab).
    """
    name = broker.strip().lower()
    if name in _NOT_SUPPORTED:
        raise ConfigError(_NOT_SUPPORTED[name])
    if name != "ib":
        raise ConfigError(f"unknown broker {broker!r}: quant-engine trades through Interactive Brokers (broker 'ib')")
    from engine.adapters.ib.handler import IBExecutionHandler

    return IBExecutionHandler(**options)
