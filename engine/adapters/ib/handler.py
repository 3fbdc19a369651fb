"""``IBExecutionHandler``: the engine's execution seam on Interactive Brokers (ib_async, async API).

The engine's loop is synchronous and bar-driven; IB is asynchronous. The handler bridges them:

* :meth:`connect` (async) checks the port, connects, checks and binds the account, and qualifies every
  future the strategy trades. Nothing can be submitted before all of that succeeded.
* :meth:`submit` sends the order (``placeOrder`` returns at once) and returns no fills; IB reports them later.
* IB's events update the engine :class:`~engine.core.orders.Order` (filled quantity, average price, final status)
  and produce engine :class:`~engine.core.orders.Fill` records once the commission report arrived; :meth:`on_bar`
  (or :meth:`drain_fills`) hands them to the loop.

Idempotency: with an :class:`~engine.adapters.ib.journal.OrderJournal`, each order is journaled before it is
sent, an orderRef already journaled is never sent again, and :meth:`connect` reconciles the journal with what
IB reports (open orders of every client, completed orders, executions) before anything can be submitted:
journaled orders still working are adopted, fills that happened while away are booked, journaled orders IB
does not know are reported as missing (never re-sent), and orders on the account that no journal knows are
reported as external (never adopted or cancelled).

Rolls (:meth:`send_roll`): the kernel's two legs go out as market orders on the old and the new contract,
journaled in one batch under their own orderRefs; every contract the session may need (the front now, the
roll table's next front, a resumed position's contract) is qualified at :meth:`connect`
(:meth:`also_trade`), a running session's roll maintenance qualifies more while connected
(:meth:`add_contracts`, dropped again by :meth:`forget`), and :meth:`front_changed` moves the root's orders
(and :meth:`traded_contract`) to the new front when the query's rows do.

Money: ``Fill.commission`` is IB's commission report. The fee table's estimate for the same fill
(``fee_per_side x |quantity|``) is kept beside it in :attr:`IBExecutionHandler.records` for attribution.
Fills carry no modelled slippage: ``reference_price`` is the execution price.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from dataclasses import dataclass, field

from ib_async import IB, CommissionReport, Contract, MarketOrder, Trade
from ib_async import Fill as IBFill

from engine.adapters.ib.connection import Connection
from engine.adapters.ib.journal import JournalEntry, OrderJournal
from engine.adapters.ib.logmask import install as mask_accounts_in_logs
from engine.adapters.ib.orders import future_for, oca_name, order_ref, to_ib_order
from engine.adapters.ib.reconnect import ReconnectPolicy
from engine.adapters.ib.safety import PortKind, SafetyError, bind_account, check_port, mask
from engine.adapters.ib.subscriptions import Subscription, Subscriptions
from engine.execution.base import ExecutionHandler
from engine.core.instruments import EPOCH, InstrumentBook
from engine.core.orders import Fill, Order, OrderStatus, OrderType, TimeInForce, market
from engine.risk import RiskManager, RiskState
from warehouse.sessions import trading_date

__all__ = ["IBExecutionHandler", "FillRecord", "Reconciliation"]

log = logging.getLogger(__name__)

_CANCELLED = {"Cancelled", "ApiCancelled", "Inactive"}


@dataclass(frozen=True, slots=True)
class FillRecord:
    """One IB execution as the engine booked it, with the attribution fields IB adds.

    Attributes
    ----------
    fill : engine.core.orders.Fill
        ``commission`` is IB's (from the commission report).
    exec_id, order_ref : str
    commission_estimate : float
        The fee table's cost of the same fill, per side times contracts.
    """

    fill: Fill
    exec_id: str
    order_ref: str
    commission_estimate: float


@dataclass(slots=True)
class Reconciliation:
    """What :meth:`IBExecutionHandler.connect` found at IB for the journaled orders of this run and strategy.

    Attributes
    ----------
    working : list of str
        Journaled orderRefs still working at IB (adopted: their events are tracked again).
    done : dict of str to str
        Journaled orderRefs IB reports as completed, with IB's status.
    missing : list of str
        Journaled orderRefs IB does not know (crash between journal and send, or older than IB's memory).
        They are not re-sent.
    recovered_fills : int
        Executions of journaled orders booked during reconciliation (fills that happened while away).
    external : list of str
        Orders working at IB on this account that no journal entry knows (placed by hand or by another
        system): reported, never adopted or cancelled.
    positions : dict of str to int
        IB's positions on this account by local symbol (``MESH6``), for the engine's books to be checked
        against (the live loop compares them with its ledger).
    external_positions : dict of str to int
        The positions of ``positions`` in contracts this strategy does not trade: reported, never flattened
        or adopted.
    """

    working: list[str] = field(default_factory=list)
    done: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    recovered_fills: int = 0
    external: list[str] = field(default_factory=list)
    positions: dict[str, int] = field(default_factory=dict)
    external_positions: dict[str, int] = field(default_factory=dict)


class IBExecutionHandler(ExecutionHandler):
    """Orders of one strategy, on one account, through TWS or IB Gateway.

    Parameters
    ----------
    run_id, strategy : str
        Together with the engine's order number they make the deterministic ``orderRef``.
    contracts : mapping of str to str
        Root -> contract to trade (``{"MES": "202603"}``; ``YYYYMM``, ``YYYYMMDD`` or a local symbol).
    host, port, client_id
        Where TWS / IB Gateway listens and this connection's client id (one per role and strategy).
    account : str, optional
        The account this strategy trades; default: the only one the gateway manages.
    live : bool
        Allow a live port and a live account. Paper otherwise.
    port_kind : {"paper", "live"}, optional
        What the port is, for gateways on non-default ports.
    instruments : InstrumentBook, optional
        Fee-table estimates (default: the shipped tables).
    journal : OrderJournal, optional
        Where orders are journaled before they are sent (the warehouse's); without one, orders are only
        remembered in memory and a restart cannot know what was sent.
    reconnect : ReconnectPolicy, optional
        Backoff, heartbeat and the halt limit after a drop (default: :class:`ReconnectPolicy`'s).
    risk : RiskManager, optional
        The run's risk manager: a halt here (kill switch, disconnected longer than the limit) also moves it
        to HALTED with the reason code, so the strategy's orders are refused before they reach the handler.
        :meth:`reset` releases only the handler; the risk manager needs its own explicit reset.
    """

    def __init__(self, run_id: str, strategy: str, contracts: Mapping[str, str], *, host: str = "127.0.0.1",
                 port: int = 7497, client_id: int = 11, account: str | None = None, live: bool = False,
                 port_kind: PortKind | None = None, instruments: InstrumentBook | None = None,
                 journal: OrderJournal | None = None, reconnect: ReconnectPolicy | None = None,
                 risk: RiskManager | None = None) -> None:
        if not run_id or not strategy:
            raise SafetyError("an IB strategy needs a run id and a strategy name (they key every orderRef)")
        self.run_id = run_id
        self.strategy = strategy
        self.wanted = dict(contracts)
        self.host, self.port, self.client_id = host, port, client_id
        self.requested_account = account
        self.live = live
        self.port_kind = port_kind
        self.instruments = instruments or InstrumentBook()
        self.ib = IB()
        self.connection = Connection(self.ib, host, port, client_id, reconnect or ReconnectPolicy(), self._halt)
        #: the account every order goes to; set only once every guard passed
        self.account: str | None = None
        #: root -> the qualified contract the root's orders go to (its front: :meth:`front_changed` moves it)
        self.contracts: dict[str, Contract] = {}
        #: local symbol -> every qualified contract (the fronts, and those of :meth:`also_trade`)
        self.listed: dict[str, Contract] = {}
        #: root -> further contracts to qualify at connect (a resumed position's, the next front)
        self.extra: dict[str, list[str]] = {}
        #: a roll's legs are real orders (:meth:`send_roll`)
        self.sends_rolls = True
        self.records: list[FillRecord] = []
        #: orderRef -> when placeOrder was called, by :attr:`clock`: the send leg of the latency attribution
        self.sent_at: dict[str, datetime] = {}
        #: now (tz-aware): the wall clock, or the session's clock in a replay (bar time), so that send times
        #: and the broker's execution times are on one clock
        self.clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
        #: bar length (ns) of the session: :meth:`on_bar` hands over only the fills made before a bar ended
        self.bar_ns = 60_000_000_000
        #: a cancel is a request: orders stay working until IB confirms (the kernel's flattening must not net
        #: against them)
        self.cancels_at_once = False
        #: after a restart: how many orders the engine restored (:meth:`adopt`), and the journaled orders
        #: numbered after them, not counted as working until the engine decides them again (:meth:`_readopt`)
        self._adopted_ids: int | None = None
        self._awaiting: set[str] = set()
        self._orders: dict[str, Order] = {}  # orderRef -> engine order
        self._trades: dict[str, Trade] = {}
        self._pending: dict[str, tuple[Order, Fill]] = {}  # execId -> fill waiting for its commission
        self._booked: set[str] = set()  # execIds already booked
        self._ready: list[Fill] = []  # booked with their commission, not yet handed to the engine
        self._exec_of: dict[int, str] = {}  # id(fill in _ready) -> its execId
        self._delivered: set[str] = set()  # execIds handed to the engine (drain_fills / on_bar)
        #: called with every booked fill as it completes (a live loop wakes on these instead of polling)
        self.fill_listeners: list[Callable[[Fill], None]] = []
        self.journal = journal
        self._journaled: set[str] = set()
        #: orders submitted inside :meth:`one_batch`, sent when it ends (None: outside a block)
        self._held: list[tuple[str, Contract, Order, object]] | None = None
        self.reconciliation = Reconciliation()
        #: why trading is halted (KILL_SWITCH, DISCONNECTED, GUARD), or None; only :meth:`reset` clears it
        self.halt_reason: str | None = None
        self.risk = risk
        self._kills = 0
        self._subscribed = False
        #: data subscriptions, re-requested after 1101 and after every reconnect (1102 keeps them)
        self.subscriptions = Subscriptions(self.ib)
        self.connection.on_restored.append(self.subscriptions.on_restored)

    # -- connection -------------------------------------------------------------------------------
    async def connect(self, timeout: float = 10.0) -> None:
        """Connect, bind the account and qualify the contracts; raise :class:`SafetyError` on any guard.

        The port is judged before a socket is opened; the account right after the handshake, before
        anything is sent that could trade.
        """
        check_port(self.port, self.live, self.port_kind)
        mask_accounts_in_logs([self.requested_account] if self.requested_account else [])
        await self.connection.open(timeout, self.requested_account or "")
        try:
            await self._establish()
        except BaseException:
            self.connection.close()
            raise
        self.connection.watch(self._establish)

    async def _establish(self) -> None:
        """After every (re)connect: guards, contracts, event wiring, reconciliation. Orders only after this.

        A guard that fails because the socket dropped meanwhile (no accounts, no contract details) is a
        connection problem, not a refusal: it is raised as ``ConnectionError`` so that reconnecting goes on.
        """
        try:
            await self._establish_once()
        except SafetyError as exc:
            if not self.ib.isConnected():
                raise ConnectionError(f"connection lost while establishing the session ({exc})") from exc
            raise

    async def _establish_once(self) -> None:
        kind = check_port(self.port, self.live, self.port_kind)
        mask_accounts_in_logs(self.ib.managedAccounts())
        account = bind_account(self.ib.managedAccounts(), self.requested_account, self.live, self.port, kind)
        if self.account is not None and account != self.account:
            raise SafetyError(f"after reconnecting the gateway offers account {mask(account)}, not the bound "
                              f"{mask(self.account)}")
        self.account = None  # no order while reconciling
        await self._qualify()
        if not self._subscribed:
            self.ib.execDetailsEvent += self._on_exec
            self.ib.commissionReportEvent += self._on_commission
            self.ib.orderStatusEvent += self._on_status
            self._subscribed = True
        self.reconciliation = await self._reconcile(account)
        self.account = account
        log.info("IB %s: %s trades account %s via %s:%d (client id %d)", "live" if self.live else "paper",
                 self.strategy, mask(account), self.host, self.port, self.connection.active_client_id)

    def also_trade(self, root: str, contracts: Iterable[str]) -> None:
        """Qualify these contracts of ``root`` too at :meth:`connect` (before it): a resumed position's contract
        (its roll's out-leg goes there) and the roll table's next front (its bars are subscribed beside the
        front's so that the query's rows can name it at the roll). Orders still go to the root's front."""
        known = self.extra.setdefault(root, [])
        known.extend(c for c in contracts if c and c not in known and c != self.wanted.get(root))

    async def add_contracts(self, root: str, contracts: Iterable[str]) -> tuple[list[Contract], list[str]]:
        """Qualify more contracts of ``root`` while connected (a running session's roll maintenance: the next
        front, the contract after it), as :meth:`also_trade` does before :meth:`connect`; they are qualified
        again after every reconnect. Orders still go to the root's front.

        Returns
        -------
        (list of Contract, list of str)
            The contracts qualified now (already qualified ones are left out), and those IB has no unique
            future for (error 200: not listed yet, expired, ambiguous): not kept, not fatal.

        Raises
        ------
        ConnectionError
            Not connected, or the connection dropped during the request.
        """
        asked = list(dict.fromkeys(c for c in contracts if c and c not in self.listed))
        if not asked:
            return [], []
        if not self.ib.isConnected():
            raise ConnectionError(f"not connected to IB: cannot qualify {', '.join(asked)}")
        found = await self.ib.qualifyContractsAsync(*[future_for(root, c) for c in asked])
        if not self.ib.isConnected():
            raise ConnectionError("connection lost while qualifying contracts")
        added: list[Contract] = []
        unknown: list[str] = []
        for local, qualified in zip(asked, found, strict=True):
            if qualified is None:
                unknown.append(local)
                continue
            self.listed[qualified.localSymbol] = qualified
            extra = self.extra.setdefault(root, [])
            if qualified.localSymbol not in extra and qualified.localSymbol != self.traded_contract(root):
                extra.append(qualified.localSymbol)
            added.append(qualified)
        return added, unknown

    def forget(self, root: str, contract: str) -> None:
        """Stop qualifying ``contract`` (a local symbol) of ``root`` at reconnects and streaming it (an old front
        no position is held in: after its expiry IB would refuse it). Never the root's front."""
        if contract != self.traded_contract(root) and contract in self.extra.get(root, ()):
            self.extra[root] = [c for c in self.extra[root] if c != contract]

    def streams(self) -> list[tuple[str, Contract]]:
        """(root, contract) of every qualified contract, fronts first: what the bar feed subscribes."""
        fronts = [(root, c) for root, c in self.contracts.items()]
        front_ids = {c.conId for _, c in fronts}
        return fronts + [(root, c) for root, c in self._roots_of_listed() if c.conId not in front_ids]

    def _roots_of_listed(self) -> list[tuple[str, Contract]]:
        roots = {local: root for root, locals_ in self.extra.items() for local in locals_}
        return [(roots[local], c) for local, c in self.listed.items() if local in roots]

    async def _qualify(self) -> None:
        wanted = [(root, contract) for root, contract in self.wanted.items()] + \
            [(root, contract) for root, contracts in self.extra.items() for contract in contracts]
        asked = [future_for(root, contract) for root, contract in wanted]
        found = await self.ib.qualifyContractsAsync(*asked)
        if not self.ib.isConnected():  # a drop mid-request is not an unknown contract
            raise ConnectionError("connection lost while qualifying contracts")
        extra: dict[str, list[str]] = {}
        for k, ((root, contract), ask, qualified) in enumerate(zip(wanted, asked, found, strict=True)):
            if qualified is None:
                raise SafetyError(f"IB has no unique {root} future for {contract!r} on {ask.exchange} "
                                  "(IB error 200: unknown or ambiguous contract)")
            self.listed[qualified.localSymbol] = qualified
            if k < len(self.wanted):
                self.contracts[root] = qualified
            else:
                extra.setdefault(root, []).append(qualified.localSymbol)
        self.extra = extra  # by local symbol from now on (asked perhaps as 202403)

    async def _reconcile(self, account: str) -> Reconciliation:
        """Match our orders (the journal's, else those sent by this process) with IB's open orders of every
        client, its completed orders and its executions, by orderRef."""
        found = Reconciliation()
        if self.journal is not None:
            for row in self.journal.read(self.run_id, self.strategy).to_pylist():
                if row["order_ref"] not in self._orders:
                    self._orders[row["order_ref"]] = order = _order_from_journal(row)
                    if self._adopted_ids is not None and order.order_id >= self._adopted_ids:
                        self._awaiting.add(row["order_ref"])
            known_anywhere = set(self.journal.read().column("order_ref").to_pylist())
        else:
            known_anywhere = set(self._orders)
        self._journaled |= set(self._orders)
        open_list = await self.ib.reqAllOpenOrdersAsync()
        open_trades = {t.order.orderRef: t for t in open_list if t.order.orderRef}
        completed = {t.order.orderRef: t for t in await self.ib.reqCompletedOrdersAsync(False)}
        fills = self.ib.fills()
        for ref, order in self._orders.items():
            for fill in fills:
                exec_id = fill.execution.execId
                if fill.execution.orderRef != ref or exec_id in self._booked or exec_id in self._pending:
                    continue  # not ours, already booked, or already waiting for its commission report
                engine_fill = self._engine_fill(order, fill)
                found.recovered_fills += 1
                if fill.commissionReport.execId:
                    self._book(order, engine_fill, exec_id, ref, fill.commissionReport.commission)
                else:  # IB's commission report is still to come: book the fill when it does
                    self._pending[exec_id] = (order, engine_fill)
            if ref in open_trades:
                self._trades[ref] = open_trades[ref]
                found.working.append(ref)
            elif ref in completed:
                found.done[ref] = completed[ref].orderStatus.status
                if not order.is_done:
                    order.status = OrderStatus.FILLED if order.filled == order.quantity else OrderStatus.CANCELLED
            elif not order.is_done:
                found.missing.append(ref)
                order.status = OrderStatus.CANCELLED
                order.detail = "unknown at IB after reconnect: not re-sent"
        for trade in open_list:  # every one: manual orders usually share the empty orderRef
            ref = trade.order.orderRef
            if trade.order.account == account and ref not in known_anywhere:
                found.external.append(ref or f"permId {trade.order.permId}")
        traded = {contract.conId for contract in self.listed.values()}
        for position in await self.ib.reqPositionsAsync():
            if position.account != account or not position.position:
                continue
            local = position.contract.localSymbol or position.contract.symbol
            found.positions[local] = int(position.position)
            if position.contract.conId not in traded:
                found.external_positions[local] = int(position.position)
        if found.external_positions:
            log.warning("IB reconciliation for %s: positions in contracts %s does not trade: %s (left alone)",
                        mask(account), self.strategy, found.external_positions)
        if found.missing or found.external:
            log.warning("IB reconciliation for %s: %d order(s) unknown at IB (not re-sent), %d external "
                        "order(s) on account %s (left alone)", self.strategy, len(found.missing),
                        len(found.external), mask(account))
        return found

    async def kill(self, all_clients: bool = False, timeout: float = 5.0, *, only: Collection[str] | None = None,
                   ref_prefix: str = "kill") -> list[Trade]:
        """The kill switch at the broker: halt, cancel working orders, flatten the account at market.

        Cancels every order of this client working at IB (``all_clients=True``: IB's global cancel, every
        client's and manual orders too), waits until IB reports none working, then sends a market order
        against every non-zero position IB reports for the bound account (``only``: just the positions in
        these contracts, by IB local symbol such as ``MESH6``). The flattening orders are journaled with the
        orderRefs ``run/strategy/<ref_prefix>-<n>``. New orders are refused until :meth:`reset`. Returns the
        flattening trades (their fills arrive like any other).

        Raises
        ------
        TimeoutError
            IB still reports working orders after ``timeout`` seconds.
        """
        if self.account is None:
            raise SafetyError("not connected: the kill switch needs the broker")
        self._halt("KILL_SWITCH")
        if all_clients:
            self.ib.reqGlobalCancel()
        else:
            for trade in self.ib.openTrades():
                if trade.order.clientId == self.connection.active_client_id:
                    self.ib.cancelOrder(trade.order)
        await self._until_no_working_orders(all_clients, timeout)
        flattening = []
        for position in await self.ib.reqPositionsAsync():
            if position.account != self.account or not position.position:
                continue
            if only is not None and (position.contract.localSymbol or position.contract.symbol) not in only:
                continue
            self._kills += 1
            quantity = -int(position.position)
            ref = order_ref(self.run_id, self.strategy, f"{ref_prefix}-{self._kills}")
            order = market(position.contract.symbol, quantity, tif="DAY", tag="kill switch")
            order.order_id, order.origin = -self._kills, "kill_switch"
            ib_order = MarketOrder("BUY" if quantity > 0 else "SELL", abs(quantity), account=self.account, tif="DAY",
                                   orderRef=ref)
            flattening.append(self._send(ref, position.contract, order, ib_order))
        await self._until(lambda: all(t.orderStatus.status != "PendingSubmit" for t in flattening), timeout,
                          "the flattening orders were not acknowledged")
        log.warning("IB kill switch (%s): cancelled working orders, %d flattening order(s) sent on account %s",
                    self.strategy, len(flattening), mask(self.account))
        return flattening

    async def _until_no_working_orders(self, all_clients: bool, timeout: float) -> None:
        """Poll IB's open orders (its state, not ours) until none of the cancelled ones works any more."""
        live: list[Trade] = []

        async def none_working() -> bool:
            live[:] = [t for t in await self.ib.reqAllOpenOrdersAsync()
                       if (all_clients or t.order.clientId == self.connection.active_client_id)
                       and t.orderStatus.status not in _CANCELLED]
            return not live

        await self._until(none_working, timeout, "orders still working at IB after the kill switch's cancels")

    @staticmethod
    async def _until(condition, timeout: float, failure: str) -> None:  # noqa: ANN001 - sync or async predicate
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            held = condition()
            if asyncio.iscoroutine(held):
                held = await held
            if held:
                return
            if loop.time() > deadline:
                raise TimeoutError(failure)
            await asyncio.sleep(0.02)

    @property
    def halted(self) -> bool:
        return self.halt_reason is not None

    def _halt(self, reason: str) -> None:
        if self.halt_reason is None:
            self.halt_reason = reason
        if self.risk is not None and self.risk.state is not RiskState.HALTED:
            self.risk.set_state(RiskState.HALTED, f"{reason} (IB handler)")

    def reset(self) -> None:
        """Release a halt (kill switch, long disconnection): orders may be sent again."""
        self.halt_reason = None

    def disconnect(self) -> None:
        """Close the connection on purpose (no reconnect; working orders stay at IB)."""
        self.connection.close()
        self.account = None

    # -- data -------------------------------------------------------------------------------------
    async def subscribe_bars(self, root: str, bar_size: str = "1 min", duration: str = "1 D", what: str = "TRADES",
                             use_rth: bool = False) -> Subscription:
        """Historical bars of ``root``'s contract kept up to date (``keepUpToDate``); renewed after drops."""
        return await self.subscriptions.add(Subscription("history", root, self._contract(root), bar_size, duration,
                                                         what, use_rth))

    async def subscribe_realtime_bars(self, root: str, what: str = "TRADES", use_rth: bool = False) -> Subscription:
        """IB's 5-second real-time bars of ``root``'s contract; renewed after drops."""
        return await self.subscriptions.add(Subscription("realtime", root, self._contract(root), what=what,
                                                         use_rth=use_rth))

    def _contract(self, root: str) -> Contract:
        if self.account is None:
            raise SafetyError("not connected: call connect() before subscribing to bars")
        contract = self.contracts.get(root)
        if contract is None:
            raise SafetyError(f"{root} is not one of this strategy's contracts ({', '.join(self.contracts)})")
        return contract

    # -- ExecutionHandler -------------------------------------------------------------------------
    def submit(self, order: Order, bar: tuple | None = None, close_known: bool = True) -> list[Fill]:
        """Send ``order`` to IB; fills arrive through :meth:`on_bar` / :meth:`drain_fills`.

        A bracket entry (``order.children``, numbered by the engine) goes out with its exits as IB
        parent/child orders: the entry and the first child with ``transmit=False``, the last child with
        ``transmit=True`` and every child with ``parentId`` = the entry's IB order id, so IB receives the
        bracket whole; the exits share the OCA group ``bracket:<entry id>``. An OCO leg goes out in its
        group (:func:`~engine.adapters.ib.orders.oca_name`, ``ocaType`` :data:`~engine.core.orders.OCA_TYPE`).
        Every leg is journaled before the first is sent.

        ``bar`` and ``close_known`` (the seam's signal-close hints) do not apply: IB fills at its own prices.
        """
        self._ready_to_send()
        if order.parent is not None:
            raise SafetyError("a bracket's take-profit and stop-loss are sent with their entry: submit the entry")
        contract = self.contracts.get(order.symbol)
        if contract is None:
            raise SafetyError(f"{order.symbol} is not one of this strategy's contracts ({', '.join(self.contracts)})")
        legs = [order, *order.children]
        for child in order.children:  # the engine's bracket semantics: the exits are one OCO group
            child.parent_id = order.order_id
            child.oca_group = child.oca_group or f"bracket:{order.order_id}"
        if self._readopt(legs):
            return []
        outgoing = [self._outgoing(leg, contract) for leg in legs]
        if order.children:
            parent_ib = outgoing[0][3]
            parent_ib.orderId = self.ib.client.getReqId()
            for k, (_, _, _, ib_order) in enumerate(outgoing):
                ib_order.transmit = k == len(outgoing) - 1  # nothing works before the last leg arrives
                if k:
                    ib_order.parentId = parent_ib.orderId
        self._send_all(outgoing)
        return []

    def traded_contract(self, root: str) -> str | None:
        """The local symbol orders of ``root`` go to (None before :meth:`connect` qualified it): the roll
        table's front at the start, then the contract the query's rows name (:meth:`front_changed`)."""
        contract = self.contracts.get(root)
        return None if contract is None else contract.localSymbol

    def front_changed(self, symbol: str, old: str | None, new: str) -> None:
        """The query's rows name ``new`` as ``symbol``'s front: its orders go there from now on.

        A contract that was not qualified at :meth:`connect` halts the handler (``UNQUALIFIED_FRONT``): the
        strategy's orders would otherwise go to the old contract.
        """
        current = self.contracts.get(symbol)
        if current is None or current.localSymbol == new:
            return
        contract = self.listed.get(new)
        if contract is None:
            log.error("%s: the rows' front is now %s, which was not qualified at connect (orders went to %s): halted",
                      symbol, new, current.localSymbol)
            self._halt("UNQUALIFIED_FRONT")
            return
        self.extra.setdefault(symbol, []).append(current.localSymbol)
        self.extra[symbol] = [c for c in self.extra[symbol] if c != new]
        self.contracts[symbol] = contract
        self.wanted[symbol] = new  # a reconnect qualifies the new front as the root's
        log.info("%s: orders go to %s from now on (was %s)", symbol, new, current.localSymbol)

    def send_roll(self, out_leg: Order, in_leg: Order, old: str, new: str) -> None:
        """Send a roll's two market orders: ``out_leg`` on contract ``old``, ``in_leg`` on ``new`` (local
        symbols), journaled in one batch before either is sent, each under its own orderRef
        (``run/strategy/<order id>``). A restart that decides the roll bar again adopts the journaled legs
        (:meth:`_readopt`) and sends nothing. Every check runs before anything is sent.

        Raises
        ------
        SafetyError
            Not connected, halted, a contract not qualified at :meth:`connect`, or a leg already sent.
        """
        legs = [out_leg, in_leg]
        if self._readopt(legs):
            return
        self._ready_to_send()
        outgoing = []
        for leg, local in ((out_leg, old), (in_leg, new)):
            contract = self.listed.get(local)
            if contract is None:
                raise SafetyError(f"{leg.symbol} roll: contract {local} was not qualified at connect "
                                  f"(qualified: {', '.join(self.listed)})")
            outgoing.append(self._outgoing(leg, contract))
        self._send_all(outgoing)
        log.warning("%s roll %s -> %s: %+d and %+d sent at market", out_leg.symbol, old, new, out_leg.quantity,
                    in_leg.quantity)

    def refused(self, ref: str) -> bool:
        """Whether the order sent under ``ref`` is done at IB without ever working (refused: error 201...)."""
        order = self._orders.get(ref)
        return order is not None and order.status is OrderStatus.DENIED

    def _ready_to_send(self) -> None:
        if self.account is None or not self.ib.isConnected():
            raise SafetyError("not connected with every guard passed: call connect() before submitting orders")
        if self.halt_reason is not None:
            raise SafetyError(f"trading is halted ({self.halt_reason}): no new orders until reset()")

    def _outgoing(self, leg: Order, contract: Contract) -> tuple[str, Contract, Order, object]:
        """(orderRef, contract, engine order, IB order) of one leg, checked: never sent before, for the bound
        account."""
        ref = order_ref(self.run_id, self.strategy, leg.order_id)
        if leg.order_id < 0 or ref in self._orders or ref in self._journaled:
            raise SafetyError(f"order {ref} was already sent (or is not numbered); refusing to send it twice")
        group = None if leg.oca_group is None else oca_name(self.run_id, self.strategy, leg.oca_group)
        ib_order = to_ib_order(leg, self.account, ref, group)
        if ib_order.account != self.account:  # the binding is the one thing that must never slip
            raise SafetyError(f"order {ref} is not for this strategy's account {mask(self.account)}")
        return ref, contract, leg, ib_order

    def resume(self, orders: Iterable[Order], booked_exec_ids: Iterable[str], records: Iterable[FillRecord],
               sent_at: Mapping[str, datetime]) -> None:
        """A restarted run's books from its checkpoint, before :meth:`connect`: the orders it had sent (see
        :meth:`adopt`), and the executions it had booked, which the reconciliation then does not book again."""
        self._booked.update(booked_exec_ids)
        self._delivered.update(booked_exec_ids)
        self.records.extend(records)
        self.sent_at.update(sent_at)
        self.adopt(orders)

    def adopt(self, orders: Iterable[Order]) -> None:
        """This run's orders from before a restart (its checkpoint), handed over before :meth:`connect`.

        The reconciliation then updates these very objects (fills while away, final states) instead of
        copies made from the journal, so the engine's books and the broker's agree. Denied orders never
        reached the broker and are skipped.
        """
        orders = list(orders)
        for order in orders:
            if order.order_id >= 0 and order.status is not OrderStatus.DENIED:
                self._orders[order_ref(self.run_id, self.strategy, order.order_id)] = order
        self._adopted_ids = len(orders)

    def release_unclaimed(self) -> list[str]:
        """Count the unclaimed orders (:meth:`unclaimed`) as working from now on (they are at the broker: the
        risk checks must see them); returns their orderRefs."""
        released, self._awaiting = sorted(self._awaiting), set()
        return released

    def awaits(self, order: Order) -> bool:
        """Whether ``order`` is one a restart awaits (journaled and sent before it; deciding it again adopts it)."""
        return order_ref(self.run_id, self.strategy, order.order_id) in self._awaiting

    def unclaimed(self) -> list[str]:
        """Journaled orders of this run numbered after the restored ones that the engine has not decided again
        (after a restart's catch-up, these are orders at the broker the books do not know)."""
        return sorted(self._awaiting)

    def _readopt(self, legs: list[Order]) -> bool:
        """True when the legs are orders a restart awaits (journaled after the restored state, see :meth:`adopt`)
        and each is the very order journaled: the engine's new objects take over the journaled ones' state and
        nothing is sent. Any other journaled orderRef is refused as before (sent already).

        Raises
        ------
        SafetyError
            A journaled order under the same orderRef that is not this one (the strategy decided otherwise):
            the books can no longer be trusted to match the broker's.
        """
        refs = [order_ref(self.run_id, self.strategy, leg.order_id) for leg in legs]
        if not any(ref in self._awaiting for ref in refs):
            return False  # not a restart's re-decision: an order journaled already is never sent again
        known = [self._orders.get(ref) for ref in refs]
        for ref, old, leg in zip(refs, known, legs):
            same = old is not None and (old.symbol, old.quantity, old.order_type, old.limit_price, old.stop_price) \
                == (leg.symbol, leg.quantity, leg.order_type, leg.limit_price, leg.stop_price)
            if not same:
                raise SafetyError(f"order {ref} was journaled before a restart as another order than the one decided "
                                  "now; not sent (the session and the broker no longer agree)")
            leg.status, leg.filled, leg.fill_value = old.status, old.filled, old.fill_value
            leg.ts_done, leg.detail = old.ts_done, old.detail
            self._orders[ref] = leg
            self._awaiting.discard(ref)
        log.info("orders %s were sent before the restart: adopted, not sent again", ", ".join(refs))
        return True

    @contextmanager
    def one_batch(self) -> Iterator[None]:
        """Orders submitted inside the block are journaled as one batch (one file, one fsync) and sent, in
        submission order, when the block ends: a bar's orders for several roots cost one journal write, not one
        each (~3 ms apiece).

        A held order is this handler's order from its submission on (duplicate checks, :attr:`working`), and a
        cancel of it sends the held orders first. Each takes its IB order id at submission, so ids rise in the
        order the orders are sent. The block's code runs without yielding to the event loop, so nothing the
        broker says can come between. Whatever ends the block (an error too), the held orders go out: the kernel
        has booked them as submitted; unless trading was halted meanwhile or the journal cannot be written, and
        then they are DENIED, never sent. A crash inside the block journals and sends nothing, and a restarted
        run decides the bar again.
        """
        if self._held is not None:  # nested: the outer block sends them
            yield
            return
        self._held = []
        try:
            yield
        finally:
            held, self._held = self._held, None
            self._send_held(held)

    def _send_held(self, held: list[tuple[str, Contract, Order, object]]) -> None:
        """Journal and send orders held by :meth:`one_batch` (taken out of the block by the caller)."""
        if not held:
            return
        if self.halt_reason is not None:  # halted meanwhile (the kill switch): what was held never goes out
            self._drop_unsent(held, f"not sent: trading halted ({self.halt_reason})")
            return
        try:
            self._dispatch(held)
        except BaseException as exc:
            self._drop_unsent(held, f"not sent: {exc}")  # e.g. the journal could not be written
            raise

    def _drop_unsent(self, held: list[tuple[str, Contract, Order, object]], why: str) -> None:
        """Held orders that never left: DENIED and no longer this handler's (never counted as working)."""
        for ref, _, order, _ in held:
            if ref not in self._trades:
                self._orders.pop(ref, None)
                order.status, order.detail = OrderStatus.DENIED, why

    def _send(self, ref: str, contract: Contract, order: Order, ib_order: object) -> Trade:
        """Journal, then send one order now (also inside :meth:`one_batch`: the kill switch does not wait)."""
        return self._dispatch([(ref, contract, order, ib_order)])[0]

    def _send_all(self, outgoing: list[tuple[str, Contract, Order, object]]) -> None:
        """Journal every order (one atomic batch), then send them in order; inside :meth:`one_batch`, held
        and sent with the block's other orders."""
        if self._held is not None:
            for ref, _, order, ib_order in outgoing:
                self._orders[ref] = order  # this handler's order from now on (working, never sent twice)
                if not ib_order.orderId:
                    # numbered now, in submission order: IB refuses an order id below one it has seen, and a
                    # bracket's entry took its id when it was submitted
                    ib_order.orderId = self.ib.client.getReqId()
            self._held.extend(outgoing)
            return
        self._dispatch(outgoing)

    def _dispatch(self, outgoing: list[tuple[str, Contract, Order, object]]) -> list[Trade]:
        """Journal every order (one atomic batch), then send them in order; the one place orders leave."""
        if self.journal is not None:  # journaled first: a crash after this line cannot lose an order
            self.journal.append([JournalEntry(ref, self.run_id, self.strategy, mask(self.account or ""),
                                              contract.localSymbol, order) for ref, contract, order, _ in outgoing])
        trades = []
        for ref, contract, order, ib_order in outgoing:
            self._journaled.add(ref)
            self._orders[ref] = order
            self.sent_at[ref] = self.clock()
            trades.append(self.ib.placeOrder(contract, ib_order))
            self._trades[ref] = trades[-1]
        return trades

    def cancel(self, order: Order, ts: int, reason: str = "cancelled") -> bool:
        """Ask IB to cancel; the engine order becomes CANCELLED when IB confirms."""
        ref = order_ref(self.run_id, self.strategy, order.order_id)
        if self._held and any(held[0] == ref for held in self._held):
            # held in one_batch: the held orders are sent first (the block goes on holding later ones), then this
            # one is cancelled like any other
            held, self._held = self._held, []
            self._send_held(held)
        trade = self._trades.get(ref)
        if trade is None or order.is_done or trade.isDone():
            return False
        order.detail = reason
        self.ib.cancelOrder(trade.order)
        return True

    def on_bar(self, symbol: str, ts: int, open_: float, high: float, low: float, close: float, volume: int,
               trading_day: int, contract: str | None) -> list[Fill]:
        """The fills of ``symbol`` IB reported (with commission) that happened before bar ``ts`` ended."""
        return self._deliver(lambda f: f.symbol == symbol and f.ts < ts + self.bar_ns)

    @property
    def working(self) -> dict[str, list[Order]]:
        """Symbol -> its orders IB has not finished, in submission order (rebuilt on every read)."""
        working: dict[str, list[Order]] = {}
        for ref, order in self._orders.items():
            if not order.is_done and ref not in self._awaiting:
                working.setdefault(order.symbol, []).append(order)
        return working

    def drain_fills(self, before: int | None = None) -> list[Fill]:
        """The fills reported since the last call, all symbols; with ``before`` (ns) only those that happened
        earlier (a bar's fills are booked in that bar: later ones wait here, counted as exposure)."""
        return self._deliver(None if before is None else (lambda f: f.ts < before))

    def _deliver(self, wanted: Callable[[Fill], bool] | None) -> list[Fill]:
        taken = [f for f in self._ready if wanted is None or wanted(f)]
        if taken:
            self._ready = [f for f in self._ready if not (wanted is None or wanted(f))]
            self._delivered.update(self._exec_of.pop(id(f)) for f in taken)
        return taken

    def delivered_books(self) -> tuple[set[str], list[FillRecord]]:
        """The executions handed to the engine so far and their records: what a checkpoint may call booked
        (fills still waiting here are booked again from IB's executions by a restart's reconciliation)."""
        return set(self._delivered), [r for r in self.records if r.exec_id in self._delivered]

    def in_flight_quantity(self, symbol: str) -> int:
        """Working MARKET orders still to fill plus the executions IB reported that the engine has not booked
        yet (the order shows them filled; the position will)."""
        return super().in_flight_quantity(symbol) + self._unbooked(symbol)

    def working_buys_sells(self, symbol: str) -> tuple[int, int]:
        """The worst case of the working orders plus the executions not booked yet (certain changes)."""
        buys, sells = super().working_buys_sells(symbol)
        for fill in self._undelivered(symbol):
            if fill.quantity > 0:
                buys += fill.quantity
            else:
                sells -= fill.quantity
        return buys, sells

    def _undelivered(self, symbol: str) -> list[Fill]:
        return [f for f in self._ready if f.symbol == symbol] + \
            [f for _, f in self._pending.values() if f.symbol == symbol]

    def _unbooked(self, symbol: str) -> int:
        return sum(f.quantity for f in self._undelivered(symbol))

    # -- IB events --------------------------------------------------------------------------------
    def _on_exec(self, trade: Trade, fill: IBFill) -> None:
        order = self._orders.get(trade.order.orderRef)
        if order is None or fill.execution.execId in self._booked or fill.execution.execId in self._pending:
            return  # another strategy's or a manual order; or a repeat
        self._pending[fill.execution.execId] = (order, self._engine_fill(order, fill))

    def _on_commission(self, trade: Trade, fill: IBFill, report: CommissionReport) -> None:
        pending = self._pending.pop(report.execId, None)
        if pending is not None:
            self._book(*pending, report.execId, trade.order.orderRef, report.commission)

    def _engine_fill(self, order: Order, fill: IBFill) -> Fill:
        """Apply an IB execution to the engine order; the engine fill (commission still 0) it makes."""
        execution = fill.execution
        shares = int(execution.shares)
        signed = shares if execution.side == "BOT" else -shares
        ts = int(execution.time.timestamp() * 1e9)
        day = (trading_date(execution.time) - EPOCH).days
        order.filled += signed
        order.fill_value += shares * execution.price
        if order.filled == order.quantity:
            order.status, order.ts_done = OrderStatus.FILLED, ts
        else:
            order.status = OrderStatus.PARTIALLY_FILLED
        return Fill(order.order_id, ts, order.symbol, fill.contract.localSymbol, signed, execution.price,
                    execution.price, float(fill.contract.multiplier), 0.0, 0.0, "order", day)

    def _book(self, order: Order, engine_fill: Fill, exec_id: str, ref: str, commission: float) -> None:
        """A fill is complete once IB's commission is known: record it and hand it to the loop."""
        engine_fill.commission = commission
        estimate = abs(engine_fill.quantity) * self.instruments.fee_per_side(order.symbol, engine_fill.trading_date)
        self._booked.add(exec_id)
        self.records.append(FillRecord(engine_fill, exec_id, ref, estimate))
        self._ready.append(engine_fill)
        self._exec_of[id(engine_fill)] = exec_id
        for listener in list(self.fill_listeners):
            listener(engine_fill)

    def _on_status(self, trade: Trade) -> None:
        order = self._orders.get(trade.order.orderRef)
        if order is None or order.is_done:
            return
        status = trade.orderStatus.status
        if order.parent_id is not None or order.oca_group is not None:
            # IB resizes linked orders itself: a bracket exit to the entry's fill, an OCA leg by its sibling's
            size = int(trade.order.totalQuantity)
            if size > 0:
                order.quantity = size if order.quantity > 0 else -size
            if status == "Filled" and order.filled == order.quantity:
                order.status = OrderStatus.FILLED
        if status not in _CANCELLED:
            return
        # An order IB refused (an error before it ever worked) is DENIED; one it stopped working is CANCELLED.
        refused = any(entry.errorCode not in (0, 202) for entry in trade.log)
        order.status = OrderStatus.DENIED if refused and order.filled == 0 else OrderStatus.CANCELLED
        order.ts_done = int(trade.log[-1].time.timestamp() * 1e9) if trade.log else 0
        last = trade.log[-1].message if trade.log else ""
        order.detail = last or order.detail or trade.orderStatus.status


def _order_from_journal(row: dict) -> Order:
    """The engine order a journal row describes (after a restart the journal is all that is left of it)."""
    expire = row["expire_ts"]
    order = Order(row["symbol"], int(row["quantity"]), OrderType(row["order_type"]), limit_price=row["limit_price"],
                  stop_price=row["stop_price"], tif=TimeInForce(row["tif"]),
                  expire_ts=None if expire is None else int(expire.timestamp() * 1e9))
    order.order_id = int(row["order_id"])
    order.parent_id, order.oca_group = row.get("parent_id"), row.get("oca_group")  # (null in older files)
    return order
