"""Moving-average crossover: long when the fast SMA crosses above the slow one, short when below.

Each symbol keeps its own running sums of the last ``fast`` and ``slow`` closes, so the strategy runs on any
bar query (``SELECT * FROM bars_1m``) without precomputed features. A cross up targets ``+quantity``
contracts, a cross down ``-quantity`` ("reverse on cross"); nothing is traded before the first cross.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from engine.core.orders import Order
from engine.strategy import Strategy

__all__ = ["SmaCross"]


class SmaCross(Strategy):
    """SMA(fast) / SMA(slow) crossover, one position per symbol.

    Parameters
    ----------
    fast, slow : int
        Window lengths in bars (``fast < slow``).
    quantity : int
        Contracts held long or short.
    """

    history_size = 0

    def __init__(self, fast: int = 20, slow: int = 50, quantity: int = 1) -> None:
        if not 0 < fast < slow:
            raise ValueError(f"SmaCross needs 0 < fast < slow, got fast={fast}, slow={slow}")
        super().__init__(fast=fast, slow=slow, quantity=quantity)
        self._state: dict[str, list] = {}

    def on_bar(self, bar: Any) -> Order | None:
        state = self._state.get(bar.symbol)
        if state is None:
            # closes window, fast sum, slow sum, sign of (fast - slow) on the previous bar (None: undefined)
            state = self._state[bar.symbol] = [deque(maxlen=self.slow), 0.0, 0.0, None]
        closes = state[0]
        close = bar.close
        if len(closes) == self.slow:
            state[2] -= closes[0]
        if len(closes) >= self.fast:
            state[1] -= closes[-self.fast]
        closes.append(close)
        state[1] += close
        state[2] += close
        if len(closes) < self.slow:
            return None
        # sign(fast/F - slow/S) without division: exact on a tick grid, where every sum is exact
        diff = state[1] * self.slow - state[2] * self.fast
        sign = (diff > 0) - (diff < 0)
        previous = state[3]
        state[3] = sign
        if previous is None:
            return None
        if previous <= 0 < sign:
            return self.target_position(bar.symbol, self.quantity, tag="cross up")
        if previous >= 0 > sign:
            return self.target_position(bar.symbol, -self.quantity, tag="cross down")
        return None
