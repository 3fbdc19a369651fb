"""The execution seam: one interface for the simulated broker of backtests and a real broker.

The kernel (:mod:`engine.kernel`) talks to one :class:`ExecutionHandler` in every mode: it submits and
cancels orders and, for each bar, asks the handler for the fills that happened. The simulated broker
(:class:`~engine.execution.simulated.BacktestExecutionHandler`) makes them from the bar; the Interactive
Brokers handler (:class:`~engine.adapters.ib.handler.IBExecutionHandler`) returns what IB reported.

What the risk manager and the strategy read about working orders (worst-case buys and sells, market orders
in flight) is computed here once, from :attr:`ExecutionHandler.working`, so both brokers answer alike.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager

from engine.core.orders import Fill, Order, OrderType

__all__ = ["ExecutionHandler"]


class ExecutionHandler(ABC):
    """Where orders go and fills come from.

    Attributes
    ----------
    working : dict of str to list of Order
        Symbol -> its working orders in submission order; a symbol is absent when it has none (the kernel
        asks a handler for a symbol's fills only when the symbol is here). Subclasses keep it current.
    bar_ns : int
        Bar length, nanoseconds: an order decided on a bar is submitted at the bar's close.
    cancels_at_once : bool
        True when :meth:`cancel` takes effect before it returns (the simulated broker); False when it is a
        request the broker confirms later (the order keeps working meanwhile, and may still fill).
    """

    working: dict[str, list[Order]]
    bar_ns: int
    cancels_at_once: bool = True
    #: False: the kernel books a roll itself at the roll table's prices (the simulated broker, see
    #: :meth:`engine.kernel.TradingKernel._roll`); True: :meth:`send_roll` sends both legs as real orders and
    #: their fills arrive like any other (a real broker)
    sends_rolls: bool = False

    @abstractmethod
    def submit(self, order: Order, bar: tuple, close_known: bool = True) -> list[Fill]:
        """Accept ``order`` (already numbered and risk-checked) decided on ``bar``; return immediate fills.

        ``close_known`` is False when ``bar`` carries the symbol's latest prices but its bar at the decision
        time has not been seen yet (an order on another symbol than the one whose bar is being processed).
        """

    @abstractmethod
    def cancel(self, order: Order, ts: int, reason: str = "cancelled") -> bool:
        """Cancel a working order; False if it was already done."""

    @abstractmethod
    def on_bar(self, symbol: str, ts: int, open_: float, high: float, low: float, close: float, volume: int,
               trading_day: int, contract: str | None) -> list[Fill]:
        """Fills of ``symbol``'s working orders during this bar."""

    def send_roll(self, out_leg: Order, in_leg: Order, old: str, new: str) -> None:
        """Send a roll's two market orders (numbered by the kernel, ``origin`` ``roll_out`` / ``roll_in``):
        ``out_leg`` closes the position in contract ``old``, ``in_leg`` opens the same signed quantity in
        ``new``. Only handlers with :attr:`sends_rolls` implement it.

        Raises
        ------
        engine.adapters.ib.safety.SafetyError or warehouse.errors.QEError
            The broker cannot take the legs now (the kernel halts the run: a half-sent roll is not traded on).
        """
        raise NotImplementedError(f"{type(self).__name__} books rolls itself (sends_rolls is False)")

    @contextmanager
    def one_batch(self) -> Iterator[None]:
        """The orders submitted inside the block go to the broker together when it ends (a real broker's
        handler journals them as one batch); the simulated broker books each order as it comes."""
        yield

    def front_changed(self, symbol: str, old: str | None, new: str) -> None:
        """The query's rows name ``new`` as ``symbol``'s front contract from now on (position or not): a real
        broker's handler sends the symbol's later orders there. The simulated broker needs nothing."""

    def cancel_all(self, ts: int, reason: str, keep_origin: str | None = None) -> None:
        """Cancel every working order but those of origin ``keep_origin``."""
        for order in self.working_orders():
            if keep_origin is None or order.origin != keep_origin:
                self.cancel(order, ts, reason)

    def working_orders(self, symbol: str | None = None) -> list[Order]:
        """Orders still working (all symbols, or one)."""
        if symbol is not None:
            return list(self.working.get(symbol, ()))
        return [o for orders in self.working.values() for o in orders]

    def working_quantity(self, symbol: str) -> int:
        """Signed contracts still working for ``symbol``: buys minus sells of :meth:`working_buys_sells`."""
        buys, sells = self.working_buys_sells(symbol)
        return buys - sells

    def working_buys_sells(self, symbol: str) -> tuple[int, int]:
        """Contracts (both >= 0) that ``symbol``'s working orders could buy and could sell at worst.

        Each OCO group counts once per side, at its largest remaining leg on that side (its legs are mutually
        exclusive); held bracket children do not count (they only work once their entry is done, and then
        reduce the position it opened).
        """
        buys = sells = 0
        sides: dict[str, list[int]] | None = None
        for order in self.working.get(symbol, ()):
            left = order.quantity - order.filled
            if order.oca_group is not None:
                if sides is None:
                    sides = {}
                side = sides.setdefault(order.oca_group, [0, 0])
                if left > 0:
                    side[0] = max(side[0], left)
                else:
                    side[1] = max(side[1], -left)
            elif left > 0:
                buys += left
            else:
                sells -= left
        if sides:
            buys += sum(b for b, _ in sides.values())
            sells += sum(s for _, s in sides.values())
        return buys, sells

    def in_flight_quantity(self, symbol: str) -> int:
        """Signed contracts still to fill on ``symbol``'s working MARKET orders: what will fill for sure.

        Resting LIMIT/STOP/MIT orders are not counted: they may never fill (a protective stop does not
        make the position it protects smaller).
        """
        return sum(o.quantity - o.filled for o in self.working.get(symbol, ()) if o.order_type is OrderType.MARKET)
