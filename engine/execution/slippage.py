"""Slippage models: how far from the reference price a market-like fill executes.

A model returns the adverse price offset (price units, >= 0) for one fill; the simulated broker adds it to
a buy and subtracts it from a sell, then the offset is rounded **up** to whole ticks so every fill sits on
the contract's tick grid. Limit fills (including a triggered stop-limit) execute at their limit price or
better and never slip.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["SlippageModel", "NoSlippage", "FixedTicks", "Proportional", "VolatilityVolume", "SlippageConfig", "make_slippage"]


class SlippageModel(Protocol):
    """Adverse offset of a fill, in price units, before rounding to ticks."""

    #: True when the model needs :meth:`observe` on every bar of every symbol (costs time in the loop).
    observes_bars: bool

    def offset(self, symbol: str, price: float, quantity: int, bar_volume: int, tick_size: float) -> float: ...

    def observe(self, symbol: str, close: float) -> None: ...


class NoSlippage:
    """Fills at the reference price."""

    observes_bars = False

    def offset(self, symbol: str, price: float, quantity: int, bar_volume: int, tick_size: float) -> float:
        return 0.0

    def observe(self, symbol: str, close: float) -> None:  # pragma: no cover - never called
        pass


class FixedTicks:
    """A fixed number of ticks against the order: ``offset = ticks * tick_size``."""

    observes_bars = False

    def __init__(self, ticks: float = 1.0) -> None:
        self.ticks = ticks

    def offset(self, symbol: str, price: float, quantity: int, bar_volume: int, tick_size: float) -> float:
        return self.ticks * tick_size

    def observe(self, symbol: str, close: float) -> None:  # pragma: no cover
        pass


class Proportional:
    """A fraction of the price: ``offset = price * bps / 10_000``."""

    observes_bars = False

    def __init__(self, bps: float = 1.0) -> None:
        self.bps = bps

    def offset(self, symbol: str, price: float, quantity: int, bar_volume: int, tick_size: float) -> float:
        return abs(price) * self.bps / 10_000.0

    def observe(self, symbol: str, close: float) -> None:  # pragma: no cover
        pass


class VolatilityVolume:
    """Impact that grows with recent volatility and with the order's share of the bar's volume.

    ``offset = price * (spread_bps / 10_000 + impact * sigma * sqrt(|q| / max(V, 1)))`` where ``sigma`` is the
    standard deviation (ddof 1) of the symbol's last ``window`` close-to-close log returns (per bar, not
    annualized), ``q`` the filled contracts and ``V`` the bar's volume: the square-root impact law, scaled by
    the volatility the market shows right now. With fewer than two returns seen, ``sigma`` is 0.
    """

    observes_bars = True

    def __init__(self, impact: float = 1.0, window: int = 20, spread_bps: float = 0.0) -> None:
        if window < 2:
            raise ValueError("VolatilityVolume window must be >= 2 returns")
        self.impact = impact
        self.window = window
        self.spread_bps = spread_bps
        self._last: dict[str, float] = {}
        self._returns: dict[str, deque[float]] = {}

    def observe(self, symbol: str, close: float) -> None:
        last = self._last.get(symbol)
        self._last[symbol] = close
        if last is not None and last > 0 and close > 0:
            window = self._returns.get(symbol)
            if window is None:
                window = self._returns[symbol] = deque(maxlen=self.window)
            window.append(math.log(close / last))

    def sigma(self, symbol: str) -> float:
        """Per-bar volatility of log returns over the window (0 with fewer than two returns)."""
        window = self._returns.get(symbol)
        if window is None or len(window) < 2:
            return 0.0
        n = len(window)
        mean = sum(window) / n
        return math.sqrt(sum((r - mean) ** 2 for r in window) / (n - 1))

    def offset(self, symbol: str, price: float, quantity: int, bar_volume: int, tick_size: float) -> float:
        share = abs(quantity) / max(bar_volume, 1)
        return abs(price) * (self.spread_bps / 10_000.0 + self.impact * self.sigma(symbol) * math.sqrt(share))


class SlippageConfig(BaseModel):
    """Slippage model of a run: ``{"model": "fixed", "ticks": 1}``, ``{"model": "proportional", "bps": 0.5}``,
    ``{"model": "volatility", "impact": 1.0, "window": 20, "spread_bps": 0}`` or ``{"model": "none"}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(default="none", pattern="^(none|fixed|proportional|volatility)$")
    ticks: float = Field(default=1.0, ge=0)
    bps: float = Field(default=1.0, ge=0)
    impact: float = Field(default=1.0, ge=0)
    window: int = Field(default=20, ge=2)
    spread_bps: float = Field(default=0.0, ge=0)


def make_slippage(config: SlippageConfig) -> SlippageModel:
    """The model a :class:`SlippageConfig` names."""
    if config.model == "fixed":
        return FixedTicks(config.ticks)
    if config.model == "proportional":
        return Proportional(config.bps)
    if config.model == "volatility":
        return VolatilityVolume(config.impact, config.window, config.spread_bps)
    return NoSlippage()
