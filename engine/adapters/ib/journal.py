"""The order journal: every order is written to the warehouse before it is sent to IB.

Append-only and atomic: each batch is one new Parquet file ``<warehouse>/order_journal/<ns>-<uuid>.parquet``
written with :func:`warehouse.store.write_parquet_atomic` (temporary file, fsync, rename), never rewritten.
A crash leaves either the whole batch or none of it; a crash between the journal write and the send leaves a
journaled order the broker never saw, which reconciliation reports and never re-sends. The warehouse shows
the files as the ``order_journal`` view.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from engine.core.orders import Order
from warehouse.schemas import ORDER_JOURNAL
from warehouse.store import write_parquet_atomic

__all__ = ["JournalEntry", "OrderJournal"]


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One order as journaled (``account`` already masked)."""

    order_ref: str
    run_id: str
    strategy: str
    account: str
    contract: str
    order: Order

    def row(self, at: datetime) -> dict:
        o = self.order
        expire = None if o.expire_ts is None else datetime.fromtimestamp(o.expire_ts / 1e9, timezone.utc)
        return {"journaled_at": at, "order_ref": self.order_ref, "run_id": self.run_id, "strategy": self.strategy,
                "order_id": o.order_id, "broker": "ib", "account": self.account, "symbol": o.symbol,
                "contract": self.contract, "quantity": o.quantity, "order_type": o.order_type.value,
                "tif": o.tif.value, "limit_price": o.limit_price, "stop_price": o.stop_price, "expire_ts": expire,
                "parent_id": o.parent_id, "oca_group": o.oca_group}


class OrderJournal:
    """The journal directory of one warehouse.

    Parameters
    ----------
    root : Path
        The warehouse directory (``Warehouse.root``); entries go to ``root / "order_journal"``.
    """

    def __init__(self, root: Path) -> None:
        self.directory = Path(root) / "order_journal"
        self._batches: dict[str, list[dict]] = {}

    def append(self, entries: Iterable[JournalEntry]) -> Path | None:
        """Write one batch atomically; returns its file (None for an empty batch)."""
        now = datetime.now(timezone.utc)
        rows = [e.row(now) for e in entries]
        if not rows:
            return None
        path = self.directory / f"{time.time_ns()}-{uuid.uuid4().hex[:12]}.parquet"
        write_parquet_atomic(pa.Table.from_pylist(rows, schema=ORDER_JOURNAL), path)
        return path

    def read(self, run_id: str | None = None, strategy: str | None = None) -> pa.Table:
        """Every journaled order (of one run and strategy, if given), oldest batch first.

        Batch files never change once written, so each is read once and kept (reconciling after every
        reconnect would otherwise re-read the whole journal each time).
        """
        files = sorted(self.directory.glob("*.parquet")) if self.directory.is_dir() else []
        rows = []
        for path in files:
            batch = self._batches.get(path.name)
            if batch is None:
                batch = self._batches[path.name] = pq.read_table(path, schema=ORDER_JOURNAL).to_pylist()
            rows.extend(r for r in batch if run_id in (None, r["run_id"]) and strategy in (None, r["strategy"]))
        return pa.Table.from_pylist(rows, schema=ORDER_JOURNAL)

    def refs(self, run_id: str, strategy: str) -> set[str]:
        """The orderRefs journaled for one run and strategy."""
        return set(self.read(run_id, strategy).column("order_ref").to_pylist())
