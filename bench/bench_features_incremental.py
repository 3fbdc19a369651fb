"""Incremental feature benchmark: full build vs the bounded-tail paths, in one process, on one warehouse.

Usage::

    python bench/bench_features_incremental.py [--sessions 40] [--bars 15] [--repeat 3]

Bars: the test suite's synthetic Globex 1-minute bars (tests/features_oracle/synthetic.py: DST, holidays, gaps,
zero-range and zero-volume bars, a stale block) for 5 roots (ES, NQ, CL, GC, ZN; ``--sessions`` trading dates,
about 1,360 bars each), ingested into a fresh warehouse with ``loaders.ingest.ingest``, the last session held back.

Phases and their baselines (all wall seconds, medians of ``--repeat`` unless stated):

1. full build of the history: ``build_features(wh, "1m", full=True)``;
2. append one day: ingest the held-back session, then ``build_features(wh, "1m")`` (bounded tail: only the new
   session's rows are computed and spliced into their year partition), against ``full=True`` over all bars
   (what an append cost before: every changed symbol recomputed from its first bar);
3. one new bar per symbol, the live path: for each of the last ``--bars`` minutes of the appended session,
   ``tail_features`` of the 5 roots with ``since`` = that minute over the bars up to it (1 row per root, 150
   features), median and p99 of the per-call wall time, against the full build of phase 2 in the same run;
   then the same split per family (tail start + family query), to show where the time goes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ROOTS = ("ESH4", "NQH4", "CLJ4", "GCJ4", "ZNH4")


def timed(fn, repeat: int = 1) -> tuple[float, list[float], object]:  # noqa: ANN001
    """Median wall seconds of ``repeat`` calls of ``fn``, all of them, and the last result."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, result


def ingest_frame(wh, frame, path: Path) -> None:  # noqa: ANN001
    """Ingest a bar DataFrame (symbol = contract, ts, OHLCV) into ``wh`` through a Parquet file at ``path``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from loaders.ingest import ingest

    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    [report] = ingest(wh, [path], timeframe="1m")
    assert report.error is None, report.error


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=40)
    parser.add_argument("--bars", type=int, default=15, help="live-path samples (last minutes of the new day)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import pandas as pd
    from tests.features_oracle.synthetic import globex_bars
    from warehouse import Warehouse
    from warehouse.features import incremental
    from warehouse.features.materialize import build_features
    from warehouse.features.registry import build_registry
    from warehouse.templates import render

    bars = globex_bars(symbols=ROOTS, sessions=args.sessions, seed=21)
    trading_date = (bars.ts.dt.tz_convert("America/New_York") + pd.Timedelta(hours=6)).dt.date
    last = trading_date == trading_date.max()
    history, new_day = bars[~last], bars[last]
    print(f"{len(ROOTS)} roots x {args.sessions} sessions: {len(bars):,} bars ({len(new_day):,} in the appended "
          f"session), 150 features")

    with tempfile.TemporaryDirectory(prefix="qe_bench_incr_") as tmp:
        wh = Warehouse(Path(tmp) / "wh")

        def load(frame: pd.DataFrame, name: str) -> None:
            ingest_frame(wh, frame, Path(tmp) / name)

        load(history, "history.parquet")
        full_hist, runs, _ = timed(lambda: build_features(wh, "1m", full=True), args.repeat)
        print(f"1. full build, history ({len(history):,} bars): median {full_hist:.2f} s "
              f"({', '.join(f'{t:.2f}' for t in runs)})")

        load(new_day, "day.parquet")
        start = time.perf_counter()
        report = build_features(wh, "1m")
        inc = time.perf_counter() - start
        assert sorted(report.tail) == sorted(report.built) and report.rows == len(new_day), report
        full_all, runs, _ = timed(lambda: build_features(wh, "1m", full=True), args.repeat)
        print(f"2. append one day: incremental build {inc:.2f} s ({report.rows:,} rows computed, "
              f"{report.partitions_written} partitions rewritten); full build over all bars median {full_all:.2f} s "
              f"({', '.join(f'{t:.2f}' for t in runs)}); ratio {full_all / inc:.1f}x")

        con = wh.connect()
        con.execute(f"CREATE TEMP TABLE src AS {render('features/_source.sql', timeframe='1m')}")
        symbols = [r[0] for r in con.sql("SELECT DISTINCT symbol FROM src ORDER BY 1").fetchall()]
        registry = build_registry(timeframe="1m")
        stamps = [r[0] for r in con.sql(
            f"SELECT DISTINCT ts FROM src ORDER BY ts DESC LIMIT {args.bars}").fetchall()][::-1]

        def family_path(con, ts, family):  # noqa: ANN001, ANN202
            """One family alone: its tail starts, then its query over its tails."""
            starts = incremental.tail_starts(con, "live", "1m", incremental.family_needs(family), symbols, ts)
            return incremental._family_rows(con, "live", "1m", ts, starts, registry, family)

        per_bar: list[float] = []
        per_family: dict[str, list[float]] = {f.template: [] for f in registry.families}
        rows = 0
        for ts in stamps:
            con.execute(f"CREATE OR REPLACE TEMP VIEW live AS SELECT * FROM src WHERE ts <= TIMESTAMPTZ '{ts.isoformat()}'")
            seconds, _, table = timed(lambda: incremental.tail_features(con, "live", "1m", ts, symbols, registry))
            per_bar.append(seconds)
            rows += table.num_rows
            for family in registry.families:
                s, _, _ = timed(lambda: family_path(con, ts, family))
                per_family[family.template].append(s)
        print(f"3. one new bar per root ({len(symbols)} roots, {rows / len(stamps):.1f} rows per call, "
              f"{len(stamps)} bars): median {statistics.median(per_bar) * 1000:.0f} ms, "
              f"p99 {p99(per_bar) * 1000:.0f} ms; full build / per-bar median = "
              f"{full_all / statistics.median(per_bar):.0f}x")
        for name, values in per_family.items():
            needs = incremental.family_needs(next(f for f in registry.families if f.template == name))
            print(f"   {name:30} median {statistics.median(values) * 1000:6.0f} ms  (tail: {needs})")


if __name__ == "__main__":
    main()
