"""Strategies: a class with ``on_start / on_bar / on_fill / on_stop``, or a plain function.

``on_bar(bar)`` receives the current bar as a named tuple whose fields are the query's columns, as plain
Python values (``bar.symbol``, ``bar.close``, ``bar.rsi_14``; ``bar["rsi_14"]`` works too); ``bar.ts`` is
the bar's open time in integer nanoseconds since the epoch (UTC) and ``bar.qe_trading_day`` its CME
trading date in days since 1970-01-01 (cheap integers: the loop runs a million bars in about a second).
It returns an :class:`~engine.orders.Order`, a list of orders or ``None``; orders may also be submitted
with :meth:`Strategy.submit`. The strategy sees its account through the helpers below.

The functional form ``strategy(bar, backtester) -> Optional[Order]`` is wrapped by
:class:`FunctionStrategy`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engine.orders import Fill, Order, OrderType, TimeInForce

if TYPE_CHECKING:
    from engine.backtest import Backtester

__all__ = ["Strategy", "FunctionStrategy"]


class Strategy:
    """Base class of event-driven strategies.

    Attributes
    ----------
    history_size : int
        Bars of history kept per symbol for :meth:`history` (0 keeps none and saves time in the loop).
    params : dict
        Parameters given at construction (``--param k=v`` on the command line).
    """

    history_size: int = 50

    def __init__(self, **params: Any) -> None:
        self.params = params
        for key, value in params.items():
            setattr(self, key, value)
        self.engine: Backtester | None = None

    # -- callbacks ----------------------------------------------------------------------------------
    def on_start(self) -> None:
        """Called once before the first bar."""

    def on_bar(self, bar: Any) -> Order | list[Order] | None:
        """Called for every bar (every symbol, in time order)."""
        return None

    def on_fill(self, fill: Fill) -> None:
        """Called for every fill of this strategy's orders (and for roll legs)."""

    def on_stop(self) -> None:
        """Called once after the last bar."""

    # -- account helpers ----------------------------------------------------------------------------
    def position(self, symbol: str) -> int:
        """Signed contracts held."""
        return self.engine.portfolio.position(symbol)

    def working_quantity(self, symbol: str) -> int:
        """Signed contracts of orders still working."""
        return self.engine.handler.working_quantity(symbol)

    @property
    def equity(self) -> float:
        """Account equity marked to the latest closes, currency."""
        return self.engine.portfolio.equity

    @property
    def cash(self) -> float:
        return self.engine.portfolio.cash

    def target_position(self, symbol: str, target: int, tag: str = "") -> Order | None:
        """A market order that takes the position (plus working orders) to ``target`` contracts, or None."""
        delta = target - self.engine.portfolio.position(symbol) - self.engine.handler.working_quantity(symbol)
        if delta == 0:
            return None
        return Order(symbol, delta, OrderType.MARKET, tif=TimeInForce.GTC, tag=tag)

    def submit(self, order: Order) -> Order:
        """Submit an order now (same as returning it from :meth:`on_bar`).

        A bracket (:func:`engine.orders.bracket`) is submitted through its entry: its take-profit and stop-loss
        go with it (submitting them again is a no-op, so the whole list may be submitted or returned).
        """
        self.engine.submit(order)
        return order

    def cancel(self, order: Order) -> bool:
        """Cancel a working order."""
        return self.engine.cancel(order)

    def working_orders(self, symbol: str | None = None) -> list[Order]:
        return self.engine.handler.working_orders(symbol)

    def history(self, symbol: str) -> list[Any]:
        """The last ``history_size`` bars of ``symbol``, oldest first, current bar last."""
        return list(self.engine.histories.get(symbol, ()))


class FunctionStrategy(Strategy):
    """Wraps ``fn(bar, backtester) -> Optional[Order]`` (or a list of orders)."""

    def __init__(self, fn: Callable[[Any, Backtester], Order | list[Order] | None], history_size: int = 50) -> None:
        super().__init__()
        self.fn = fn
        self.history_size = history_size
        self.name = getattr(fn, "__qualname__", repr(fn))

    def on_bar(self, bar: Any) -> Order | list[Order] | None:
        return self.fn(bar, self.engine)
