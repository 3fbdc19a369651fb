"""Scripted fault injection for the gateway simulator: what a real TWS / IB Gateway does to its clients.

Each fault is a method a test calls at the moment it wants it; the books (orders, executions, positions)
always survive, as they survive TWS's nightly restart.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from engine.adapters.ib.gateway_sim import messages as msg

if TYPE_CHECKING:
    from engine.adapters.ib.gateway_sim.server import GatewaySim

__all__ = ["Faults", "CONNECTIVITY"]

#: IB's connectivity notices (error messages with reqId -1)
CONNECTIVITY = {
    1100: "Connectivity between IB and Trader Workstation has been lost.",
    1101: "Connectivity between IB and TWS has been restored- data lost.",
    1102: "Connectivity between IB and TWS has been restored- data maintained.",
}


class Faults:
    """Faults of one simulator (``sim.faults``)."""

    def __init__(self, sim: GatewaySim) -> None:
        self.sim = sim
        self._rejections: deque[tuple[int, str]] = deque()
        self._paced = 0
        #: seconds every answer is held back (slow answers); 0 answers at once
        self.delay_s = 0.0

    def reject_next(self, code: int = 201, text: str = "Order rejected - reason:simulated rejection") -> None:
        """Refuse the next order placed (by any client) with IB error ``code``."""
        self._rejections.append((code, text))

    def take_rejection(self) -> tuple[int, str] | None:
        """The scripted rejection for the order being placed now, if any (the server asks once per order)."""
        return self._rejections.popleft() if self._rejections else None

    def drop_connections(self) -> int:
        """Close every client socket, as a network cut does; the server keeps listening. Returns how many."""
        sessions = list(self.sim.connections)
        for session in sessions:
            session.close()
        return len(sessions)

    async def restart(self) -> None:
        """Stop and listen again on the same port (the nightly restart): every client is dropped, state is kept."""
        port = self.sim.port
        await self.sim.stop()
        self.sim.port = port
        await self.sim.start()

    def pace_next_history(self, count: int = 1) -> None:
        """Refuse the next ``count`` historical-data requests with 162 (a pacing violation)."""
        self._paced += count

    def take_pacing(self) -> bool:
        """Whether the historical request being answered now is refused (the server asks once per request)."""
        if self._paced:
            self._paced -= 1
            return True
        return False

    def slow(self, seconds: float) -> None:
        """Hold every answer back by ``seconds`` from now on (0 restores prompt answers)."""
        self.delay_s = seconds

    def freeze(self) -> int:
        """Make every current connection silent (a half-dead socket): requests are read and never answered,
        nothing is pushed. New connections are served normally. Returns how many went silent."""
        sessions = list(self.sim.connections)
        for session in sessions:
            session.silent = True
        return len(sessions)

    def notify(self, code: int, text: str | None = None, client_id: int | None = None) -> None:
        """Send an error/notice not tied to a request (1100/1101/1102, 2104, ...) to one client or all.

        1101 ("data lost") also ends the notified sessions' bar subscriptions, as at IB: a client that does
        not ask again receives no more bars.
        """
        body = msg.error(-1, code, text if text is not None else CONNECTIVITY.get(code, f"notice {code}"))
        for cid, session in list(self.sim.sessions.items()):
            if client_id in (None, cid):
                if code == 1101:
                    session.subscriptions.clear()
                session.send(body)
