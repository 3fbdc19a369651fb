"""The simulated gateway: an asyncio TCP server on 127.0.0.1 with one :class:`~.session.Session` per API client.

State (orders, executions, positions, bar history, order ids) lives in :class:`GatewaySim` and outlives
sessions, as it outlives a client's reconnect at a real gateway. A test drives prices with
:meth:`GatewaySim.push_bar` / :meth:`GatewaySim.push_price` (or :meth:`GatewaySim.replay`); order events go to
the session of the client that placed the order. What each request is answered with: ``session.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime, timedelta
from itertools import groupby

from engine.adapters.ib.gateway_sim import messages as msg
from engine.adapters.ib.gateway_sim.bars import Bar, BarHistory, split_5s
from engine.adapters.ib.gateway_sim.book import Book, BookEvents, SimOrder
from engine.adapters.ib.gateway_sim.faults import Faults
from engine.adapters.ib.gateway_sim.listing import FuturesListing, ListedFuture
from engine.adapters.ib.gateway_sim.protocol import In
from engine.adapters.ib.gateway_sim.session import Session
from engine.adapters.ib.safety import mask
from engine.core.instruments import InstrumentBook
from warehouse.contracts import root_of

__all__ = ["GatewaySim"]

log = logging.getLogger(__name__)

_SECOND = timedelta(seconds=1)


class GatewaySim:
    """A TWS/IB Gateway stand-in for the real ib_async client.

    Parameters
    ----------
    accounts : iterable of str
        Managed account ids (paper ids start with ``DU``).
    host, port : str, int
        Where to listen; port 0 picks a free ephemeral port (see :attr:`port` after :meth:`start`).
    today : datetime.date, optional
        The trading date that decides which contracts are listed; default: the clock's UTC date.
    clock : datetime, optional
        The simulator's initial time (tz-aware); pushed bars move it. Default: now.
    participation : float, optional
        Partial fills: the share of a bar's volume one contract's orders may take.
    commission_per_contract : float, optional
        Commission per contract in commission reports; default: the fee table's per-side cost.
    first_order_id : int
        The nextValidId of a client that has placed no order.
    cash : float
        What account updates report as cash and net liquidation (a paper account starts with 1,000,000).
    instruments : InstrumentBook, optional
        Terms for matching and commissions (a run's overrides); default the contract tables'.
    """

    def __init__(self, accounts: Iterable[str] = ("DU1234567",), *, host: str = "127.0.0.1", port: int = 0,
                 today: date | None = None, clock: datetime | None = None, participation: float | None = None,
                 commission_per_contract: float | None = None, first_order_id: int = 1,
                 cash: float = 1_000_000.0, instruments: InstrumentBook | None = None) -> None:
        self.accounts = list(accounts)
        if not self.accounts:
            raise ValueError("the gateway needs at least one managed account")
        self.host = host
        self.port = port
        self.book = Book(participation=participation, commission_per_contract=commission_per_contract,
                         instruments=instruments)
        self.history = BarHistory()
        if clock is not None:
            self.book.now = clock
        self.listing = FuturesListing(today or self.book.now.date())
        self.first_order_id = first_order_id
        self.cash = cash
        self.sessions: dict[int, Session] = {}
        #: every request received, as its fields, in arrival order (tests count what reached the gateway)
        self.received: list[list[str]] = []
        self._server: asyncio.Server | None = None
        self.connections: set[Session] = set()
        self._tasks: set[asyncio.Task] = set()
        self._last_price: dict[int, float] = {}
        self.faults = Faults(self)
        #: called with every accepted order, after its acknowledgement was sent (replays, benchmarks)
        self.order_listeners: list[Callable[[SimOrder], None]] = []

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> int:
        """Listen; return the port."""
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("gateway simulator listening on %s:%d, accounts %s", self.host, self.port,
                 ", ".join(mask(a) for a in self.accounts))
        return self.port

    async def stop(self) -> None:
        """Close every session and stop listening (the books are kept)."""
        if self._server is not None:
            self._server.close()
        for session in list(self.connections):
            session.close()
        # Let every session task see its closed socket and end, so none is left for the loop to cancel.
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> GatewaySim:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = Session(self, reader, writer)
        self.connections.add(session)
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            await session.run()
        finally:
            self._tasks.discard(task)
            self.connections.discard(session)
            if session.client_id is not None and self.sessions.get(session.client_id) is session:
                del self.sessions[session.client_id]
            session.close()

    # -- what tests and the replay drive ----------------------------------------------------------
    def future(self, contract: str | int) -> ListedFuture:
        """A listed future by local symbol (``MESH6``) or conId."""
        found = (self.listing.by_con_id(contract) if isinstance(contract, int)
                 else next((f for f in self.listing.futures(root_of(contract) or "") if f.local_symbol == contract),
                           None))
        if found is None:
            raise KeyError(f"{contract!r} is not listed at the simulator")
        return found

    def push_bar(self, contract: str | int, ts: datetime, open_: float, high: float, low: float, close: float,
                 volume: int = 1_000_000, *, as_5s: bool = False, seconds: int = 60) -> BookEvents:
        """A bar of ``contract`` opening at ``ts``: match its working orders and report what happened.

        ``as_5s``: the bar is a bar of ``seconds`` (a minute by default) that the gateway keeps and streams as
        IB does, as 5-second bars (:func:`~.bars.split_5s`; history answers and real-time subscribers see
        those, and any bar size of the pushed one or more aggregates back to it); orders are matched against
        the whole bar.
        """
        return self.push_bars([(contract, ts, open_, high, low, close, volume)], as_5s=as_5s, seconds=seconds)[0]

    def push_bars(self, bars: Sequence[tuple[str | int, datetime, float, float, float, float, int]], *,
                  as_5s: bool = False, seconds: int = 60) -> list[BookEvents]:
        """Bars of several contracts over the same interval (``(contract, ts, open, high, low, close, volume)``),
        each as :meth:`push_bar`; with ``as_5s`` their 5-second bars are streamed interleaved, every contract's
        first part, then every contract's second, ..., as IB sends each 5-second interval of all subscriptions
        once it ended (one contract's whole minute before the next one's would close the first contract's
        minute while the others have not begun it)."""
        futures = [self.future(contract) for contract, *_ in bars]  # an unlisted one raises before anything moved
        streamed: list[tuple[ListedFuture, list[Bar]]] = []
        reports = []
        for future, (_, ts, open_, high, low, close, volume) in zip(futures, bars):
            bar = Bar(ts, open_, high, low, close, volume)
            parts = split_5s(bar, seconds) if as_5s else [bar]
            for part in parts:
                self.history.add(future.con_id, part)
            events = self.book.push_bar(future, ts, open_, high, low, close, volume)
            self._last_price[future.con_id] = close
            self._report(events)
            reports.append(events)
            streamed.append((future, parts))
        for index in range(max((len(parts) for _, parts in streamed), default=0)):
            for session in list(self.sessions.values()):
                for future, parts in streamed:
                    if index < len(parts):
                        session.on_bar(future, parts[index])
        return reports

    async def replay(self, bars: Iterable[tuple[str, datetime, float, float, float, float, int]],
                     speed: float | None = None, *, as_5s: bool = False) -> tuple[int, int]:
        """Push ``(local symbol, ts, open, high, low, close, volume)`` bars in order.

        ``speed`` is bar time per wall-clock second (60: a one-minute bar per second); None or 0 pushes as
        fast as possible (yielding to clients between times). Consecutive bars of one time go together
        (:meth:`push_bars`: with ``as_5s`` their 5-second bars stream interleaved). Bars of contracts the
        simulator does not list are skipped. Returns ``(pushed, skipped)``.
        """
        pushed = skipped = 0
        previous: datetime | None = None
        for ts, group in groupby(bars, key=lambda bar: bar[1]):
            wait = (ts - previous).total_seconds() / speed if speed and previous is not None else 0.0
            await asyncio.sleep(max(wait, 0.0))
            previous = ts
            listed = []
            for bar in group:
                try:
                    self.future(bar[0])
                except KeyError:
                    skipped += 1
                    continue
                listed.append(bar)
            if listed:
                self.push_bars(listed, as_5s=as_5s)
                pushed += len(listed)
        return pushed, skipped

    def push_price(self, contract: str | int, price: float, ts: datetime | None = None,
                   volume: int = 1_000_000) -> BookEvents:
        """A trade at ``price``: a flat bar (O = H = L = C), at ``ts`` or one second after the clock."""
        moment = ts or self.book.now.replace(microsecond=0) + _SECOND
        return self.push_bar(contract, moment, price, price, price, price, volume)

    @property
    def placed(self) -> list[SimOrder]:
        """Every order the gateway accepted, in placement order."""
        return list(self.book.orders.values())

    def requests_of(self, kind: In) -> list[list[str]]:
        """The received requests with message id ``kind``."""
        return [f for f in self.received if f and f[0] == str(int(kind))]

    def next_order_id(self, client_id: int) -> int:
        """The nextValidId for a client: one past the highest order id it has used."""
        used = [oid for (cid, oid) in self.book.orders if cid == client_id]
        return max(used, default=self.first_order_id - 1) + 1

    def _report(self, events: BookEvents) -> None:
        """Send executions and status changes to the owners' sessions: execDetails, then status, then commission."""
        for execution in events.executions:
            session = self.sessions.get(execution.order.client_id)
            if session is not None:
                session.send(msg.live_fill(execution, session.version))
        for order in events.updated:
            self._send_status(order)
        for execution in events.executions:
            session = self.sessions.get(execution.order.client_id)
            if session is not None:
                session.send(msg.commission_report(execution))

    def _send_status(self, order: SimOrder) -> None:
        session = self.sessions.get(order.client_id)
        if session is not None:
            session.send(msg.open_order(order, session.version))
            session.send(msg.order_status(order))

    def market_price(self, future: ListedFuture, fallback: float) -> float:
        return self._last_price.get(future.con_id, fallback)


