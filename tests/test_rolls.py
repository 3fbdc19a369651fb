"""Rolls and continuous series on the real LEAN ES data, checked against an independent pandas oracle."""

from __future__ import annotations

import csv
import io
import math
import zipfile
from datetime import date, datetime, timezone

import pandas as pd
import pytest

from loaders.ingest import ingest
from warehouse.rolls import build_rolls
from tests.conftest import LEAN


def _daily_volumes() -> pd.DataFrame:
    """Daily volume per contract from LEAN's daily zip, read with the csv module."""
    rows = []
    with zipfile.ZipFile(LEAN / "daily" / "es_trade.zip") as archive:
        for name in archive.namelist():
            month = name.rsplit("_", 1)[1][:6]
            for line in csv.reader(io.TextIOWrapper(archive.open(name))):
                rows.append({"month": month, "day": datetime.strptime(line[0], "%Y%m%d %H:%M").date(), "volume": int(line[5])})
    return pd.DataFrame(rows)


@pytest.fixture
def daily(wh):
    ingest(wh, [LEAN / "daily" / "es_trade.zip"])
    return wh


def test_esz3_to_esh4_volume_crossover_on_2013_12_13(daily):
    frame = _daily_volumes().pivot_table(index="day", columns="month", values="volume")
    crossed = frame[(frame["201403"] > frame["201312"]) & (frame.index >= date(2013, 12, 1))].index.min()
    assert crossed == date(2013, 12, 13)  # the oracle agrees with the data README
    first = daily.sql("SELECT * FROM rolls ORDER BY roll_ts LIMIT 1").to_pylist()[0]
    assert (first["from_contract"], first["to_contract"], first["rule"]) == ("ESZ3", "ESH4", "volume")
    assert first["signal_date"] == crossed
    # Known only after the 12-13 close: effective at the next session, Monday 12-16, which opens
    # Sunday 2013-12-15 18:00 ET = 23:00 UTC.
    assert first["roll_date"] == date(2013, 12, 16)
    assert first["roll_ts"] == datetime(2013, 12, 15, 23, 0, tzinfo=timezone.utc)


def test_roll_prices_are_both_closes_of_the_same_bar(daily):
    roll = daily.sql("SELECT * FROM rolls ORDER BY roll_ts LIMIT 1").to_pylist()[0]
    both = daily.sql(
        "SELECT contract, close FROM contract_bars_1d WHERE ts = $ts AND contract IN ('ESZ3', 'ESH4')", {"ts": roll["price_ts"]}
    ).to_pylist()
    closes = {r["contract"]: r["close"] for r in both}
    assert (roll["from_price"], roll["to_price"]) == (closes["ESZ3"], closes["ESH4"])


def test_continuous_raw_series_switches_contract_at_the_roll(daily):
    rows = daily.sql(
        "SELECT ts, contract FROM bars_1d WHERE symbol = 'ES' AND ts BETWEEN '2013-12-12' AND '2013-12-17' ORDER BY ts"
    ).to_pylist()
    assert [(r["ts"].date(), r["contract"]) for r in rows] == [
        (date(2013, 12, 12), "ESZ3"), (date(2013, 12, 13), "ESZ3"), (date(2013, 12, 15), "ESZ3"),
        (date(2013, 12, 16), "ESH4"), (date(2013, 12, 17), "ESH4"),
    ]
    # One bar per timestamp: the continuous series never holds two contracts at once.
    dupes = daily.sql("SELECT ts FROM bars_1d WHERE symbol = 'ES' GROUP BY ts HAVING count(*) > 1").num_rows
    assert dupes == 0


@pytest.mark.parametrize("adjust", ["ratio", "diff"])
def test_adjusted_series_has_no_jump_at_the_roll(daily, adjust):
    roll = daily.sql("SELECT * FROM rolls ORDER BY roll_ts LIMIT 1").to_pylist()[0]
    series = daily.pandas(f"SELECT ts, contract, close FROM bars_1d_adj_{adjust} WHERE symbol = 'ES' ORDER BY ts").set_index("ts")
    raw = daily.pandas("SELECT ts, contract, close FROM contract_bars_1d WHERE symbol = 'ES'")
    esh4 = raw[raw.contract == "ESH4"].set_index("ts")["close"]
    # The adjusted move from the price bar to the first bar after the roll must equal ESH4's own move.
    before = pd.Timestamp(roll["price_ts"])
    after = series.index[series.index >= pd.Timestamp(roll["roll_ts"])][0]
    if adjust == "ratio":
        assert math.isclose(series.close[after] / series.close[before], esh4[after] / esh4[before], rel_tol=1e-12)
    else:
        assert math.isclose(series.close[after] - series.close[before], esh4[after] - esh4[before], abs_tol=1e-9)
    # And the adjusted price at the price bar is the new contract's price there.
    assert math.isclose(series.close[before], roll["to_price"], rel_tol=1e-12)


def test_back_adjustment_factors_match_hand_computation(daily):
    roll = daily.sql("SELECT * FROM rolls ORDER BY roll_ts LIMIT 1").to_pylist()[0]
    segment = daily.sql("SELECT * FROM front_segments WHERE contract = 'ESZ3'").to_pylist()[0]
    later = daily.sql("SELECT * FROM rolls WHERE roll_ts >= $t AND from_price IS NOT NULL", {"t": roll["roll_ts"]}).to_pylist()
    assert math.isclose(segment["ratio_factor"], math.prod(r["to_price"] / r["from_price"] for r in later), rel_tol=1e-15)
    assert math.isclose(segment["diff_offset"], sum(r["to_price"] - r["from_price"] for r in later), abs_tol=1e-9)
    # Hand check of the first roll: both daily closes of 2013-12-13 (README of the LEAN data).
    assert (roll["from_price"], roll["to_price"]) == (1775.0, 1768.75)


def test_minute_data_alone_also_rolls_in_december_2013(wh):
    ingest(wh, [LEAN / "minute"])
    first = wh.sql("SELECT * FROM rolls WHERE from_contract = 'ESZ3' ORDER BY roll_ts LIMIT 1").to_pylist()[0]
    assert first["to_contract"] == "ESH4"
    assert date(2013, 12, 1) <= first["signal_date"] <= date(2013, 12, 20)
    # 12-18 is the first minute-data day ESH4 out-trades ESZ3 (2,261,640 vs 284,376 contracts, README).
    assert first["signal_date"] == date(2013, 12, 18)
    assert first["basis_timeframe"] == "1m"


def test_open_interest_rule(wh):
    ingest(wh, [LEAN / "daily"])
    build_rolls(wh, rule="open_interest")
    oi = wh.pandas("SELECT contract, ts, open_interest FROM open_interest WHERE contract IN ('ESZ3', 'ESH4')")
    oi["day"] = oi.ts.dt.date
    wide = oi.pivot_table(index="day", columns="contract", values="open_interest")
    crossed = wide[wide["ESH4"] > wide["ESZ3"]].index.min()
    first = wh.sql("SELECT * FROM rolls WHERE from_contract = 'ESZ3'").to_pylist()[0]
    assert first["rule"] == "open_interest" and first["signal_date"] == crossed


def test_calendar_rule_rolls_n_business_days_before_expiry(daily):
    build_rolls(daily, rule="expiry:5")
    first = daily.sql("SELECT * FROM rolls WHERE from_contract = 'ESZ3'").to_pylist()[0]
    # ESZ3 expired Friday 2013-12-20; five CME business days before it is Friday 2013-12-13.
    assert first["roll_date"] == date(2013, 12, 13)
    assert first["rule"] == "expiry:5"
    # The rule sticks: a later ingest rebuilds with it.
    ingest(daily, [LEAN / "hour" / "es_trade.zip"])
    assert daily.sql("SELECT DISTINCT rule FROM rolls").to_pylist() == [{"rule": "expiry:5"}]


def test_unknown_rule_is_a_clear_error(daily):
    from warehouse.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown roll rule"):
        build_rolls(daily, rule="magic")


def _daily_csv(tmp_path, rows):
    from tests.conftest import write_csv

    # Vendor UTC days, stamped 00:00 UTC (a bare date would be a trading date, stamped at its session open).
    return write_csv(tmp_path / "daily.csv", "symbol,ts,open,high,low,close,volume",
                     [f"{c},{d}T00:00:00Z,1800,1801,1799,1800,{v}" for c, d, v in rows])


def test_utc_day_bars_roll_only_after_the_signal_bar_is_complete(wh, tmp_path):
    # Crossover in the UTC-day bar of Wednesday 12-11. That bar is complete at 12-12 00:00 UTC, after
    # Thursday's session opened (12-11 18:00 ET = 23:00 UTC), so the roll waits for Friday's session.
    rows = [("ESZ3", "2013-12-10", 900), ("ESH4", "2013-12-10", 100),
            ("ESZ3", "2013-12-11", 400), ("ESH4", "2013-12-11", 600),
            ("ESZ3", "2013-12-12", 300), ("ESH4", "2013-12-12", 700)]
    ingest(wh, [_daily_csv(tmp_path, rows)], timeframe="1d")
    [roll] = wh.sql("SELECT * FROM rolls").to_pylist()
    assert roll["signal_date"] == date(2013, 12, 11)
    assert roll["roll_ts"] == datetime(2013, 12, 12, 23, 0, tzinfo=timezone.utc)
    # Every bar used for the decision had closed before the roll took effect.
    assert datetime(2013, 12, 12, 0, 0, tzinfo=timezone.utc) <= roll["roll_ts"]


def test_an_expired_front_rolls_to_the_next_expiry_not_to_todays_volume_spike(wh, tmp_path):
    # ESZ3 expired 2013-12-20. On the next day ESM4 has a one-day spike; the front must become ESH4.
    rows = [("ESZ3", "2013-12-19", 900), ("ESH4", "2013-12-19", 100),
            ("ESH4", "2013-12-23", 500), ("ESM4", "2013-12-23", 800),
            ("ESH4", "2013-12-24", 900), ("ESM4", "2013-12-24", 10)]
    ingest(wh, [_daily_csv(tmp_path, rows)], timeframe="1d")
    rolls = wh.sql("SELECT from_contract, to_contract FROM rolls ORDER BY roll_ts").to_pylist()
    assert rolls[0] == {"from_contract": "ESZ3", "to_contract": "ESH4"}


def test_instruments_take_expiry_and_specs_from_definitions_else_the_rule(wh):
    from tests.conftest import DATABENTO

    ingest(wh, [LEAN / "daily" / "es_trade.zip", DATABENTO / "glbx-mdp3"], timeframe=None)
    rows = {r["contract"]: r for r in wh.sql("SELECT * FROM instruments").to_pylist()}
    assert (rows["ESZ3"]["expiry"], rows["ESZ3"]["expiry_source"]) == (date(2013, 12, 20), "rule")
    assert (rows["ESH1"]["expiry"], rows["ESH1"]["expiry_source"], rows["ESH1"]["spec_source"]) == (date(2021, 3, 19), "definition", "definition")
    assert all(r["multiplier"] == 50 and r["tick_size"] == 0.25 for r in rows.values())


def test_front_contracts_for_trading_come_from_the_roll_table(daily):
    from warehouse.errors import ConfigError
    from warehouse.rolls import front_contracts

    # The ESZ3 -> ESH4 roll takes effect at the session opening Sunday 2013-12-15 23:00 UTC (see above).
    assert front_contracts(daily, ["ES"], at=datetime(2013, 12, 12, 15, tzinfo=timezone.utc)) == {"ES": "ESZ3"}
    assert front_contracts(daily, ["ES"], at=datetime(2013, 12, 17, 15, tzinfo=timezone.utc)) == {"ES": "ESH4"}
    with pytest.raises(ConfigError, match=r"^no front contract for NQ: ingest its bars and run qe rolls build"):
        front_contracts(daily, ["ES", "NQ"])
