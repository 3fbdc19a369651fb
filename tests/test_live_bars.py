"""5-second bars folded into final bars of the query's timeframe (engine/live/bars.py).

Hand-worked cases first, then an oracle: a pandas resample of the same 5-second bars (trade-less bars left out,
buckets on the UTC grid, labelled by their open) must equal what the aggregator emits.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from engine.live.bars import Bar, BarAggregator, bars_table, timeframe_seconds

UTC = timezone.utc
#: Monday 2 March 2026, 15:00 UTC = 10:00 ET: inside the Globex session of trading date 2026-03-02.
T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def five(k: int, o: float, h: float, low: float, c: float, v: int = 1, contract: str = "MESH6") -> Bar:
    """The 5-second bar number ``k`` after T0."""
    return Bar("MES", contract, T0 + timedelta(seconds=5 * k), o, h, low, c, v)


def test_a_minute_is_final_with_its_last_five_seconds_and_folds_ohlcv() -> None:
    agg = BarAggregator("1m")
    assert agg.add(five(0, 5000.00, 5000.50, 4999.75, 5000.25, 3)) == []
    assert agg.add(five(1, 5000.25, 5001.00, 5000.00, 5000.75, 2)) == []
    [bar] = agg.add(five(11, 5000.75, 5000.75, 4998.00, 4998.50, 5))  # 15:00:55-15:01:00 ends the minute
    assert (bar.ts, bar.end, bar.trading_date) == (T0, T0 + timedelta(minutes=1), date(2026, 3, 2))
    assert (bar.open, bar.high, bar.low, bar.close, bar.volume, bar.parts) == (5000.00, 5001.00, 4998.00, 4998.50, 10, 3)
    assert agg.pending("MES", "MESH6") is None
    assert agg.add(five(12, 4998.50, 4998.75, 4998.25, 4998.50, 1)) == []  # 15:01:00 opens the next minute
    assert agg.pending("MES", "MESH6").ts == T0 + timedelta(minutes=1)
    assert agg.close_due(T0 + timedelta(hours=1))[0].ts == T0 + timedelta(minutes=1)  # 15:00 handed out once


def test_a_minute_without_its_last_five_seconds_is_final_at_the_next_minute() -> None:
    agg = BarAggregator("1m")
    agg.add(five(10, 5000.0, 5000.0, 5000.0, 5000.0))  # 15:00:50; the 15:00:55 bar never comes
    [bar] = agg.add(five(13, 5001.0, 5001.0, 5001.0, 5001.0))
    assert (bar.ts, bar.close) == (T0, 5000.0)


def test_a_last_five_seconds_without_trades_still_ends_the_minute() -> None:
    agg = BarAggregator("1m")
    agg.add(five(3, 5000.0, 5000.5, 5000.0, 5000.25, 2))
    [bar] = agg.add(five(11, 1.0, 1.0, 1.0, 1.0, 0))  # no trade: no price, but the interval is over
    assert (bar.ts, bar.close, bar.volume, bar.parts) == (T0, 5000.25, 2, 1)


def test_a_quiet_market_closes_the_bar_by_the_clock_after_the_grace() -> None:
    agg = BarAggregator("1m", grace=timedelta(seconds=2))
    agg.add(five(3, 5000.0, 5000.0, 5000.0, 5000.0))
    assert agg.close_due(T0 + timedelta(seconds=61)) == []  # the interval ended at 15:01:00, grace 2 s
    [bar] = agg.close_due(T0 + timedelta(seconds=62))
    assert bar.ts == T0 and bar.volume == 1
    assert agg.close_due(T0 + timedelta(hours=1)) == []  # handed out once


def test_a_last_five_seconds_after_the_clock_closed_the_minute_changes_nothing() -> None:
    """The grace passed without the last 5-second bar: the minute was handed out. When that bar comes after all,
    it is not folded into a second bar of the same minute (which would be stored over the first)."""
    agg = BarAggregator("1m", grace=timedelta(seconds=2))
    agg.add(five(3, 5000.0, 5000.5, 5000.0, 5000.25, 2))
    [bar] = agg.close_due(T0 + timedelta(seconds=62))
    assert agg.add(five(11, 4000.0, 4000.0, 4000.0, 4000.0, 9)) == []  # 15:00:55, late
    assert agg.pending("MES", "MESH6") is None and agg.skipped["after_close"] == 1
    [after] = agg.add(five(23, 5001.0, 5001.0, 5001.0, 5001.0, 1))  # 15:01:55 ends 15:01 as usual
    assert (bar.close, after.ts, after.close) == (5000.25, T0 + timedelta(minutes=1), 5001.0)


def test_repeats_out_of_order_and_trade_less_bars_do_not_count() -> None:
    agg = BarAggregator("1m")
    agg.add(five(0, 10.0, 10.0, 10.0, 10.0, 0))  # no trade: its price is not the open
    agg.add(five(1, 5000.0, 5001.0, 4999.0, 5000.5, 4))
    agg.add(five(1, 5000.0, 5001.0, 4999.0, 5000.5, 4))  # repeated after a reconnect
    agg.add(five(0, 1.0, 9999.0, 1.0, 1.0, 7))  # older than the last seen
    [bar] = agg.close_due(T0 + timedelta(minutes=5))
    assert (bar.open, bar.high, bar.low, bar.close, bar.volume) == (5000.0, 5001.0, 4999.0, 5000.5, 4)
    assert agg.skipped == {"late": 2, "no_trades": 1}


def test_contracts_are_folded_apart() -> None:
    agg = BarAggregator("1m")
    agg.add(five(0, 5000.0, 5000.0, 5000.0, 5000.0, 1, "MESH6"))
    agg.add(five(0, 5050.0, 5050.0, 5050.0, 5050.0, 2, "MESM6"))
    [h6] = agg.add(five(12, 5001.0, 5001.0, 5001.0, 5001.0, 1, "MESH6"))
    assert (h6.contract, h6.close) == ("MESH6", 5000.0)
    [m6] = agg.close_due(T0 + timedelta(minutes=1, seconds=3))
    assert (m6.contract, m6.close, m6.volume) == ("MESM6", 5050.0, 2)


def test_the_daily_halt_ends_the_last_bar_and_its_bars_are_skipped() -> None:
    # 17:00 ET on Monday 2 March 2026 is 22:00 UTC; the session of 3 March opens at 23:00 UTC.
    agg = BarAggregator("1h")
    last = Bar("MES", "MESH6", datetime(2026, 3, 2, 21, 59, 55, tzinfo=UTC), 5000.0, 5001.0, 4999.0, 5000.5, 3)
    halt = Bar("MES", "MESH6", datetime(2026, 3, 2, 22, 30, tzinfo=UTC), 1.0, 1.0, 1.0, 1.0, 9)
    reopen = Bar("MES", "MESH6", datetime(2026, 3, 2, 23, 0, 5, tzinfo=UTC), 5002.0, 5002.0, 5002.0, 5002.0, 1)
    [bar] = agg.add(last)  # the last 5 seconds before the halt end the hour
    assert agg.add(halt) == []  # the halt bar itself is not folded anywhere
    assert (bar.ts, bar.end, bar.trading_date, bar.volume) == (datetime(2026, 3, 2, 21, tzinfo=UTC),
                                                               datetime(2026, 3, 2, 22, tzinfo=UTC), date(2026, 3, 2), 3)
    assert agg.skipped["outside_session"] == 1
    agg.add(reopen)
    [first] = agg.close_due(datetime(2026, 3, 3, 0, 0, 2, tzinfo=UTC))
    assert (first.ts, first.trading_date) == (datetime(2026, 3, 2, 23, tzinfo=UTC), date(2026, 3, 3))


def test_an_early_close_makes_the_last_hour_final_at_the_close() -> None:
    # Friday after Thanksgiving 2025: CME equity closes at 13:15 ET = 18:15 UTC.
    agg = BarAggregator("1h", grace=timedelta(seconds=1))
    agg.add(Bar("MES", "MESZ5", datetime(2025, 11, 28, 18, 10, tzinfo=UTC), 6800.0, 6801.0, 6799.0, 6800.0, 5))
    assert agg.close_due(datetime(2025, 11, 28, 18, 15, 0, tzinfo=UTC)) == []
    [bar] = agg.close_due(datetime(2025, 11, 28, 18, 15, 1, tzinfo=UTC))  # not at 19:00
    assert (bar.ts, bar.end, bar.volume) == (datetime(2025, 11, 28, 18, tzinfo=UTC),
                                             datetime(2025, 11, 28, 18, 15, tzinfo=UTC), 5)
    assert agg.add(Bar("MES", "MESZ5", datetime(2025, 11, 28, 18, 20, tzinfo=UTC), 1.0, 1.0, 1.0, 1.0, 5)) == []
    assert agg.skipped["outside_session"] == 1  # after the early close
    # the 5-second bar before the early close ends the hour at once
    agg = BarAggregator("1h", grace=timedelta(seconds=1))
    agg.add(Bar("MES", "MESZ5", datetime(2025, 11, 28, 18, 10, tzinfo=UTC), 6790.0, 6791.0, 6789.0, 6790.0, 2))
    [hour] = agg.add(Bar("MES", "MESZ5", datetime(2025, 11, 28, 18, 14, 55, tzinfo=UTC), 6800.0, 6802.0, 6799.0,
                         6801.0, 4))
    assert (hour.ts, hour.end, hour.close, hour.volume) == (datetime(2025, 11, 28, 18, tzinfo=UTC),
                                                            datetime(2025, 11, 28, 18, 15, tzinfo=UTC), 6801.0, 6)


def test_session_daily_bars_are_stamped_at_the_session_open() -> None:
    agg = BarAggregator("1d")
    agg.add(Bar("MES", "MESH6", datetime(2026, 3, 2, 23, 30, tzinfo=UTC), 5000.0, 5010.0, 4990.0, 5005.0, 2))
    assert agg.close_due(datetime(2026, 3, 3, 21, 59, 59, tzinfo=UTC)) == []
    [bar] = agg.add(Bar("MES", "MESH6", datetime(2026, 3, 3, 21, 59, 55, tzinfo=UTC), 5005.0, 5020.0, 5001.0, 5015.0, 3))
    assert (bar.ts, bar.end, bar.trading_date) == (datetime(2026, 3, 2, 23, tzinfo=UTC),
                                                   datetime(2026, 3, 3, 22, tzinfo=UTC), date(2026, 3, 3))
    assert (bar.open, bar.high, bar.low, bar.close, bar.volume) == (5000.0, 5020.0, 4990.0, 5015.0, 5)


@pytest.mark.parametrize("bad", ["7s", "7m", "2h", "1w", "90m"])
def test_timeframes_must_divide_the_hour(bad: str) -> None:
    with pytest.raises(ValueError):
        timeframe_seconds(bad)


@pytest.mark.parametrize("timeframe", ["1m", "5m", "15m", "1h"])
def test_equals_a_pandas_resample_of_the_same_bars(timeframe: str) -> None:
    rng = np.random.default_rng(14)
    n = 12 * 60 * 3  # three hours of 5-second bars from 20:00 UTC, through the 22:00 UTC halt into the evening
    start = datetime(2026, 3, 2, 20, 0, tzinfo=UTC)
    ts = pd.date_range(start, periods=n, freq="5s")
    close = 5000 + np.round(np.cumsum(rng.normal(0, 1, n)) * 4) / 4
    opens = np.r_[close[0], close[:-1]]
    high = np.maximum(opens, close) + rng.integers(0, 3, n) * 0.25
    low = np.minimum(opens, close) - rng.integers(0, 3, n) * 0.25
    volume = rng.integers(0, 4, n)  # some bars without trades
    frame = pd.DataFrame({"open": opens, "high": high, "low": low, "close": close, "volume": volume}, index=ts)
    in_session = (ts < pd.Timestamp("2026-03-02 22:00", tz="UTC")) | (ts >= pd.Timestamp("2026-03-02 23:00", tz="UTC"))

    agg = BarAggregator(timeframe)
    bars = [Bar("MES", "MESH6", t.to_pydatetime(), *row) for t, row in zip(ts, frame.itertuples(index=False))]
    got = agg.add_many(bars) + agg.close_due(ts[-1].to_pydatetime() + timedelta(hours=2))

    traded = frame[(frame.volume > 0) & in_session]
    oracle = traded.resample(f"{timeframe_seconds(timeframe)}s", label="left", closed="left").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}).dropna()
    table = bars_table(got).to_pandas().set_index("ts")[["open", "high", "low", "close", "volume"]]
    pd.testing.assert_frame_equal(table, oracle, check_freq=False, check_dtype=False, check_names=False,
                                  check_index_type=False)
    assert agg.skipped["outside_session"] == 12 * 60
