"""Pre-trade risk checks between the strategy and the execution handler.

Every order passes :meth:`RiskManager.check` before it reaches a handler, in backtests and live alike. A
check never raises: it returns ``None`` (accepted) or a :class:`Denial` with a stable reason code and the
numbers behind it, e.g. ``MAX_POSITION_SIZE: requested=12, limit=10``. Orders that reduce risk (the
projected position is not larger in absolute size and does not flip sign) always pass.

The projected position of a symbol counts the position held **and** every order still working for it, so
a burst of orders cannot slip past a limit one at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from engine.instruments import InstrumentBook
from engine.orders import Order

__all__ = ["Denial", "RiskLimits", "AccountView", "RiskManager"]


@dataclass(frozen=True, slots=True)
class Denial:
    """Why an order was refused: a stable ``code`` and a message with the numbers."""

    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class RiskLimits(BaseModel):
    """Pre-trade limits (strict: unknown keys are an error)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Largest absolute position per symbol, contracts (including working orders).
    max_position_size: int = Field(default=10, ge=0)
    #: Refuse orders whose projected initial margin over all positions exceeds equity.
    check_margin: bool = True


class AccountView(Protocol):
    """What the risk manager reads from the account: positions, working orders, equity."""

    def position(self, symbol: str) -> int: ...

    def working_quantity(self, symbol: str) -> int: ...

    def exposures(self) -> dict[str, int]: ...

    @property
    def equity(self) -> float: ...


class RiskManager:
    """Pre-trade checks against :class:`RiskLimits`.

    Parameters
    ----------
    limits : RiskLimits
    instruments : InstrumentBook
        Margins by trading date.
    """

    def __init__(self, limits: RiskLimits, instruments: InstrumentBook) -> None:
        self.limits = limits
        self.instruments = instruments

    def check(self, order: Order, account: AccountView, trading_day: int) -> Denial | None:
        """``None`` if ``order`` may go to the handler, else the first limit it breaks."""
        current = account.position(order.symbol) + account.working_quantity(order.symbol)
        projected = current + order.quantity
        if _reduces(current, projected):
            return None
        limit = self.limits.max_position_size
        if abs(projected) > limit:
            return Denial("MAX_POSITION_SIZE", f"requested={abs(projected)}, limit={limit}")
        if self.limits.check_margin:
            return self._margin(order, projected, account, trading_day)
        return None

    def _margin(self, order: Order, projected: int, account: AccountView, trading_day: int) -> Denial | None:
        # Initial margin of every open position and working order, with this order's symbol at its
        # projected size: sum_s |Q_s + W_s| * IM_s  <=  equity.
        required = 0.0
        for symbol, quantity in account.exposures().items():
            if symbol != order.symbol and quantity:
                required += abs(quantity) * self.instruments.initial_margin(symbol, trading_day)
        required += abs(projected) * self.instruments.initial_margin(order.symbol, trading_day)
        equity = account.equity
        if required > equity:
            return Denial("MARGIN", f"required={required:.2f}, equity={equity:.2f}")
        return None


def _reduces(current: int, projected: int) -> bool:
    """True when ``projected`` is no larger than ``current`` in size and on the same side (or flat)."""
    return abs(projected) <= abs(current) and projected * current >= 0
