"""Live bar append benchmark: one final 1-minute bar at a time into a warehouse holding a year of bars.

Usage::

    python bench/bench_live_append.py [--year-rows 350000] [--day-rows 1380] [--bars 60]

The warehouse holds ``--year-rows`` MES 1-minute bars of 2026 in ``data.parquet`` (about a year of Globex
minutes) and ``--day-rows`` bars of today in the live day file (a full session at the end of the day). Then it
appends ``--bars`` bars one call each through :func:`engine.live.store.append_bars` (validation with context,
bad-tick rules, write lock, atomic write of the day file) and prints the median and p99 of the call and of the
part under the write lock, in milliseconds. For comparison it times the layout the day files avoid: merging
one bar into the year's ``data.parquet`` (:func:`loaders.ingest.merge_partition` + the atomic rename).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from engine.live.store import append_bars
from loaders.ingest import merge_partition
from warehouse import Warehouse, layout, schemas
from warehouse.store import StagedWrites

DAY = datetime(2026, 6, 1, tzinfo=timezone.utc)


def _bars(start: datetime, n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    close = 5000 + np.round(np.cumsum(rng.normal(0, 0.5, n)) * 4) / 4
    open_ = np.r_[close[0], close[:-1]]
    return pa.table({
        "contract": pa.array(["MESM6"] * n), "instrument_id": pa.nulls(n, pa.int64()),
        "ts": pa.array([start + timedelta(minutes=k) for k in range(n)], schemas.TS),
        "open": open_, "high": np.maximum(open_, close) + 0.25, "low": np.minimum(open_, close) - 0.25,
        "close": close, "volume": rng.integers(1, 500, n), "open_interest": pa.nulls(n, pa.int64()),
        "source": pa.array(["bench"] * n),
    }).cast(schemas.BARS)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--year-rows", type=int, default=350_000)
    parser.add_argument("--day-rows", type=int, default=1_380)
    parser.add_argument("--bars", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wh = Warehouse(Path(tmp) / "qe_data")
        year_start = DAY - timedelta(minutes=args.year_rows)
        data = layout.bar_partition(wh.root, "1m", "MES", 2026)
        data.parent.mkdir(parents=True)
        pq.write_table(_bars(year_start, args.year_rows, 1), data, compression="zstd")
        today = _bars(DAY, args.day_rows + args.bars, 2)
        pq.write_table(today.slice(0, args.day_rows), layout.live_bar_file(wh.root, "1m", "MES", DAY.date()),
                       compression="zstd")
        total, locked = [], []
        for k in range(args.bars):
            row = today.slice(args.day_rows + k, 1)
            bar = pa.table({"symbol": ["MES"], **{c: row[c] for c in ("contract", "ts", "open", "high", "low", "close",
                                                                       "volume")}})
            report = append_bars(wh, bar, hold_suspects=False)
            assert report.rows_loaded == 1, report
            total.append(report.total_ms)
            locked.append(report.locked_ms)
        print(f"append_bars, 1 bar into a {args.day_rows}-row day file beside a {args.year_rows}-row year: "
              f"median {statistics.median(total):.1f} ms, p99 {_pct(total, 0.99):.1f} ms "
              f"(under the write lock: median {statistics.median(locked):.1f} ms, p99 {_pct(locked, 0.99):.1f} ms)")
        year = []
        extra = _bars(DAY + timedelta(days=2), 5, 3)
        for k in range(5):
            started = time.perf_counter()
            with StagedWrites() as batch:
                merge_partition(batch, data, extra.slice(k, 1), None)
                batch.commit()
            year.append((time.perf_counter() - started) * 1000.0)
        print(f"for comparison, merging 1 bar into the {args.year_rows}-row year partition: "
              f"median {statistics.median(year):.1f} ms")


if __name__ == "__main__":
    main()
