"""Live loop latency: bar close -> order at the gateway, with all 150 features and a 5-root universe.

A paper session (:func:`engine.live.replay.replay_paper`: the real ib_async client, the in-process gateway
simulator on a loopback socket, the journal, the warehouse appends, the per-bar features, the kernel) trades
a strategy that changes its target on every bar of every root, so every bar sends orders. Per bar:

* close -> decided: from the moment the minute was over for the feed (it closed the first root's bar on that bar's
  last 5-second bar, which IB sends once the minute has ended; then it stores the roots' bars, validating them
  while their features are computed) to
  the kernel having sent the bar's orders;
* close -> order at the gateway: to the simulator accepting the bar's first order (what IB would see).

Baseline in the same run: the batch path for the same bar -- a full feature build over the stored history
of the 5 roots plus the query at that bar -- which is what computing the new bar's row without the live path
costs. Figures: median and p99 over the replayed bars (the first ``--skip`` bars, which warm DuckDB's caches,
are left out and counted separately).

    python bench/bench_live_loop.py --sessions 25 --bars 60
    python bench/bench_live_loop.py --sessions 22 --bars 40 --pace 2   # idle between bars, as live bars are
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.core.orders import Order  # noqa: E402
from engine.strategy import Strategy  # noqa: E402

ROOTS = ("ESH4", "NQH4", "CLJ4", "GCJ4", "ZNH4")
QUERY = """SELECT b.symbol, b.ts, b.open, b.high, b.low, b.close, b.volume, b.contract, f.* EXCLUDE (symbol, ts)
FROM bars_1m b JOIN features_1m f USING (symbol, ts)
WHERE b.symbol IN (SELECT DISTINCT symbol FROM front_segments WHERE symbol IN ('ES', 'NQ', 'CL', 'GC', 'ZN'))
  AND b.ts >= TIMESTAMPTZ '{start}'"""


class Flip(Strategy):
    """Every bar, every root: alternate long and short one contract once rsi_14 is set (orders on each bar)."""

    history_size = 0

    def __init__(self) -> None:
        super().__init__()
        self._side: dict[str, int] = {}

    def on_bar(self, bar) -> Order | None:  # noqa: ANN001
        if bar["rsi_14"] is None:
            return None
        side = -self._side.get(bar.symbol, -1)
        self._side[bar.symbol] = side
        return self.target_position(bar.symbol, side)


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=25, help="synthetic Globex sessions of history per root")
    parser.add_argument("--bars", type=int, default=60, help="minutes replayed live")
    parser.add_argument("--skip", type=int, default=3, help="first replayed bars left out of the figures")
    parser.add_argument("--pace", type=float, default=0.0,
                        help="seconds of idle wall time after each bar's orders (live bars come a minute apart; "
                             "0 replays them back to back, with the caches and allocators still warm)")
    args = parser.parse_args()

    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from engine.backtest.run import BacktestConfig
    from engine.live.replay import replay_paper
    from engine.live.session import LiveSettings
    from engine.risk import RiskLimits
    from loaders.ingest import ingest
    from tests.features_oracle.synthetic import globex_bars
    from warehouse import Warehouse
    from warehouse.features.materialize import build_features

    bars = globex_bars(symbols=ROOTS, start="2024-01-02", sessions=args.sessions, seed=21)
    day = (bars.ts.dt.tz_convert("America/New_York") + pd.Timedelta(hours=6)).dt.date
    last = day == day.max()
    history = bars[~last]
    live = bars[last].sort_values(["ts", "symbol"])
    stamps = sorted(live.ts.unique())[: args.bars]
    live = live[live.ts.isin(stamps)]
    print(f"{len(ROOTS)} roots: {len(history):,} history bars ({args.sessions - 1} sessions), "
          f"{len(stamps)} minutes replayed live ({len(live):,} bars), 150 features per bar")

    with tempfile.TemporaryDirectory(prefix="qe_bench_live_") as tmp:
        wh = Warehouse(Path(tmp) / "wh")
        path = Path(tmp) / "history.parquet"
        pq.write_table(pa.Table.from_pandas(history, preserve_index=False), path)
        [report] = ingest(wh, [path], timeframe="1m")
        assert report.error is None, report.error
        started = time.perf_counter()
        build_features(wh, "1m", full=True)
        batch_build = time.perf_counter() - started
        start = stamps[0].to_pydatetime()
        query = QUERY.format(start=start.isoformat())
        con = wh.connect()
        probe_ts = history.ts.max().to_pydatetime()
        started = time.perf_counter()
        con.sql(f"SELECT * FROM ({QUERY.format(start=probe_ts.isoformat())}) WHERE ts = $ts",
                params={"ts": probe_ts}).arrow()
        batch_query = time.perf_counter() - started
        batch = batch_build + batch_query
        print(f"baseline (batch path for one bar): full feature build {batch_build:.2f} s + query {batch_query * 1000:.0f} ms "
              f"= {batch:.2f} s")

        replay = pa.Table.from_pandas(live.assign(contract=live.symbol, symbol=live.symbol.str[:2]), preserve_index=False)
        config = BacktestConfig(timeframe="1m", initial_capital=50_000_000.0,
                                risk=RiskLimits(max_daily_loss=None, max_weekly_loss=None, max_drawdown=None))
        received: dict[str, float] = {}

        session = asyncio.run(_replay(replay_paper, wh, Flip(), query, config, replay, received, LiveSettings(
            roots=["CL", "ES", "GC", "NQ", "ZN"], bar_wait_s=0.0), args.pace))
        orders = session.kernel.orders
        first_order: dict = {}
        for order in orders:
            decided = order.ts_submitted - session.kernel.bar_ns
            ref = f"{session.run_id}/{session.strategy_label}/{order.order_id}"
            if ref in received:
                first_order[decided] = min(first_order.get(decided, float("inf")), received[ref])
        timings = session.timings[args.skip:]
        to_decided = [1000 * (t.decided - session.closed_at[t.ts]) for t in timings]
        to_order = [1000 * (first_order[int(t.ts.timestamp() * 1e9)] - session.closed_at[t.ts])
                    for t in timings if int(t.ts.timestamp() * 1e9) in first_order]
        # close -> features start ("to features"): the bars' fold (and, while a suspect bar is held, their validation);
        # the validation and the write run in a worker thread beside the features (IBBarFeed.on_arrived,
        # LiveSession.before_stored); "check left" is what of them and the hand-over to the session loop remained
        # after the features, before the query could run
        parts = {"to_features_s": [1000 * (t.featured_from - session.closed_at[t.ts]) for t in timings],
                 "features_s": [1000 * t.features_s for t in timings],
                 "check_left_s": [1000 * max(0.0, t.decided - t.query_s - t.kernel_s - t.featured_from - t.features_s)
                                  for t in timings],
                 "query_s": [1000 * t.query_s for t in timings], "kernel_s": [1000 * t.kernel_s for t in timings]}
        print(f"bars decided {len(session.decided)}, orders {len(orders)} ({len(received)} at the gateway); "
              f"figures over {len(timings)} bars (first {args.skip} left out: "
              f"{', '.join(f'{1000 * (t.decided - session.closed_at[t.ts]):.0f}' for t in session.timings[:args.skip])} ms)")
        print(f"close -> decided:          median {statistics.median(to_decided):7.1f} ms   p99 {p99(to_decided):7.1f} ms")
        if to_order:
            print(f"close -> order at gateway: median {statistics.median(to_order):7.1f} ms   p99 {p99(to_order):7.1f} ms "
                  f"({len(to_order)} bars with orders)")
        for name, values in parts.items():
            label = {"to_features": "to features", "check_left": "check left"}.get(name[:-2], name[:-2])
            print(f"  {label:11s} median {statistics.median(values):7.1f} ms   p99 {p99(values):7.1f} ms")
        print(f"ratio batch / live median: {1000 * batch / statistics.median(to_decided):.0f}x")
        wh.close()


async def _replay(replay_paper, wh, strategy, query, config, replay, received, settings,  # noqa: ANN001, ANN202
                  pace: float = 0.0):
    """The replay, with the gateway's order acceptances timed (its order listeners); ``pace`` seconds of idle wall
    time after each bar (the process sleeps: nothing runs between bars, as between live bars a minute apart)."""
    from engine.live.replay import paper_gateway

    async with paper_gateway(config, replay) as sim:
        sim.order_listeners.append(lambda order: received.setdefault(order.request.order_ref, time.perf_counter()))
        return await replay_paper(wh, strategy, query, config, replay, run_id="bench-live", settings=settings,
                                  sim=sim, bar_timeout_s=120,
                                  on_bar=(lambda running, ts: time.sleep(pace)) if pace > 0 else None)


if __name__ == "__main__":
    main()
