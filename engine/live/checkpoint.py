"""A live session's state after each decided bar, so a restart (or a crash) resumes the same run.

What is kept is everything the kernel carries from bar to bar -- the portfolio, the risk manager's state,
the orders and events, the equity points, the strategy object itself -- plus the session's decided bars
and the broker executions already booked. The broker connection is not: a restart connects again, hands
the restored orders to the handler (:meth:`~engine.adapters.ib.handler.IBExecutionHandler.adopt`) and lets
its reconciliation book what happened while the session was away, skipping executions already booked.

A bar interrupted by a crash is decided again from the state before it: the strategy decides the same
orders with the same numbers, and the handler recognizes those already journaled and sent (never sent
twice). The file is written atomically (a crash mid-write leaves the previous checkpoint).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from engine.kernel import TradingKernel
from warehouse.store import write_bytes_atomic

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint", "CHECKPOINT_FILE"]

CHECKPOINT_FILE = "checkpoint.pkl"

#: the kernel's attributes that carry state from bar to bar (the handler, the recorder's files and the
#: bound column layout are rebuilt by the new process)
_KERNEL_STATE = (
    "portfolio", "risk", "orders", "events", "histories", "now", "trading_day", "_columns", "_i",
    "_previous_columns", "_last_bars", "_last_ts", "_day", "_points", "_last_contract", "_trade_entry_point",
    "_trade_exit_point", "_trade_pending", "symbols", "bars", "_cash", "rolling",
    "failed_rolls",
)
_RECORDER_STATE = ("ts", "unrealized", "notional", "day_marks", "cash_marks")


@dataclass
class Checkpoint:
    """One saved state (see the module docstring)."""

    kernel: dict[str, Any]
    recorder: dict[str, Any]
    strategy: Any
    decided: list[datetime]
    booked_exec_ids: set[str]
    records: list[Any] = field(default_factory=list)
    sent_at: dict[str, datetime] = field(default_factory=dict)


def save_checkpoint(path: Path, kernel: TradingKernel, decided: list[datetime], booked_exec_ids: set[str],
                    records: list[Any], sent_at: dict[str, datetime]) -> None:
    """Write the state after the last decided bar to ``path`` (atomically)."""
    engine = kernel.strategy.engine
    kernel.strategy.engine = None  # the strategy's link to this process's kernel is made again on restore
    try:
        state = Checkpoint(
            kernel={name: getattr(kernel, name) for name in _KERNEL_STATE},
            recorder={name: getattr(kernel.recorder, name) for name in _RECORDER_STATE},
            strategy=kernel.strategy, decided=list(decided), booked_exec_ids=set(booked_exec_ids),
            records=list(records), sent_at=dict(sent_at))
        data = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        kernel.strategy.engine = engine
    write_bytes_atomic(path, data)


def load_checkpoint(path: Path) -> Checkpoint | None:
    """The saved state, or None when the session never decided a bar."""
    if not path.exists():
        return None
    return pickle.loads(path.read_bytes())


def restore(kernel: TradingKernel, state: Checkpoint) -> None:
    """Put a saved state into a new kernel (built with the same configuration), strategy included."""
    for name, value in state.kernel.items():
        setattr(kernel, name, value)
    recorder = kernel.recorder
    for name, value in state.recorder.items():
        # the buffers are the recorder's own objects: refill them in place (the kernel holds references)
        buffer = getattr(recorder, name)
        del buffer[:]
        buffer.extend(value)
    kernel.strategy = state.strategy
    kernel.strategy.engine = kernel
