"""A run's audit trail as Arrow tables with the ledger schemas, from the kernel's books (every mode alike)."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from engine.core.instruments import EPOCH
from engine.core.orders import OrderStatus
from warehouse import schemas

if TYPE_CHECKING:
    from engine.kernel import TradingKernel

__all__ = ["run_tables"]


def run_tables(kernel: TradingKernel) -> dict[str, pa.Table]:
    """The run's audit trail as Arrow tables with the ledger schemas (``run_id`` NULL until recorded)."""
    return {
        "orders": orders_table(kernel),
        "fills": fills_table(kernel),
        "positions": positions_table(kernel),
        # a spilled run's full ledger is its file; the result carries the last point of each trading date
        "equity": kernel.recorder.summary.daily_table() if kernel.recorder.spilled else equity_table(kernel),
        "trades": trades_table(kernel),
        "events": events_table(kernel),
    }


def equity_table(kernel: TradingKernel) -> pa.Table:
    """The in-memory equity ledger (every point; a run that never spilled)."""
    return kernel.recorder.table()


def orders_table(kernel: TradingKernel) -> pa.Table:
    rows = kernel.orders
    return pa.table(
        {
            "run_id": pa.nulls(len(rows), pa.string()),
            "order_id": [o.order_id for o in rows],
            "ts_submitted": _ts([o.ts_submitted for o in rows]),
            "symbol": [o.symbol for o in rows],
            "quantity": [o.quantity for o in rows],
            "order_type": [o.order_type.value for o in rows],
            "tif": [o.tif.value for o in rows],
            "limit_price": [o.limit_price for o in rows],
            "stop_price": [o.stop_price for o in rows],
            "expire_ts": _ts([o.expire_ts for o in rows]),
            "status": [o.status.value if o.status is not OrderStatus.PARTIALLY_FILLED else "OPEN" for o in rows],
            "filled_quantity": [o.filled for o in rows],
            "avg_fill_price": [o.avg_fill_price for o in rows],
            "ts_done": _ts([o.ts_done for o in rows]),
            "origin": [o.origin for o in rows],
            "tag": [o.tag for o in rows],
            "detail": [o.detail for o in rows],
            "parent_id": [o.parent_id for o in rows],
            "oca_group": [o.oca_group for o in rows],
        },
        schema=schemas.RUN_ORDERS,
    )


def fills_table(kernel: TradingKernel) -> pa.Table:
    rows = kernel.portfolio.fills
    return pa.table(
        {
            "run_id": pa.nulls(len(rows), pa.string()),
            "fill_id": [f.fill_id for f in rows],
            "order_id": [f.order_id if f.order_id >= 0 else None for f in rows],
            "ts": _ts([f.ts for f in rows]),
            "trading_date": [EPOCH + timedelta(days=f.trading_date) for f in rows],
            "symbol": [f.symbol for f in rows],
            "contract": [f.contract for f in rows],
            "quantity": [f.quantity for f in rows],
            "price": [f.price for f in rows],
            "reference_price": [f.reference_price for f in rows],
            "multiplier": [f.multiplier for f in rows],
            "commission": [f.commission for f in rows],
            "slippage": [f.slippage for f in rows],
            "realized_pnl": [f.realized_pnl for f in rows],
            "position_after": [f.position_after for f in rows],
            "trade_id": [f.trade_id for f in rows],
            "kind": [f.kind for f in rows],
        },
        schema=schemas.RUN_FILLS,
    )


def positions_table(kernel: TradingKernel) -> pa.Table:
    rows = kernel.portfolio.position_changes
    return pa.table(
        {
            "run_id": pa.nulls(len(rows), pa.string()),
            "ts": _ts([r[0] for r in rows]),
            "symbol": [r[1] for r in rows],
            "contract": [r[2] for r in rows],
            "quantity": [r[3] for r in rows],
            "avg_price": [r[4] for r in rows],
        },
        schema=schemas.RUN_POSITIONS,
    )


def trades_table(kernel: TradingKernel) -> pa.Table:
    rows = kernel.portfolio.trades
    if kernel.recorder.spilled:
        # index of the exit (or one past the last point) minus index of the entry, resolved while spilling;
        # a trade opened after the last point (in on_stop) holds 0 points
        total = kernel.recorder.points
        resolved = len(kernel._trade_entry_point)
        held = [(kernel._trade_exit_point[k] if k < resolved and kernel._trade_exit_point[k] >= 0 else total)
                - (kernel._trade_entry_point[k] if k < resolved and kernel._trade_entry_point[k] >= 0 else total)
                for k in range(len(rows))]
    else:
        eq_ts = np.frombuffer(kernel._eq_ts, dtype=np.int64) if len(kernel._eq_ts) else np.zeros(0, np.int64)
        last = int(eq_ts[-1]) if len(eq_ts) else 0
        held = [int(np.searchsorted(eq_ts, t.exit_ts if t.exit_ts is not None else last + 1)
                    - np.searchsorted(eq_ts, t.entry_ts)) for t in rows]
    return pa.table(
        {
            "run_id": pa.nulls(len(rows), pa.string()),
            "trade_id": [t.trade_id for t in rows],
            "symbol": [t.symbol for t in rows],
            "direction": pa.array([t.direction for t in rows], pa.int8()),
            "max_quantity": [t.max_quantity for t in rows],
            "entry_ts": _ts([t.entry_ts for t in rows]),
            "exit_ts": _ts([t.exit_ts for t in rows]),
            "entry_price": [t.entry_value / t.entry_quantity if t.entry_quantity else None for t in rows],
            "exit_price": [t.exit_value / t.exit_quantity if t.exit_quantity else None for t in rows],
            "gross_pnl": [t.gross_pnl for t in rows],
            "commission": [t.commission for t in rows],
            "slippage": [t.slippage for t in rows],
            "pnl": [t.gross_pnl - t.commission for t in rows],
            "rolls": [t.rolls for t in rows],
            "bars_held": held,
        },
        schema=schemas.RUN_TRADES,
    )


def events_table(kernel: TradingKernel) -> pa.Table:
    rows = kernel.events
    return pa.table(
        {
            "run_id": pa.nulls(len(rows), pa.string()),
            "ts": _ts([r[0] for r in rows]),
            "kind": [r[1] for r in rows],
            "code": [r[2] for r in rows],
            "symbol": [r[3] for r in rows],
            "order_id": [r[4] for r in rows],
            "message": [r[5] for r in rows],
        },
        schema=schemas.RUN_EVENTS,
    )


def _ts(values: list[int | None]) -> pa.Array:
    """Integer ns (or None) to the ledger's microsecond TIMESTAMPTZ."""
    return pa.array(values, pa.int64()).cast(pa.timestamp("ns", tz="UTC")).cast(schemas.TS, safe=False)
