"""Bars for the live loop from IB (engine/adapters/ib/data.py), with the real ib_async client against the simulator.

Warm-up asks only for the gap the warehouse lacks; 5-second real-time bars become final one-minute bars equal to
the pushed minute bars, stored in the warehouse; a bad tick is quarantined and never handed out; a reconnect in
the middle of a minute neither loses nor repeats a bar.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta, timezone

import pyarrow as pa

from engine.adapters.ib.data import HistoryPacer, IBBarFeed, history_chunks
from engine.adapters.ib.gateway_sim import GatewaySim
from engine.adapters.ib.gateway_sim.bars import Bar as SimBar, split_5s
from engine.adapters.ib.gateway_sim.protocol import In
from engine.adapters.ib.handler import IBExecutionHandler
from engine.adapters.ib.reconnect import ReconnectPolicy
from engine.live.store import append_bars
from tests.ib.conftest import CLOCK, TODAY, run, until

FAST = ReconnectPolicy(initial_s=0.05, factor=2.0, max_s=0.2, jitter_s=0.02, halt_after_s=30.0, heartbeat_s=None,
                       seed=7)


def no_wait() -> HistoryPacer:
    """IB's pacing rules, but no wait after a violation or before asking the same again (tests)."""
    return HistoryPacer(violation_wait_s=0.0, identical_s=0.0)


def minute(k: int, base: float = 5000.0) -> tuple:
    """The pushed MESH6 minute bar ``k`` minutes after 15:00 UTC: (ts, open, high, low, close, volume)."""
    o = base + 0.25 * (k % 7)
    return CLOCK + timedelta(minutes=k), o, o + 1.0, o - 0.75, o + 0.5, 40 + abs(k)


def stored_minutes(wh, where: str = "") -> list[tuple]:
    rows = wh.sql(f"SELECT ts, open, high, low, close, volume FROM contract_bars_1m WHERE contract = 'MESH6' {where} "
                  "ORDER BY ts").to_pylist()
    return [tuple(r.values()) for r in rows]


def as_rows(bars) -> list[tuple]:
    return [(b.ts, b.open, b.high, b.low, b.close, b.volume) for b in bars]


async def connected(sim: GatewaySim, **kw) -> IBExecutionHandler:
    handler = IBExecutionHandler("run1", "live", {"MES": "202603"}, port=sim.port, client_id=12, **kw)
    await handler.connect()
    return handler


@contextlib.asynccontextmanager
async def warmed_feed(wh, now: list):  # noqa: ANN001, ANN201
    """A simulator with ten MESH6 minutes before 15:00 UTC, a connected handler and its feed warmed up over
    them (on the clock ``now[0]``): yields (sim, feed, warm-up report); disconnects at the end."""
    async with GatewaySim(today=TODAY, clock=CLOCK) as sim:
        for k in range(-10, 0):
            sim.push_bar("MESH6", *minute(k), as_5s=True)
        handler = await connected(sim)
        try:
            feed = IBBarFeed.for_handler(handler, wh, clock=lambda: now[0], pacer=no_wait(), tick_s=3600)
            report = await feed.warm_up(now=CLOCK)
            yield sim, feed, report
        finally:
            handler.disconnect()


def test_history_chunks_stay_within_ibs_durations() -> None:
    start = datetime(2026, 2, 27, 14, 0, tzinfo=timezone.utc)
    chunks = history_chunks(start, start + timedelta(days=2, minutes=30), "1m")
    assert [(end - start, d) for end, d in chunks] == [
        (timedelta(days=1), "86400 S"), (timedelta(days=2), "86400 S"), (timedelta(days=2, minutes=30), "1800 S")]
    assert history_chunks(start, start + timedelta(minutes=90), "5s")[0][1] == "3600 S"


def test_a_minute_splits_into_twelve_5_second_bars_that_aggregate_to_it() -> None:
    for volume in (40, 2, 0):
        bar = SimBar(CLOCK, 5000.25, 5001.0, 4999.5, 5000.75, volume)
        parts = split_5s(bar)
        assert [p.ts for p in parts] == [CLOCK + timedelta(seconds=5 * k) for k in range(12)]
        assert (parts[0].open, max(p.high for p in parts), min(p.low for p in parts), parts[-1].close,
                sum(p.volume for p in parts)) == (5000.25, 5001.0, 4999.5, 5000.75, volume)
        assert all(p.low <= min(p.open, p.close) and p.high >= max(p.open, p.close) for p in parts)


def test_the_pacer_spaces_requests_by_ibs_rules() -> None:
    now = [0.0]
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    async def body() -> None:
        pacer = HistoryPacer(clock=lambda: now[0], sleep=sleep)
        for k in range(5):
            await pacer.ready(1, ("chunk", k))
        assert slept == []
        await pacer.ready(1, ("chunk", 5))  # a 6th for one contract within 2 s waits the window out
        assert slept == [2.0]
        await pacer.ready(2, ("chunk", 0))  # another contract does not wait
        await pacer.ready(2, ("chunk", 0))  # an identical request waits 15 s
        assert slept == [2.0, 15.0]
    asyncio.run(body())


def test_warm_up_fetches_only_the_gap_and_then_nothing(ib_log, wh) -> None:
    async def body() -> None:
        async with GatewaySim(today=TODAY, clock=CLOCK) as sim:
            for k in range(-60, 0):  # 14:00 .. 14:59
                sim.push_bar("MESH6", *minute(k), as_5s=True)
            pushed = [minute(k) for k in range(-60, 0)]
            head = pa.table({"symbol": ["MES"] * 30, "contract": ["MESH6"] * 30,
                             **{c: [row[i] for row in pushed[:30]] for i, c in
                                enumerate(("ts", "open", "high", "low", "close", "volume"))}})
            append_bars(wh, head)  # the warehouse holds 14:00 .. 14:29
            handler = await connected(sim)
            try:
                feed = IBBarFeed.for_handler(handler, wh, pacer=no_wait())
                sim.faults.pace_next_history(1)  # the first answer is a pacing violation: asked again
                report = await feed.warm_up(now=CLOCK + timedelta(seconds=30))
                asks = sim.requests_of(In.REQ_HISTORICAL_DATA)
                assert report.requests == 2 and len(asks) == 2
                assert asks[-1][15:18] == ["20260302 15:00:00 UTC", "1 min", "1800 S"]
                assert report.gaps == {"MESH6": (CLOCK - timedelta(minutes=30), CLOCK)}
                assert report.bars_stored == 30
                assert stored_minutes(wh) == pushed
                assert len(wh.sql("SELECT * FROM bars_1m WHERE symbol = 'MES'")) == 60  # rolls rebuilt

                again = await feed.warm_up(now=CLOCK + timedelta(seconds=59))
                assert again.requests == 0 and len(sim.requests_of(In.REQ_HISTORICAL_DATA)) == 2
            finally:
                handler.disconnect()
    run(body)


def test_real_time_bars_become_stored_minutes_and_a_bad_tick_is_quarantined(ib_log, wh) -> None:
    async def body() -> None:
        now = [CLOCK]
        async with warmed_feed(wh, now) as (sim, feed, report):
            assert report.bars_stored == 10 and report.requests == 3  # three days of lookback, 1 D each
            await feed.start()
            await until(lambda: len(sim.requests_of(In.REQ_REAL_TIME_BARS)) == 1, what="subscription")
            bad = list(minute(2))
            bad[1:5] = [p * 10 for p in bad[1:5]]  # prices at ten times the scale
            for k in range(5):
                sim.push_bar("MESH6", *(bad if k == 2 else minute(k)), as_5s=True)
            await until(lambda: feed.aggregator.last_seen("MES", "MESH6") == CLOCK + timedelta(minutes=4, seconds=55),
                        what="the 5-second bars of 15:04")
            now[0] = CLOCK + timedelta(minutes=5, seconds=3)
            feed.tick()  # the clock closes 15:04
            await until(lambda: feed.bars.qsize() == 4, what="four final bars")
            got = [feed.bars.get_nowait() for _ in range(4)]
            expected = [minute(k) for k in (0, 1, 3, 4)]
            assert as_rows(got) == expected
            assert [b.end for b in got] == [b.ts + timedelta(minutes=1) for b in got]
            assert [(q["ts"], q["rule"]) for q in feed.quarantined] == [(CLOCK + timedelta(minutes=2), "bad_tick_scale")]
            assert stored_minutes(wh, "AND ts >= TIMESTAMPTZ '2026-03-02 15:00:00+00'") == expected
            assert wh.sql("SELECT rule FROM quarantine")["rule"].to_pylist() == ["bad_tick_scale"]
            await feed.stop()
    run(body)


def test_a_reconnect_in_the_middle_of_a_minute_loses_and_repeats_no_bar(ib_log, wh) -> None:
    async def body() -> None:
        now = [CLOCK]
        async with GatewaySim(today=TODAY, clock=CLOCK) as sim:
            handler = await connected(sim, reconnect=FAST)
            try:
                feed = IBBarFeed.for_handler(handler, wh, clock=lambda: now[0], pacer=no_wait(), tick_s=3600)
                await feed.start()
                await until(lambda: len(sim.requests_of(In.REQ_REAL_TIME_BARS)) == 1, what="subscription")
                sim.push_bar("MESH6", *minute(0), as_5s=True)
                ts, o, h, low, c, v = minute(1)
                halves = split_5s(SimBar(ts, o, h, low, c, v))
                for part in halves[:6]:  # 15:01:00 .. 15:01:25 arrive live
                    sim.push_bar("MESH6", part.ts, part.open, part.high, part.low, part.close, part.volume)
                await until(lambda: feed.aggregator.last_seen("MES", "MESH6") == ts + timedelta(seconds=25),
                            what="the first half of 15:01")
                now[0] = CLOCK + timedelta(minutes=3)
                sim.faults.drop_connections()
                # pushed while the client is away (the sockets are closing: nothing reaches it)
                for part in halves[6:]:
                    sim.push_bar("MESH6", part.ts, part.open, part.high, part.low, part.close, part.volume)
                sim.push_bar("MESH6", *minute(2), as_5s=True)
                await until(lambda: feed.backfills == 1, timeout=10, what="reconnect and backfill")
                assert handler.connection.reconnects == 1
                [backfill] = sim.requests_of(In.REQ_HISTORICAL_DATA)  # the missed 5-second bars, from history
                assert backfill[15:18] == ["20260302 15:03:00 UTC", "5 secs", "90 S"]  # 15:01:30 .. 15:03:00
                await until(lambda: len(sim.requests_of(In.REQ_REAL_TIME_BARS)) == 2, what="renewed subscription")
                # its last 5-second bar closes 15:03 (the store of 15:00 .. 15:02 may still be running then: the
                # four can come in one append or two)
                sim.push_bar("MESH6", *minute(3), as_5s=True)
                await until(lambda: feed.bars.qsize() == 4, what="15:00 .. 15:03 final")
                got = [feed.bars.get_nowait() for _ in range(4)]
                assert as_rows(got) == [minute(k) for k in range(4)]
                assert stored_minutes(wh) == [minute(k) for k in range(4)]
                assert feed.quarantined == []
                await feed.stop()
            finally:
                handler.disconnect()
    run(body)


def fail_the_first_write(monkeypatch) -> None:  # noqa: ANN001
    """The feed's first write of live bars raises (a full disk); the later ones write."""
    import engine.adapters.ib.data as data

    write, writes = data.write_checked, []

    def failing_once(*args, **kwargs):  # noqa: ANN002, ANN003
        writes.append(1)
        if len(writes) == 1:
            raise OSError("disk full (injected)")
        return write(*args, **kwargs)

    monkeypatch.setattr(data, "write_checked", failing_once)


def test_valid_bars_are_handed_over_while_written_and_a_failed_write_is_reported(ib_log, wh, monkeypatch) -> None:
    """Without ``on_arrived``: ``on_checked`` sees the bars that passed validation (not the bad tick),
    ``on_not_stored`` the ones whose write then failed: those are neither stored nor handed out for trading."""
    fail_the_first_write(monkeypatch)
    checked: list[list] = []
    failed: list[list] = []

    async def body() -> None:
        now = [CLOCK]
        async with warmed_feed(wh, now) as (sim, feed, _):
            feed.on_checked = lambda bars: checked.append(as_rows(bars))
            feed.on_not_stored = lambda bars: failed.append(as_rows(bars))
            await feed.start()
            await until(lambda: len(sim.requests_of(In.REQ_REAL_TIME_BARS)) == 1, what="subscription")
            bad = list(minute(2))
            bad[1:5] = [p * 10 for p in bad[1:5]]
            for k in range(4):
                sim.push_bar("MESH6", *(bad if k == 2 else minute(k)), as_5s=True)
                await until(lambda: feed.aggregator.last_seen("MES", "MESH6") == minute(k)[0] + timedelta(seconds=55),
                            what=f"the 5-second bars of minute {k}")
                now[0] = minute(k)[0] + timedelta(minutes=1, seconds=3)
                feed.tick()  # one store per minute: the first write fails
                await until(lambda: not feed._storing and feed._finals.empty(), what=f"minute {k} stored")
            await until(lambda: feed.bars.qsize() == 2, what="two final bars")
            got = [feed.bars.get_nowait() for _ in range(2)]
            assert as_rows(got) == [minute(1), minute(3)]
            assert failed == [[minute(0)]]
            assert checked == [[minute(0)], [minute(1)], [minute(3)]]  # the bad tick never handed over
            assert stored_minutes(wh, "AND ts >= TIMESTAMPTZ '2026-03-02 15:00:00+00'") == [minute(1), minute(3)]
            assert feed.settled()
            await feed.stop()
    run(body)


def test_bars_are_handed_over_before_validation_and_those_not_stored_come_back(ib_log, wh, monkeypatch) -> None:
    """With ``on_arrived``: each minute is handed over as it closed, while a worker validates and writes it;
    the ones not stored come back through ``on_not_stored`` -- a failed write, a bad tick (quarantined), a jump
    held as a suspect. While the suspect is held, the next minute is validated with it and both are handed over
    in order once validated (``on_checked``)."""
    fail_the_first_write(monkeypatch)
    arrived: list[list] = []
    checked: list[list] = []
    not_stored: list[list] = []
    bad = list(minute(2))
    bad[1:5] = [p * 10 for p in bad[1:5]]  # prices at ten times the scale: a bad tick
    jump = (minute(4)[0], 5001.0, 6000.5, 5001.0, 6000.0, 44)  # +18 %: beyond the spike limit, held
    stays = (minute(5)[0], 6000.0, 6001.0, 5999.75, 6000.25, 45)  # the next bar stays up: the jump is real
    pushed = [minute(0), minute(1), tuple(bad), minute(3), jump, stays]

    async def body() -> None:
        now = [CLOCK]
        async with warmed_feed(wh, now) as (sim, feed, _):
            feed.on_arrived = lambda bars: arrived.append(as_rows(bars))
            feed.on_checked = lambda bars: checked.append(as_rows(bars))
            feed.on_not_stored = lambda bars: not_stored.append(as_rows(bars))
            await feed.start()
            await until(lambda: len(sim.requests_of(In.REQ_REAL_TIME_BARS)) == 1, what="subscription")
            for k, bar in enumerate(pushed):
                sim.push_bar("MESH6", *bar, as_5s=True)
                await until(lambda: feed.aggregator.last_seen("MES", "MESH6") == bar[0] + timedelta(seconds=55),
                            what=f"the 5-second bars of minute {k}")
                await until(lambda: not feed._storing and feed._finals.empty(), what=f"minute {k} stored")
            await until(lambda: feed.bars.qsize() == 4, what="four final bars")
            got = [feed.bars.get_nowait() for _ in range(4)]
            assert as_rows(got) == [minute(1), minute(3), jump, stays]
            assert arrived == [[bar] for bar in pushed[:5]]  # not the one validated with the held jump
            assert not_stored == [[minute(0)], [tuple(bad)], [jump]]
            assert checked == [[jump, stays]]
            assert [q["rule"] for q in feed.quarantined] == ["bad_tick_scale"]
            assert stored_minutes(wh, "AND ts >= TIMESTAMPTZ '2026-03-02 15:00:00+00'") == [minute(1), minute(3), jump,
                                                                                              stays]
            await feed.stop()
    run(body)


def test_a_minute_is_final_with_its_last_5_second_bar_and_the_streams_go_in_one_append(ib_log, wh) -> None:
    """No clock tick and no later 5-second bar: the last 5-second bar of a minute closes it (IB sends it once it
    has ended). The front's and the next front's bars of one minute, each closed by its own last 5-second bar, are
    stored by one append; a stream whose last 5-second bar does not come is not waited for beyond GATHER_S."""
    from engine.adapters.ib.data import GATHER_S

    async def body() -> None:
        now = [CLOCK]
        async with GatewaySim(today=TODAY, clock=CLOCK) as sim:
            handler = IBExecutionHandler("run1", "live", {"MES": "202603"}, port=sim.port, client_id=12)
            handler.also_trade("MES", ["MESM6"])
            await handler.connect()
            try:
                feed = IBBarFeed.for_handler(handler, wh, clock=lambda: now[0], pacer=no_wait(), tick_s=3600)
                await feed.start()
                await until(lambda: len(sim.requests_of(In.REQ_REAL_TIME_BARS)) == 2, what="subscriptions")
                parts = {c: split_5s(SimBar(*minute(k, base))) for c, k, base in (("MESH6", 0, 5000.0),
                                                                                   ("MESM6", 0, 5050.0))}
                for contract, bars in parts.items():  # the minute so far, on both streams
                    for part in bars[:11]:
                        sim.push_bar(contract, part.ts, part.open, part.high, part.low, part.close, part.volume)
                last = CLOCK + timedelta(seconds=50)
                await until(lambda: all(feed.aggregator.last_seen("MES", c) == last for c in parts),
                            what="15:00:00 .. 15:00:50 on both streams")
                assert feed.bars.empty() and feed.appends == []
                for contract, bars in parts.items():  # 15:00:55, sent by IB once it has ended; the second a moment later
                    part = bars[-1]
                    sim.push_bar(contract, part.ts, part.open, part.high, part.low, part.close, part.volume)
                    await until(lambda: CLOCK in feed.closed_at, what="the front's 15:00 closed")
                    await asyncio.sleep(GATHER_S / 5)
                    if contract == "MESH6":  # its bar is closed, not stored: the feed is not settled meanwhile
                        assert not feed.settled()
                await until(lambda: feed.bars.qsize() == 2, what="both bars of 15:00 stored")
                assert len(feed.appends) == 1 and feed.appends[0].rows_loaded == 2
                assert sorted((b.contract, b.close) for b in (feed.bars.get_nowait(), feed.bars.get_nowait())) == [
                    ("MESH6", minute(0)[4]), ("MESM6", minute(0, 5050.0)[4])]
                assert CLOCK in feed.closed_at

                # 15:01: the next front's last 5-second bar never comes; the front's bar is not held for it
                parts = {c: split_5s(SimBar(*minute(1, base))) for c, base in (("MESH6", 5000.0), ("MESM6", 5050.0))}
                for contract, bars in parts.items():
                    for part in bars[:11] if contract == "MESM6" else bars:
                        sim.push_bar(contract, part.ts, part.open, part.high, part.low, part.close, part.volume)
                started = asyncio.get_running_loop().time()
                await until(lambda: feed.bars.qsize() == 1, what="the front's 15:01")
                assert asyncio.get_running_loop().time() - started < GATHER_S + 1.0  # stored before any clock tick
                assert feed.bars.get_nowait().contract == "MESH6" and len(feed.appends) == 2
                now[0] = CLOCK + timedelta(minutes=2, seconds=3)
                feed.tick()  # the clock closes the next front's 15:01
                await until(lambda: feed.bars.qsize() == 1, what="the next front's 15:01")
                assert feed.bars.get_nowait().contract == "MESM6"
                await feed.stop()
            finally:
                handler.disconnect()
    run(body)
