"""The data subscriptions a handler holds, re-requested whenever IB may have dropped them.

IB forgets market-data subscriptions when it says so (1101: connectivity restored, data lost) and when the
API connection itself is lost; a strategy that does not ask again stops receiving bars without any error
(NautilusTrader #1533/#1933, LEAN's Sunday restart). Each :class:`Subscription` remembers what was asked
(historical bars kept up to date, or 5-second real-time bars) and who listens; :meth:`Subscriptions.renew`
asks IB again for every one of them and moves the listeners to the new bar list. 1102 (restored, data
maintained) keeps them as they are.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from ib_async import IB, BarDataList, Contract, RealTimeBarList

__all__ = ["Subscription", "Subscriptions", "RENEW_ON"]

log = logging.getLogger(__name__)

#: the reasons (Connection's restored hooks) after which every subscription is asked for again
RENEW_ON = frozenset({"1101", "reconnect"})

Listener = Callable[["Subscription", bool], None]


@dataclass(eq=False)
class Subscription:
    """One data subscription: what was asked, the bars IB sends for it now, and its listeners.

    Attributes
    ----------
    kind : {"history", "realtime"}
        ``reqHistoricalData`` with ``keepUpToDate`` (the bar in progress is updated), or ``reqRealTimeBars``
        (5-second bars).
    root, contract
        The strategy's root and the qualified IB contract.
    bar_size, duration, what, use_rth
        The request's terms (``bar_size`` and ``duration`` only for history).
    bars : BarDataList or RealTimeBarList or None
        The list IB currently fills (replaced on every renewal; the previous one receives nothing more).
    listeners : list of callable
        Called as ``listener(subscription, has_new_bar)`` on every update, across renewals.
    requests : int
        How many times it was requested (1 + renewals).
    """

    kind: Literal["history", "realtime"]
    root: str
    contract: Contract
    bar_size: str = "1 min"
    duration: str = "1 D"
    what: str = "TRADES"
    use_rth: bool = False
    bars: BarDataList | RealTimeBarList | None = None
    listeners: list[Listener] = field(default_factory=list)
    requests: int = 0

    def _updated(self, bars: object, has_new_bar: bool) -> None:
        for listener in list(self.listeners):
            listener(self, has_new_bar)


class Subscriptions:
    """Every data subscription of one handler's connection."""

    def __init__(self, ib: IB) -> None:
        self.ib = ib
        self.held: list[Subscription] = []
        self.renewals = 0
        self._renewing: asyncio.Task | None = None

    async def add(self, subscription: Subscription) -> Subscription:
        """Request ``subscription`` and hold it (it is renewed from now on)."""
        await self._request(subscription)
        self.held.append(subscription)
        return subscription

    def remove(self, subscription: Subscription) -> None:
        """Cancel it at IB and stop renewing it."""
        self.held.remove(subscription)
        self._cancel(subscription)

    async def _request(self, subscription: Subscription) -> None:
        if subscription.kind == "history":
            bars = await self.ib.reqHistoricalDataAsync(
                subscription.contract, "", subscription.duration, subscription.bar_size, subscription.what,
                subscription.use_rth, keepUpToDate=True)
        else:
            bars = self.ib.reqRealTimeBars(subscription.contract, 5, subscription.what, subscription.use_rth)
        bars.updateEvent += subscription._updated
        subscription.bars = bars
        subscription.requests += 1

    def _cancel(self, subscription: Subscription) -> None:
        bars, subscription.bars = subscription.bars, None
        if bars is None:
            return
        bars.updateEvent -= subscription._updated
        if not self.ib.isConnected():
            return  # the connection (and with it every subscription at IB) is gone already
        if isinstance(bars, BarDataList):
            self.ib.cancelHistoricalData(bars)
        else:
            self.ib.cancelRealTimeBars(bars)

    def on_restored(self, reason: str) -> None:
        """Connection hook: after 1101 or a reconnect, renew every subscription (1102 keeps them)."""
        if reason not in RENEW_ON or not self.held:
            return
        log.info("IB %s: re-requesting %d data subscription(s)", reason, len(self.held))
        if self._renewing is not None and not self._renewing.done():
            self._renewing.cancel()
        self._renewing = asyncio.get_event_loop().create_task(self.renew())

    async def renew(self) -> None:
        """Cancel and request again every held subscription (listeners move to the new bar lists)."""
        for subscription in list(self.held):
            self._cancel(subscription)
            try:
                await self._request(subscription)
            except (ConnectionError, asyncio.TimeoutError) as exc:  # the next reconnect renews it again
                log.warning("IB could not re-request the %s bars of %s: %s", subscription.kind,
                            subscription.root, exc)
        self.renewals += 1
