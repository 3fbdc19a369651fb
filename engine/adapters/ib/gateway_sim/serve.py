"""Run the gateway simulator for a person (``qe gateway-sim``): listen, say where, serve until stopped."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

from engine.adapters.ib.gateway_sim.protocol import MAX_SERVER_VERSION
from engine.adapters.ib.gateway_sim.server import GatewaySim
from engine.adapters.ib.safety import mask

__all__ = ["serve", "run"]


async def serve(port: int, accounts: Sequence[str], *, host: str = "127.0.0.1",
                ready: Callable[[str], None] = print, stop: asyncio.Event | None = None) -> None:
    """Listen on ``host:port`` (0 = any free port), call ``ready`` with one line saying where, serve until ``stop``."""
    sim = GatewaySim(accounts, host=host, port=port)
    await sim.start()
    try:
        ready(f"gateway simulator listening on {host}:{sim.port} (TWS API server version {MAX_SERVER_VERSION}, "
              f"accounts {', '.join(mask(a) for a in sim.accounts)}); connect with "
              f"IB().connectAsync('{host}', {sim.port}, clientId=...); Ctrl-C stops it")
        await (stop or asyncio.Event()).wait()
    finally:
        await sim.stop()


def run(port: int, accounts: Sequence[str], host: str = "127.0.0.1") -> None:
    """Blocking entry point: serve until Ctrl-C."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(port, accounts, host=host))
