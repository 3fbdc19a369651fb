"""Live per-bar feature benchmark: one new bar per root for 5 roots through ``LiveFeatures.append``, against the
bounded-tail path (``tail_features``) and the full build, in one process, on one warehouse.

Usage::

    python bench/bench_features_live.py [--sessions 25] [--bars 60] [--tail-bars 5] [--repeat 1]

Bars: the test suite's synthetic Globex 1-minute bars (tests/features_oracle/synthetic.py) for 5 roots (ES, NQ,
CL, GC, ZN; ``--sessions`` trading dates, ~1,360 bars each), ingested into a fresh warehouse with the last
``--bars`` minutes held back, then ingested too (the live loop appends a bar to the warehouse before it asks for
its features).

Phases (wall times):

1. ``LiveFeatures(wh, "1m", roots)``: loading the tails and the carried state, once;
2. one new bar per root: ``append`` of the 5 roots' bars of each held-back minute, in turn: median and p99 over
   ``--bars`` calls, with ``workers=2`` (families side by side) and ``workers=1``; every row is checked against
   the full build (catalog tolerances, identical NULLs);
3. baselines in the same run: ``tail_features`` (the previous live path) for the last ``--tail-bars`` minutes,
   and the full build over all bars (``build_features(wh, "1m", full=True)``, median of ``--repeat``);
4. where the time goes: each family's prepared statement alone on the live tails (median of 5), the batch
   build's form of the families with running sums on the same tails, the same on tails cut to 10 rows per root
   (the fixed cost of the templates' operators, whatever the tail), and DuckDB's profiler per family (operator
   time by operator type).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_features_incremental import ROOTS, ingest_frame, p99, timed  # noqa: E402


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def family_times(live, repeat: int = 5, suffix: str = "") -> dict[str, float]:  # noqa: ANN001
    """Median wall seconds of each family's prepared statement alone, on the live tails as they are. ``suffix``
    ``"_long"``: the batch build's form of the families whose per-bar statement has running sums (``has_long``)."""
    out = {}
    for tail in live._tails:
        if suffix and not tail.has_long:
            continue
        cursor = live._cursors[tail.index]
        out[tail.family.template] = timed(lambda: cursor.execute(f"EXECUTE live_q{tail.index}{suffix}").fetchall(),
                                          repeat)[0]
    return out


def profile(live, folder: Path) -> dict[str, dict[str, float]]:  # noqa: ANN001
    """Per family: DuckDB's profiler, operator time (s) summed by operator type, the number of operators of each
    type (``#TYPE``), and the query latency."""
    out = {}
    for tail in live._tails:
        cursor = live._cursors[tail.index]
        path = folder / f"profile_{tail.index}.json"
        cursor.execute("PRAGMA enable_profiling = 'json'")
        cursor.execute(f"PRAGMA profiling_output = '{path}'")
        cursor.execute("SET profiling_mode = 'detailed'")
        cursor.execute(f"EXECUTE live_q{tail.index}").fetchall()
        cursor.execute("PRAGMA disable_profiling")
        tree = json.loads(path.read_text())
        totals: dict[str, float] = {}

        def walk(node: dict) -> None:
            kind = node.get("operator_type") or node.get("operator_name") or "?"
            totals[kind] = totals.get(kind, 0.0) + float(node.get("operator_timing", 0.0))
            totals[f"#{kind}"] = totals.get(f"#{kind}", 0) + 1
            for child in node.get("children", []):
                walk(child)

        for child in tree.get("children", []):
            walk(child)
        totals["(latency)"] = float(tree.get("latency", 0.0))
        out[tail.family.template] = totals
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=25)
    parser.add_argument("--bars", type=int, default=60, help="held-back minutes appended one at a time")
    parser.add_argument("--tail-bars", type=int, default=5, help="minutes timed on the tail_features path")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()

    import os

    import pandas as pd
    import pyarrow as pa

    from tests.feature_harness import assert_matches
    from tests.features_oracle.synthetic import globex_bars
    from warehouse import Warehouse
    from warehouse.features import incremental
    from warehouse.features.live import LiveFeatures
    from warehouse.features.materialize import build_features
    from warehouse.templates import render

    bars = globex_bars(symbols=ROOTS, sessions=args.sessions, seed=21)
    stamps = sorted(bars.ts.unique())
    cut = stamps[-args.bars]
    roots = [s[:2] for s in ROOTS]
    print(f"{len(ROOTS)} roots x {args.sessions} sessions: {len(bars):,} bars, the last {args.bars} minutes "
          f"({(bars.ts >= cut).sum()} bars) appended live; load average {os.getloadavg()[0]:.1f}")

    with tempfile.TemporaryDirectory(prefix="qe_bench_live_") as tmp:
        wh = Warehouse(Path(tmp) / "wh")

        def load(frame: pd.DataFrame, name: str) -> None:
            ingest_frame(wh, frame, Path(tmp) / name)

        load(bars[bars.ts < cut], "history.parquet")
        start = time.perf_counter()
        live = LiveFeatures(wh, "1m", roots, workers=2)
        init = time.perf_counter() - start
        serial = LiveFeatures(wh, "1m", roots, workers=1)
        print(f"1. LiveFeatures(...) load: {init:.2f} s; rows per family (all roots): {live.rows()}")

        load(bars[bars.ts >= cut], "new.parquet")
        con = wh.new_connection()
        source = render("features/_source.sql", timeframe="1m")
        new = con.execute(f"SELECT * FROM ({source}) WHERE ts >= $c ORDER BY ts, symbol",
                          {"c": cut.to_pydatetime()}).to_arrow_table()
        minutes = sorted(set(new.column("ts").to_pylist()))
        by_minute = [new.filter(pa.compute.equal(new.column("ts"), pa.scalar(m, new.schema.field("ts").type)))
                     for m in minutes]

        results = {}
        for name, obj in (("workers=2", live), ("workers=1", serial)):
            calls, cpu, rows = [], [], []
            for batch in by_minute:
                before = time.process_time()
                seconds, _, table = timed(lambda: obj.append(batch))
                # CPU seconds of the whole process (every DuckDB thread): what the call costs on an idle machine.
                cpu.append(time.process_time() - before)
                calls.append(seconds)
                rows.append(table)
            results[name] = (calls, pa.concat_tables(rows))
            print(f"2. one new bar per root, LiveFeatures.append ({name}), {len(calls)} calls of "
                  f"{new.num_rows / len(calls):.1f} rows: median {ms(statistics.median(calls))}, p99 {ms(p99(calls))}, "
                  f"max {ms(max(calls))}; CPU per call median {ms(statistics.median(cpu))}")
        seconds, _, _ = timed(serial.trim)
        print(f"   trim() (cut the tails back to their bound; once a day in append, or in the daily halt): {ms(seconds)}")

        # Baselines: the tail path, then the full build (which also gives the oracle rows).
        con.execute(f"CREATE TEMP TABLE src AS {source}")
        registry = incremental.shipped_registry("1m")
        tail_calls = []
        for m in minutes[-args.tail_bars:]:
            con.execute(f"CREATE OR REPLACE TEMP VIEW upto AS SELECT * FROM src WHERE ts <= TIMESTAMPTZ '{m.isoformat()}'")
            tail_calls.append(timed(lambda: incremental.tail_features(con, "upto", "1m", m, roots, registry))[0])
        full, runs, _ = timed(lambda: build_features(wh, "1m", full=True), args.repeat)
        wh.refresh()
        want = wh.sql("SELECT * FROM features_1m WHERE ts >= ? ORDER BY symbol, ts", [cut.to_pydatetime()]).to_pandas()
        for name, (_, table) in results.items():
            got = table.to_pandas().sort_values(["symbol", "ts"]).reset_index(drop=True)
            assert got[["symbol", "ts"]].equals(want[["symbol", "ts"]]), name
            assert_matches(got, want, list(want.columns[2:]), label=f"[{name}] ")
        live_median = statistics.median(results["workers=1"][0])  # the default
        print(f"   every live row equals the full build (150 features, catalog tolerances, identical NULLs)")
        print(f"3. baselines: tail_features median {ms(statistics.median(tail_calls))} ({len(tail_calls)} calls) = "
              f"{statistics.median(tail_calls) / live_median:.1f}x LiveFeatures (workers=1); full build over all bars median "
              f"{full:.2f} s ({', '.join(f'{t:.2f}' for t in runs)}) = {full / live_median:.0f}x")

        print("4. per family (prepared statement alone, median of 5), on the live tails / on 10 rows per root:")
        on_tails = family_times(serial)
        batch_form = family_times(serial, suffix="_long")
        profiles = profile(serial, Path(tmp))
        for tail in serial._tails:
            serial._con.execute(
                f"DELETE FROM {tail.table} AS t USING (SELECT symbol, min(ts) AS keep FROM (SELECT symbol, ts FROM "
                f"{tail.table} QUALIFY row_number() OVER (PARTITION BY symbol ORDER BY ts DESC) <= 10) GROUP BY symbol) "
                "AS k WHERE t.symbol = k.symbol AND t.ts < k.keep")
        floor = family_times(serial)
        small = profile(serial, Path(tmp))
        for name, seconds in on_tails.items():
            top = sorted(((v, k) for k, v in profiles[name].items() if k[0] not in "(#"), reverse=True)[:3]
            print(f"   {name:30} {ms(seconds):>7} / {ms(floor[name]):>6}   profiler: "
                  + ", ".join(f"{k} {v * 1000:.0f} ms" for v, k in top))
        print("   the same families in the batch build's form (lag / block-carry sums, for tables past RUNNING_ROWS), "
              "on the live tails: " + ", ".join(f"{name} {ms(seconds)} (running sums {ms(on_tails[name])})"
                                                for name, seconds in batch_form.items()))
        print(f"   sum {ms(sum(on_tails.values()))} / {ms(sum(floor.values()))}; load average now "
              f"{os.getloadavg()[0]:.1f}")
        windows = sum(p.get("#WINDOW", 0) for p in small.values())
        window_ms = sum(p.get("WINDOW", 0.0) for p in small.values()) * 1000
        operators = sum(v for p in small.values() for k, v in p.items() if k.startswith("#"))
        operator_ms = sum(v for p in small.values() for k, v in p.items() if k[0] not in "(#") * 1000
        latency = sum(p["(latency)"] for p in small.values()) * 1000
        print(f"   on 10 rows per root (profiler): {operators} operators take {operator_ms:.0f} ms of {latency:.0f} ms; "
              f"{windows} WINDOW operators {window_ms:.0f} ms ({window_ms / max(windows, 1):.1f} ms each)")
        live.close()
        serial.close()


if __name__ == "__main__":
    main()
