"""``qe demo --paper``: paper trading through the gateway simulator on shipped real bars, offline.

The shipped LEAN minute bars of ES (CME, October 2013) become the demo's MES bars: the same prices under the
micro contract (MES tracks the same index at a fifth of the multiplier; it was listed only in 2019, so the
bars are ES's, relabelled, and the demo says so). Four days are stored as history; then the morning of
2013-10-10 is replayed through the in-process gateway simulator as IB streams it (5-second bars), and
:class:`~engine.strategies.feature_band.FeatureBand` trades one MES contract on ``rsi_14`` through the house
risk limits: the live session's real code path (the ib_async client on a loopback socket, the journal, the
per-bar features, the kernel). Then the session summary, the attribution against the backtest of the same
bars, and the HTML report.
"""

from __future__ import annotations

import asyncio
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.console import Console
from rich.text import Text

from engine.cli.output import print_table
from engine.core.instruments import InstrumentOverride
from engine.results.ledger import new_run_id
from loaders.ingest import ingest
from warehouse.features.materialize import build_features
from warehouse import Warehouse

__all__ = ["run_paper_demo", "DEMO_QUERY"]

#: The session's query: the bars joined with their features, the same SQL a backtest of it would run.
DEMO_QUERY = """SELECT b.symbol, b.ts, b.open, b.high, b.low, b.close, b.volume, b.contract, f.rsi_14
FROM bars_1m b JOIN features_1m f USING (symbol, ts)
WHERE b.symbol = 'MES' AND b.ts >= TIMESTAMPTZ '{start}'"""
#: The replayed morning: from the RTH open of 2013-10-10 (13:30 UTC).
REPLAY_START = datetime(2013, 10, 10, 13, 30, tzinfo=timezone.utc)
_HISTORY_DAYS = ("20131006", "20131007", "20131008", "20131009", "20131010")


def mes_bars(samples: Path) -> pa.Table:
    """The shipped ES minute bars of 2013-10-06..10 (front ESZ3) as MES bars (symbol MES, contract MESZ3)."""
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "lean"
        source.mkdir()
        for day in _HISTORY_DAYS:
            (source / f"{day}_trade.zip").write_bytes((samples / "minute" / f"{day}_trade.zip").read_bytes())
        wh = Warehouse(Path(scratch) / "wh")
        try:
            ingest(wh, [source], build_rolls=False)
            es = wh.sql("SELECT ts, open, high, low, close, volume FROM contract_bars_1m WHERE contract = 'ESZ3' "
                        "ORDER BY ts")
        finally:
            wh.close()
    n = es.num_rows
    return es.add_column(0, "symbol", pa.array(["MES"] * n)).add_column(1, "contract", pa.array(["MESZ3"] * n))


def first_listed_terms(root: str) -> InstrumentOverride:
    """``root``'s fee and margin as the contract tables first list them: the terms of bars older than the
    product (the demo's 2013 MES), stated in the run's config rather than invented."""
    from engine.core.instruments import EPOCH, InstrumentBook
    from warehouse.contracts import first_effective_date

    book = InstrumentBook()
    fee_day = (first_effective_date("fees", root) - EPOCH).days
    margin_day = (first_effective_date("margins", root) - EPOCH).days
    return InstrumentOverride(fee_per_side=book.fee_per_side(root, fee_day),
                              initial_margin=book.initial_margin(root, margin_day))


def run_paper_demo(wh: Warehouse, console: Console, samples: Path, bars: int = 90) -> str:
    """Store the MES history, replay ``bars`` minutes of 2013-10-10 as a paper session; returns its run id."""
    from engine.backtest.run import BacktestConfig
    from engine.live.attribution import attribute
    from engine.live.replay import replay_paper
    from engine.live.session import LiveSettings
    from engine.risk import RiskLimits
    from engine.strategies.feature_band import FeatureBand

    console.print(Text.assemble(("quant-engine paper demo", "bold"), f" — warehouse {wh.root}"))
    console.print("MES bars: the real CME ES minute bars of October 2013 (LEAN sample data) relabelled as MES "
                  "(same prices; MES itself listed in 2019). Gateway: the in-process IB simulator; no network, "
                  "no account.")
    everything = mes_bars(samples / "lean-es-cme")
    before = pc.less(everything["ts"], pa.scalar(REPLAY_START, pa.timestamp("us", tz="UTC")))
    history, replay = everything.filter(before), everything.filter(pc.invert(before)).slice(0, bars)
    staged = wh.root / "samples" / "mes_history_1m.parquet"
    staged.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(history, staged)
    ingest(wh, [staged], timeframe="1m")
    build_features(wh, "1m")  # the history's features, as `qe features build -t 1m` would store them
    console.print(f"History: {history.num_rows:,} MES minute bars up to {REPLAY_START:%Y-%m-%d %H:%M} UTC stored; "
                  f"replaying the next {replay.num_rows} minutes as 5-second bars.")
    query = DEMO_QUERY.format(start=REPLAY_START.isoformat())
    config = BacktestConfig(timeframe="1m", initial_capital=250_000.0, risk=RiskLimits(),
                            instruments={"MES": first_listed_terms("MES")})
    strategy = FeatureBand(feature="rsi_14", low=40.0, high=60.0, exit_low=48.0, exit_high=52.0, quantity=1)
    run_id = new_run_id()
    session = asyncio.run(replay_paper(wh, strategy, query, config, replay, run_id=run_id,
                                       settings=LiveSettings(roots=["MES"], bar_wait_s=0.0)))
    _summary(console, session)
    gap = attribute(wh, run_id)
    console.print(f"Attribution against the backtest of the same bars: live P&L {gap.live_pnl:,.2f}, backtest "
                  f"{gap.backtest_pnl:,.2f}, unexplained {gap.unexplained:,.2f}.")
    return run_id


def _summary(console: Console, session) -> None:  # noqa: ANN001
    kernel = session.kernel
    timings = session.timings
    decide_ms = sorted(1000 * (t.decided - t.stored) for t in timings)
    orders = kernel.orders
    print_table(pa.table({
        "bars decided": [len(session.decided)],
        "orders": [len(orders)],
        "filled": [sum(1 for o in orders if o.filled)],
        "denied": [sum(1 for o in orders if o.status.value == "DENIED")],
        "position": [kernel.portfolio.position("MES")],
        "equity": [round(kernel.portfolio.equity, 2)],
        "commissions": [round(kernel.portfolio.commissions, 2)],
        "bar stored→decided median ms": [round(decide_ms[len(decide_ms) // 2], 1) if decide_ms else None],
    }), console, title=f"Paper session {session.run_id}")
