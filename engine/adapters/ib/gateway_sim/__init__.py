"""A loopback gateway that speaks the TWS socket protocol (server versions 157-178) to the real ib_async client.

Modules: ``protocol`` (framing, field encoding, message ids), ``messages`` (server -> client encoders),
``requests`` (client -> server parsers), ``listing`` (futures listed from the contracts table), ``book``
(orders matched by the backtest broker's rules against pushed bars), ``server`` (asyncio server, sessions).
"""

from engine.adapters.ib.gateway_sim.server import GatewaySim

__all__ = ["GatewaySim"]
