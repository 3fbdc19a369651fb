"""One API connection to TWS / IB Gateway kept alive: client id 326 fallback, reconnects, heartbeat, notices.

* **326** (client id in use, e.g. a previous process still holds it after a crash): IB closes the socket
  and ib_async would wait out its whole timeout; the connection notices the error, abandons the attempt and
  retries once with the temporary id ``client_id + TEMPORARY_ID_OFFSET`` (the owner reconciles through
  ``reqAllOpenOrders``, which sees every client's orders).
* **Drops** (peer closed, network cut, nightly restart): reconnect with :class:`ReconnectPolicy`'s capped
  exponential backoff and jitter, then let the owner re-establish its state (guards, contracts,
  reconciliation) and call every ``on_restored`` hook (re-subscribe market data).
* **Silent sockets**: a heartbeat asks IB for its time; no answer in time closes the socket, which is then
  handled as a drop.
* **Notices** 1100 (connectivity between IB and TWS lost), 1101 (restored, data lost: re-subscribe),
  1102 (restored, data kept) are tracked in :attr:`Connection.connectivity`.
* **Halt**: away longer than ``halt_after_s`` calls ``on_halt(HALT_DISCONNECTED)`` once per outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from ib_async import IB

from engine.adapters.ib.reconnect import HALT_DISCONNECTED, ReconnectPolicy
from engine.adapters.ib.safety import SafetyError

__all__ = ["Connection", "TEMPORARY_ID_OFFSET"]

log = logging.getLogger(__name__)

#: a client id refused with 326 is retried once as ``client_id + TEMPORARY_ID_OFFSET``
TEMPORARY_ID_OFFSET = 1000
_RESTORED = {1101: "restored, data lost", 1102: "restored"}


class Connection:
    """The socket side of one handler.

    Parameters
    ----------
    ib : ib_async.IB
    host, port, client_id
    policy : ReconnectPolicy
    on_halt : callable
        Called with a reason code when the connection has been away too long.
    """

    def __init__(self, ib: IB, host: str, port: int, client_id: int, policy: ReconnectPolicy,
                 on_halt: Callable[[str], None]) -> None:
        self.ib = ib
        self.host, self.port = host, port
        self.client_id = client_id
        #: the id actually in use (differs after a 326 fallback)
        self.active_client_id = client_id
        self.policy = policy
        self.on_halt = on_halt
        #: "ok", "lost" (1100), "restored, data lost" (1101), "restored" (1102)
        self.connectivity = "ok"
        #: hooks called after 1101/1102 and after every reconnect, with the reason
        self.on_restored: list[Callable[[str], None]] = []
        self.reconnects = 0
        self._established: Callable[[], Awaitable[None]] | None = None
        self._closing = False
        self._away_since: float | None = None
        self._reconnector: asyncio.Task | None = None
        self._heartbeat: asyncio.Task | None = None
        self._watching = False

    # -- opening ----------------------------------------------------------------------------------
    async def open(self, timeout: float, account: str = "") -> None:
        """``connectAsync``; on IB error 326 retry once at once with the temporary client id."""
        try:
            await self._attempt(self.client_id, timeout, account)
            self.active_client_id = self.client_id
        except _ClientIdInUse:
            temporary = self.client_id + TEMPORARY_ID_OFFSET
            log.warning("IB client id %d is in use (326); connecting as %d this time", self.client_id, temporary)
            await self._attempt(temporary, timeout, account)
            self.active_client_id = temporary

    async def _attempt(self, client_id: int, timeout: float, account: str) -> None:
        refused = asyncio.Event()

        def on_error(req_id: int, code: int, text: str, contract: object) -> None:
            if code == 326:
                refused.set()

        self.ib.errorEvent += on_error
        connecting = asyncio.ensure_future(
            self.ib.connectAsync(self.host, self.port, clientId=client_id, timeout=timeout, account=account))
        # Whoever abandons the attempt, its outcome is consumed (no "exception was never retrieved").
        connecting.add_done_callback(lambda task: task.cancelled() or task.exception())
        watcher = asyncio.ensure_future(refused.wait())
        try:
            await asyncio.wait({connecting, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if refused.is_set() and not connecting.done():
                connecting.cancel()  # IB closed the socket; do not wait out ib_async's timeout
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await connecting
                raise _ClientIdInUse(client_id)
            await connecting
        finally:
            watcher.cancel()
            if not connecting.done():
                connecting.cancel()
            self.ib.errorEvent -= on_error

    # -- staying connected ------------------------------------------------------------------------
    def watch(self, established: Callable[[], Awaitable[None]]) -> None:
        """From now on, reconnect after drops and re-run ``established`` (the owner's setup) each time."""
        self._established = established
        self._closing = False
        self._away_since = None
        if not self._watching:
            self.ib.disconnectedEvent += self._on_disconnected
            self.ib.errorEvent += self._on_notice
            self._watching = True
        self._start_heartbeat()

    def close(self) -> None:
        """Disconnect on purpose: no reconnect, no heartbeat."""
        self._closing = True
        for task in (self._reconnector, self._heartbeat):
            if task is not None:
                task.cancel()
        self.ib.disconnect()

    def _on_disconnected(self) -> None:
        if self._closing or self._established is None:
            return
        loop = asyncio.get_event_loop()
        if self._away_since is None:
            self._away_since = loop.time()
            log.warning("IB connection %s:%d lost; reconnecting", self.host, self.port)
        if self._reconnector is None or self._reconnector.done():
            self._reconnector = loop.create_task(self._reconnect())

    def _on_notice(self, req_id: int, code: int, text: str, contract: object) -> None:
        if code == 1100:
            self.connectivity = "lost"
        elif code in _RESTORED:
            self.connectivity = _RESTORED[code]
            self._restored(str(code))

    def _restored(self, reason: str) -> None:
        for hook in list(self.on_restored):
            hook(reason)

    async def _reconnect(self) -> None:
        loop = asyncio.get_running_loop()
        halted = False
        for delay in self.policy.delays():
            # Sleep the backoff, but wake at the halt deadline if it falls inside it.
            away = loop.time() - (self._away_since or loop.time())
            until_halt = self.policy.halt_after_s - away
            if not halted and until_halt <= delay:
                await asyncio.sleep(max(until_halt, 0.0))
                halted = True
                log.error("IB away for %.0f s: halting trading (%s)", self.policy.halt_after_s, HALT_DISCONNECTED)
                self.on_halt(HALT_DISCONNECTED)
                await asyncio.sleep(max(delay - max(until_halt, 0.0), 0.0))
            else:
                await asyncio.sleep(delay)
            try:
                await self.open(timeout=max(self.policy.max_s, 2.0))
                await self._established()
            except SafetyError:
                log.exception("IB reconnected but a guard refused; staying disconnected")
                self.ib.disconnect()
                self.on_halt("GUARD")
                return
            except (OSError, ConnectionError, asyncio.TimeoutError) as exc:
                log.info("IB reconnect attempt failed: %s", exc)
                continue
            except Exception:  # keep trying: giving up silently would leave a strategy blind
                log.exception("IB reconnect attempt failed")
                continue
            self.reconnects += 1
            self._away_since = None
            self._start_heartbeat()
            self._restored("reconnect")
            return

    def _start_heartbeat(self) -> None:
        if self.policy.heartbeat_s is None or (self._heartbeat is not None and not self._heartbeat.done()):
            return
        self._heartbeat = asyncio.get_event_loop().create_task(self._beat(self.policy.heartbeat_s))

    async def _beat(self, every: float) -> None:
        while self.ib.isConnected():
            await asyncio.sleep(every)
            if not self.ib.isConnected():
                return
            try:
                await asyncio.wait_for(self.ib.reqCurrentTimeAsync(), every)
            except asyncio.TimeoutError:
                log.warning("IB heartbeat: no answer in %.1f s; treating the socket as dead", every)
                self.ib.disconnect()  # emits disconnectedEvent: the reconnect loop takes over
                return


class _ClientIdInUse(ConnectionError):
    def __init__(self, client_id: int) -> None:
        super().__init__(f"client id {client_id} is already in use (IB 326)")
