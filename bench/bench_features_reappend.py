"""Re-run the append of one day on an existing warehouse: forget each symbol's last trading date in the features
manifest and build again (exactly what ``build_features`` does after an ingest of one more day per symbol).

Usage::

    python bench/bench_features_reappend.py WAREHOUSE [--repeat 3] [--code DIR ...]

``WAREHOUSE`` holds 1m bars and a features build (e.g. the one ``bench_features.py --universe --append-day``
leaves under its ``--workdir``, or any ``qe_data``). With ``--code`` the runs alternate between checkouts of the
project (e.g. a ``git archive`` of an earlier commit), each in its own process, so that their figures come from
the same minutes of the same machine. Prints each run's wall and CPU seconds and the median per checkout.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

ONE_RUN = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from warehouse import Warehouse
from warehouse.features.materialize import build_features
wh = Warehouse(Path(sys.argv[2]))
path = wh.root / "features" / "timeframe=1m" / "_manifest.json"
manifest = json.loads(path.read_text())
for entry in manifest.values():
    del entry["days"][max(entry["days"])]
path.write_text(json.dumps(manifest))
wall, cpu = time.perf_counter(), time.process_time()
report = build_features(wh, "1m")
print(time.perf_counter() - wall, time.process_time() - cpu, len(report.tail), report.rows)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("warehouse", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--code", type=Path, action="append", help="project checkouts to alternate (default: this one)")
    args = parser.parse_args()
    codes = args.code or [REPO]
    runs: dict[Path, list[float]] = {code: [] for code in codes}
    # One template-check cache per checkout: checkouts of different code would otherwise clear each other's.
    caches = {code: tempfile.mkdtemp(prefix="qe_reappend_cache_") for code in codes}
    for k in range(args.repeat):
        for code in codes:
            out = subprocess.run([sys.executable, "-c", ONE_RUN, str(code), str(args.warehouse)], check=True,
                                 env={**os.environ, "QE_CACHE_DIR": caches[code]},
                                 capture_output=True, text=True).stdout.strip().splitlines()[-1].split()
            wall, cpu, symbols, rows = float(out[0]), float(out[1]), int(out[2]), int(out[3])
            runs[code].append(wall)
            print(f"{code}: run {k + 1}: {wall:.2f} s wall, {cpu:.2f} s CPU (main thread + DuckDB), "
                  f"{symbols} symbols appended, {rows:,} rows")
    for code, walls in runs.items():
        print(f"{code}: median {statistics.median(walls):.2f} s ({', '.join(f'{w:.2f}' for w in walls)})")


if __name__ == "__main__":
    main()
