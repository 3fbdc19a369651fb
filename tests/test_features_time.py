"""SQL time features (catalog #121-#150, sql/features/05_time.sql) against the independent oracle.

Every comparison runs the template alone through the real registry / compose path in DuckDB
(``tests.feature_harness.compare_family``) and checks every column with the catalog's tolerance and identical
NULL patterns, per symbol, on:

* 1m: the default synthetic Globex bars (DST switch, a holiday, weekends, missing minutes, ES/CL/ZN RTH windows)
  and a range crossing Good Friday 2024-03-29 and the March month/quarter end;
* 1h: the hourly resample of both;
* 1d: their CME session bars, and daily bars built directly (ts = 18:00 ET of the previous day) for every
  weekday of 2023-2024, so every month end / start, quarter end, roll, expiry and monthly opex appears;
* bars the exchange never prints (every minute of a week, halt and weekend included, for every RTH group and the
  default), which pin the oracle's documented choices for the halt and for weekend trading dates;
* the real ES minute bars of contract ESZ3 (LEAN zips in shared/data/real/lean-es-cme/minute).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import duckdb
import numpy as np
import pandas as pd
import pytest

from tests.feature_harness import catalog, compare_family, family_template, lean_minute_bars
from tests.features_oracle import synthetic, time_features
from warehouse.features.headers import parse_header
from warehouse.features.registry import build_registry, template_params
from warehouse.templates import render

ET = ZoneInfo("America/New_York")
PREFIX = "05_"


@pytest.fixture(scope="module")
def globex() -> pd.DataFrame:
    return synthetic.globex_bars()


@pytest.fixture(scope="module")
def good_friday() -> pd.DataFrame:
    # 2024-03-18 .. 2024-04-05: Good Friday closure (the last weekday of March), month and quarter end.
    return synthetic.globex_bars(symbols=("ESM4", "CLK4"), start="2024-03-18", sessions=14, seed=3)


def session_open_bars(symbol: str, days: list[date]) -> pd.DataFrame:
    """One bar per trading date, ts = 18:00 ET of the previous calendar day (the session open) in UTC."""
    stamps = [pd.Timestamp(datetime.combine(d - timedelta(days=1), time(18, 0), ET)).tz_convert("UTC") for d in days]
    n = len(days)
    return pd.DataFrame(
        {"symbol": symbol, "ts": pd.Series(stamps, dtype="datetime64[ns, UTC]"), "open": 100.0, "high": 101.0,
         "low": 99.0, "close": 100.5, "volume": np.full(n, 10, dtype=np.int64)}
    )


@pytest.fixture(scope="module")
def daily_2y() -> pd.DataFrame:
    days = [d for d in pd.date_range("2023-01-02", "2024-12-31").date if d.weekday() < 5]
    return pd.concat([session_open_bars(s, days) for s in ("ESH4", "CLZ4", "ZNM4")], ignore_index=True)


@pytest.fixture(scope="module")
def real_es() -> pd.DataFrame:
    """ESZ3 minute bars from the LEAN trade zips."""
    return lean_minute_bars()


# ---------------------------------------------------------------------------------------------------------
# The template declares exactly the catalog's time features, in order, reading nothing but the bar's time
# ---------------------------------------------------------------------------------------------------------


def test_header_is_the_catalog_rows_121_to_150():
    (name, text), = family_template(PREFIX)
    specs = parse_header(name, text)
    assert [s.name for s in specs] == time_features.COLUMNS
    rows = catalog()
    assert [rows[s.name]["index"] for s in specs] == list(range(121, 151))
    assert [s.type for s in specs] == [rows[s.name]["type"] for s in specs]
    assert {s.category for s in specs} == {"time"}


@pytest.mark.parametrize("timeframe", ["1m", "1h", "1d"])
def test_builds_lints_and_reads_only_ts(timeframe):
    registry = build_registry(family_template(PREFIX), timeframe=timeframe)
    for feature in ("minute_of_day", "is_rth", "is_first_bar_of_session", "days_to_roll", "weekdays_to_month_end"):
        assert registry.lineage(feature) == ["ts"]


def test_int_features_are_integers_before_the_compose_cast(globex):
    # The compose step casts to the declared type anyway; the family itself must already produce integers.
    registry = build_registry(family_template(PREFIX), timeframe="1m")
    con = duckdb.connect()
    con.register("bars", globex.head(2000))
    base = render("features/base.sql", **{**template_params("1m"), "source": "bars"})
    rel = con.sql(f"WITH base AS ({base}) {registry.families[0].sql}")
    types = dict(zip(rel.columns, (str(t) for t in rel.types)))
    for spec in registry.features:
        if spec.type == "int":
            assert types[spec.name] in ("INTEGER", "BIGINT"), (spec.name, types[spec.name])
        else:
            assert types[spec.name] == "DOUBLE", (spec.name, types[spec.name])
    con.close()


# ---------------------------------------------------------------------------------------------------------
# SQL == oracle
# ---------------------------------------------------------------------------------------------------------


def test_1m_globex(globex):
    compare_family(PREFIX, time_features, globex, "1m")


def test_1m_good_friday_month_and_quarter_end(good_friday):
    compare_family(PREFIX, time_features, good_friday, "1m")


def test_1h(globex, good_friday):
    compare_family(PREFIX, time_features, synthetic.hourly(pd.concat([globex, good_friday], ignore_index=True)), "1h")


def test_1d_session_bars(globex, good_friday):
    compare_family(PREFIX, time_features, synthetic.session_daily(pd.concat([globex, good_friday], ignore_index=True)), "1d")


def test_1d_two_years_of_weekdays(daily_2y):
    compare_family(PREFIX, time_features, daily_2y, "1d")
    # The range really holds every calendar case, 2 years x 3 symbols.
    out = time_features.compute(daily_2y[daily_2y.symbol == "ESH4"].reset_index(drop=True), "1d")
    assert out["is_month_end"].sum() == 24 and out["is_month_start"].sum() == 24
    assert out["is_quarter_end"].sum() == 8
    assert (out["days_to_roll"] == 0).sum() == 8 and (out["days_to_expiry"] == 0).sum() == 8
    assert (out["days_to_monthly_opex"] == 0).sum() == 24
    assert set(out["day_of_week"]) == {0, 1, 2, 3, 4} and set(out["month"]) == set(range(1, 13))


def test_1d_every_calendar_day_1999_to_2031():
    # Weekend trading dates included (the oracle's choices 3 and 4), and 32 years of third-Friday positions.
    days = list(pd.date_range("1999-12-01", "2031-01-31").date)
    compare_family(PREFIX, time_features, session_open_bars("ZBH0", days), "1d")


def test_1m_every_minute_of_a_week_for_every_rth_group():
    # Bars Globex never prints: the 17:00-18:00 halt and the weekend (the oracle's choices 1-3), across the
    # 2024-11-03 DST end and the October month end, for each RTH group, prefix overlaps and the default window.
    start = pd.Timestamp("2024-10-27 00:00", tz="America/New_York").tz_convert("UTC")
    stamps = pd.Series(pd.date_range(start, periods=8 * 1440 + 60, freq="min"))
    frames = []
    for symbol in ("ESZ4", "MESZ4", "ES.c.0", "CLZ4", "MCLF5", "GCZ4", "ZNZ4", "6EZ4", "XYZ", "M2KZ4"):
        frames.append(pd.DataFrame({"symbol": symbol, "ts": stamps, "open": 100.0, "high": 101.0, "low": 99.0,
                                    "close": 100.0, "volume": np.ones(len(stamps), dtype=np.int64)}))
    compare_family(PREFIX, time_features, pd.concat(frames, ignore_index=True), "1m")


@pytest.mark.parametrize("timeframe", ["1m", "1h", "1d"])
def test_real_es_esz3(real_es, timeframe):
    bars = {"1m": real_es, "1h": synthetic.hourly(real_es), "1d": synthetic.session_daily(real_es)}[timeframe]
    compare_family(PREFIX, time_features, bars, timeframe)
