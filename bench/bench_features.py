"""Feature benchmark: all catalog features on 1,000,000 one-minute bars of one symbol, to Parquet.

Usage::

    python bench/bench_features.py [--rows 1000000] [--repeat 3] [--skip-oracle]
    python bench/bench_features.py --rows 1000000 --repeat 3 --segments 2,4 [--segment-threads 1,2]
    python bench/bench_features.py --universe --append-day [--workdir /tmp/qe_bench_universe]
    python bench/bench_features.py --append-day --workdir DIR      # on a warehouse an earlier --universe left

Single-symbol mode (default): each measurement runs in a fresh subprocess so that its peak RSS is its own.
The SQL path renders the full feature query (base + every family) and COPYs it to Parquet with DuckDB, as
`qe features build` does. The baseline, in the same run and on the same bars, is the test suite's independent
numpy/pandas oracle of the catalog. Prints median wall seconds, peak RSS and the ratio.

Segmented mode (``--segments K[,K...]``): the staged build (baseline) and the segmented build of
``warehouse/features/materialize.py`` (``build_segmented``: K segments cut at session opens, each from its bounded
tail, ``--segment-workers`` at a time, each on a DuckDB connection with ``--segment-threads`` threads, composed into
the year files) alternate in fresh subprocesses, ``--repeat`` rounds; prints median wall and CPU seconds (user +
system of all threads, ``time.process_time``) and peak RSS of each, and the ratios to the baseline.

Universe mode (``--universe``): 15 roots x 2 years of 1-minute Globex bars (every session of each root's
exchange calendar, trading dates 2024-01-02 .. 2025-12-30: holidays absent, early closes short; prices on each
root's tick grid; volume > 0; one contract per root, ``<root>H6``, which expires after the data), one Parquet
file per root, ingested into a fresh warehouse under ``--workdir`` with ``loaders.ingest.ingest`` (validation,
rolls), then ``build_features(wh, "1m")`` for every symbol. ``--append-day`` then ingests the held-back session
of trading date 2025-12-31 for every root and runs the incremental ``build_features(wh, "1m")`` again.
Every phase (generate, ingest, full build, no-op build, append ingest, incremental build) runs in its own fresh
subprocess; peak RSS is the kernel's high-water mark ``VmHWM`` of that process, reset after each symbol through
``/proc/self/clear_refs`` so that each symbol's peak is its own (a 20 ms ``VmRSS`` sampling thread is the
fallback where ``clear_refs`` is not writable). The warehouse is kept under ``--workdir`` (several GB).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_bars(n: int, path: Path, seed: int = 11) -> None:
    """``n`` one-minute ES bars on Globex hours (no 17:00-18:00 ET halt, no weekend), tick 0.25."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    minutes = pd.date_range("2019-01-01", periods=int(n * 1.5), freq="min", tz="UTC")
    et = minutes.tz_convert("America/New_York")
    weekday = et.weekday
    keep = (et.hour != 17) & (weekday != 5) & ~((weekday == 4) & (et.hour >= 17)) & ~((weekday == 6) & (et.hour < 18))
    ts = minutes[keep][:n]
    close = 2500 + np.round(np.cumsum(rng.normal(0, 0.5, n)) * 4) / 4
    open_ = np.concatenate([[close[0]], close[:-1]])
    high = np.maximum(open_, close) + rng.integers(0, 3, n) * 0.25
    low = np.minimum(open_, close) - rng.integers(0, 3, n) * 0.25
    frame = pd.DataFrame({"symbol": "ESH4", "ts": ts, "open": open_, "high": high, "low": low, "close": close,
                          "volume": rng.integers(0, 500, n)})
    frame.to_parquet(path)


SQL_RUN = r"""
import json, resource, shutil, sys, tempfile, time, duckdb
from pathlib import Path
from warehouse.features.materialize import compose_years, stage_families
from warehouse.features.registry import build_registry, staged_queries
bars, out = sys.argv[1], sys.argv[2]
registry = build_registry(timeframe="1m")
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
con.execute(f"CREATE VIEW bars AS SELECT * FROM read_parquet('{bars}')")
# The staged build of `qe features build` (warehouse/features/materialize.py: _stage_symbol, _install_symbol): base once, each
# family alone over it, then the families side by side by position, one zstd Parquet file per year.
queries = staged_queries(registry, "bars", "1m")
stage = Path(tempfile.mkdtemp(dir=Path(out).parent))
start, cpu = time.perf_counter(), time.process_time()
rows, files = stage_families(con, queries, stage)
compose_years(files, queries.features, stage / "out")
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
shutil.rmtree(stage)
print(json.dumps({"seconds": seconds, "cpu": cpu, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "features": len(registry.features)}))
"""

SEGMENTED_RUN = r"""
import json, resource, shutil, sys, tempfile, time, duckdb
from pathlib import Path
from warehouse.features import materialize
from warehouse.features.materialize import _day_fingerprints, build_segmented, segment_cuts
from warehouse.features.registry import build_registry, staged_queries
bars, out, segments, workers, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
materialize.SEGMENT_WORKERS, materialize.SEGMENT_THREADS = workers, threads
materialize.SEGMENT_PROCESSES = sys.argv[6] == "process"
registry = build_registry(timeframe="1m")
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
con.execute(f"CREATE VIEW symbol_bars AS SELECT * FROM read_parquet('{bars}')")
con.execute("CREATE VIEW feature_source AS SELECT * FROM symbol_bars")
queries = staged_queries(registry, "symbol_bars", "1m")
stage = Path(tempfile.mkdtemp(dir=Path(out).parent))
days = _day_fingerprints(con, "ESH4")  # build_features computes them for its manifest either way
start, cpu = time.perf_counter(), time.process_time()
# What build_features runs for a segmented symbol: cuts at session opens, tail starts, segments, composition.
rows, produced, k = build_segmented(con, "1m", "ESH4", queries, registry, segment_cuts(days, segments), stage / "seg")
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
shutil.rmtree(stage)
children = resource.getrusage(resource.RUSAGE_CHILDREN)  # spawned segment processes (SEGMENT_PROCESSES)
cpu += children.ru_utime + children.ru_stime
print(json.dumps({"seconds": seconds, "cpu": cpu, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "children_rss_mb": children.ru_maxrss / 1024,
                  "features": len(registry.features), "rows": rows, "segments": k}))
"""

SINGLE_RUN = r"""
import json, resource, sys, time, duckdb
from warehouse.features.registry import build_registry, feature_query
bars, out = sys.argv[1], sys.argv[2]
registry = build_registry(timeframe="1m")
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
con.execute(f"CREATE VIEW bars AS SELECT * FROM read_parquet('{bars}')")
query = feature_query(registry, "bars", "1m")
start = time.perf_counter()
con.execute(f"COPY ({query}) TO '{out}' (FORMAT parquet, COMPRESSION zstd)")
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "features": len(registry.features)}))
"""

ORACLE_RUN = r"""
import json, resource, sys, time
import pandas as pd
from tests.features_oracle import price_action, volume, volatility, structure, time_features
bars = pd.read_parquet(sys.argv[1])
start = time.perf_counter()
parts = [m.compute(bars, "1m") for m in (price_action, volume, volatility, structure, time_features)]
out = pd.concat(parts, axis=1)
out.to_parquet(sys.argv[2])
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "features": out.shape[1]}))
"""


FAMILY_RUN = r"""
import json, resource, sys, time, duckdb
from warehouse.features.registry import Registry, build_registry, family_templates, feature_query
bars, out, which = sys.argv[1], sys.argv[2], int(sys.argv[3])
templates = [] if which < 0 else [family_templates()[which]]
# build_registry treats an empty template list as "all families": base only is a registry without families.
registry = build_registry(templates, timeframe="1m") if templates else Registry([], build_registry(timeframe="1m").base_sql)
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
con.execute(f"CREATE VIEW bars AS SELECT * FROM read_parquet('{bars}')")
query = feature_query(registry, "bars", "1m")
start = time.perf_counter()
con.execute(f"COPY ({query}) TO '{out}' (FORMAT parquet, COMPRESSION zstd)")
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "family": templates[0][0] if templates else "base + compose only", "features": len(registry.features)}))
"""


def run(script: str, bars: Path, out: Path, *extra: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", script, str(bars), str(out), *extra], cwd=REPO, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def segmented(args: argparse.Namespace, bars: Path, tmp: Path) -> None:
    """The staged build and the segmented builds, alternating in fresh subprocesses, ``args.repeat`` rounds."""
    configs = [(k, t) for k in (int(x) for x in args.segments.split(",")) for t in (int(x) for x in args.segment_threads.split(","))]
    pool = "process" if args.segment_processes else "thread"
    runs: dict[str, list[dict]] = {"staged (unsegmented)": []}
    print(f"{args.rows:,} bars; segment workers {args.segment_workers}; load average before: {_load()}")
    for r in range(args.repeat):
        runs["staged (unsegmented)"].append(run(SQL_RUN, bars, tmp / "sql.parquet"))
        print(f"    staged: {json.dumps(runs['staged (unsegmented)'][-1])}", flush=True)
        for k, t in configs:
            label = f"segmented K={k}, {t} thread(s) per {pool}"
            runs.setdefault(label, []).append(run(SEGMENTED_RUN, bars, tmp / "seg.parquet", str(k), str(args.segment_workers), str(t), pool))
            print(f"    {label}: {json.dumps(runs[label][-1])}", flush=True)
        print(f"  round {r + 1}/{args.repeat} done, load average {_load()}", flush=True)
    base = runs["staged (unsegmented)"]
    base_wall, base_cpu = statistics.median(x["seconds"] for x in base), statistics.median(x["cpu"] for x in base)
    print(f"{'path':48} {'wall s (median; runs)':34} {'CPU s':>7} {'peak RSS':>9} {'wall ratio':>10} {'CPU ratio':>9}")
    for label, rs in runs.items():
        wall, cpu = statistics.median(x["seconds"] for x in rs), statistics.median(x["cpu"] for x in rs)
        each = ", ".join(format(x["seconds"], ".1f") for x in rs)
        rss = max(max(x["rss_mb"], x.get("children_rss_mb", 0)) for x in rs)  # the largest process's peak
        print(f"{label:48} {wall:6.2f} ({each}){'':{max(0, 26 - len(each))}} {cpu:7.1f} {rss:7.0f}MB "
              f"{base_wall / wall:9.2f}x {base_cpu / cpu:8.2f}x")
    print(f"load average after: {_load()}")


def single_symbol(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="qe_bench_features_") as tmp:
        bars = Path(tmp) / "bars.parquet"
        make_bars(args.rows, bars)
        if args.segments:
            segmented(args, bars, Path(tmp))
            return
        sql = [run(SQL_RUN, bars, Path(tmp) / "sql.parquet") for _ in range(args.repeat)]
        line = {"seconds": statistics.median(r["seconds"] for r in sql), "rss_mb": max(r["rss_mb"] for r in sql)}
        print(f"{args.rows:,} bars, {sql[0]['features']} features")
        print(f"SQL staged build (DuckDB -> Parquet): median {line['seconds']:.2f} s over {args.repeat} "
              f"({', '.join(format(r['seconds'], '.2f') for r in sql)}), peak RSS {line['rss_mb']:.0f} MB")
        single = [run(SINGLE_RUN, bars, Path(tmp) / "single.parquet") for _ in range(args.repeat)]
        print(f"SQL single query (all families in one SELECT): median "
              f"{statistics.median(r['seconds'] for r in single):.2f} s, peak RSS {max(r['rss_mb'] for r in single):.0f} MB")
        if args.per_family:
            print(f"per family (base + that family only, composed and COPYed the same way; median of {args.repeat}):")
            for which in (-1, 0, 1, 2, 3, 4):
                runs = [run(FAMILY_RUN, bars, Path(tmp) / "family.parquet", str(which)) for _ in range(args.repeat)]
                print(f"  {runs[0]['family']:32} {runs[0]['features']:3d} features  "
                      f"{statistics.median(r['seconds'] for r in runs):6.2f} s  peak RSS {max(r['rss_mb'] for r in runs):6.0f} MB")
        if not args.skip_oracle:
            oracle = run(ORACLE_RUN, bars, Path(tmp) / "oracle.parquet")
            print(f"oracle (numpy/pandas):   {oracle['seconds']:.2f} s, peak RSS {oracle['rss_mb']:.0f} MB, "
                  f"{oracle['features']} features")
            print(f"ratio oracle / SQL: {oracle['seconds'] / line['seconds']:.1f}x")


# ------------------------------------------------------------------------------------------------ universe mode

UNIVERSE = ("ES", "NQ", "RTY", "YM", "MES", "MNQ", "CL", "NG", "GC", "SI", "ZB", "ZN", "ZF", "6E", "6J")
FIRST_DATE, LAST_DATE, APPEND_DATE = "2024-01-02", "2025-12-30", "2025-12-31"  # trading dates; APPEND is held back
CONTRACT = "H6"  # every root lists March; the 2026 March contracts all expire after APPEND_DATE, so no roll
START_PRICE = {"ES": 4800, "NQ": 17000, "RTY": 2000, "YM": 37500, "MES": 4800, "MNQ": 17000, "CL": 72, "NG": 2.5,
               "GC": 2050, "SI": 23, "ZB": 120, "ZN": 110, "ZF": 106, "6E": 1.10, "6J": 0.0068}


class PeakRSS:
    """Peak resident set size of this process (MB) since the last :meth:`take`.

    Reads the kernel's high-water mark ``VmHWM`` and resets it by writing ``5`` to ``/proc/self/clear_refs``
    (Linux >= 4.0); where that file is not writable, a thread samples ``VmRSS`` every 20 ms instead.
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        try:
            self._reset()
            self.method = "VmHWM of the phase's own process, reset per symbol via /proc/self/clear_refs"
        except OSError:
            self.method = "VmRSS sampled every 20 ms in the phase's own process"
            self._peak = self._status("VmRSS")
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()

    @staticmethod
    def _status(key: str) -> float:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
        raise OSError(f"no {key} in /proc/self/status")

    @staticmethod
    def _reset() -> None:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")

    def take(self) -> float:
        if self._thread is None:
            peak = self._status("VmHWM")
            self._reset()
            return peak
        now = self._status("VmRSS")
        peak, self._peak = max(self._peak, now), now
        return peak

    def _sample(self) -> None:
        while True:
            time.sleep(0.02)
            self._peak = max(self._peak, self._status("VmRSS"))


def _globex_minutes(root: str):
    """Epoch minutes of every 1-minute bar of every Globex session of ``root``, and each bar's trading date."""
    import numpy as np

    from warehouse.sessions import trading_sessions

    sessions = trading_sessions(root, FIRST_DATE, APPEND_DATE)
    opens = sessions["open_utc"].dt.tz_convert(None).to_numpy().astype("datetime64[m]").astype(np.int64)
    closes = sessions["close_utc"].dt.tz_convert(None).to_numpy().astype("datetime64[m]").astype(np.int64)
    lengths = closes - opens
    first_index = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    minutes = np.repeat(opens - first_index, lengths) + np.arange(lengths.sum())
    return minutes, np.repeat(sessions["trading_date"].to_numpy(), lengths)


def universe_bars(root: str, seed: int):
    """(history, appended day) of ``root``: a random walk on the root's tick grid over its Globex minutes."""
    import numpy as np
    import pyarrow as pa

    from warehouse.contracts import load_specs

    tick = load_specs()[root].tick_size
    minutes, day = _globex_minutes(root)
    n = len(minutes)
    rng = np.random.default_rng(seed)
    start = round(START_PRICE[root] / tick)
    sigma = max(1.0, 2e-4 * START_PRICE[root] / tick)  # about 2 bp per minute, at least one tick
    ticks = start + np.cumsum(np.round(rng.normal(0, sigma, n)).astype(np.int64))
    floor = start * 3 // 10
    ticks = np.where(ticks < floor, 2 * floor - ticks, ticks)  # reflect: prices stay positive
    open_ = np.concatenate([[ticks[0]], ticks[:-1]])
    spread = int(sigma) + 1
    high = np.maximum(open_, ticks) + rng.integers(0, spread, n)
    low = np.minimum(open_, ticks) - rng.integers(0, spread, n)
    table = pa.table({
        "symbol": pa.array([root + CONTRACT] * n),
        "ts": pa.array(minutes * 60_000_000, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "open": open_ * tick, "high": high * tick, "low": low * tick, "close": ticks * tick,
        "volume": rng.integers(1, 500, n),
    })
    appended = day == np.datetime64(APPEND_DATE)
    return table.filter(pa.array(~appended)), table.filter(pa.array(appended))


def _features_partitions(root: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) of every features_1m partition file (data.parquet and tail.parquet): os.replace gives a
    rewritten file a new inode."""
    folder = root / "features" / "timeframe=1m"
    return {str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.glob("symbol=*/year=*/*.parquet")}


def _day_bounds(con, day: str) -> tuple[str, str]:
    """UTC bounds [18:00 ET the evening before, 18:00 ET on) of trading date ``day``."""
    row = con.sql(
        f"SELECT timezone('UTC', timezone('America/New_York', DATE '{day}' - 1 + TIME '18:00')), "
        f"timezone('UTC', timezone('America/New_York', DATE '{day}' + TIME '18:00'))"
    ).fetchone()
    return str(row[0]), str(row[1])


def _phase(name: str, work: Path, kind: str | None, segment_rows: int | None = None) -> None:
    """One measured phase, in this (fresh) process; the result goes to ``work/<name>[_kind].json``."""
    sys.path.insert(0, str(REPO))
    result: dict = {}
    if name == "generate":
        import pyarrow.parquet as pq

        for d in ("input", "append"):
            (work / d).mkdir(parents=True, exist_ok=True)
        counts = {}
        for i, root in enumerate(UNIVERSE):
            history, appended = universe_bars(root, seed=100 + i)
            pq.write_table(history, work / "input" / f"{root}.parquet")
            pq.write_table(appended, work / "append" / f"{root}.parquet")
            counts[root] = (history.num_rows, appended.num_rows)
            print(f"  generated {root:3} {history.num_rows:9,} bars + {appended.num_rows:,} for {APPEND_DATE}", flush=True)
        result = {"bars": {r: c[0] for r, c in counts.items()}, "appended": {r: c[1] for r, c in counts.items()}}
    elif name in ("ingest", "append_ingest"):
        from loaders.ingest import ingest
        from warehouse import Warehouse

        rss = PeakRSS()
        wh = Warehouse(work / "wh")
        start = time.perf_counter()
        reports = ingest(wh, [work / ("input" if name == "ingest" else "append")], timeframe="1m",
                         on_file=lambda r: print(f"  ingested {Path(r.path).name:14} {r.rows_loaded:9,} rows, "
                                                 f"{r.rows_quarantined} quarantined{', ' + r.error if r.error else ''}", flush=True))
        seconds = time.perf_counter() - start
        bad = [r for r in reports if r.error or r.rows_quarantined]
        if bad:
            raise SystemExit(f"ingest failed or quarantined rows: {bad[0]}")
        result = {"seconds": seconds, "rows": sum(r.rows_loaded for r in reports), "rss_mb": rss.take(), "rss_method": rss.method}
    elif name == "build":
        from warehouse import Warehouse
        from warehouse.features import materialize
        from warehouse.features.materialize import build_features

        if segment_rows is not None:  # 0: every symbol unsegmented
            materialize.SEGMENT_ROWS = segment_rows or 10**18
        wh = Warehouse(work / "wh")
        con = wh.connect()
        bars = dict(con.sql("SELECT symbol, count(*) FROM bars_1m_adj_ratio GROUP BY 1").fetchall())
        rows_before = con.sql("SELECT count(*) FROM features_1m").fetchone()[0]
        prev_day = LAST_DATE
        lo, hi = _day_bounds(con, prev_day)
        prev_copy = work / "previous_day_before.parquet"
        if kind == "incremental":  # the day before the appended one, as it was: it must not change (point in time)
            con.execute(f"COPY (SELECT * FROM features_1m WHERE ts >= '{lo}' AND ts < '{hi}') TO '{prev_copy}' (FORMAT parquet)")
        before = _features_partitions(wh.root)
        rss = PeakRSS()
        setup_rss = rss.take()
        per_symbol: list[dict] = []
        progress = None
        if sys.stdout.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            progress = Progress(TextColumn("features 1m"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            task = progress.add_task("build", total=len(bars))
            progress.start()
        say = progress.console.print if progress else (lambda text: print(text, flush=True))
        last = time.perf_counter()

        def on_symbol(symbol: str, done: int, total: int) -> None:
            nonlocal last
            now = time.perf_counter()
            record = {"symbol": symbol, "bars": bars[symbol], "seconds": now - last, "rss_mb": rss.take()}
            last = now
            per_symbol.append(record)
            say(f"  [{done:2}/{total}] {symbol:3} {record['bars']:9,} bars {record['seconds']:7.2f} s "
                f"{record['bars'] / record['seconds']:9,.0f} bars/s  peak RSS {record['rss_mb']:6,.0f} MB")
            if progress:
                progress.advance(task)

        start = last = time.perf_counter()
        cpu = time.process_time()  # every thread of this process (DuckDB's workers included)
        report = build_features(wh, "1m", on_symbol=on_symbol)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        tail_rss = rss.take()
        if progress:
            progress.stop()
        after = _features_partitions(wh.root)
        con = wh.connect()
        rows_after = con.sql("SELECT count(*) FROM features_1m").fetchone()[0]
        result = {
            "kind": kind, "seconds": seconds, "cpu_seconds": cpu, "segments": report.segments, "bars": sum(bars.values()), "rows_before": rows_before, "rows_after": rows_after,
            "built": report.built, "skipped": report.skipped, "partitions_written": report.partitions_written,
            "partitions_unchanged": report.partitions_unchanged,
            "rewritten": sorted(k for k in after if k in before and after[k] != before[k]),
            "new": sorted(k for k in after if k not in before), "untouched": sorted(k for k in after if before.get(k) == after[k]),
            "per_symbol": per_symbol, "setup_rss_mb": setup_rss,
            "rss_mb": max([setup_rss, tail_rss, *(r["rss_mb"] for r in per_symbol)]), "rss_method": rss.method,
        }
        if kind == "incremental":
            cols = [r[0] for r in con.sql("DESCRIBE features_1m").fetchall()][2:]
            diff = ", ".join(
                f"count(*) FILTER (WHERE (a.{c} IS NULL) <> (b.{c} IS NULL)), "
                f"max(abs(a.{c} - b.{c}) / greatest(abs(a.{c}), abs(b.{c}), 1e-300))" for c in cols)
            row = con.sql(f"SELECT count(*), count(b.ts), {diff} FROM read_parquet('{prev_copy}') a "
                          f"LEFT JOIN features_1m b USING (symbol, ts)").fetchone()
            result["previous_day"] = {
                "rows": row[0], "matched": row[1], "null_pattern_mismatches": sum(row[2::2]),
                "max_rel_diff": max((x for x in row[3::2] if x is not None), default=0.0),
                "worst_column": max(zip(cols, row[3::2]), key=lambda t: t[1] or 0.0)[0],
            }
            counts = ", ".join(f"count({c})" for c in cols)
            stats = {}
            for label, day in (("appended", APPEND_DATE), ("previous", prev_day)):
                a, b = _day_bounds(con, day)
                row = con.sql(f"SELECT count(*), {counts} FROM features_1m WHERE ts >= $lo AND ts < $hi", params={"lo": a, "hi": b}).fetchone()
                stats[label] = {"rows": row[0], "null_columns": sorted(c for c, k in zip(cols, row[1:]) if k < row[0]),
                                "all_null_columns": sorted(c for c, k in zip(cols, row[1:]) if k == 0),
                                "non_null_cells": sum(row[1:]), "cells": row[0] * len(cols)}
            result["day_check"] = stats
    else:
        raise SystemExit(f"unknown phase {name}")
    (work / f"{name}{'_' + kind if kind else ''}.json").write_text(json.dumps(result, indent=1, default=str))


def _run_phase(work: Path, name: str, kind: str | None = None) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--_phase", name, "--workdir", str(work),
               "--roots", ",".join(UNIVERSE), "--first-date", FIRST_DATE]
    if kind:
        command += ["--_kind", kind]
    if SEGMENT_ROWS is not None:
        command += ["--segment-rows", str(SEGMENT_ROWS)]
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True)
    result = json.loads((work / f"{name}{'_' + kind if kind else ''}.json").read_text())
    result["process_seconds"] = time.perf_counter() - start
    return result


SEGMENT_ROWS: int | None = None  # --segment-rows: the build phases' materialize.SEGMENT_ROWS (0: unsegmented)


def _build_summary(label: str, r: dict) -> None:
    seconds = [s["seconds"] for s in r["per_symbol"]]
    rates = [s["bars"] / s["seconds"] for s in r["per_symbol"]]
    print(f"{label}: {r['seconds']:.1f} s wall ({r['cpu_seconds']:.1f} s CPU, all threads) for {r['bars']:,} bars = "
          f"{r['bars'] / r['seconds']:,.0f} bars/s; "
          f"peak RSS {r['rss_mb']:,.0f} MB ({r['rss_method']})")
    if r.get("segments"):
        print(f"  segmented symbols: {len(r['segments'])}, segments per symbol: {sorted(set(r['segments'].values()))}")
    print(f"  built {len(r['built'])} symbols, skipped {len(r['skipped'])}; partitions written {r['partitions_written']}, "
          f"unchanged {r['partitions_unchanged']}; features_1m rows {r['rows_before']:,} -> {r['rows_after']:,}")
    if seconds:
        print(f"  per symbol: median {statistics.median(seconds):.1f} s (min {min(seconds):.1f}, max {max(seconds):.1f}), "
              f"median {statistics.median(rates):,.0f} bars/s; per-symbol peak RSS median "
              f"{statistics.median(s['rss_mb'] for s in r['per_symbol']):,.0f} MB, max {max(s['rss_mb'] for s in r['per_symbol']):,.0f} MB")


def universe(args: argparse.Namespace) -> None:
    import shutil

    work = Path(args.workdir)
    state_path = work / "state.json"
    if args.universe:
        for d in ("wh", "input", "append"):
            shutil.rmtree(work / d, ignore_errors=True)
        work.mkdir(parents=True, exist_ok=True)
        print(f"universe: {len(UNIVERSE)} roots, 1m Globex bars, trading dates {FIRST_DATE} .. {LAST_DATE}; work dir {work}")
        generated = _run_phase(work, "generate")
        print(f"generated {sum(generated['bars'].values()):,} bars (+ {sum(generated['appended'].values()):,} held back "
              f"for {APPEND_DATE}) in {generated['process_seconds']:.1f} s")
        ingested = _run_phase(work, "ingest")
        print(f"ingest: {ingested['rows']:,} rows in {ingested['seconds']:.1f} s = {ingested['rows'] / ingested['seconds']:,.0f} rows/s, "
              f"peak RSS {ingested['rss_mb']:,.0f} MB")
        print("full build_features(wh, '1m'):")
        full = _run_phase(work, "build", "full")
        _build_summary("full build", full)
        noop = _run_phase(work, "build", "noop")
        _build_summary("no-op rebuild (nothing changed)", noop)
        state_path.write_text(json.dumps({"generated": generated, "ingest": ingested, "full": full, "noop": noop}, default=str))
    if args.append_day:
        if not state_path.exists():
            raise SystemExit(f"no universe warehouse under {work}: run with --universe first")
        state = json.loads(state_path.read_text())
        if "incremental" in state:
            raise SystemExit(f"{APPEND_DATE} was already appended to {work / 'wh'}: rerun with --universe")
        appended = _run_phase(work, "append_ingest")
        print(f"append ingest ({APPEND_DATE}, every root): {appended['rows']:,} rows in {appended['seconds']:.1f} s")
        print("incremental build_features(wh, '1m'):")
        inc = _run_phase(work, "build", "incremental")
        _build_summary("incremental build", inc)
        full = state["full"]
        print(f"  partition files rewritten: {', '.join(inc['rewritten']) or 'none'}")
        print(f"  partition files new: {', '.join(inc['new']) or 'none'}; untouched: {len(inc['untouched'])}")
        print(f"  incremental / full build time: {inc['seconds']:.1f} / {full['seconds']:.1f} s = {inc['seconds'] / full['seconds']:.2f} wall, "
              f"{inc['cpu_seconds']:.1f} / {full['cpu_seconds']:.1f} s = {inc['cpu_seconds'] / full['cpu_seconds']:.2f} CPU")
        grew = inc["rows_after"] - inc["rows_before"]
        print(f"  features_1m rows grew by {grew:,} (appended bars {appended['rows']:,}): {'OK' if grew == appended['rows'] else 'MISMATCH'}")
        check = inc["day_check"]
        for label in ("appended", "previous"):
            c = check[label]
            print(f"  {label:8} day: {c['rows']:,} rows, non-null cells {c['non_null_cells']:,} / {c['cells']:,}; "
                  f"columns with NULLs {len(c['null_columns'])}, all-NULL {len(c['all_null_columns'])}")
        same = check["appended"]["null_columns"] == check["previous"]["null_columns"]
        print(f"  NULL-bearing columns of the appended day {'equal' if same else 'DIFFER from'} the previous day's"
              + ("" if same else f": {sorted(set(check['appended']['null_columns']) ^ set(check['previous']['null_columns']))}"))
        prev = inc["previous_day"]
        print(f"  features of {LAST_DATE} (the day before) after vs before the append: {prev['matched']:,} of {prev['rows']:,} rows, "
              f"NULL-pattern mismatches {prev['null_pattern_mismatches']}, max relative difference {prev['max_rel_diff']:.1e} "
              f"({prev['worst_column']}; summation order differs run to run, not bit-identical)")
        state.update(append_ingest=appended, incremental=inc)
        state_path.write_text(json.dumps(state, default=str))
    print(f"warehouse kept at {work / 'wh'} (remove with rm -rf {work})")


def main() -> None:
    global UNIVERSE, FIRST_DATE, SEGMENT_ROWS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-oracle", action="store_true")
    parser.add_argument("--per-family", action="store_true", help="also time base + each family alone (single-symbol mode)")
    parser.add_argument("--segments", help="segmented build with K segments (comma-separated list), against the staged build")
    parser.add_argument("--segment-workers", type=int, default=os.cpu_count() or 1, help="segments computed at once")
    parser.add_argument("--segment-threads", default="1", help="DuckDB threads per segment connection (comma-separated list)")
    parser.add_argument("--segment-processes", action="store_true", help="segments in spawned processes, not threads")
    parser.add_argument("--universe", action="store_true", help="15 roots x 2 years of 1m bars: ingest + full build")
    parser.add_argument("--append-day", action="store_true", help="append one session to every root, incremental build")
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "qe_bench_universe"))
    parser.add_argument("--roots", default=",".join(UNIVERSE), help="universe roots (default: the 15)")
    parser.add_argument("--first-date", default=FIRST_DATE, help="first trading date of the universe history")
    parser.add_argument("--segment-rows", type=int, help="universe build phases: materialize.SEGMENT_ROWS (0: unsegmented)")
    parser.add_argument("--_phase", help=argparse.SUPPRESS)
    parser.add_argument("--_kind", help=argparse.SUPPRESS)
    args = parser.parse_args()
    UNIVERSE, FIRST_DATE, SEGMENT_ROWS = tuple(args.roots.split(",")), args.first_date, args.segment_rows
    if args._phase:
        _phase(args._phase, Path(args.workdir), args._kind, args.segment_rows)
    elif args.universe or args.append_day:
        universe(args)
    else:
        single_symbol(args)


if __name__ == "__main__":
    main()
