"""Trade to the ``target`` column of a signal query: the event-driven twin of the vectorized path.

Run any signal generator (:mod:`engine.signals.generators`) through the event engine and its risk manager::

    qe backtest --query "$(qe signals show momentum -t 1h)" \\
        --strategy engine.strategies.signal_follower:SignalFollower

On every bar the strategy returns ``self.target_position(bar.symbol, bar.target)``: one market order for the
difference between the target and the position plus working orders. A NULL target keeps the previous one
(as :func:`engine.backtest.vectorized.run_vectorized` does), so the two paths trade the same orders; the event path
also passes them through the risk manager.

``sizing="engine"`` sizes in the event engine instead of SQL: the target is
``Backtester.sized_target(symbol, bar.signal, bar.sizing_vol)`` -- volatility-scaled on the *current* equity
and capped by every risk limit, so an oversized SQL target does not become one denial per bar.
"""

from __future__ import annotations

from typing import Any

from engine.core.orders import Order
from engine.strategy import Strategy
from warehouse.errors import QEError

__all__ = ["SignalFollower"]


class SignalFollower(Strategy):
    """Hold the position the query's target column asks for.

    Parameters
    ----------
    column : str
        Name of the integer target-position column (default ``target``).
    sizing : {"target", "engine"}
        ``target``: trade the column as is. ``engine``: size ``bar.signal`` (and ``bar.sizing_vol`` when the
        query has it) with the engine's risk-capped ``sized_target``.
    """

    history_size = 0

    def __init__(self, column: str = "target", sizing: str = "target") -> None:
        if sizing not in ("target", "engine"):
            raise QEError(f"SignalFollower: sizing must be 'target' or 'engine', not {sizing!r}")
        super().__init__(column=column, sizing=sizing)
        self._checked = False
        self._has_vol = False

    def on_bar(self, bar: Any) -> Order | None:
        if not self._checked:
            self._check(getattr(bar, "columns", None))
        if self.sizing == "engine":
            signal = bar["signal"]
            if signal is None:
                return None
            vol = bar["sizing_vol"] if self._has_vol else None
            target = self.engine.sized_target(bar.symbol, float(signal), vol)
        else:
            target = bar[self.column]
            if target is None:
                return None
        return self.target_position(bar.symbol, int(target), tag="signal")

    def _check(self, columns: tuple | None) -> None:
        needed = "signal" if self.sizing == "engine" else self.column
        if columns is not None and needed not in columns:
            raise QEError(f"SignalFollower: the query has no {needed!r} column (a signal query from "
                          "`qe signals show NAME` has one)")
        if self.sizing == "engine" and not hasattr(self.engine, "sized_target"):
            raise QEError("SignalFollower: sizing='engine' needs an engine with sized_target (the event engine)")
        self._has_vol = columns is not None and "sizing_vol" in columns
        self._checked = True
