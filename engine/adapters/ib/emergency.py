"""The operator's kill switch straight at IB, for a live session that does not answer (``qe live kill``).

It is the handler's own kill switch (:meth:`IBExecutionHandler.kill`), run by a second handler of the same
run and strategy that connects with the strategy's ``control`` client id: the same port and account guards,
the same contract qualification, the same journal. Two things differ from the session's in-process kill:

* Orders: IB lets only the client that placed an order cancel it, so from another client id the one way to
  stop the session's orders is IB's global cancel (``reqGlobalCancel``). It cancels every working order of
  the gateway's accounts, manual ones included; for a stuck session that is what the operator wants.
* Positions: only those in the session's contracts are flattened (those it trades plus any its status
  lists, e.g. an old contract during a roll); positions in other contracts are reported and left alone.

The flattening orders are journaled under the session's run and strategy with the orderRefs
``run/strategy/operator-kill-<UTC time>-<n>`` before they are sent, so a restarting session finds them in its
reconciliation like its own orders, and two operator kills never share an orderRef.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timezone

from engine.adapters.ib.accounts import IBConfig
from engine.adapters.ib.journal import OrderJournal
from engine.adapters.ib.safety import mask

__all__ = ["CancelledOrder", "FlattenOrder", "EmergencyReport", "emergency_kill", "run_emergency_kill"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CancelledOrder:
    """An order that was working on the account when the global cancel went out."""

    order_ref: str
    contract: str
    quantity: int
    order_type: str
    client_id: int


@dataclass(frozen=True, slots=True)
class FlattenOrder:
    """A market order sent against a position (``status`` as IB last reported it)."""

    order_ref: str
    contract: str
    quantity: int
    status: str


@dataclass(slots=True)
class EmergencyReport:
    """What :func:`emergency_kill` did. ``account`` is masked."""

    account: str
    client_id: int
    cancelled: list[CancelledOrder] = field(default_factory=list)
    flattened: list[FlattenOrder] = field(default_factory=list)
    left_alone: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """The report as an operator reads it, one fact a line."""
        out = [f"IB kill switch on account {self.account} (client id {self.client_id}): global cancel sent"]
        out += [f"  cancelled {o.order_ref or '(no orderRef)'}: {o.contract} {o.quantity:+d} {o.order_type} "
                f"(client {o.client_id})" for o in self.cancelled]
        if not self.cancelled:
            out.append("  no order was working")
        out += [f"  flatten {o.order_ref}: {o.contract} {o.quantity:+d} MKT ({o.status})" for o in self.flattened]
        if not self.flattened:
            out.append("  no position to flatten in the session's contracts")
        out += [f"  left alone (not the session's contract): {c} {q:+d}" for c, q in self.left_alone.items()]
        return out


async def emergency_kill(config: IBConfig, strategy: str, run_id: str, *, live: bool = False,
                         journal: OrderJournal | None = None, contracts: Collection[str] = (),
                         timeout: float = 10.0, fill_wait: float = 2.0) -> EmergencyReport:
    """Cancel every working order of the strategy's account and flatten the session's contracts at market.

    Parameters
    ----------
    config : IBConfig
        The session's IB configuration; the strategy's account, gateway and ``control`` client id.
    strategy, run_id : str
        The session's: the flattening orders' orderRefs and journal rows carry them.
    live : bool
        The session trades a live account (its guards need the explicit flag, as the session's did).
    journal : OrderJournal, optional
        The warehouse's journal; the flattening orders are journaled before they are sent.
    contracts : collection of str
        More contracts (IB local symbols) to flatten besides the strategy's configured ones.
    timeout : float
        Seconds for connecting, for IB to report the cancels, and for it to acknowledge the new orders.
    fill_wait : float
        Seconds to wait for the market orders to fill before reporting (they go on working either way).

    Raises
    ------
    SafetyError
        A port or account guard refused (nothing was sent).
    TimeoutError
        IB still reported working orders, or did not acknowledge the flattening orders, in time.
    """
    handler = config.handler(strategy, run_id, live=live, role="control", journal=journal)
    await handler.connect(timeout)
    try:
        account = handler.account or ""
        working = [t for t in await handler.ib.reqAllOpenOrdersAsync()
                   if t.order.account == account and t.isActive()]
        traded = set(handler.listed) | set(contracts)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        trades = await handler.kill(all_clients=True, timeout=timeout, only=traded,
                                    ref_prefix=f"operator-kill-{stamp}")
        await _settle(trades, fill_wait)
        report = EmergencyReport(mask(account), handler.connection.active_client_id)
        report.cancelled = [CancelledOrder(t.order.orderRef, t.contract.localSymbol or t.contract.symbol,
                                           _signed(t.order.action, t.order.totalQuantity), t.order.orderType,
                                           t.order.clientId) for t in working]
        report.flattened = [FlattenOrder(t.order.orderRef, t.contract.localSymbol or t.contract.symbol,
                                         _signed(t.order.action, t.order.totalQuantity), t.orderStatus.status)
                            for t in trades]
        report.left_alone = {c: q for c, q in handler.reconciliation.positions.items() if c not in traded}
    finally:
        handler.disconnect()
    log.warning("operator kill switch for %s/%s: %d order(s) cancelled, %d flattening order(s) sent", run_id,
                strategy, len(report.cancelled), len(report.flattened))
    return report


def run_emergency_kill(config: IBConfig, strategy: str, run_id: str, **options: object) -> EmergencyReport:
    """:func:`emergency_kill` from synchronous code (the CLI), in its own event loop."""
    return asyncio.run(emergency_kill(config, strategy, run_id, **options))  # type: ignore[arg-type]


async def _settle(trades: list, wait: float) -> None:  # noqa: ANN001 - ib_async trades
    """Give the market orders ``wait`` seconds to fill, so that the report can say they did."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while loop.time() < deadline and not all(t.isDone() for t in trades):
        await asyncio.sleep(0.02)


def _signed(action: str, quantity: float) -> int:
    return int(quantity) if action == "BUY" else -int(quantity)
