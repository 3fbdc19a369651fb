"""Backtest memory benchmark: peak RSS of the event loop against the length of the history.

Usage::

    python bench/bench_backtest_memory.py [--bars 1000000 5000000 10000000] [--baseline-bars 1000000 5000000]
                                          [--dir /tmp/qe-bench-memory] [--keep]

For each N, N one-minute ES bars (a random walk on the 0.25 tick grid, ``tests/backtest_oracle.random_walk_bars``
continued chunk after chunk so the generator holds one million bars at a time) are written to a Parquet file
with a ``pyarrow.parquet.ParquetWriter``; then a FRESH subprocess runs::

    run_backtest(con, "SELECT * FROM read_parquet('<file>')", SmaCross(),
                 BacktestConfig(timeframe="1m", risk=RiskLimits.off()))

on a DuckDB connection with ``SET memory_limit='1GB'`` and a temp directory (the feed's ``ORDER BY ts, symbol``
sort may spill there), while a thread samples ``VmRSS`` from ``/proc/self/status`` every 50 ms; ``VmHWM`` (the
kernel's high-water mark) is read at the end as well. DuckDB's buffers are part of the process RSS and are
counted: the figures are the whole process.

``--baseline-bars`` repeats the run with ``equity_chunk_points`` larger than N, i.e. every equity point held
in memory and ``compute_metrics`` on the whole table (the behaviour before the equity spilled to disk).

Printed per run: N, peak RSS (MB), the RSS growth per extra million bars against the previous N, DuckDB's own
peak memory and spill (``duckdb_memory()``, sampled from a second cursor of the same database), loop µs/bar,
the batch size and chunk size, whether the equity was spilled, and the counts of orders / fills / trades
(the run's audit trail, which stays in memory: O(trades), not O(bars)).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the repository root, for tests.backtest_oracle

GEN_CHUNK = 1_000_000
NS_PER_MINUTE = 60_000_000_000


def write_bars(paths: dict[int, Path], seed: int = 7) -> None:
    """Write one file per N; each file is the first N bars of the same walk (generated once, a chunk at a time)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.backtest_oracle import random_walk_bars

    schema = pa.schema([("symbol", pa.string()), ("ts", pa.timestamp("ns", tz="UTC")), ("open", pa.float64()),
                        ("high", pa.float64()), ("low", pa.float64()), ("close", pa.float64()),
                        ("volume", pa.int64())])
    writers = {n: pq.ParquetWriter(path, schema, compression="zstd") for n, path in paths.items()}
    total = max(paths)
    done, price = 0, 4000.0
    try:
        while done < total:
            size = min(GEN_CHUNK, total - done)
            bars = random_walk_bars(size, seed=seed + done // GEN_CHUNK, start_price=price)
            price = float(bars["close"][-1])
            table = pa.table({
                "symbol": pa.array(["ES"] * size, pa.string()),
                "ts": pa.array(bars["ts"] + done * NS_PER_MINUTE).cast(pa.timestamp("ns", tz="UTC")),
                **{k: bars[k] for k in ("open", "high", "low", "close", "volume")},
            }, schema=schema)
            for n, writer in writers.items():
                if done < n:
                    writer.write_table(table.slice(0, min(size, n - done)), row_group_size=GEN_CHUNK)
            done += size
    finally:
        for writer in writers.values():
            writer.close()


def rss_kb(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def child(path: str, chunk_points: int | None, spill_dir: str, memory_limit: str, sma: tuple[int, int]) -> None:
    """One measured run (in its own process)."""
    import duckdb

    from engine.backtest.run import BacktestConfig, run_backtest
    from engine.risk import RiskLimits
    from engine.strategies.sma_cross import SmaCross

    peak = [rss_kb()]
    duck = [0, 0]  # peak bytes DuckDB reports in use / spilled to its temp directory
    stop = threading.Event()

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute(f"SET temp_directory = '{spill_dir}'")
    probe = con.cursor()  # a second connection to the same database: its memory while the feed streams

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_kb())
            used, spilled = probe.sql("SELECT sum(memory_usage_bytes)::BIGINT, sum(temporary_storage_bytes)::BIGINT "
                                      "FROM duckdb_memory()").fetchone()
            duck[0], duck[1] = max(duck[0], used or 0), max(duck[1], spilled or 0)
            stop.wait(0.05)

    before = rss_kb()
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    config = BacktestConfig(timeframe="1m", risk=RiskLimits.off())
    if chunk_points is not None:
        config = config.model_copy(update={"equity_chunk_points": chunk_points})
    started = time.perf_counter()
    strategy = SmaCross() if sma == (20, 50) else SmaCross(fast=sma[0], slow=sma[1])
    result = run_backtest(con, f"SELECT * FROM read_parquet('{path}')", strategy, config)
    wall = time.perf_counter() - started
    stop.set()
    thread.join()
    after = rss_kb()
    print(json.dumps({
        "bars": int(result.timings["bars"]),
        "peak_rss_mb": max(peak[0], after) / 1024,
        "hwm_mb": rss_kb("VmHWM") / 1024,
        "duckdb_peak_mb": duck[0] / 2**20,
        "duckdb_spilled_mb": duck[1] / 2**20,
        "memory_limit": memory_limit,
        "sma": list(sma),
        "start_rss_mb": before / 1024,
        "end_rss_mb": after / 1024,
        "wall_s": wall,
        "loop_us_per_bar": (result.timings["loop_s"] + result.timings["feed_s"]) / result.timings["bars"] * 1e6,
        "batch_size": config.batch_size,
        "chunk_points": config.equity_chunk_points,
        "spilled": result.equity_path is not None,
        "equity_rows_in_memory": result.tables["equity"].num_rows,
        "orders": result.tables["orders"].num_rows,
        "fills": result.tables["fills"].num_rows,
        "trades": result.tables["trades"].num_rows,
        "final_equity": result.final_equity,
    }))


def run_child(path: Path, chunk_points: int | None, spill_dir: Path, memory_limit: str, sma: list[int]) -> dict:
    cmd = [sys.executable, __file__, "--child", str(path), "--spill-dir", str(spill_dir),
           "--duckdb-memory-limit", memory_limit, "--sma", *map(str, sma)]
    if chunk_points is not None:
        cmd += ["--chunk-points", str(chunk_points)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bars", type=int, nargs="+", default=[1_000_000, 5_000_000, 10_000_000])
    parser.add_argument("--baseline-bars", type=int, nargs="*", default=[],
                        help="also run these N with every equity point kept in memory (the old behaviour)")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/qe-bench-memory"))
    parser.add_argument("--keep", action="store_true", help="keep the generated bar files")
    parser.add_argument("--duckdb-memory-limit", default="1GB", help="DuckDB memory_limit (default 1GB)")
    parser.add_argument("--sma", type=int, nargs=2, default=[20, 50], metavar=("FAST", "SLOW"),
                        help="SmaCross windows (default 20 50, i.e. SmaCross())")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--chunk-points", type=int, default=None,
                        help="equity_chunk_points of the streamed runs (default: the engine's, 1,048,576)")
    parser.add_argument("--spill-dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.chunk_points, args.spill_dir, args.duckdb_memory_limit, tuple(args.sma))
        return

    args.dir.mkdir(parents=True, exist_ok=True)
    sizes = sorted(set(args.bars) | set(args.baseline_bars))
    paths = {n: args.dir / f"es_1m_{n}.parquet" for n in sizes}
    missing = {n: p for n, p in paths.items() if not p.exists()}
    if missing:
        started = time.perf_counter()
        write_bars(missing)
        print(f"generated {', '.join(f'{n:,}' for n in sizes)} bars in {time.perf_counter() - started:.1f} s",
              flush=True)
    spill = args.dir / "duckdb_tmp"
    spill.mkdir(exist_ok=True)

    runs = []
    for n in sorted(args.bars):
        runs.append(("streamed", run_child(paths[n], args.chunk_points, spill, args.duckdb_memory_limit, args.sma)))
        print(json.dumps(runs[-1]), flush=True)
    for n in sorted(args.baseline_bars):
        runs.append(("all in memory", run_child(paths[n], n + 1, spill, args.duckdb_memory_limit, args.sma)))
        print(json.dumps(runs[-1]), flush=True)

    print()
    print(f"DuckDB memory_limit {args.duckdb_memory_limit}, SmaCross({args.sma[0]}, {args.sma[1]})")
    print("| equity | N bars | peak RSS MB | VmHWM MB | MB per extra 1M bars | DuckDB peak MB | DuckDB spilled MB "
          "| loop µs/bar | wall s | batch | chunk | spilled | orders | fills | trades |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    for mode in ("streamed", "all in memory"):
        rows = [r for m, r in runs if m == mode]
        if not rows:
            continue
        previous = None
        for r in rows:
            # marginal growth: against the previous (smaller) N of the same mode
            extra = (r["bars"] - previous["bars"]) / 1e6 if previous else 0
            growth = f"{(r['peak_rss_mb'] - previous['peak_rss_mb']) / extra:.1f}" if extra else "—"
            previous = r
            print(f"| {mode} | {r['bars']:,} | {r['peak_rss_mb']:,.0f} | {r['hwm_mb']:,.0f} | {growth} "
                  f"| {r['duckdb_peak_mb']:,.0f} | {r['duckdb_spilled_mb']:,.0f} | {r['loop_us_per_bar']:.2f} | {r['wall_s']:.1f} | {r['batch_size']:,} | {r['chunk_points']:,} "
                  f"| {'yes' if r['spilled'] else 'no'} | {r['orders']:,} | {r['fills']:,} | {r['trades']:,} |")
    if not args.keep:
        for p in paths.values():
            p.unlink(missing_ok=True)
    shutil.rmtree(spill, ignore_errors=True)


if __name__ == "__main__":
    main()
