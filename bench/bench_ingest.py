"""Ingest and query benchmark: 1,000,000 one-minute bars as Parquet, CSV and DBN.

Usage::

    python bench/bench_ingest.py [--rows 1000000] [--repeat 3]

For each format it ingests the same bars into a fresh warehouse (full validation, quarantine, atomic
partition writes) and prints the median wall time, rows/s and the ratio against a baseline measured in
the same run: DuckDB copying the same file straight to Parquet with no validation. Then it times queries
over the warehouse views against the same query on the raw Parquet files (median of 5).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from loaders.ingest import ingest
from warehouse import Warehouse

START_NS = 1_704_150_000 * 1_000_000_000 // 60_000_000_000 * 60_000_000_000  # a minute boundary, 2024-01-01


def make_bars(n: int, seed: int = 1) -> pa.Table:
    """``n`` valid ES 1-minute bars (tick grid 0.25), consecutive minutes."""
    rng = np.random.default_rng(seed)
    close = 4000 + np.round(np.cumsum(rng.normal(0, 1.0, n)) * 4) / 4
    open_ = np.concatenate([[close[0]], close[:-1]])
    high = np.maximum(open_, close) + rng.integers(0, 4, n) * 0.25
    low = np.minimum(open_, close) - rng.integers(0, 4, n) * 0.25
    ts = (START_NS + np.arange(n, dtype=np.int64) * 60_000_000_000) // 1000
    return pa.table(
        {
            "symbol": pa.array(["ESH4"] * n),
            "ts": pa.array(ts, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "open": open_, "high": high, "low": low, "close": close,
            "volume": rng.integers(1, 1000, n),
        }
    )


def write_dbn(table: pa.Table, path: Path) -> None:
    """Encode the bars as a DBN v3 ohlcv-1m file (raw_symbol ESH4, instrument 1)."""
    import databento_dbn as dbn

    n = table.num_rows
    ts_ns = table["ts"].cast(pa.int64()).to_numpy() * 1000
    meta = dbn.Metadata(
        dataset="GLBX.MDP3", start=int(ts_ns[0]), end=int(ts_ns[-1]) + 60_000_000_000, stype_in=dbn.SType.RAW_SYMBOL,
        stype_out=dbn.SType.INSTRUMENT_ID, schema=dbn.Schema.OHLCV_1M, symbols=["ESH4"], partial=[], not_found=[],
        # The encoder takes any objects with these attributes (SymbolMapping is only a Protocol).
        mappings=[SimpleNamespace(raw_symbol="ESH4", intervals=[
            SimpleNamespace(start_date=_date(ts_ns[0]), end_date=_date(ts_ns[-1] + 86_400_000_000_000), symbol="1")])],
    )
    record = np.dtype([("length", "u1"), ("rtype", "u1"), ("publisher_id", "<u2"), ("instrument_id", "<u4"), ("ts_event", "<u8"),
                       ("open", "<i8"), ("high", "<i8"), ("low", "<i8"), ("close", "<i8"), ("volume", "<u8")])
    records = np.zeros(n, record)
    records["length"], records["rtype"], records["publisher_id"], records["instrument_id"] = 14, 33, 1, 1
    records["ts_event"] = ts_ns
    for col in ("open", "high", "low", "close"):
        records[col] = np.round(table[col].to_numpy() * 1e9).astype(np.int64)
    records["volume"] = table["volume"].to_numpy()
    path.write_bytes(bytes(meta.encode()) + records.tobytes())


def _date(ns: int):  # noqa: ANN202
    import datetime as dt

    return dt.datetime.fromtimestamp(ns / 1e9, dt.timezone.utc).date()


def timed(fn, repeat: int) -> float:  # noqa: ANN001
    """Median wall time of ``fn()`` over ``repeat`` runs, seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_ingest(files: dict[str, Path], n: int, repeat: int, work: Path) -> None:
    print(f"\nIngest of {n:,} one-minute bars (median of {repeat}; fresh warehouse each run)")
    print(f"{'format':8} {'ingest s':>9} {'rows/s':>12} {'baseline s':>11} {'ratio':>6}")
    for fmt, path in files.items():
        def run() -> None:
            target = work / f"wh_{fmt}"
            shutil.rmtree(target, ignore_errors=True)
            reports = ingest(Warehouse(target), [path], timeframe="1m")
            assert reports[0].error is None and reports[0].rows_loaded == n, reports[0]

        def baseline() -> None:
            con = duckdb.connect()
            source = {"parquet": f"read_parquet('{path}')", "csv": f"read_csv('{path}')"}.get(fmt)
            if source is None:  # DBN: decode with the databento reader, write Parquet, nothing else
                import databento as db

                pq.write_table(pa.Table.from_pandas(db.DBNStore.from_file(path).to_df()), work / "baseline.parquet")
            else:
                con.execute(f"COPY (SELECT * FROM {source}) TO '{work / 'baseline.parquet'}' (FORMAT parquet)")
            con.close()

        ours, base = timed(run, repeat), timed(baseline, repeat)
        print(f"{fmt:8} {ours:9.2f} {n / ours:12,.0f} {base:11.2f} {ours / base:6.1f}")


QUERIES = {
    "count bars_1m": ("SELECT count(*) FROM bars_1m", "SELECT count(*) FROM read_parquet('{g}')"),
    "one day of bars_1m": (
        "SELECT * FROM bars_1m WHERE ts >= '2024-06-03' AND ts < '2024-06-04'",
        "SELECT * FROM read_parquet('{g}') WHERE ts >= '2024-06-03' AND ts < '2024-06-04'",
    ),
    "session_bars_1d (all)": (
        "SELECT count(*) FROM session_bars_1d",
        "SELECT count(*) FROM (SELECT CAST(timezone('America/New_York', ts) + INTERVAL 6 HOUR AS DATE) d, max(high) "
        "FROM read_parquet('{g}') GROUP BY d)",
    ),
    "bars_5m (all)": (
        "SELECT count(*) FROM bars_5m",
        "SELECT count(*) FROM (SELECT time_bucket(INTERVAL 5 MINUTE, ts) b, max(high) FROM read_parquet('{g}') GROUP BY b)",
    ),
    "bars_1m_adj_ratio avg close": ("SELECT avg(close) FROM bars_1m_adj_ratio", "SELECT avg(close) FROM read_parquet('{g}')"),
}


def bench_queries(root: Path) -> None:
    wh = Warehouse(root)
    con = wh.connect()
    raw = duckdb.connect()
    raw.execute("SET TimeZone = 'UTC'")
    glob = str(root / "bars" / "timeframe=1m" / "*" / "*" / "*.parquet")
    print("\nQuery latency over the views vs the same query on the raw Parquet files (median of 5, ms)")
    print(f"{'query':30} {'view ms':>9} {'raw ms':>9} {'ratio':>6}")
    for name, (view_sql, raw_sql) in QUERIES.items():
        ours = timed(lambda: con.sql(view_sql).fetchall(), 5)
        base = timed(lambda: raw.sql(raw_sql.format(g=glob)).fetchall(), 5)
        print(f"{name:30} {ours * 1e3:9.1f} {base * 1e3:9.1f} {ours / base:6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="qe_bench_"))
    try:
        bars = make_bars(args.rows)
        files = {"parquet": work / "bars.parquet", "csv": work / "bars.csv", "dbn": work / "bars.ohlcv-1m.dbn"}
        pq.write_table(bars, files["parquet"])
        pacsv.write_csv(bars, files["csv"])
        write_dbn(bars, files["dbn"])
        bench_ingest(files, args.rows, args.repeat, work)
        bench_queries(work / "wh_parquet")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
