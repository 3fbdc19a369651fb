"""One API client connection to the simulated gateway: reads requests, answers them from the gateway's state.

State (orders, executions, positions, order ids) lives in :class:`GatewaySim` and outlives sessions, as it
outlives a client's reconnect at a real gateway. A test drives prices with :meth:`GatewaySim.push_bar` /
:meth:`GatewaySim.push_price`; order events go to the session of the client that placed the order.

What a session answers (request id -> reply):

* handshake ``API\\0`` + ``v<min>..<max>`` -> ``<serverVersion>, <connection time>``; startApi (71) ->
  managedAccounts (15) + nextValidId (9); a client id already connected -> error 326 and the socket closes.
* reqPositions (61) -> position (61) per account and contract, positionEnd (62).
* reqOpenOrders (5) / reqAllOpenOrders (16) -> openOrder (5) + orderStatus (3) per working order, openOrderEnd (53).
* reqCompletedOrders (99) -> completedOrder (101) per done order, completedOrdersEnd (102).
* reqAccountUpdates (6) -> updateAccountValue (6), updatePortfolio (7), updateAccountTime (8), accountDownloadEnd (54).
* reqAccountUpdatesMulti (76) -> accountUpdateMulti (73), accountUpdateMultiEnd (74).
* reqAccountSummary (62) -> accountSummary (63) per account and asked tag, accountSummaryEnd (64).
* reqExecutions (7) -> execDetails (11) + commissionReport (59) per matching execution, execDetailsEnd (55).
* reqContractDetails (9) -> contractDetails (10) + contractDetailsEnd (52); none or several matches -> error 200.
* placeOrder (3) -> openOrder + orderStatus, or error 200/201/103/436; cancelOrder (4) -> orderStatus Cancelled +
  error 202; reqGlobalCancel (58); reqIds (8) -> nextValidId; reqCurrentTime (49) -> currentTime (49).
* reqHistoricalData (20) -> historicalData (17) from the pushed bars, aggregated; with keepUpToDate,
  historicalDataUpdate (90) per pushed bar until cancelHistoricalData (25); bad size/duration -> error 162.
* reqRealTimeBars (50) -> realtimeBar (50) per pushed bar until cancelRealTimeBars (51).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from engine.adapters.ib.gateway_sim import messages as msg
from engine.adapters.ib.gateway_sim.bars import Bar, bar_seconds, duration, parse_end
from engine.adapters.ib.gateway_sim.book import Rejected
from engine.adapters.ib.gateway_sim.listing import ListedFuture
from engine.adapters.ib.gateway_sim.protocol import (
    In, ProtocolError, connection_time, frame, ib_time, negotiate, read_frame, read_handshake,
)
from engine.adapters.ib.gateway_sim.requests import contract_at, parse_place_order
from engine.adapters.ib.safety import mask

if TYPE_CHECKING:
    from engine.adapters.ib.gateway_sim.server import GatewaySim

__all__ = ["Session"]

log = logging.getLogger(__name__)

_NO_DEFINITION = "No security definition has been found for the request"


class Session:
    """One API connection."""

    def __init__(self, sim: GatewaySim, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sim = sim
        self.reader = reader
        self.writer = writer
        self.client_id: int | None = None
        self.version = 0
        #: a frozen session (faults.freeze) reads requests and never answers
        self.silent = False
        #: bar subscriptions: reqId -> (kind "realtime" | "history", conId, bar seconds, formatDate)
        self.subscriptions: dict[int, tuple[str, int, int, int]] = {}
        self._handlers: dict[int, Callable[[list[str]], None]] = {
            In.START_API: self._start_api,
            In.REQ_POSITIONS: self._positions,
            In.REQ_OPEN_ORDERS: lambda f: self._open_orders(self.client_id),
            In.REQ_ALL_OPEN_ORDERS: lambda f: self._open_orders(None),
            In.REQ_COMPLETED_ORDERS: self._completed_orders,
            In.REQ_ACCOUNT_UPDATES: self._account_updates,
            In.REQ_ACCOUNT_UPDATES_MULTI: self._account_updates_multi,
            In.REQ_ACCOUNT_SUMMARY: self._account_summary,
            In.REQ_EXECUTIONS: self._executions,
            In.REQ_CONTRACT_DETAILS: self._contract_details,
            In.PLACE_ORDER: self._place_order,
            In.CANCEL_ORDER: self._cancel_order,
            In.REQ_GLOBAL_CANCEL: self._global_cancel,
            In.REQ_IDS: lambda f: self.send(msg.next_valid_id(self.sim.next_order_id(self.client_id or 0))),
            In.REQ_CURRENT_TIME: lambda f: self.send(msg.current_time(int(self.sim.book.now.timestamp()))),
            In.REQ_HISTORICAL_DATA: self._historical_data,
            In.CANCEL_HISTORICAL_DATA: lambda f: self.subscriptions.pop(int(f[2]), None),
            In.REQ_REAL_TIME_BARS: self._real_time_bars,
            In.CANCEL_REAL_TIME_BARS: lambda f: self.subscriptions.pop(int(f[2]), None),
        }

    def send(self, data: bytes) -> None:
        delay = self.sim.faults.delay_s
        if delay > 0:  # slow answers: in order, each held back by the same delay
            asyncio.get_running_loop().call_later(delay, self._write, data)
        else:
            self._write(data)

    def _write(self, data: bytes) -> None:
        if not self.silent and not self.writer.is_closing():
            self.writer.write(data)

    def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()

    async def run(self) -> None:
        try:
            low, high, _options = await read_handshake(self.reader)
            self.version = negotiate(low, high)
            self.send(frame(self.version, connection_time()))
            while True:
                fields = await read_frame(self.reader)
                if not fields:
                    continue
                self.sim.received.append(fields)
                handler = self._handlers.get(int(fields[0]))
                if handler is None:
                    log.debug("ignored request %s", fields[0])
                else:
                    handler(fields)
                await self.writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away
        except ProtocolError as exc:
            log.warning("closing a connection that does not speak the TWS protocol: %s", exc)

    # -- startup ----------------------------------------------------------------------------------
    def _start_api(self, fields: list[str]) -> None:
        client_id = int(fields[2])
        if client_id in self.sim.sessions:
            self.send(msg.error(-1, 326, "Unable to connect as the client id is already in use. "
                                         "Retry with a unique client id."))
            self.close()
            return
        self.client_id = client_id
        self.sim.sessions[client_id] = self
        self.send(msg.managed_accounts(self.sim.accounts))
        self.send(msg.next_valid_id(self.sim.next_order_id(client_id)))

    def _positions(self, fields: list[str]) -> None:
        for position in self.sim.book.account_positions():
            self.send(msg.position(position))
        self.send(msg.position_end())

    def _open_orders(self, client_id: int | None) -> None:
        for order in self.sim.book.working(client_id):
            self.send(msg.open_order(order, self.version))
            self.send(msg.order_status(order))
        self.send(msg.open_order_end())

    def _completed_orders(self, fields: list[str]) -> None:
        for order in self.sim.book.completed():
            self.send(msg.completed_order(order, self.version))
        self.send(msg.completed_orders_end())

    def _account_values(self, account: str) -> list[tuple[str, str, str]]:
        cash = f"{self.sim.cash:.2f}"
        return [("AccountType", "INDIVIDUAL", ""), ("NetLiquidation", cash, "USD"), ("TotalCashValue", cash, "USD"),
                ("BuyingPower", f"{4 * self.sim.cash:.2f}", "USD"), ("AvailableFunds", cash, "USD")]

    def _account_updates(self, fields: list[str]) -> None:
        subscribe, account = fields[2] == "1", fields[3]
        if not subscribe:
            return
        for key, value, currency in self._account_values(account):
            self.send(msg.account_value(key, value, currency, account))
        for position in self.sim.book.account_positions():
            if position.account == account and position.quantity:
                price = self.sim.market_price(position.future, position.avg_price)
                self.send(msg.portfolio_value(position, price))
        self.send(msg.account_time(self.sim.book.now.strftime("%H:%M")))
        self.send(msg.account_download_end(account))

    def _account_updates_multi(self, fields: list[str]) -> None:
        req_id, account = int(fields[2]), fields[3]
        for key, value, currency in self._account_values(account):
            self.send(msg.account_update_multi(req_id, account, key, value, currency))
        self.send(msg.account_update_multi_end(req_id))

    def _account_summary(self, fields: list[str]) -> None:
        """reqAccountSummary ``62, 1, reqId, group, tags``: every account's values whose tag was asked."""
        req_id, tags = int(fields[2]), set(fields[4].split(","))
        for account in self.sim.accounts:
            for key, value, currency in self._account_values(account):
                if key in tags or "All" in tags:
                    self.send(msg.account_summary(req_id, account, key, value, currency))
        self.send(msg.account_summary_end(req_id))

    def _executions(self, fields: list[str]) -> None:
        """reqExecutions ``7, 3, reqId, clientId, acctCode, time, symbol, secType, exchange, side``."""
        req_id, client_id, account, _time, symbol, sec_type, exchange, side = fields[2:10]
        for e in self.sim.book.executions:
            o = e.order
            if ((client_id not in ("", "0") and int(client_id) != o.client_id) or (account and account != o.account)
                    or (symbol and symbol != o.future.root) or (sec_type and sec_type != "FUT")
                    or (exchange and exchange != o.future.exchange) or (side and side[0] != o.request.action[0])):
                continue
            self.send(msg.exec_details(int(req_id), e, self.version))
            self.send(msg.commission_report(e))
        self.send(msg.exec_details_end(int(req_id)))

    # -- contracts --------------------------------------------------------------------------------
    def _resolve(self, req_id: int, query_fields: list[str], start: int) -> ListedFuture | None:
        """The one listed future a request names, or None after sending error 200."""
        query = contract_at(query_fields, start)
        found = self.sim.listing.match(query)
        if len(found) == 1:
            return found[0]
        text = (_NO_DEFINITION if not found
                else f"The contract description specified for {query.describe()} is ambiguous.")
        self.send(msg.error(req_id, 200, text))
        return None

    def _contract_details(self, fields: list[str]) -> None:
        req_id = int(fields[2])
        future = self._resolve(req_id, fields, 3)
        if future is not None:
            self.send(msg.contract_details(req_id, future))
            self.send(msg.contract_details_end(req_id))

    # -- bars -------------------------------------------------------------------------------------
    def _historical_data(self, fields: list[str]) -> None:
        """reqHistoricalData ``20, reqId, contract x12, includeExpired, endDateTime, barSizeSetting,
        durationStr, useRTH, whatToShow, formatDate, keepUpToDate, chartOptions`` (no version field)."""
        req_id = int(fields[1])
        future = self._resolve(req_id, fields, 2)
        if future is None:
            return
        keep = fields[21] == "1"
        if self.sim.faults.take_pacing():
            self.send(msg.error(req_id, 162, "Historical Market Data Service error message:API historical data "
                                             "query cancelled: pacing violation"))
            return
        try:
            size = bar_seconds(fields[16])
            span = duration(fields[17])
            end = self.sim.book.now if keep else parse_end(fields[15], self.sim.book.now)
        except ValueError as exc:
            self.send(msg.error(req_id, 162, f"Historical Market Data Service error message:{exc}"))
            return
        format_date = int(fields[20] or 1)
        # "now" includes the bar in progress (the last pushed); an explicit end takes bars opening before it.
        until = end + timedelta(seconds=size) if keep or not fields[15].strip() else end
        bars = self.sim.history.window(future.con_id, end - span, until, size)
        self.send(msg.historical_data(req_id, ib_time(end - span), ib_time(end), bars, size, format_date))
        if keep:
            self.subscriptions[req_id] = ("history", future.con_id, size, format_date)

    def _real_time_bars(self, fields: list[str]) -> None:
        """reqRealTimeBars ``50, 3, reqId, contract x12, barSize, whatToShow, useRTH, options``."""
        req_id = int(fields[2])
        future = self._resolve(req_id, fields, 3)
        if future is not None:
            self.subscriptions[req_id] = ("realtime", future.con_id, 5, 2)

    def on_bar(self, future: ListedFuture, bar: Bar) -> None:
        """A bar was pushed: feed this session's subscriptions on its contract."""
        for req_id, (kind, con_id, size, format_date) in list(self.subscriptions.items()):
            if con_id != future.con_id:
                continue
            if kind == "realtime":
                self.send(msg.realtime_bar(req_id, bar))
                continue
            start = datetime.fromtimestamp(int(bar.ts.timestamp()) // size * size, bar.ts.tzinfo)
            [bucket] = self.sim.history.window(con_id, start, start + timedelta(seconds=size), size)
            self.send(msg.historical_data_update(req_id, bucket, size, format_date))

    # -- orders -----------------------------------------------------------------------------------
    def _place_order(self, fields: list[str]) -> None:
        request = parse_place_order(fields, self.version)
        future = self._resolve(request.order_id, fields, 2)
        if future is None:
            return
        account = request.account or (self.sim.accounts[0] if len(self.sim.accounts) == 1 else "")
        if not account:
            self.send(msg.error(request.order_id, 436, "You must specify an allocation (either a single account, "
                                                       "group, or profile)."))
            return
        if account not in self.sim.accounts:
            self.send(msg.error(request.order_id, 201, f"Order rejected - reason:account {mask(account)} is not "
                                                       "managed by this gateway"))
            return
        try:
            scripted = self.sim.faults.take_rejection()
            if scripted is not None:
                raise Rejected(*scripted)
            working = self.sim.book.place(request, self.client_id or 0, account, future)
        except Rejected as exc:
            self.send(msg.error(request.order_id, exc.code, exc.text))
            return
        for order in working:  # none while staged (transmit=False); a whole bracket when its last child arrives
            self.sim._send_status(order)
            for listener in list(self.sim.order_listeners):
                listener(order)

    def _cancel_order(self, fields: list[str]) -> None:
        order_id = int(fields[2])
        try:
            ended = self.sim.book.cancel(self.client_id or 0, order_id)
        except Rejected as exc:
            self.send(msg.error(order_id, exc.code, exc.text))
            return
        for order in ended:
            self.sim._send_status(order)
        self.send(msg.error(order_id, 202, "Order Canceled - reason:"))

    def _global_cancel(self, fields: list[str]) -> None:
        for client_id, order_id in list(self.sim.book.staged):  # untransmitted orders go too
            self.sim.book.cancel(client_id, order_id)
        for order in self.sim.book.working():
            if not order.is_done:  # (a held child may have ended with its parent already)
                for ended in self.sim.book.cancel(order.client_id, order.order_id):
                    self.sim._send_status(ended)

