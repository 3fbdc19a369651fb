"""Bounded-tail feature rows (warehouse.features.incremental) equal the full build, every catalog feature.

The oracle is the full build over all bars (itself checked against the numpy/pandas oracle by the family tests):
the rows from a cut point T on, computed from only a bounded tail before T, must equal the full build's rows
from T on within the catalog tolerances (tests/feature_harness.assert_matches) with identical NULLs.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import pandas as pd
import pytest

from tests.feature_harness import assert_matches, lean_minute_bars
from tests.features_oracle.synthetic import STALE, globex_bars, hourly
from warehouse.features.incremental import tail_features, tail_starts
from warehouse.features.registry import build_registry, feature_query
from warehouse.features.tail import RECURSIVE, Filter, family_needs


def _connect(bars: pd.DataFrame) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("bars", bars[["symbol", "ts", "open", "high", "low", "close", "volume"]])
    return con


class Case:
    """Bars, their full build (the oracle) and a connection holding them as ``bars``."""

    def __init__(self, bars: pd.DataFrame, timeframe: str) -> None:
        self.bars = bars.sort_values(["symbol", "ts"]).reset_index(drop=True)
        self.timeframe = timeframe
        self.registry = build_registry(timeframe=timeframe)
        self.con = _connect(self.bars)
        self.full = self.con.sql(feature_query(self.registry, "bars", timeframe)).df()

    def check(self, since: pd.Timestamp) -> pd.DataFrame:
        got = tail_features(self.con, "bars", self.timeframe, since.to_pydatetime(), registry=self.registry).to_pandas()
        want = self.full[self.full.ts >= since].reset_index(drop=True)
        assert got[["symbol", "ts"]].equals(want[["symbol", "ts"]])
        assert list(got.columns) == list(want.columns)
        assert_matches(got, want, [s.name for s in self.registry.features], label=f"[since {since}] ")
        return got


@pytest.fixture(scope="module")
def minute() -> Case:
    # 23 sessions: more than the 21 complete sessions session_volume_frac_20 reads, so every tail is a real cut.
    return Case(globex_bars(symbols=("ESH4", "CLJ4"), sessions=23, seed=3), "1m")


def _session_rows(bars: pd.DataFrame, symbol: str) -> pd.DataFrame:
    part = bars[bars.symbol == symbol].reset_index(drop=True)
    et = part.ts.dt.tz_convert("America/New_York")
    part["td"] = (et + pd.Timedelta(hours=6)).dt.date
    return part


def test_tail_equals_full_build_from_inside_the_stale_block(minute):
    part = _session_rows(minute.bars, "ESH4")
    session, offset, length = STALE
    first = part.index[part.td == sorted(part.td.unique())[session]][0]
    minute.check(part.ts[first + offset + length - 20])


def test_tail_equals_full_build_from_the_last_session_open_and_mid_session(minute):
    part = _session_rows(minute.bars, "CLJ4")
    last = part[part.td == part.td.max()]
    minute.check(last.ts.iloc[0])
    minute.check(last.ts.iloc[len(last) // 2])


def test_one_new_bar_equals_the_full_builds_last_row(minute):
    """The live path: T = the last bar, one row per symbol, all 150 features."""
    got = minute.check(minute.bars.ts.max())
    assert len(got) == minute.bars.groupby("symbol").ts.max().eq(minute.bars.ts.max()).sum() >= 1
    assert len(got.columns) == 2 + 150


def test_hourly_tail_where_the_filter_warm_up_is_the_bound():
    # 95 sessions of 1h bars (~2,100 rows): more than the 2,031 rows WILDER_50's warm-up asks for.
    case = Case(hourly(globex_bars(symbols=("ESH4",), sessions=95, seed=7)), "1h")
    needs = max(family_needs(f).rows for f in case.registry.families)
    assert needs == Filter("wilder", 50).warmup + 1 < len(case.bars) - 40
    case.check(case.bars.ts.iloc[needs + 30])
    case.check(case.bars.ts.iloc[-1])


def test_daily_session_bars_tail_equals_full_build():
    """Session bars (one per trading date), with the volume family's 20-session features defined. (On daily bars
    its filters' warm-up reaches further back than 21 sessions: its tail is the long one, nothing is carried.)"""
    from tests.features_oracle.synthetic import session_daily

    case = Case(session_daily(globex_bars(symbols=("ESH4", "CLJ4"), sessions=40, seed=8)), "1d")
    got = case.check(case.bars.ts.iloc[-8])
    assert got.session_volume_frac_20.notna().any() and got.rel_volume_tod_20.notna().any()
    case.check(case.bars.ts.iloc[-1])


def test_real_es_bars_tail_equals_full_build():
    case = Case(lean_minute_bars(), "1m")
    case.check(case.bars.ts.iloc[len(case.bars) * 3 // 4])
    case.check(case.bars.ts.iloc[-1])


def test_tail_is_bounded_and_session_aligned(minute):
    """The tail really is a cut (not the whole history) and session families start at a session open."""
    since = minute.bars.ts.max().to_pydatetime()
    for family in minute.registry.families:
        needs = family_needs(family)
        starts = tail_starts(minute.con, "bars", "1m", needs, ["ESH4", "CLJ4"], since)
        for symbol, start in starts.items():
            part = _session_rows(minute.bars, symbol)
            row = int(part.index[part.ts == pd.Timestamp(start)][0])
            if needs.sessions or needs.tod:
                # the 20th earlier row at some minute of day can lie in the first session: row 0 is an open too
                assert row == 0 or part.td[row] != part.td[row - 1], "tail must start at a session open"
            else:
                # rows before T, or before the last active bar of a filter input (a few rows earlier here)
                assert 0 < row <= len(part) - 1 - needs.rows, (family.template, symbol)
                assert row >= len(part) - 1 - needs.rows - 60, (family.template, symbol)


def test_every_recursive_catalog_feature_has_a_declared_chain():
    """Catalog formulas that name an EMA, a Wilder filter or a feature built on one are in RECURSIVE."""
    from tests.feature_harness import CATALOG

    recursive = set()
    for line in CATALOG.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 8 or not cells[0].isdigit():
            continue
        formula = cells[4]
        if any(k in formula for k in ("EMA_", "WILDER_", "Wilder", "atr_14", "+DI", "−DI", "macd_12_26")):
            recursive.add(cells[1].strip("`"))
    assert recursive - set(RECURSIVE) == set()
    assert set(RECURSIVE) - recursive == set()


def test_since_after_the_last_bar_gives_no_rows(minute):
    since = (minute.bars.ts.max() + pd.Timedelta(minutes=1)).to_pydatetime()
    got = tail_features(minute.con, "bars", "1m", since, registry=minute.registry)
    assert got.num_rows == 0 and got.num_columns == 152


def test_window_read_first_is_widened_when_it_is_too_short(minute):
    """A clock window that cannot hold the needs falls back to more history and finds the same start."""
    since = minute.bars.ts.max().to_pydatetime()
    family = minute.registry.families[1]  # volume: 21 sessions and tod20
    needs = family_needs(family)
    from warehouse.features import incremental

    wide = tail_starts(minute.con, "bars", "1m", needs, ["ESH4"], since)
    original = incremental.first_window
    try:
        incremental.first_window = lambda n, tf: dt.timedelta(hours=3)
        narrow = tail_starts(minute.con, "bars", "1m", needs, ["ESH4"], since)
    finally:
        incremental.first_window = original
    assert narrow == wide


@pytest.fixture(scope="module")
def short() -> pd.DataFrame:
    return globex_bars(symbols=("ESH4",), sessions=3, seed=11)


def test_appending_bars_never_changes_earlier_tail_rows(short):
    """No look-ahead on the tail path: rows before the appended bars are the same with or without them."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    registry = build_registry(timeframe="1m")

    @settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
    @given(k=st.integers(2600, len(short) - 201), back=st.integers(1, 300), m=st.integers(1, 200))
    def check(k: int, back: int, m: int) -> None:
        since = short.ts[k - back].to_pydatetime()
        before = tail_features(_connect(short[:k]), "bars", "1m", since, registry=registry).to_pandas()
        after = tail_features(_connect(short[:k + m]), "bars", "1m", since, registry=registry).to_pandas()
        assert len(before) == back
        assert_matches(after[:back].reset_index(drop=True), before, [s.name for s in registry.features])
        assert after[:back][["symbol", "ts"]].reset_index(drop=True).equals(before[["symbol", "ts"]])

    check()


def test_a_stale_stretch_longer_than_every_warm_up_is_read_from_before_it():
    """Through 2,600 flat zero-volume bars (more than the 2,031-row bound) the filters only decay; the tail
    reaches back to the last active bar's warm-up (the anchors), so the decayed states and NULLs still match."""
    bars = globex_bars(symbols=("ESH4",), sessions=5, seed=2)
    stale = slice(2600, 5200)
    close = bars.close[stale.start - 1]
    bars.loc[stale, ["open", "high", "low", "close"]] = close
    bars.loc[stale, "volume"] = 0
    case = Case(bars, "1m")
    since = case.bars.ts[stale.stop - 60]
    starts = tail_starts(case.con, "bars", "1m", family_needs(case.registry.families[2]), ["ESH4"], since.to_pydatetime())
    assert pd.Timestamp(starts["ESH4"]) <= case.bars.ts[stale.start - 1 - 2031]
    case.check(since)


def test_the_volume_family_runs_over_a_few_sessions_and_carries_its_20_session_history(minute, monkeypatch):
    """With the shipped templates, the volume family's two 20-session features read carried rows (the 20 latest
    rows per minute of day and the session totals before its tail) instead of a 21-session tail: its tail starts
    at most 3 sessions before T's, and every row from T on still equals the full build (``check``)."""
    from warehouse.features import incremental

    seen = {}
    original = incremental._family_rows

    def spy(con, source, timeframe, since, starts, registry, family):  # noqa: ANN001, ANN202
        seen[family.template] = dict(starts)
        return original(con, source, timeframe, since, starts, registry, family)

    monkeypatch.setattr(incremental, "_family_rows", spy)
    part = _session_rows(minute.bars, "CLJ4")
    last = part[part.td == part.td.max()]
    since = last.ts.iloc[len(last) // 2]
    got = minute.check(since)
    assert got.session_volume_frac_20.notna().any() and got.rel_volume_tod_20.notna().any()
    for symbol, start in seen["features/02_volume.sql"].items():
        rows = _session_rows(minute.bars, symbol)
        sessions_before = rows[(rows.ts >= pd.Timestamp(start)) & (rows.ts < since)].td.nunique()
        assert 1 <= sessions_before <= 3, (symbol, start)
    tables = {r[0] for r in minute.con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert not {t for t in tables if t.startswith("_tail") or t.startswith("_carry")}


def test_the_carried_rows_are_the_latest_20_per_minute_of_day_and_the_latest_21_session_totals():
    """_carry_volume against pandas: 30 sessions of two symbols before the short start (more than either cap), one
    minute of day missing from the 12 latest sessions (its 20 rows reach back further than the others')."""
    from warehouse.features import incremental

    bars = globex_bars(symbols=("ESH4", "CLJ4"), sessions=33, seed=12)
    et = bars.ts.dt.tz_convert("America/New_York")
    bars["td"] = (et + pd.Timedelta(hours=6)).dt.date
    bars["mod"] = (et.dt.hour * 60 + et.dt.minute).astype(int)
    dates = sorted(bars.td.unique())
    bars = bars[~((bars.td >= dates[-13]) & (bars["mod"] == 600))].reset_index(drop=True)
    short_date = dates[-3]
    con = _connect(bars.drop(columns=["td", "mod"]))
    con.execute("CREATE TEMP TABLE rows AS SELECT left(symbol, 2) AS symbol, ts, open, high, low, close, volume "
                "FROM bars")
    bars["root"] = bars.symbol.str[:2]
    long = {root: g.ts.min().to_pydatetime() for root, g in bars.groupby("root")}
    short = {root: g[g.td == short_date].ts.min().to_pydatetime() for root, g in bars.groupby("root")}
    try:
        starts = incremental._carry_volume(con, "rows", "1m", long, short)
        assert starts == short
        tod = con.execute(f"SELECT symbol, ts, v FROM {incremental.TOD_HISTORY} ORDER BY symbol, ts").df()
        sessions = con.execute(f"SELECT symbol, sid, total FROM {incremental.SESSION_HISTORY} "
                               "ORDER BY symbol, sid").df()
    finally:
        con.execute(f"DROP TABLE IF EXISTS {incremental.TOD_HISTORY}")
        con.execute(f"DROP TABLE IF EXISTS {incremental.SESSION_HISTORY}")
    before = bars[bars.td < short_date]
    want_tod = (before.sort_values("ts").groupby(["root", "mod"]).tail(20)
                .sort_values(["root", "ts"])[["root", "ts", "volume"]].reset_index(drop=True))
    assert len(want_tod) < len(before)  # the cap drops rows
    assert tod.symbol.tolist() == want_tod.root.tolist()
    assert (tod.ts.dt.tz_convert("UTC") == want_tod.ts.dt.tz_convert("UTC")).all()
    assert tod.v.tolist() == want_tod.volume.astype(float).tolist()
    totals = before.groupby(["root", "td"]).volume.sum().reset_index()
    want_sessions = []
    for root, g in totals.groupby("root"):
        latest = g.sort_values("td", ascending=False).head(21).reset_index(drop=True)
        want_sessions += [(root, -(k + 1), float(v)) for k, v in enumerate(latest.volume)]
    assert sorted(map(tuple, sessions.itertuples(index=False))) == sorted(want_sessions)
    assert len(totals) > 2 * 21  # the cap drops sessions
