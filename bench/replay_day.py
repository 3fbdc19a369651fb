"""A whole day of shipped real bars through the live path, checked bar by bar against the batch path.

The real ES minute bars of one UTC day (LEAN sample data, front ESZ3) are replayed through the gateway
simulator (`engine.live.replay.replay_paper`: the ib_async client on a loopback socket, 5-second bars, the
warehouse appends, the per-bar features, the kernel) after the four days before it were stored. Then:

1. every replayed bar's 150 live features against the batch build over the same stored bars (catalog
   tolerances, identical NULLs), counting the bars and features that differ;
2. the session's orders and fills against a backtest of the same strategy and query;
3. the attribution's unexplained P&L.

    python bench/replay_day.py --day 20131010            # the whole day (about 1,400 bars)
    python bench/replay_day.py --day 20131010 --bars 200
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LEAN = REPO / "engine" / "sample_data" / "lean-es-cme" / "minute"
QUERY = """SELECT b.symbol, b.ts, b.open, b.high, b.low, b.close, b.volume, b.contract, f.* EXCLUDE (symbol, ts)
FROM bars_1m b JOIN features_1m f USING (symbol, ts)
WHERE b.symbol = 'ES' AND b.ts >= TIMESTAMPTZ '{start}'"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--day", default="20131010")
    parser.add_argument("--history", default="20131006,20131007,20131008,20131009")
    parser.add_argument("--bars", type=int, default=None, help="replay only the first N bars of the day")
    args = parser.parse_args()

    import numpy as np

    from engine.backtest.run import BacktestConfig, run_backtest
    from engine.live.attribution import attribute
    from engine.live.replay import replay_paper
    from engine.live.session import LiveSettings
    from engine.strategies.feature_band import FeatureBand
    from loaders.ingest import ingest
    from tests.feature_harness import catalog
    from warehouse import Warehouse
    from warehouse.features.materialize import build_features

    with tempfile.TemporaryDirectory(prefix="qe_replay_day_") as tmp:
        def warehouse(name: str, days: list[str]) -> Warehouse:
            source = Path(tmp) / f"{name}-src"
            source.mkdir()
            for day in days:
                shutil.copy(LEAN / f"{day}_trade.zip", source)
            wh = Warehouse(Path(tmp) / name)
            ingest(wh, [source])
            return wh

        day = warehouse("day", [args.day])
        bars = day.sql("SELECT symbol, contract, ts, open, high, low, close, volume FROM contract_bars_1m "
                       "WHERE contract = 'ESZ3' ORDER BY ts" + (f" LIMIT {args.bars}" if args.bars else ""))
        day.close()
        wh = warehouse("wh", args.history.split(","))
        build_features(wh, "1m")
        start = bars["ts"][0].as_py()
        query = QUERY.format(start=start.isoformat())
        config = BacktestConfig(timeframe="1m", initial_capital=2_000_000.0)
        params = dict(low=40.0, high=60.0, exit_low=48.0, exit_high=52.0)
        print(f"replaying {bars.num_rows} ESZ3 minutes of {args.day} through the gateway simulator ...", flush=True)
        began = time.perf_counter()
        session = asyncio.run(replay_paper(wh, FeatureBand(**params), query, config, bars, run_id="replay-day",
                                           settings=LiveSettings(bar_wait_s=0.0, roots=["ES"]), bar_timeout_s=120))
        wall = time.perf_counter() - began
        live = session.rows.live_features().to_pandas().sort_values("ts").reset_index(drop=True)
        build_features(wh, "1m")
        batch = wh.sql("SELECT * FROM features_1m WHERE symbol = 'ES' AND ts >= $first ORDER BY ts",
                       {"first": start}).to_pandas()
        specs = catalog()
        columns = [c for c in specs if c in batch.columns]
        both = live[["ts"]].merge(batch[["ts"]], on="ts")
        print(f"rows: {len(live)} live, {len(batch)} batch, {len(both)} at the same bars")
        live = live.merge(both, on="ts").sort_values("ts").reset_index(drop=True)
        batch = batch.merge(both, on="ts").sort_values("ts").reset_index(drop=True)
        bad_bars: set = set()
        bad_features: set = set()
        for name in columns:
            a = live[name].to_numpy(dtype=float)
            b = batch[name].to_numpy(dtype=float)
            tol = specs[name]
            nulls = np.isnan(a) != np.isnan(b)
            both = ~np.isnan(a) & ~np.isnan(b)
            off = np.zeros(len(a), bool)
            if tol["exact"]:
                off[both] = a[both] != b[both]
            else:
                off[both] = np.abs(a[both] - b[both]) > tol["atol"] + tol["rtol"] * np.abs(b[both])
            wrong = nulls | off
            if wrong.any():
                bad_features.add(name)
                bad_bars.update(live.ts[wrong].tolist())
        print(f"features: {len(live)} live rows, {len(batch)} batch rows, {len(columns)} catalog columns; "
              f"bars with any difference: {len(bad_bars)}; features that differ: {sorted(bad_features) or 'none'}")
        backtest = run_backtest(wh, query, FeatureBand(**params), config, record=False)
        keys = ["order_id", "ts_submitted", "symbol", "quantity", "order_type", "status", "filled_quantity"]
        tables = session.result().tables
        same_orders = tables["orders"].select(keys).to_pylist() == backtest.tables["orders"].select(keys).to_pylist()
        fills = ["order_id", "ts", "quantity", "price", "commission"]
        same_fills = tables["fills"].select(fills).to_pylist() == backtest.tables["fills"].select(fills).to_pylist()
        print(f"orders {tables['orders'].num_rows} (equal to the backtest: {same_orders}), fills "
              f"{tables['fills'].num_rows} (equal: {same_fills})")
        gap = attribute(wh, session.run_id)
        print(f"attribution: live P&L {gap.live_pnl:,.2f}, backtest {gap.backtest_pnl:,.2f}, "
              f"unexplained {gap.unexplained:,.2f}")
        decide = [1000 * (t.decided - session.closed_at[t.ts]) for t in session.timings]
        print(f"wall {wall:.0f} s for {len(session.decided)} bars; close -> decided median "
              f"{statistics.median(decide):.0f} ms, max {max(decide):.0f} ms")
        wh.close()


if __name__ == "__main__":
    main()
