"""Trade a feature's bands: long below ``low``, short above ``high``, flat once it is back inside ``exit_band``.

Reads one catalog column of the query's row (``rsi_14`` by default, from ``features_<tf>``), so it runs the
same from a backtest's stream and a live session's bar: the demo's paper strategy. Mean reversion on RSI
is a teaching example, not an edge.
"""

from __future__ import annotations

from typing import Any

from engine.core.orders import Order
from engine.strategy import Strategy

__all__ = ["FeatureBand"]


class FeatureBand(Strategy):
    """One position per symbol from a feature's value.

    Parameters
    ----------
    feature : str
        The query's column to read (NULL during the feature's warm-up: no trade).
    low, high : float
        Below ``low`` the target is ``+quantity``; above ``high`` it is ``-quantity``.
    exit_low, exit_high : float
        Inside ``[exit_low, exit_high]`` the target is flat; elsewhere the position is held.
    quantity : int
        Contracts.
    """

    history_size = 0

    def __init__(self, feature: str = "rsi_14", low: float = 30.0, high: float = 70.0, exit_low: float = 45.0,
                 exit_high: float = 55.0, quantity: int = 1) -> None:
        if not low < exit_low <= exit_high < high:
            raise ValueError(f"FeatureBand needs low < exit_low <= exit_high < high, got {low}, {exit_low}, "
                             f"{exit_high}, {high}")
        super().__init__(feature=feature, low=low, high=high, exit_low=exit_low, exit_high=exit_high,
                         quantity=quantity)

    def on_bar(self, bar: Any) -> Order | None:
        value = bar[self.feature]
        if value is None:
            return None
        if value < self.low:
            target = self.quantity
        elif value > self.high:
            target = -self.quantity
        elif self.exit_low <= value <= self.exit_high:
            target = 0
        else:
            return None
        return self.target_position(bar.symbol, target)
