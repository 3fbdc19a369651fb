"""The live session against the gateway simulator with the real ib_async client: real ES minute bars of
2013-10-10 replayed as IB streams them (5-second bars), traded bar by bar; the oracle is the backtest of the
same strategy and query over the same stored bars, and the batch feature build over them."""

from __future__ import annotations

import asyncio
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from engine.backtest.run import BacktestConfig, run_backtest
from engine.live.bars import FinalBar
from engine.live.checkpoint import CHECKPOINT_FILE, load_checkpoint
from engine.live.control import session_dir
from engine.live.replay import paper_gateway, replay_paper
from engine.live.runner import Running
from engine.live.session import LiveSettings
from engine.strategies.feature_band import FeatureBand
from loaders.ingest import ingest
from tests.conftest import LEAN
from tests.feature_harness import assert_matches, catalog
from warehouse.sessions import trading_date
from warehouse import Warehouse
from warehouse.features.materialize import build_features

QUERY = """
SELECT b.symbol, b.ts, b.open, b.high, b.low, b.close, b.volume, b.contract, f.* EXCLUDE (symbol, ts)
FROM bars_1m b JOIN features_1m f USING (symbol, ts)
WHERE b.symbol = 'ES' AND b.ts >= TIMESTAMPTZ '{start}'
"""
REPLAY_DAY = "20131010"
BARS = 40


def _warehouse(root: Path, days: list[str]) -> Warehouse:
    source = root.parent / f"{root.name}-src"
    source.mkdir(parents=True)
    for day in days:
        shutil.copy(LEAN / "minute" / f"{day}_trade.zip", source)
    wh = Warehouse(root)
    ingest(wh, [source])
    return wh


def _final_bar(row: dict) -> FinalBar:
    """A replayed minute row as the feed hands a final bar over (twelve 5-second parts)."""
    return FinalBar(row["symbol"], row["contract"], row["ts"], row["ts"] + timedelta(minutes=1), trading_date(row["ts"]),
                    row["open"], row["high"], row["low"], row["close"], int(row["volume"]), 12)


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """History up to 2013-10-09 in the warehouse; the first bars of 2013-10-10 (ESZ3) replayed live."""
    base = tmp_path_factory.mktemp("live")
    day = _warehouse(base / "day", [REPLAY_DAY])
    bars = day.sql("SELECT symbol, contract, ts, open, high, low, close, volume FROM contract_bars_1m "
                   "WHERE contract = 'ESZ3' ORDER BY ts LIMIT $n", {"n": BARS})
    day.close()
    wh = _warehouse(base / "wh", ["20131006", "20131007", "20131008", "20131009"])
    build_features(wh, "1m")
    start = bars["ts"][0].as_py()
    query = QUERY.format(start=start.isoformat())
    config = BacktestConfig(timeframe="1m", initial_capital=2_000_000.0)  # one ES contract within the house limits
    # a band tight enough to trade a few times in 40 minutes
    params = dict(low=45.0, high=55.0, exit_low=49.0, exit_high=51.0)
    failed_write = []

    def fail_one_write(running: Running, ts: datetime) -> None:
        """After the 10th bar: the next bar featured as if handed over, then its write reported failed (the
        session reloads its features from the warehouse; the bar then arrives and is featured as usual)."""
        if len(running.session.decided) == 10:
            k = running.session.decided.index(ts) + 1
            bar = _final_bar(bars.slice(k, 1).to_pylist()[0])
            running.session.before_stored([bar])
            running.session.not_stored([bar])
            failed_write.append(bar.ts)

    checkpoint = session_dir(Path(wh.root), "live-test-1") / CHECKPOINT_FILE
    checkpointed_at_gateway: dict[str, int] = {}  # orderRef -> bars the checkpoint held when the gateway took it

    def on_order(order) -> None:  # noqa: ANN001
        state = load_checkpoint(checkpoint)
        checkpointed_at_gateway[order.request.order_ref] = len(state.decided) if state else 0

    async def replay():  # noqa: ANN202
        async with paper_gateway(config, bars) as sim:
            sim.order_listeners.append(on_order)
            return await replay_paper(
                wh, FeatureBand(**params), query, config, bars, run_id="live-test-1", on_bar=fail_one_write,
                sim=sim, settings=LiveSettings(bar_wait_s=0.0, roots=["ES"], feature_trim_every=15))

    session = asyncio.run(asyncio.wait_for(replay(), 240))
    assert len(failed_write) == 1
    live_features = session.rows.live_features()
    build_features(wh, "1m")  # the batch build over the same stored bars (the replayed ones included)
    backtest = run_backtest(wh, query, FeatureBand(**params), config, record=False)
    yield {"wh": wh, "bars": bars, "session": session, "backtest": backtest, "features": live_features,
           "query": query, "failed_write": failed_write, "checkpointed_at_gateway": checkpointed_at_gateway}
    wh.close()


def test_every_replayed_bar_is_stored_and_decided_in_order(replayed: dict) -> None:
    bars, session, wh = replayed["bars"], replayed["session"], replayed["wh"]
    expected = [t.as_py() for t in bars["ts"]]
    assert session.decided == expected
    stored = wh.sql("SELECT ts, open, high, low, close, volume FROM contract_bars_1m WHERE contract = 'ESZ3' "
                    "AND ts >= $first ORDER BY ts", {"first": expected[0]})
    assert stored.to_pylist() == bars.select(["ts", "open", "high", "low", "close", "volume"]).to_pylist()


def test_live_features_equal_the_batch_build_for_every_bar(replayed: dict) -> None:
    """Every bar's features were computed while it was being written (and one bar featured before a write
    reported failed, whose features were then reloaded, changes nothing; nor do the trims between bars)."""
    assert replayed["session"].featured_early == BARS + len(replayed["failed_write"])
    assert replayed["session"].feature_trims >= 2  # tails cut back between bars (every 15 bars here)
    live = replayed["features"].to_pandas()
    batch = replayed["wh"].sql(
        "SELECT * FROM features_1m WHERE symbol = 'ES' AND ts >= $first ORDER BY ts",
        {"first": replayed["bars"]["ts"][0].as_py()}).to_pandas()
    assert len(live) == len(batch) == BARS
    columns = [c for c in catalog() if c in batch.columns]
    assert len(columns) == 150
    assert_matches(live.reset_index(drop=True), batch.reset_index(drop=True), columns, "live vs batch")


def test_live_orders_and_fills_equal_the_backtest_of_the_same_bars(replayed: dict) -> None:
    session, backtest = replayed["session"], replayed["backtest"]
    live_tables = session.result().tables
    keys = ["order_id", "ts_submitted", "symbol", "quantity", "order_type"]
    live_orders = live_tables["orders"].select(keys).to_pylist()
    bt_orders = backtest.tables["orders"].select(keys).to_pylist()
    assert len(live_orders) >= 2, "the strategy should trade in the replayed window"
    assert live_orders == bt_orders
    fill_keys = ["order_id", "symbol", "contract", "quantity", "price", "commission"]
    live_fills = live_tables["fills"].select(fill_keys).to_pylist()
    bt_fills = backtest.tables["fills"].select(fill_keys).to_pylist()
    assert live_fills == bt_fills
    assert len(live_fills) >= 1


def test_a_bars_orders_reach_the_gateway_before_its_bookkeeping(replayed: dict) -> None:
    """The checkpoint (and the status and ledger writes) of a bar come after its orders are at the gateway:
    when the gateway took each order, the checkpoint did not hold the bar the order was decided on yet."""
    session, seen = replayed["session"], replayed["checkpointed_at_gateway"]
    orders = [o for o in session.kernel.orders if not o.parent_id]
    assert len(orders) >= 2 and len(seen) == len(session.handler.sent_at)
    for order in orders:
        ref = f"{session.run_id}/{session.strategy_label}/{order.order_id}"
        decided = datetime.fromtimestamp((order.ts_submitted - session.kernel.bar_ns) / 1e9, timezone.utc)
        assert seen[ref] == session.decided.index(decided), ref


def test_the_session_is_a_paper_run_in_the_ledger(replayed: dict) -> None:
    wh = replayed["wh"]
    runs = wh.sql("SELECT run_id, kind, status, strategy FROM runs WHERE run_id = 'live-test-1'").to_pylist()
    assert runs == [{"run_id": "live-test-1", "kind": "paper", "status": "stopped",
                     "strategy": "engine.strategies.feature_band:FeatureBand"}]
    fills = wh.sql("SELECT count(*) AS n FROM run_fills WHERE run_id = 'live-test-1'").to_pylist()[0]["n"]
    assert fills == replayed["session"].result().tables["fills"].num_rows


def test_a_session_stopped_mid_day_resumes_the_same_run_without_sending_an_order_twice(
        tmp_path: Path, replayed: dict) -> None:
    """A first process trades the first bars and stops; its last checkpoint is then rolled back one bar, as
    if it crashed after sending that bar's orders and before saving; a second process with the same run id
    resumes: it decides that bar again, adopts the orders the gateway already has, trades the rest. The
    gateway (one simulator for both) must see every orderRef once, and the run must equal the backtest."""
    from engine.adapters.ib.gateway_sim import GatewaySim
    from engine.live.checkpoint import CHECKPOINT_FILE
    from engine.live.control import session_dir
    from engine.live.replay import PAPER_ACCOUNT
    from warehouse.sessions import trading_date

    bars, backtest = replayed["bars"], replayed["backtest"]
    decided_at = [o["ts_submitted"] for o in backtest.tables["orders"].to_pylist()]
    times = [t.as_py() for t in bars["ts"]]
    # stop right after the bar of the second order: that bar's orders are then sent but not checkpointed
    crash_bar = times.index(min(t for t in decided_at[1:2]) - pd.Timedelta(minutes=1).to_pytimedelta())
    k = crash_bar + 1
    wh = _warehouse(tmp_path / "wh", ["20131006", "20131007", "20131008", "20131009"])
    config = BacktestConfig(timeframe="1m", initial_capital=2_000_000.0)
    params = dict(low=45.0, high=55.0, exit_low=49.0, exit_high=51.0)
    settings = LiveSettings(bar_wait_s=0.0, roots=["ES"])
    run_id = "live-restart-1"
    directory = session_dir(Path(wh.root), run_id)
    saved: dict[int, bytes] = {}

    def keep_checkpoints(running, ts) -> None:  # noqa: ANN001
        saved[len(running.session.decided)] = (directory / CHECKPOINT_FILE).read_bytes()

    async def scenario() -> None:
        first = times[0]
        async with GatewaySim([PAPER_ACCOUNT], today=trading_date(first), clock=first) as sim:
            await replay_paper(wh, FeatureBand(**params), replayed["query"], config, bars, run_id=run_id,
                               settings=settings, sim=sim, stop_after=k, on_bar=keep_checkpoints)
            sent_before = [o.request.order_ref for o in sim.placed]
            (directory / CHECKPOINT_FILE).write_bytes(saved[k - 1])  # the crash: the last bar's state is lost
            session = await replay_paper(wh, FeatureBand(**params), replayed["query"], config, bars.slice(k),
                                         run_id=run_id, settings=settings, sim=sim)
            refs = [o.request.order_ref for o in sim.placed]
            assert len(refs) == len(set(refs)), "an order was sent twice"
            assert refs[:len(sent_before)] == sent_before
            assert session.resumed and session.decided == times
            keys = ["order_id", "ts_submitted", "symbol", "quantity", "order_type", "status", "filled_quantity"]
            live = session.result().tables
            assert live["orders"].select(keys).to_pylist() == backtest.tables["orders"].select(keys).to_pylist()
            fill_keys = ["order_id", "ts", "quantity", "price", "commission"]
            assert live["fills"].select(fill_keys).to_pylist() == backtest.tables["fills"].select(fill_keys).to_pylist()

    asyncio.run(asyncio.wait_for(scenario(), 300))
    wh.close()


def test_bars_featured_and_then_not_stored_are_dropped_and_the_features_still_equal_the_batch(
        tmp_path: Path, replayed: dict) -> None:
    """A bar's features are computed while it is validated: a bad tick (prices at ten times the scale) is
    featured, then quarantined; its row is dropped, the root's features reloaded from the warehouse, and every
    decided bar's 150 features still equal the batch build over the stored bars (which never held it).
    Likewise two bars featured in one append of which the first is not stored: the second had the first in its
    windows, so it is dropped too and featured again, in order, when it comes."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from engine.strategy import Strategy

    class Idle(Strategy):  # no orders: this test is about the bars and their features
        history_size = 0

        def on_bar(self, bar) -> None:  # noqa: ANN001
            return None

    bars = replayed["bars"].slice(0, 16)
    bad_at = 9
    scale = pa.array([10.0 if k == bad_at else 1.0 for k in range(bars.num_rows)])
    for name in ("open", "high", "low", "close"):
        bars = bars.set_column(bars.schema.get_field_index(name), name, pc.multiply(bars[name], scale))
    wh = _warehouse(tmp_path / "wh", ["20131006", "20131007", "20131008", "20131009"])
    build_features(wh, "1m")
    times = [t.as_py() for t in bars["ts"]]
    rows = bars.to_pylist()

    def two_in_one_append(running: Running, ts: datetime) -> None:
        """After the 4th bar: the next two featured in one hand-over, then the first reported not stored."""
        if len(running.session.decided) == 4:
            pair = [_final_bar(row) for row in rows[4:6]]
            running.session.before_stored(pair)
            running.session.not_stored(pair[:1])

    session = asyncio.run(asyncio.wait_for(replay_paper(
        wh, Idle(), replayed["query"], BacktestConfig(timeframe="1m", initial_capital=2_000_000.0), bars,
        run_id="live-bad-tick", on_bar=two_in_one_append, settings=LiveSettings(bar_wait_s=0.0, roots=["ES"])), 240))
    assert session.decided == times[:bad_at] + times[bad_at + 1:]
    assert session.featured_early == len(times) + 2  # the bad tick too, before its validation; the pair twice
    quarantined = wh.sql("SELECT ts, rule FROM quarantine WHERE contract = 'ESZ3'").to_pylist()
    assert quarantined == [{"ts": times[bad_at], "rule": "bad_tick_scale"}]
    live = session.rows.live_features().to_pandas().sort_values("ts").reset_index(drop=True)
    build_features(wh, "1m")
    batch = wh.sql("SELECT * FROM features_1m WHERE symbol = 'ES' AND ts >= $first ORDER BY ts",
                   {"first": times[0]}).to_pandas()
    assert list(live["ts"]) == list(batch["ts"]) == session.decided
    columns = [c for c in catalog() if c in batch.columns]
    assert len(columns) == 150
    assert_matches(live, batch, columns, "live (a bad tick featured, then dropped) vs batch")
    wh.close()
