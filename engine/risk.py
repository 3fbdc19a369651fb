"""Portfolio risk manager: pre-trade limits, loss breakers, states and the kill switch.

It sits between every strategy and every execution handler, in backtests and live alike; nothing in it
knows which one it serves.

Pre-trade checks
----------------
:meth:`RiskManager.check` never raises: it returns ``None`` (accepted) or a :class:`Denial` with a stable
reason code and the numbers, e.g. ``MAX_POSITION_SIZE: requested=12, limit=10``. Orders that reduce risk
(the projected position is not larger in absolute size and does not flip side) always pass while the
state is ACTIVE or REDUCING.

Limits hold in the **worst case**: working orders never offset a position. For each symbol with position
``Q``, ``B`` contracts on working buys and ``S`` on working sells (both counted as non-negative, a
one-cancels-other group once per side), the worst-case position is

    ``W = max(|Q + B|, |Q - S|)``

(every working buy fills, or every working sell fills). A new order adds to ``B`` or ``S``. Size, notional
and margin use ``W`` after the order for its symbol and ``W`` for every other symbol, so a protective stop
never frees margin or room under a limit before it has filled. An order is risk-reducing only if it is
opposite to the position and, with every working order on its side, cannot take the position past flat
(``S + q <= Q`` for a sell against a long; the mirror for a buy against a short). Notional of a position is
``W * multiplier * |price|`` at the symbol's latest price; percentage limits are fractions of the
account's current equity ("capital").

===========================  =========================================================================
code                         refused when (after the order)
===========================  =========================================================================
``HALTED``                   the kill switch has been triggered and not reset (every new order)
``REDUCING``                 a loss limit was hit; only risk-reducing orders until it clears
``MAX_POSITION_SIZE``        ``W > max_position_size`` contracts
``MAX_SINGLE_POSITION``      notional of the symbol ``> max_single_position_pct * equity``
``MAX_PORTFOLIO_EXPOSURE``   sum of notionals over all symbols ``> max_portfolio_exposure * equity``
``MAX_CORRELATED_EXPOSURE``  sum of notionals in the order's correlation group ``> max_correlated_exposure * equity``
``MARGIN``                   sum of ``W * initial margin`` over all symbols ``> equity``
``NO_MARKET_DATA``           no price of the symbol has been seen yet
===========================  =========================================================================

Breakers and states
-------------------
Equity is marked to market on every bar (unrealized P&L included); days are CME trading dates and weeks
are Monday-based weeks of trading dates.

* ``DAILY_LOSS``: equity ``<= (1 - max_daily_loss) *`` equity at the start of the trading date -> REDUCING
  until the next trading date (working orders that add risk are cancelled).
* ``WEEKLY_LOSS``: the same against the start of the week -> REDUCING until the next week.
* ``MAX_DRAWDOWN``: equity ``<= (1 - max_drawdown) *`` peak equity -> the kill switch: HALTED.

With ``flatten_on_loss_limit`` the daily and weekly breakers also flatten every position.

Kill switch: cancels every working order, flattens every position at market, and refuses every new
order until :meth:`reset` (API; the CLI for live trading calls the same method).

Sizing
------
:func:`volatility_scaled_contracts`: ``scale = clip(target_vol / instrument_vol, min_vol_scale,
max_vol_scale)``, ``contracts = floor(|signal| * equity * scale / (price * multiplier))`` with the sign of
the signal, then capped by every limit (:meth:`RiskManager.cap_contracts`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from collections.abc import Iterable
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.core.instruments import InstrumentBook
from engine.core.orders import Order

__all__ = ["Denial", "RiskLimits", "RiskState", "AccountView", "RiskManager", "volatility_scaled_contracts",
           "week_of", "worst_case", "is_reducing"]


@dataclass(frozen=True, slots=True)
class Denial:
    """Why an order was refused: a stable ``code`` and a message with the numbers."""

    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class RiskState(str, Enum):
    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


class RiskLimits(BaseModel):
    """Risk limits (strict: unknown keys are an error). ``None`` switches a limit off.

    Fractions (``0.05``) are of the account's current equity; losses and drawdown of equity marked to
    market. Defaults are the house defaults; :meth:`off` gives a configuration with every check disabled
    (for studying execution mechanics, never for trading).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_position_size: int | None = Field(default=10, ge=0)
    max_portfolio_exposure: float | None = Field(default=0.20, gt=0)
    max_single_position_pct: float | None = Field(default=0.05, gt=0)
    max_daily_loss: float | None = Field(default=0.02, gt=0, lt=1)
    max_weekly_loss: float | None = Field(default=0.05, gt=0, lt=1)
    max_drawdown: float | None = Field(default=0.10, gt=0, lt=1)
    max_correlated_exposure: float | None = Field(default=0.15, gt=0)
    #: correlation group -> roots; a root not listed uses the ``correlation_group`` of the contracts table
    correlation_groups: dict[str, list[str]] = Field(default_factory=lambda: {
        "equity_index": ["ES", "NQ", "RTY", "YM", "MES", "MNQ"],
        "energy": ["CL", "NG"],
        "metals": ["GC", "SI"],
        "bonds": ["ZN", "ZB", "ZF"],
        "currencies": ["6E", "6J"],
    })
    check_margin: bool = True
    flatten_on_loss_limit: bool = False
    volatility_scaling: bool = True
    target_vol: float = Field(default=0.15, gt=0)
    max_vol_scale: float = Field(default=2.0, gt=0)
    min_vol_scale: float = Field(default=0.25, gt=0)
    #: feature column holding the instrument's annualized realized volatility (fraction)
    vol_column: str = "rv_cc_20"

    @model_validator(mode="after")
    def _scales_ordered(self) -> RiskLimits:
        if self.min_vol_scale > self.max_vol_scale:
            raise ValueError(f"min_vol_scale {self.min_vol_scale} exceeds max_vol_scale {self.max_vol_scale}")
        return self

    @classmethod
    def off(cls) -> RiskLimits:
        """Every check and breaker disabled."""
        return cls(max_position_size=None, max_portfolio_exposure=None, max_single_position_pct=None,
                   max_daily_loss=None, max_weekly_loss=None, max_drawdown=None, max_correlated_exposure=None,
                   check_margin=False, volatility_scaling=False)


class AccountView(Protocol):
    """What the risk manager reads from the account."""

    def position(self, symbol: str) -> int: ...

    def working_buys_sells(self, symbol: str) -> tuple[int, int]:
        """Contracts still to fill on working buys and on working sells of ``symbol``, both ``>= 0``."""
        ...

    def symbols_at_risk(self) -> Iterable[str]:
        """Every symbol with a position or a working order."""
        ...

    def price(self, symbol: str) -> float | None: ...

    @property
    def equity(self) -> float: ...


def worst_case(position: int, buys: int, sells: int) -> int:
    """Worst-case absolute position: ``max(|Q + B|, |Q - S|)`` (every working buy fills, or every sell).

    Examples: long 2 with a protective sell stop for 2 -> ``max(2, 0) = 2`` (the stop frees nothing);
    flat with a resting buy limit for 2 and a market sell for 2 -> ``max(2, 2) = 2``.
    """
    return max(abs(position + buys), abs(position - sells))


def is_reducing(position: int, quantity: int, same_side_working: int) -> bool:
    """True when an order of ``quantity`` only reduces ``position`` even in the worst case.

    It must be opposite to the position, and together with the working orders on its side
    (``same_side_working`` contracts, ``>= 0``) it must not take the position past flat.
    """
    return position * quantity < 0 and same_side_working + abs(quantity) <= abs(position)


def week_of(trading_day: int) -> int:
    """Monday-based week number of a trading date given as days since 1970-01-01 (a Thursday)."""
    return (trading_day + 3) // 7


def volatility_scaled_contracts(signal: float, equity: float, price: float, multiplier: float,
                                instrument_vol: float | None, target_vol: float = 0.15, min_vol_scale: float = 0.25,
                                max_vol_scale: float = 2.0) -> int:
    """Contracts for a signal in [-1, 1], scaled to a volatility target.

    ``scale = clip(target_vol / instrument_vol, min_vol_scale, max_vol_scale)`` (``instrument_vol`` annualized,
    a fraction; missing or non-positive -> ``min_vol_scale``, the cautious end), then
    ``contracts = sign(signal) * floor(|signal| * equity * scale / (price * multiplier))``.

    Example: signal 1, equity 1,000,000, ES at 4,000 (multiplier 50, notional 200,000), vol 0.30 ->
    scale 0.5 -> floor(1,000,000 * 0.5 / 200,000) = 2 contracts.
    """
    if not signal or math.isnan(signal) or price <= 0 or multiplier <= 0 or equity <= 0:
        return 0
    if instrument_vol is None or not instrument_vol > 0 or math.isnan(instrument_vol):
        scale = min_vol_scale
    else:
        scale = min(max(target_vol / instrument_vol, min_vol_scale), max_vol_scale)
    size = math.floor(abs(signal) * equity * scale / (price * multiplier) + 1e-9)
    return size if signal > 0 else -size


class RiskManager:
    """Limits, breakers, state and kill switch of one account.

    Parameters
    ----------
    limits : RiskLimits
    instruments : InstrumentBook
        Multipliers, margins and correlation groups.
    """

    def __init__(self, limits: RiskLimits, instruments: InstrumentBook) -> None:
        self.limits = limits
        self.instruments = instruments
        self.state = RiskState.ACTIVE
        self.reason = ""
        self._group_of = {root: group for group, roots in limits.correlation_groups.items() for root in roots}
        self.day: int | None = None
        self.week: int | None = None
        self.day_start = 0.0
        self.week_start = 0.0
        self.peak = 0.0
        #: equity at or below which a breaker trips (``-inf`` when none is armed)
        self.floor = -math.inf
        self._reducing_until: tuple[str, int] | None = None  # ("day" | "week", the day/week it clears after)

    # -- pre-trade -------------------------------------------------------------------------------------
    def check(self, order: Order, account: AccountView, trading_day: int) -> Denial | None:
        """``None`` if ``order`` may go to the handler, else the first limit it breaks."""
        if self.state is RiskState.HALTED:
            return Denial("HALTED", f"kill switch active ({self.reason}); reset required")
        symbol, quantity = order.symbol, order.quantity
        held = account.position(symbol)
        buys, sells = account.working_buys_sells(symbol)
        if is_reducing(held, quantity, buys if quantity > 0 else sells):
            return None
        note = _worst_case_note(held, buys, sells, quantity)
        projected = worst_case(held, buys + max(quantity, 0), sells + max(-quantity, 0))
        if self.state is RiskState.REDUCING:
            return Denial("REDUCING", f"only risk-reducing orders ({self.reason}); position={held}, "
                                      f"working buys={buys}, working sells={sells}, order={quantity:+d}")
        limits = self.limits
        if limits.max_position_size is not None and projected > limits.max_position_size:
            return Denial("MAX_POSITION_SIZE", f"requested={projected}, limit={limits.max_position_size}{note}")
        notional_limits = (limits.max_single_position_pct, limits.max_portfolio_exposure, limits.max_correlated_exposure)
        if any(x is not None for x in notional_limits) or limits.check_margin:
            if account.price(symbol) is None:  # before any table lookup for a symbol that has not traded yet
                return Denial("NO_MARKET_DATA", f"no price of {symbol} seen yet")
        if any(x is not None for x in notional_limits):
            denial = self._notional(order, projected, account)
            if denial is not None:
                return denial
        if limits.check_margin:
            return self._margin(order, projected, account, trading_day)
        return None

    def worst_case(self, symbol: str, account: AccountView) -> int:
        """Worst-case absolute position of ``symbol`` now (see :func:`worst_case`)."""
        return worst_case(account.position(symbol), *account.working_buys_sells(symbol))

    def group(self, symbol: str) -> str:
        """Correlation group of a symbol (config first, then the contracts table)."""
        root = self.instruments.terms(symbol).root
        return self._group_of.get(root) or self.instruments.terms(symbol).correlation_group

    def _notional(self, order: Order, projected: int, account: AccountView) -> Denial | None:
        equity = account.equity
        price = account.price(order.symbol)  # known: check() refuses a symbol without a price first
        limits = self.limits
        multiplier = self.instruments.terms(order.symbol).multiplier
        own = abs(projected) * multiplier * abs(price)  # prices can be negative (CL, April 2020)
        if limits.max_single_position_pct is not None and own > limits.max_single_position_pct * equity + 1e-6:
            return Denial("MAX_SINGLE_POSITION", f"notional={own:.2f}, limit={limits.max_single_position_pct * equity:.2f} "
                                                 f"({limits.max_single_position_pct:g} of equity {equity:.2f})")
        total = own
        group = self.group(order.symbol)
        in_group = own
        for symbol in account.symbols_at_risk():
            quantity = self.worst_case(symbol, account) if symbol != order.symbol else 0
            if not quantity:
                continue
            mark = abs(account.price(symbol) or 0.0)
            notional = abs(quantity) * self.instruments.terms(symbol).multiplier * mark
            total += notional
            if self.group(symbol) == group:
                in_group += notional
        if limits.max_portfolio_exposure is not None and total > limits.max_portfolio_exposure * equity + 1e-6:
            return Denial("MAX_PORTFOLIO_EXPOSURE", f"notional={total:.2f}, limit={limits.max_portfolio_exposure * equity:.2f} "
                                                    f"({limits.max_portfolio_exposure:g} of equity {equity:.2f})")
        if limits.max_correlated_exposure is not None and in_group > limits.max_correlated_exposure * equity + 1e-6:
            return Denial("MAX_CORRELATED_EXPOSURE",
                          f"group={group}, notional={in_group:.2f}, limit={limits.max_correlated_exposure * equity:.2f} "
                          f"({limits.max_correlated_exposure:g} of equity {equity:.2f})")
        return None

    def _margin(self, order: Order, projected: int, account: AccountView, trading_day: int) -> Denial | None:
        # sum_s W_s * IM_s over every symbol (worst case: unfilled exits free no margin), this one at its
        # projected size, against equity
        required = projected * self.instruments.initial_margin(order.symbol, trading_day)
        for symbol in account.symbols_at_risk():
            quantity = self.worst_case(symbol, account) if symbol != order.symbol else 0
            if quantity:
                required += quantity * self.instruments.initial_margin(symbol, trading_day)
        equity = account.equity
        if required > equity:
            return Denial("MARGIN", f"required={required:.2f}, equity={equity:.2f}")
        return None

    def cap_contracts(self, symbol: str, target: int, account: AccountView, current: int | None = None) -> int:
        """The largest position toward ``target`` that every pre-trade limit allows.

        ``current`` is where the position is headed already (default: the position plus every working
        order); the answer is ``current`` itself when no step toward ``target`` passes.
        """
        if current is None:
            buys, sells = account.working_buys_sells(symbol)
            current = account.position(symbol) + buys - sells
        step = 1 if target > current else -1
        best = current
        for candidate in range(current + step, target + step, step) if target != current else ():
            order = Order(symbol, candidate - current)
            if self.check(order, account, self.day or 0) is not None:
                break
            best = candidate
        return best

    # -- breakers --------------------------------------------------------------------------------------
    def start(self, equity: float) -> None:
        """Arm the breakers at the start of a run."""
        self.peak = self.day_start = self.week_start = equity
        self._rearm()

    def new_day(self, trading_day: int, equity: float) -> list[tuple[str, str, str]]:
        """A new trading date begins with ``equity``; returns events ``(kind, code, message)``."""
        events = []
        week = week_of(trading_day)
        if self.day is None:
            self.week_start = equity
        elif week != self.week:
            self.week_start = equity
        self.day, self.week = trading_day, week
        self.day_start = equity
        if self.state is RiskState.REDUCING and self._reducing_until is not None:
            unit, until = self._reducing_until
            if (unit == "day" and trading_day > until) or (unit == "week" and week > until):
                limits = self.limits
                if (unit == "day" and limits.max_weekly_loss is not None
                        and equity <= self.week_start * (1 - limits.max_weekly_loss)):
                    # the week's limit was reached while REDUCING for the day: REDUCING until the next week
                    events.append(self.trip("WEEKLY_LOSS", equity))
                else:
                    events.append(self.set_state(RiskState.ACTIVE, f"{self.reason} cleared"))
                    self._reducing_until = None
        self._rearm()
        return events

    def on_equity(self, equity: float) -> str | None:
        """Update the peak and return the breaker code ``equity`` trips, if any (call when ``equity <= floor``
        or ``equity > peak``)."""
        if equity > self.peak:
            self.peak = equity
            self._rearm()
            return None
        limits = self.limits
        if limits.max_drawdown is not None and equity <= self.peak * (1 - limits.max_drawdown):
            return "MAX_DRAWDOWN"
        if self.state is RiskState.ACTIVE:
            if limits.max_daily_loss is not None and equity <= self.day_start * (1 - limits.max_daily_loss):
                return "DAILY_LOSS"
            if limits.max_weekly_loss is not None and equity <= self.week_start * (1 - limits.max_weekly_loss):
                return "WEEKLY_LOSS"
        return None

    def trip(self, code: str, equity: float) -> tuple[str, str, str]:
        """Move the state for breaker ``code``; returns the breaker event ``(kind, code, message)``."""
        limits = self.limits
        if code == "MAX_DRAWDOWN":
            message = (f"equity={equity:.2f} <= {(1 - limits.max_drawdown) * self.peak:.2f} "
                       f"(peak {self.peak:.2f}, limit {limits.max_drawdown:g})")
            self.state, self.reason = RiskState.HALTED, f"MAX_DRAWDOWN {message}"
        elif code == "DAILY_LOSS":
            message = (f"equity={equity:.2f} <= {(1 - limits.max_daily_loss) * self.day_start:.2f} "
                       f"(day start {self.day_start:.2f}, limit {limits.max_daily_loss:g})")
            self.state, self.reason = RiskState.REDUCING, f"DAILY_LOSS {message}"
            self._reducing_until = ("day", self.day or 0)
        else:
            message = (f"equity={equity:.2f} <= {(1 - limits.max_weekly_loss) * self.week_start:.2f} "
                       f"(week start {self.week_start:.2f}, limit {limits.max_weekly_loss:g})")
            self.state, self.reason = RiskState.REDUCING, f"WEEKLY_LOSS {message}"
            self._reducing_until = ("week", self.week or 0)
        self._rearm()
        return ("breaker", code, message)

    def set_state(self, state: RiskState, reason: str) -> tuple[str, str, str]:
        self.state, self.reason = state, reason
        self._rearm()
        return ("state", state.value, reason)

    def reset(self, equity: float) -> tuple[str, str, str]:
        """Clear the kill switch (explicit user action): ACTIVE again, with the peak and the day and week
        starts re-based on ``equity`` so the breaker that halted trading does not trip again at once."""
        self._reducing_until = None
        self.peak = self.day_start = self.week_start = equity
        return self.set_state(RiskState.ACTIVE, "reset by user")

    def replace_limits(self, limits: RiskLimits) -> None:
        """New limits for a running account (a resumed live run takes its configuration's): the breakers'
        floor is computed again from the current peak and day/week starts."""
        self.limits = limits
        self._rearm()

    def _rearm(self) -> None:
        limits = self.limits
        floors = []
        if limits.max_drawdown is not None and self.state is not RiskState.HALTED:
            floors.append(self.peak * (1 - limits.max_drawdown))
        if self.state is RiskState.ACTIVE:
            if limits.max_daily_loss is not None:
                floors.append(self.day_start * (1 - limits.max_daily_loss))
            if limits.max_weekly_loss is not None:
                floors.append(self.week_start * (1 - limits.max_weekly_loss))
        self.floor = max(floors) if floors else -math.inf


def _worst_case_note(held: int, buys: int, sells: int, quantity: int) -> str:
    """How a worst-case size was reached, when working orders take part in it (else empty)."""
    if not buys and not sells:
        return ""
    return f" (worst case: position {held:+d}, working buys {buys}, working sells {sells}, order {quantity:+d})"
