"""Positions, cash and P&L of a futures account, and the round-trip trade book.

Accounting (average-price method, all amounts in the account currency):

* A fill of ``q`` contracts at ``p`` on a position of ``Q`` contracts with average price ``A`` and
  multiplier ``m``: the part that reduces the position realizes ``(p - A) * closed * sign(Q) * m``; the part
  that adds moves the average price; a reversal is split into a closing fill and an opening fill.
* ``commission`` is paid once per side per contract: ``|q| * fee_per_side``, charged on the fill that pays it.
* ``cash = initial + realized - commissions``; ``unrealized = sum(Q * m * (mark - A))``;
  ``equity = cash + unrealized``. Slippage is inside the fill prices (so inside realized and unrealized) and
  is also accumulated separately for reporting.

Identity (checked by property tests): ``equity - initial = realized + unrealized - commissions``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.core.orders import Fill

__all__ = ["Position", "TradeRecord", "Portfolio"]


@dataclass(slots=True)
class Position:
    """An open position in one symbol (its current contract)."""

    symbol: str
    contract: str | None
    quantity: int
    avg_price: float
    multiplier: float
    mark: float
    trade_id: int

    @property
    def unrealized(self) -> float:
        """``quantity * multiplier * (mark - avg_price)``, currency."""
        return self.quantity * self.multiplier * (self.mark - self.avg_price)


@dataclass(slots=True)
class TradeRecord:
    """A round trip in the making: flat -> position -> flat."""

    trade_id: int
    symbol: str
    direction: int
    entry_ts: int
    max_quantity: int = 0
    entry_value: float = 0.0  # sum |q| * price of the fills that opened or added
    entry_quantity: int = 0
    exit_value: float = 0.0  # sum |q| * price of the fills that reduced or closed
    exit_quantity: int = 0
    gross_pnl: float = 0.0
    commission: float = 0.0
    slippage: float = 0.0
    rolls: int = 0
    exit_ts: int | None = None


@dataclass
class Portfolio:
    """Account state of one run.

    Parameters
    ----------
    initial_capital : float
        Starting cash, currency.
    """

    initial_capital: float
    positions: dict[str, Position] = field(default_factory=dict)
    realized: float = 0.0
    commissions: float = 0.0
    slippage: float = 0.0
    #: sum of unrealized P&L over open positions, kept incrementally by :meth:`mark`
    unrealized: float = 0.0
    #: sum of |Q| * m * mark over open positions, kept incrementally by :meth:`mark`
    gross_notional: float = 0.0
    trades: list[TradeRecord] = field(default_factory=list)
    fills: list[Fill] = field(default_factory=list)
    position_changes: list[tuple[int, str, str | None, int, float]] = field(default_factory=list)
    _open_trades: dict[str, TradeRecord] = field(default_factory=dict)

    @property
    def cash(self) -> float:
        """``initial_capital + realized - commissions``."""
        return self.initial_capital + self.realized - self.commissions

    @property
    def equity(self) -> float:
        """``cash + unrealized``."""
        return self.initial_capital + self.realized - self.commissions + self.unrealized

    def position(self, symbol: str) -> int:
        """Signed contracts held in ``symbol`` (0 when flat)."""
        pos = self.positions.get(symbol)
        return 0 if pos is None else pos.quantity

    def mark(self, symbol: str, price: float) -> None:
        """Mark ``symbol``'s position to ``price`` (call with every bar's close of a held symbol)."""
        pos = self.positions[symbol]
        move = price - pos.mark
        self.unrealized += pos.quantity * pos.multiplier * move
        self.gross_notional += abs(pos.quantity) * pos.multiplier * move
        pos.mark = price

    def apply(self, fill: Fill) -> list[Fill]:
        """Book ``fill``; returns the fills as recorded (a reversal comes back as two fills)."""
        pos = self.positions.get(fill.symbol)
        held = 0 if pos is None else pos.quantity
        if held != 0 and (held > 0) != (fill.quantity > 0) and abs(fill.quantity) > abs(held):
            closing = _split(fill, -held)
            opening = _split(fill, fill.quantity + held)
            return self._book(closing) + self._book(opening)
        return self._book(fill)

    def _book(self, fill: Fill) -> list[Fill]:
        symbol = fill.symbol
        pos = self.positions.get(symbol)
        trade = self._open_trades.get(symbol)
        if pos is None:
            trade = TradeRecord(len(self.trades), symbol, 1 if fill.quantity > 0 else -1, fill.ts)
            self.trades.append(trade)
            self._open_trades[symbol] = trade
            pos = self.positions[symbol] = Position(symbol, fill.contract, 0, fill.price, fill.multiplier, fill.price,
                                                    trade.trade_id)
        held = pos.quantity
        if held == 0 or (held > 0) == (fill.quantity > 0):
            new = held + fill.quantity
            pos.avg_price = (abs(held) * pos.avg_price + abs(fill.quantity) * fill.price) / abs(new)
            pos.quantity = new
            trade.entry_value += abs(fill.quantity) * fill.price
            trade.entry_quantity += abs(fill.quantity)
            trade.max_quantity = max(trade.max_quantity, abs(new))
        else:
            closed = abs(fill.quantity)  # never more than |held|: reversals were split
            fill.realized_pnl = (fill.price - pos.avg_price) * closed * (1 if held > 0 else -1) * pos.multiplier
            pos.quantity = held + fill.quantity
            trade.exit_value += closed * fill.price
            trade.exit_quantity += closed
        if fill.contract is not None:
            pos.contract = fill.contract
        self._account(fill, trade, pos)
        if pos.quantity == 0:
            del self.positions[symbol]
            trade.exit_ts = fill.ts
            del self._open_trades[symbol]
        else:
            # mark at the market price, not the slipped fill price (the slippage is a cost, not a price move)
            pos.mark = fill.reference_price if fill.kind != "roll_in" else pos.mark
        self.position_changes.append((fill.ts, symbol, pos.contract, pos.quantity, pos.avg_price if pos.quantity else 0.0))
        self._recompute_marks()
        return [fill]

    def roll(self, symbol: str, out_fill: Fill, in_fill: Fill, mark: float) -> list[Fill]:
        """Move the position from its old contract to the new one: ``out_fill`` closes, ``in_fill`` reopens.

        The trade stays open across the roll (its P&L includes both legs and their commissions).
        """
        return self.roll_legs(symbol, [out_fill], [in_fill], mark)

    def roll_legs(self, symbol: str, out_fills: list[Fill], in_fills: list[Fill], mark: float | None) -> list[Fill]:
        """:meth:`roll` with each leg in one or more executions (a broker's partial fills).

        Every ``out_fills`` execution is booked before any ``in_fills`` one: the old contract is closed at
        its own average price (realizing ``sum (p_i - A) * q_i * m`` with the sign of the position), then the
        new contract opens at the in-leg's average fill price. Commission is each execution's own, booked once.
        With ``in_fills`` empty (an in-leg that never filled) the position simply ends flat or reduced.
        ``mark``: the new contract's mark after the roll, price (None: the last in-leg fill's price).

        Returns
        -------
        list of Fill
            The fills as booked, out-leg first.
        """
        trade = self._open_trades[symbol]
        booked = [f for fill in (*out_fills, *in_fills) for f in self._book_roll_leg(fill, trade)]
        pos = self.positions.get(symbol)
        if pos is not None and pos.quantity == 0:  # nothing reopened: the round trip ends here
            del self.positions[symbol]
            trade.exit_ts = booked[-1].ts
            del self._open_trades[symbol]
        elif pos is not None:
            pos.mark = mark if mark is not None else in_fills[-1].reference_price
            trade.rolls += 1
        self._recompute_marks()
        return booked

    def _book_roll_leg(self, fill: Fill, trade: TradeRecord) -> list[Fill]:
        # Book like any fill but keep the round trip open and its entry/exit averages untouched:
        # the trade's prices describe the strategy's own entries and exits, rolls are carried in gross_pnl.
        symbol = fill.symbol
        pos = self.positions.get(symbol)
        if pos is None:  # roll_in after roll_out flattened it
            pos = self.positions[symbol] = Position(symbol, fill.contract, 0, fill.price, fill.multiplier, fill.price,
                                                    trade.trade_id)
        held = pos.quantity
        if held != 0 and (held > 0) != (fill.quantity > 0):
            fill.realized_pnl = (fill.price - pos.avg_price) * abs(fill.quantity) * (1 if held > 0 else -1) * pos.multiplier
            pos.quantity = held + fill.quantity
        else:
            new = held + fill.quantity
            pos.avg_price = (abs(held) * pos.avg_price + abs(fill.quantity) * fill.price) / abs(new)
            pos.quantity = new
        pos.contract = fill.contract
        pos.multiplier = fill.multiplier
        self._account(fill, trade, pos)
        if pos.quantity == 0:
            pos.avg_price = 0.0
        self.position_changes.append((fill.ts, symbol, pos.contract, pos.quantity, pos.avg_price))
        return [fill]

    def _account(self, fill: Fill, trade: TradeRecord, pos: Position) -> None:
        """Add a booked fill to the account's and the round trip's totals and number it."""
        self.realized += fill.realized_pnl
        self.commissions += fill.commission
        self.slippage += fill.slippage
        trade.gross_pnl += fill.realized_pnl
        trade.commission += fill.commission
        trade.slippage += fill.slippage
        fill.trade_id = trade.trade_id
        fill.position_after = pos.quantity
        fill.fill_id = len(self.fills)
        self.fills.append(fill)

    def _recompute_marks(self) -> None:
        # Exact totals after every fill, so the incremental marks never drift across a long run.
        self.unrealized = sum(p.quantity * p.multiplier * (p.mark - p.avg_price) for p in self.positions.values())
        self.gross_notional = sum(abs(p.quantity) * p.multiplier * p.mark for p in self.positions.values())


def _split(fill: Fill, quantity: int) -> Fill:
    """The part of ``fill`` with ``quantity`` contracts; commission and slippage pro rata per contract."""
    share = abs(quantity) / abs(fill.quantity)
    return Fill(fill.order_id, fill.ts, fill.symbol, fill.contract, quantity, fill.price, fill.reference_price,
                fill.multiplier, fill.commission * share, fill.slippage * share, fill.kind, fill.trading_date)
