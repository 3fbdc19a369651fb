"""Live rolls against the gateway simulator with the real ib_async client, on the real Dec-2013 ESZ3 -> ESH4
roll of the shipped LEAN ES minutes.

The warehouse holds 2013-12-03 and the bars of 2013-12-18 up to 21:30 UTC of both contracts; the volume rule
then rolls ES to ESH4 at the next session's open, 2013-12-18 23:00 UTC (ESH4 out-traded ESZ3 that day). The
replay streams both contracts from 21:30 to 23:05: a strategy buys one contract on its first bar (ESZ3) and
holds; the first row naming ESH4 (23:00) rolls it with two market orders that fill at the 23:01 opens.
"""

from __future__ import annotations

import asyncio
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from engine.backtest.run import BacktestConfig
from engine.core.instruments import InstrumentBook
from engine.core.orders import market
from engine.live.bars import market_open
from engine.live.replay import replay_paper
from engine.live.session import LiveSettings
from engine.risk import RiskLimits, RiskState
from engine.strategy import Strategy
from loaders.ingest import ingest
from tests.conftest import LEAN
from warehouse import Warehouse
from warehouse.rolls import build_rolls

START = datetime(2013, 12, 18, 21, 30, tzinfo=timezone.utc)
END = datetime(2013, 12, 18, 23, 5, tzinfo=timezone.utc)
ROLL_TS = datetime(2013, 12, 18, 23, 0, tzinfo=timezone.utc)
QUERY = f"""
SELECT symbol, ts, open, high, low, close, volume, contract FROM bars_1m
WHERE symbol = 'ES' AND ts >= TIMESTAMPTZ '{START.isoformat()}'
"""
SETTINGS = LiveSettings(bar_wait_s=0.0, roots=["ES"], features=False)
CONFIG = BacktestConfig(timeframe="1m", initial_capital=2_000_000.0)


class HoldOne(Strategy):
    """Buys one contract on its first bar and holds it."""

    def on_bar(self, bar):  # noqa: ANN001, ANN201
        if not self.engine.orders:
            return market(bar.symbol, 1)
        return None


def roll_day(base: Path, start: datetime, end: datetime) -> tuple[pa.Table, pa.Table, Path]:
    """The real ESZ3 and ESH4 minutes of 2013-12-18 (LEAN; the volume crossover is at 23:00 UTC) from ``start``
    to ``end`` (the bars to replay) and before ``start``, read through a scratch warehouse in ``base``; and a
    source folder holding 2013-12-03 (ESZ3 only, no roll yet) for the history."""
    src = base / "day-src"
    src.mkdir()
    shutil.copy(LEAN / "minute" / "20131218_trade.zip", src)
    day = Warehouse(base / "day")
    ingest(day, [src])
    columns = "symbol, contract, ts, open, high, low, close, volume"
    bars = day.sql(f"SELECT {columns} FROM contract_bars_1m WHERE contract IN ('ESZ3', 'ESH4') "
                   "AND ts >= $start AND ts <= $end ORDER BY ts, contract", {"start": start, "end": end})
    before = day.sql(f"SELECT {columns} FROM contract_bars_1m WHERE contract IN ('ESZ3', 'ESH4') AND ts < $start "
                     "ORDER BY ts, contract", {"start": start})
    day.close()
    history = base / "history-src"
    history.mkdir()
    shutil.copy(LEAN / "minute" / "20131203_trade.zip", history)
    return bars, before, history


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The replayed bars (both contracts, 21:30-23:05) and a Parquet file of 2013-12-18 before 21:30."""
    bars, before, history = roll_day(tmp_path_factory.mktemp("rolls"), START, END)
    pq.write_table(before, history / "es_20131218_before_2130.parquet")
    return {"bars": bars, "history": history}


def _warehouse(root: Path, source: dict) -> Warehouse:
    wh = Warehouse(root)
    ingest(wh, [source["history"]])
    build_rolls(wh, ["ES"], rule="volume")
    return wh


def _first_after(bars, contract: str, ts: datetime) -> dict:  # noqa: ANN001
    return next(r for r in bars.to_pylist() if r["contract"] == contract and r["ts"] > ts)


def _gateway(bars):  # noqa: ANN001, ANN202
    from engine.live.replay import paper_gateway

    return paper_gateway(CONFIG, bars)


def test_the_roll_table_rolls_es_at_the_next_session_open(tmp_path: Path, source: dict) -> None:
    wh = _warehouse(tmp_path / "wh", source)
    rolls = wh.sql("SELECT from_contract, to_contract, roll_ts FROM rolls WHERE symbol = 'ES'").to_pylist()
    assert rolls[-1]["from_contract"] == "ESZ3" and rolls[-1]["to_contract"] == "ESH4"
    assert rolls[-1]["roll_ts"] == ROLL_TS
    wh.close()


def test_a_position_across_the_roll_is_rolled_with_two_journaled_orders_and_booked_at_their_fills(
        tmp_path: Path, source: dict) -> None:
    """Hand-worked from the bars: the entry fills at the open of the first ESZ3 bar after the first decided
    one; the roll's legs, sent at the close of the 23:00 bar, fill at the 23:01 opens (ESZ3 1811.00 out,
    ESH4 1804.75 in). Realized = (1811.00 - entry) x 1 x 50; commissions = three executions, each IB's
    report, equal to 3 x the fee table's ES fee per side; the position ends +1 ESH4 at 1804.75. A house
    limit of one contract does not stop the roll_in leg (only the roll_out leg would make room for it)."""
    bars = source["bars"]
    wh = _warehouse(tmp_path / "wh", source)
    config = BacktestConfig(timeframe="1m", initial_capital=2_000_000.0, risk=RiskLimits(max_position_size=1))

    async def scenario():  # noqa: ANN202
        async with _gateway(bars) as sim:
            session = await replay_paper(wh, HoldOne(), QUERY, config, bars, run_id="roll-1", settings=SETTINGS,
                                         sim=sim)
            return session, list(sim.placed), list(sim.book.executions)

    session, placed, executions = asyncio.run(asyncio.wait_for(scenario(), 240))
    kernel = session.kernel
    refs = [o.request.order_ref for o in placed]
    assert len(set(refs)) == 3 == len(refs)  # entry, roll_out, roll_in: each its own orderRef
    assert [ref.rsplit("/", 1)[1] for ref in refs] == ["0", "1", "2"]
    legs = [o for o in kernel.orders if o.origin in ("roll_out", "roll_in")]
    assert [(o.origin, o.quantity, o.status.value) for o in legs] == [("roll_out", -1, "FILLED"),
                                                                       ("roll_in", 1, "FILLED")]
    assert [o.future.local_symbol for o in placed] == ["ESZ3", "ESZ3", "ESH4"]
    journal = wh.sql("SELECT order_ref, contract, quantity FROM order_journal ORDER BY order_id").to_pylist()
    assert [(r["contract"], r["quantity"]) for r in journal] == [("ESZ3", 1), ("ESZ3", -1), ("ESH4", 1)]
    assert [r["order_ref"] for r in journal] == refs

    first_decided = session.decided[0]
    entry = _first_after(bars, "ESZ3", first_decided)["open"]
    out_price = _first_after(bars, "ESZ3", ROLL_TS)["open"]
    in_price = _first_after(bars, "ESH4", ROLL_TS)["open"]
    assert (out_price, in_price) == (1811.00, 1804.75)
    fills = kernel.portfolio.fills
    assert [(f.kind, f.contract, f.quantity, f.price) for f in fills] == [
        ("order", "ESZ3", 1, entry), ("roll_out", "ESZ3", -1, out_price), ("roll_in", "ESH4", 1, in_price)]
    day = fills[0].trading_date
    fee = InstrumentBook(CONFIG.instruments).fee_per_side("ES", day)
    assert kernel.portfolio.commissions == pytest.approx(3 * fee)
    assert kernel.portfolio.commissions == pytest.approx(sum(e.commission for e in executions))
    assert kernel.portfolio.realized == pytest.approx((out_price - entry) * 50.0)
    pos = kernel.portfolio.positions["ES"]
    assert (pos.contract, pos.quantity, pos.avg_price) == ("ESH4", 1, in_price)
    # the P&L identity holds through the roll
    assert kernel.portfolio.equity - CONFIG.initial_capital == pytest.approx(
        kernel.portfolio.realized + kernel.portfolio.unrealized - kernel.portfolio.commissions)
    assert session.handler.traded_contract("ES") == "ESH4"
    codes = [e[2] for e in kernel.events]
    assert "ROLL_SENT" in codes and "ROLL_DONE" in codes and "ROLL_FAILED" not in codes
    assert kernel.risk.state is RiskState.ACTIVE
    # one round trip, still open, that rolled once
    [trade] = kernel.portfolio.trades
    assert trade.rolls == 1 and trade.exit_ts is None

    # attribution: the same entry in both runs; the roll legs (live: two broker orders; backtest: booked at the
    # roll table's prices) are the "rolls" cause, not orders only the live run decided
    from engine.backtest.run import run_backtest
    from engine.live.attribution import attribute

    result = attribute(wh, "roll-1", record=False)
    backtest = run_backtest(wh, result_query(session), HoldOne(), config, record=False)
    mark = bars.filter(pc.equal(bars["contract"], "ESH4"))["close"][-1].as_py()
    live_legs = -(mark - out_price) * 50.0 + (mark - in_price) * 50.0 - 2 * fee
    tested = [f for f in backtest.tables["fills"].to_pylist() if f["kind"] in ("roll_out", "roll_in")]
    assert [f["kind"] for f in tested] == ["roll_out", "roll_in"]
    backtest_legs = sum(f["quantity"] * (mark - f["price"]) * 50.0 - f["commission"] for f in tested)
    assert result.effects["rolls"] == pytest.approx(live_legs - backtest_legs)
    assert result.effects["signal"] == pytest.approx(0.0)
    assert result.effects["unexplained"] == pytest.approx(0.0, abs=1e-6)
    assert result.orders.num_rows == 1  # the entry, paired; the legs are not orders to pair
    wh.close()


def result_query(session) -> str:  # noqa: ANN001
    """The live run's query bounded to the bars it saw (what the attribution's backtest replays)."""
    from engine.live.attribution import replay_query

    return replay_query(session.query, session.decided[0], session.decided[-1])


def test_a_restart_after_the_roll_bar_adopts_the_journaled_legs_and_completes_the_roll(
        tmp_path: Path, source: dict) -> None:
    """The first process decides the 23:00 bar (both legs at the gateway, not filled yet) and stops; its
    checkpoint is rolled back to the bar before, as if it crashed after sending the legs. The second process
    decides the roll bar again: the legs the journal holds are adopted, nothing is sent twice, and their
    fills complete the roll."""
    from engine.live.checkpoint import CHECKPOINT_FILE
    from engine.live.control import session_dir

    bars = source["bars"]
    wh = _warehouse(tmp_path / "wh", source)
    run_id = "roll-restart"
    directory = session_dir(Path(wh.root), run_id)
    saved: dict[int, bytes] = {}

    def keep(running, ts) -> None:  # noqa: ANN001
        saved[len(running.session.decided)] = (directory / CHECKPOINT_FILE).read_bytes()

    first_part = bars.filter([t <= ROLL_TS for t in bars["ts"].to_pylist()])
    rest = bars.filter([t > ROLL_TS for t in bars["ts"].to_pylist()])

    async def scenario():  # noqa: ANN202
        async with _gateway(bars) as sim:
            first = await replay_paper(wh, HoldOne(), QUERY, CONFIG, first_part, run_id=run_id,
                                       settings=SETTINGS, sim=sim, on_bar=keep)
            assert first.decided[-1] == ROLL_TS and "ES" in first.kernel.rolling
            sent_before = [o.request.order_ref for o in sim.placed]
            assert len(sent_before) == 3
            (directory / CHECKPOINT_FILE).write_bytes(saved[len(first.decided) - 1])  # the crash
            second = await replay_paper(wh, HoldOne(), QUERY, CONFIG, rest, run_id=run_id, settings=SETTINGS,
                                        sim=sim)
            return second, [o.request.order_ref for o in sim.placed], sent_before

    session, refs, sent_before = asyncio.run(asyncio.wait_for(scenario(), 300))
    assert refs == sent_before, "a roll leg was sent twice"
    assert session.resumed and ROLL_TS in session.decided
    kernel = session.kernel
    assert kernel.rolling == {}
    pos = kernel.portfolio.positions["ES"]
    assert (pos.contract, pos.quantity) == ("ESH4", 1)
    assert [(f.kind, f.contract, f.quantity) for f in kernel.portfolio.fills] == [
        ("order", "ESZ3", 1), ("roll_out", "ESZ3", -1), ("roll_in", "ESH4", 1)]
    assert kernel.risk.state is RiskState.ACTIVE
    wh.close()


def test_a_refused_roll_leg_halts_the_run_with_roll_failed(tmp_path: Path, source: dict) -> None:
    """The gateway refuses the next order after the last decision before the roll: the roll's out-leg. The run halts
    (ROLL_FAILED) naming both contracts and the books keep the old contract; the in-leg's fill, which the
    gateway made at the next bar, is kept aside unbooked (the books hold one contract per symbol)."""
    bars = source["bars"]
    wh = _warehouse(tmp_path / "wh", source)
    decided_before_roll = max(t for t in bars["ts"].to_pylist() if t < ROLL_TS and market_open("ES", t))

    async def scenario():  # noqa: ANN202
        async with _gateway(bars) as sim:
            def refuse_next(running, ts) -> None:  # noqa: ANN001
                if ts == decided_before_roll:
                    sim.faults.reject_next(201, "Order rejected - reason:simulated roll refusal")

            session = await replay_paper(wh, HoldOne(), QUERY, CONFIG, bars, run_id="roll-refused",
                                         settings=SETTINGS, sim=sim, on_bar=refuse_next)
            return session

    session = asyncio.run(asyncio.wait_for(scenario(), 240))
    kernel = session.kernel
    failed = [e for e in kernel.events if e[2] == "ROLL_FAILED"]
    assert len(failed) == 1
    message = failed[0][5]
    assert message.startswith("ES roll ESZ3->ESH4 failed: roll_out DENIED")
    assert "the books hold +1 ESZ3" in message
    assert kernel.risk.state is RiskState.HALTED and kernel.risk.reason.startswith("ROLL_FAILED")
    assert kernel.rolling == {}
    pos = kernel.portfolio.positions["ES"]
    assert (pos.contract, pos.quantity) == ("ESZ3", 1)
    assert [(f.kind, f.contract, f.quantity) for f in kernel.failed_rolls["ES"].in_fills] == [("roll_in", "ESH4", 1)]
    assert [(f.kind, f.contract) for f in kernel.portfolio.fills] == [("order", "ESZ3")]
    wh.close()


def test_both_legs_of_a_roll_in_flight_count_in_the_worst_case() -> None:
    """Hand-worked: long 2 ESZ3 and rolling; the broker reported the roll_in's +2 ESH4 (not booked: the
    roll_out's -2 is still out). Worst case = the +2 held plus the +2 in: buys 2 on top of the position, so a
    limit of 4 contracts refuses a buy of 1 (requested 5), and the position is headed to 4 for sizing."""
    from engine.backtest.run import Backtester
    from engine.core.orders import Fill
    from engine.data.feed import bar_type
    from engine.kernel import RollInFlight

    config = BacktestConfig(timeframe="1m", initial_capital=5_000_000.0, risk=RiskLimits(max_position_size=4))
    kernel = Backtester(Strategy(), config, "1m")
    names = ["symbol", "ts", "open", "high", "low", "close", "volume", "qe_trading_day", "contract"]
    kernel.bind({n: i for i, n in enumerate(names)}, bar_type(names))
    kernel.process([["ES"], [0], [1800.0], [1800.0], [1800.0], [1800.0], [100], [16058], ["ESZ3"]], 1)
    kernel.portfolio.apply(Fill(0, 0, "ES", "ESZ3", 2, 1800.0, 1800.0, 50.0, 4.5, 0.0))
    roll = RollInFlight("ES", "ESZ3", "ESH4", 1, 2, 0)
    roll.in_fills.append(Fill(2, 0, "ES", "ESH4", 2, 1794.0, 1794.0, 50.0, 4.5, 0.0, "roll_in"))
    kernel.rolling["ES"] = roll
    assert kernel.working_buys_sells("ES") == (2, 0)
    assert kernel.in_flight_quantity("ES") == 2
    denial = kernel.risk.check(market("ES", 1), kernel, 16058)
    assert denial is not None and denial.code == "MAX_POSITION_SIZE" and "requested=5" in denial.message


def test_a_new_contract_fill_reported_before_the_roll_legs_waits_for_them() -> None:
    """Hand-worked: long 1 ESZ3 bought at 1800 and rolling to ESH4. The strategy's +1 ESH4 (its order after the
    roll bar) is reported at 1806 before the legs (out -1 ESZ3 at 1801, in +1 ESH4 at 1805). It is held until
    the legs are booked: the roll completes, ESZ3's round trip realizes (1801 - 1800) x 50 = 50.00, and the books
    hold +2 ESH4 at (1805 + 1806) / 2 = 1805.50. Applied at once, it would have been booked against ESZ3's 1800."""
    from engine.backtest.run import Backtester
    from engine.core.orders import Fill
    from engine.data.feed import bar_type
    from engine.kernel import BAR_FIELDS, RollInFlight

    config = BacktestConfig(timeframe="1m", initial_capital=5_000_000.0)
    kernel = Backtester(Strategy(), config, "1m")
    names = list(BAR_FIELDS)
    kernel.bind({n: i for i, n in enumerate(names)}, bar_type(names))
    kernel.process([["ES"], [0], [1800.0], [1800.0], [1800.0], [1800.0], [100], [16058], ["ESZ3"]], 1)
    kernel.portfolio.apply(Fill(0, 0, "ES", "ESZ3", 1, 1800.0, 1800.0, 50.0, 0.0, 0.0))
    out, inn = market("ES", -1), market("ES", 1)
    out.origin, inn.origin = "roll_out", "roll_in"
    out.order_id, inn.order_id = len(kernel.orders), len(kernel.orders) + 1
    kernel.orders += [out, inn]
    kernel.rolling["ES"] = RollInFlight("ES", "ESZ3", "ESH4", out.order_id, inn.order_id, 0)

    kernel._book(Fill(99, 1, "ES", "ESH4", 1, 1806.0, 1806.0, 50.0, 0.0, 0.0))
    pos = kernel.portfolio.positions["ES"]
    assert (pos.contract, pos.quantity, pos.avg_price) == ("ESZ3", 1, 1800.0)  # held, not booked
    assert kernel.in_flight_quantity("ES") == 1  # but counted by the risk checks
    kernel._book(Fill(out.order_id, 2, "ES", "ESZ3", -1, 1801.0, 1801.0, 50.0, 0.0, 0.0))
    kernel._book(Fill(inn.order_id, 2, "ES", "ESH4", 1, 1805.0, 1805.0, 50.0, 0.0, 0.0))
    assert [e[2] for e in kernel.events if e[2].startswith("ROLL")] == ["ROLL_DONE"]
    pos = kernel.portfolio.positions["ES"]
    assert (pos.contract, pos.quantity, pos.avg_price) == ("ESH4", 2, 1805.5)
    assert kernel.portfolio.realized == 50.0
    assert kernel.rolling == {}
