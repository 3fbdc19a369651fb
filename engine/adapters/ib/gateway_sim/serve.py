"""Run the gateway simulator for a person (``qe gateway-sim``): listen, say where, serve until stopped."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from engine.adapters.ib.gateway_sim.protocol import MAX_SERVER_VERSION
from engine.adapters.ib.gateway_sim.server import GatewaySim
from engine.adapters.ib.safety import mask
from warehouse.errors import ConfigError
from warehouse.layout import TIMEFRAMES

__all__ = ["serve", "run", "warehouse_bars"]

ReplayBar = tuple[str, datetime, float, float, float, float, int]


def warehouse_bars(warehouse: Any, root: str, timeframe: str = "1m") -> list[ReplayBar]:
    """Every contract's bars of ``root`` in the warehouse (``contract_bars_<tf>``), in time order."""
    if timeframe not in TIMEFRAMES:  # the view name is the only part not passed as a parameter
        raise ConfigError(f"timeframe must be one of {', '.join(TIMEFRAMES)}, not {timeframe!r}")
    table = warehouse.sql(
        f"SELECT contract, ts, open, high, low, close, volume FROM contract_bars_{timeframe} "
        "WHERE symbol = ? AND contract IS NOT NULL ORDER BY ts, contract", [root])
    return [tuple(row.values()) for row in table.to_pylist()]


async def serve(port: int, accounts: Sequence[str], *, host: str = "127.0.0.1",
                ready: Callable[[str], None] = print, stop: asyncio.Event | None = None,
                replay: Sequence[ReplayBar] = (), speed: float | None = None) -> None:
    """Listen on ``host:port`` (0 = any free port), say where in one line, replay ``replay`` bars at ``speed``
    (bar seconds per second; None = as fast as possible), serve until ``stop``.

    With bars to replay, the simulator's date and clock start at the first bar, so the contracts it lists are
    the ones traded then.
    """
    start = replay[0][1] if replay else None
    sim = GatewaySim(accounts, host=host, port=port, today=start.date() if start else None, clock=start)
    await sim.start()
    try:
        ready(f"gateway simulator listening on {host}:{sim.port} (TWS API server version {MAX_SERVER_VERSION}, "
              f"accounts {', '.join(mask(a) for a in sim.accounts)}); connect with "
              f"IB().connectAsync('{host}', {sim.port}, clientId=...); Ctrl-C stops it")
        if replay:
            pushed, skipped = await sim.replay(replay, speed)
            ready(f"replayed {pushed} bars ({skipped} of contracts not listed on {start.date()} skipped)")
        await (stop or asyncio.Event()).wait()
    finally:
        await sim.stop()


def run(port: int, accounts: Sequence[str], host: str = "127.0.0.1", replay: Sequence[ReplayBar] = (),
        speed: float | None = None) -> None:
    """Blocking entry point: serve until Ctrl-C."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(port, accounts, host=host, replay=replay, speed=speed))
