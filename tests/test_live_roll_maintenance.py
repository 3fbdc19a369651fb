"""Roll maintenance of a running session, against the gateway simulator with the real ib_async client, on the real
Dec-2013 ESZ3 -> ESH4 roll of the shipped LEAN ES minutes, with the per-bar features on.

The warehouse's roll table was built from 2013-12-03 (ESZ3 the front, no roll). It also holds the bars of
2013-12-18 before 21:00 UTC of both contracts, stored without rebuilding the table (as a live session's own
appends leave it): the session starts at 21:00 not knowing the roll, trading ESZ3 and streaming ESH4 (the
contract after the front) beside it. At the daily halt (22:00 UTC) the maintenance rebuilds the table from the
stored bars, the ones stored live included: ESH4 out-traded ESZ3 on trading date 2013-12-18, so the volume rule
rolls at the next session's open, 23:00 UTC, with the roll prices of the last common bar, stored live. The first
bar of that session rolls the position with two journaled market orders; the features of the bars after the roll
equal the batch build over the same stored bars.
"""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from engine.backtest.run import BacktestConfig, run_backtest
from engine.live.control import post_command, session_dir
from engine.live.maintenance import last_closed_session, next_contract, next_session_open
from engine.live.replay import paper_gateway, replay_paper
from engine.live.session import LiveSettings
from engine.risk import RiskState
from loaders.ingest import ingest
from tests.feature_harness import assert_matches, catalog
from tests.test_live_rolls import HoldOne, roll_day
from warehouse import Warehouse
from warehouse.features.materialize import build_features
from warehouse.rolls import front_contracts

START = datetime(2013, 12, 18, 21, 0, tzinfo=timezone.utc)
END = datetime(2013, 12, 18, 23, 5, tzinfo=timezone.utc)
HALT = datetime(2013, 12, 18, 22, 0, tzinfo=timezone.utc)
ROLL_TS = datetime(2013, 12, 18, 23, 0, tzinfo=timezone.utc)
QUERY = f"""
SELECT b.symbol, b.ts, b.open, b.high, b.low, b.close, b.volume, b.contract, f.* EXCLUDE (symbol, ts)
FROM bars_1m b JOIN features_1m f USING (symbol, ts)
WHERE b.symbol = 'ES' AND b.ts >= TIMESTAMPTZ '{START.isoformat()}'
"""
CONFIG = BacktestConfig(timeframe="1m", initial_capital=2_000_000.0)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The replayed bars (both contracts, 21:00-23:05) and a Parquet file of 2013-12-18 before 21:00."""
    base = tmp_path_factory.mktemp("maintenance")
    bars, earlier, history = roll_day(base, START, END)
    today = base / "today-src"
    today.mkdir()
    pq.write_table(earlier, today / "es_20131218_before_2100.parquet")
    return {"bars": bars, "history": history, "today": today}


def _warehouse(root: Path, source: dict) -> Warehouse:
    """2013-12-03 with its roll table (ESZ3, no roll), then 2013-12-18 before 21:00 stored without a rebuild."""
    wh = Warehouse(root)
    ingest(wh, [source["history"]])  # builds the roll table: volume rule
    ingest(wh, [source["today"]], build_rolls=False)
    return wh


def test_the_contract_calendar_helpers() -> None:
    assert next_contract("ESZ3", date(2013, 12, 18)) == "ESH4"
    assert next_contract("ESH4", date(2013, 12, 18)) == "ESM4"
    assert next_contract("CLZ3", date(2013, 11, 1)) == "CLF4"  # a monthly cycle
    assert next_contract("ES", date(2013, 12, 18)) is None
    in_halt = datetime(2013, 12, 18, 22, 30, tzinfo=timezone.utc)
    assert last_closed_session("ES", in_halt) == date(2013, 12, 18)
    assert next_session_open("ES", in_halt) == ROLL_TS
    saturday = datetime(2013, 12, 21, 12, 0, tzinfo=timezone.utc)  # the weekend is one halt, after Friday's close
    assert last_closed_session("ES", saturday) == date(2013, 12, 20)
    assert next_session_open("ES", saturday) == datetime(2013, 12, 22, 23, 0, tzinfo=timezone.utc)


def test_a_running_session_learns_the_roll_in_the_daily_halt_and_rolls_at_the_next_sessions_first_bar(
        tmp_path: Path, source: dict) -> None:
    bars = source["bars"]
    wh = _warehouse(tmp_path / "wh", source)
    assert wh.sql("SELECT * FROM rolls WHERE symbol = 'ES'").num_rows == 0
    assert front_contracts(wh, ["ES"]) == {"ES": "ESZ3"}
    build_features(wh, "1m")
    settings = LiveSettings(bar_wait_s=0.0, roots=["ES"], features=True)
    streamed_at_start: list[str] = []

    def look(running, ts) -> None:  # noqa: ANN001
        if not streamed_at_start:
            streamed_at_start.extend(c.localSymbol for _, c in running.feed.contracts)

    async def scenario():  # noqa: ANN202
        async with paper_gateway(CONFIG, bars) as sim:
            session = await replay_paper(wh, HoldOne(), QUERY, CONFIG, bars, run_id="maint-1", settings=settings,
                                         sim=sim, on_bar=look)
            return session, [o.request.order_ref for o in sim.placed]

    session, refs = asyncio.run(asyncio.wait_for(scenario(), 300))
    kernel = session.kernel
    assert streamed_at_start == ["ESZ3", "ESH4"]  # the front and the contract after it

    # one pass, in the halt after trading date 2013-12-18: the roll table rebuilt from the bars stored live
    maintenance = session.maintenance
    [report] = maintenance.reports
    assert (report.reason, report.day, report.failed) == ("halt", date(2013, 12, 18), None)
    assert HALT <= report.at < ROLL_TS
    assert report.fronts == {"ES": ("ESH4", "ESM4")}
    codes = [change.split(" ", 1)[0] for change in report.changes]
    assert codes == ["ROLL_SCHEDULED", "STREAM_ADDED", "FEATURES_RELOADED"]
    assert "ESZ3 -> ESH4 at 2013-12-18T23:00:00+00:00" in report.changes[0]
    assert "ESM4" in report.changes[1]
    assert [c.localSymbol for _, c in maintenance.feed.contracts] == ["ESZ3", "ESH4", "ESM4"]
    [roll] = wh.sql("SELECT * FROM rolls WHERE symbol = 'ES'").to_pylist()
    assert (roll["from_contract"], roll["to_contract"], roll["roll_ts"], roll["rule"]) == \
        ("ESZ3", "ESH4", ROLL_TS, "volume")
    # its prices are both contracts' closes on their last common bar: one the session stored live
    assert START <= roll["price_ts"] < HALT
    at_price = {r["contract"]: r["close"] for r in bars.to_pylist() if r["ts"] == roll["price_ts"]}
    assert (roll["from_price"], roll["to_price"]) == (at_price["ESZ3"], at_price["ESH4"])

    # the kernel rolled at the roll table's bar, the first of the next session: two journaled market orders
    sent = [e for e in kernel.events if e[2] == "ROLL_SENT"]
    assert [e[0] for e in sent] == [int(ROLL_TS.timestamp() * 1e9)]
    assert "ROLL_DONE" in [e[2] for e in kernel.events] and "ROLL_FAILED" not in [e[2] for e in kernel.events]
    journal = wh.sql("SELECT order_ref, contract, quantity FROM order_journal ORDER BY order_id").to_pylist()
    assert [(r["contract"], r["quantity"]) for r in journal] == [("ESZ3", 1), ("ESZ3", -1), ("ESH4", 1)]
    assert [r["order_ref"] for r in journal] == refs
    first_after = {c: next(r["open"] for r in bars.to_pylist() if r["contract"] == c and r["ts"] > ROLL_TS)
                   for c in ("ESZ3", "ESH4")}
    assert [(f.kind, f.contract, f.quantity) for f in kernel.portfolio.fills] == [
        ("order", "ESZ3", 1), ("roll_out", "ESZ3", -1), ("roll_in", "ESH4", 1)]
    assert [f.price for f in kernel.portfolio.fills[1:]] == [first_after["ESZ3"], first_after["ESH4"]]
    pos = kernel.portfolio.positions["ES"]
    assert (pos.contract, pos.quantity) == ("ESH4", 1)
    assert session.handler.traded_contract("ES") == "ESH4"
    assert kernel.risk.state is RiskState.ACTIVE

    # a backtest of the same query over the same stored bars (the rebuilt table) rolls at the same bar
    build_features(wh, "1m")
    backtest = run_backtest(wh, QUERY, HoldOne(), CONFIG, record=False)
    bt_fills = backtest.tables["fills"].to_pylist()
    assert [(f["kind"], f["contract"], f["quantity"]) for f in bt_fills] == [
        ("order", "ESZ3", 1), ("roll_out", "ESZ3", -1), ("roll_in", "ESH4", 1)]
    assert {f["ts"] for f in bt_fills if f["kind"] != "order"} == {ROLL_TS}

    # the live features of the bars after the roll equal the batch build over the same stored bars
    live = session.rows.live_features().to_pandas()
    live = live[live["ts"] >= ROLL_TS].sort_values("ts").reset_index(drop=True)
    batch = wh.sql("SELECT * FROM features_1m WHERE symbol = 'ES' AND ts >= $t ORDER BY ts", {"t": ROLL_TS}).to_pandas()
    assert len(live) == len(batch) == len({r["ts"] for r in bars.to_pylist() if r["ts"] >= ROLL_TS})
    columns = [c for c in catalog() if c in batch.columns]
    assert len(columns) == 150
    assert_matches(live, batch, columns, "live after the roll vs batch")
    wh.close()


def test_the_operator_asks_for_roll_maintenance_between_bars(tmp_path: Path, source: dict) -> None:
    """``qe live rolls`` mid-session: the pass runs between the next bars (market open), the roll table learns
    the roll (the day's volumes so far already cross) and the contract after the next front is streamed."""
    bars = source["bars"]
    window = bars.filter([t < datetime(2013, 12, 18, 21, 8, tzinfo=timezone.utc) for t in bars["ts"].to_pylist()])
    wh = _warehouse(tmp_path / "wh", source)
    settings = LiveSettings(bar_wait_s=0.0, roots=["ES"], features=False)
    run_id = "maint-operator"
    directory = session_dir(Path(wh.root), run_id)
    posted: list[str] = []

    def ask(running, ts) -> None:  # noqa: ANN001
        if not posted:
            posted.append(post_command(directory, "rolls"))

    async def scenario():  # noqa: ANN202
        async with paper_gateway(CONFIG, window) as sim:
            return await replay_paper(wh, HoldOne(), QUERY.replace("JOIN features_1m f USING (symbol, ts)", "")
                                      .replace(", f.* EXCLUDE (symbol, ts)", ""), CONFIG, window, run_id=run_id,
                                      settings=settings, sim=sim, on_bar=ask)

    session = asyncio.run(asyncio.wait_for(scenario(), 240))
    [report] = session.maintenance.reports
    assert (report.reason, report.failed) == ("operator", None)
    assert report.fronts == {"ES": ("ESH4", "ESM4")}
    assert [change.split(" ", 1)[0] for change in report.changes] == ["ROLL_SCHEDULED", "STREAM_ADDED"]
    assert session.front_at("ES", ROLL_TS) == "ESH4"
    assert session.operator.last_command is not None and session.operator.last_command.ok
    wh.close()
