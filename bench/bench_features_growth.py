"""The live features' time through a trading day: how it grows with the tails, and what trimming them buys.

``LiveFeatures.append`` runs every family over its in-memory tails, which grow by one row per root with each bar
until :meth:`LiveFeatures.trim` cuts them back to their bound. This benchmark appends ``--bars`` minutes of 5 roots
to two ``LiveFeatures`` over the same warehouse, in turn minute by minute (same process, same machine state):

* ``trimmed``: cut back every ``--trim-every`` bars, between bars (as the live loop does, off the bar's path);
* ``untrimmed``: never cut within the run (the tails grow by every bar, as they did between daily trims).

Printed: each one's append time (median per block of ``--block`` bars, and over the run median / p99), the
trims' own times, and the ratio untrimmed / trimmed per block.

    python bench/bench_features_growth.py --bars 600 --trim-every 60
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

from bench.bench_features_incremental import ROOTS, ingest_frame, p99  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=25, help="synthetic Globex sessions per root")
    parser.add_argument("--bars", type=int, default=600, help="minutes appended one at a time")
    parser.add_argument("--trim-every", type=int, default=60, help="bars between trims of the trimmed tails")
    parser.add_argument("--block", type=int, default=100, help="bars per reported block")
    parser.add_argument("--workers", type=int, default=2, help="LiveFeatures workers (the live loop's default)")
    args = parser.parse_args()

    import pyarrow as pa

    from tests.features_oracle.synthetic import globex_bars
    from warehouse import Warehouse
    from warehouse.features.live import BAR_COLUMNS, LiveFeatures

    raw = globex_bars(symbols=ROOTS, sessions=args.sessions, seed=21)
    stamps = sorted(raw.ts.unique())
    if args.bars >= len(stamps) // 2:
        raise SystemExit(f"--bars {args.bars}: keep it under half of the {len(stamps)} minutes generated")
    cut = stamps[-args.bars]
    with tempfile.TemporaryDirectory(prefix="qe_bench_growth_") as tmp:
        wh = Warehouse(Path(tmp) / "wh")
        ingest_frame(wh, raw[raw.ts < cut], Path(tmp) / "history.parquet")
        roots = [symbol[:2] for symbol in ROOTS]
        # a trim interval beyond the run: the untrimmed tails grow by every bar
        kinds = {"trimmed": LiveFeatures(wh, "1m", roots, trim_every=args.trim_every, workers=args.workers),
                 "untrimmed": LiveFeatures(wh, "1m", roots, trim_every=args.bars + 1, workers=args.workers)}
        new = raw[raw.ts >= cut].assign(symbol=lambda d: d.symbol.str[:2])
        times: dict[str, list[float]] = {kind: [] for kind in kinds}
        trims: list[float] = []
        for ts, group in new.groupby("ts", sort=True):
            bars = pa.Table.from_pandas(group[list(BAR_COLUMNS)], preserve_index=False).sort_by("symbol")
            for kind, live in kinds.items():
                started = time.perf_counter()
                live.append(bars, trim=False)
                times[kind].append(time.perf_counter() - started)
                if live.trim_due():  # between bars, as the live loop trims
                    started = time.perf_counter()
                    live.trim()
                    trims.append(time.perf_counter() - started)
        for live in kinds.values():
            live.close()
        wh.close()

    print(f"5 roots, {args.bars} bars appended one minute at a time, workers={args.workers}; "
          f"trimmed every {args.trim_every} bars")
    print(f"{'bars':>11s} {'trimmed ms':>11s} {'untrimmed ms':>13s} {'ratio':>6s}")
    for first in range(0, args.bars, args.block):
        medians = {kind: 1000 * statistics.median(values[first:first + args.block]) for kind, values in times.items()}
        print(f"{first:5d}-{min(first + args.block, args.bars) - 1:<5d} {medians['trimmed']:11.1f} "
              f"{medians['untrimmed']:13.1f} {medians['untrimmed'] / medians['trimmed']:6.2f}")
    for kind, values in times.items():
        print(f"{kind:>9s}: median {1000 * statistics.median(values):6.1f} ms   p99 {1000 * p99(values):6.1f} ms")
    if trims:
        print(f"trims: {len(trims)}, median {1000 * statistics.median(trims):.0f} ms, "
              f"max {1000 * max(trims):.0f} ms (between bars)")


if __name__ == "__main__":
    main()
