"""Feature benchmark: all catalog features on 1,000,000 one-minute bars of one symbol, to Parquet.

Usage::

    python bench/bench_features.py [--rows 1000000] [--repeat 3] [--skip-oracle]

Each measurement runs in a fresh subprocess so that its peak RSS is its own. The SQL path renders the full
feature query (base + every family) and COPYs it to Parquet with DuckDB, as `qe features build` does. The
baseline, in the same run and on the same bars, is the test suite's independent numpy/pandas oracle of the
catalog. Prints median wall seconds, peak RSS and the ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
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


def run(script: str, bars: Path, out: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", script, str(bars), str(out)], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-oracle", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qe_bench_features_") as tmp:
        bars = Path(tmp) / "bars.parquet"
        make_bars(args.rows, bars)
        sql = [run(SQL_RUN, bars, Path(tmp) / "sql.parquet") for _ in range(args.repeat)]
        line = {"seconds": statistics.median(r["seconds"] for r in sql), "rss_mb": max(r["rss_mb"] for r in sql)}
        print(f"{args.rows:,} bars, {sql[0]['features']} features")
        print(f"SQL (DuckDB -> Parquet): median {line['seconds']:.2f} s over {args.repeat}, peak RSS {line['rss_mb']:.0f} MB")
        if not args.skip_oracle:
            oracle = run(ORACLE_RUN, bars, Path(tmp) / "oracle.parquet")
            print(f"oracle (numpy/pandas):   {oracle['seconds']:.2f} s, peak RSS {oracle['rss_mb']:.0f} MB, "
                  f"{oracle['features']} features")
            print(f"ratio oracle / SQL: {oracle['seconds'] / line['seconds']:.1f}x")


if __name__ == "__main__":
    main()
