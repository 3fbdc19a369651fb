"""A segmented full build (`build_features(..., segments=...)`: a symbol's history cut into segments, each computed
from the bounded tail before its cut, concurrently, then composed into the year partitions) equals the unsegmented
full build on every catalog feature, within the catalog tolerances and with identical NULLs: synthetic Globex bars
with cuts in awkward places (mid-week mid-session, the first bar after a holiday and after an early close, inside
a 960-row stale stretch, inside the first sessions where the tail is the whole history),
the same on 1h bars, and the real ES bars on 1m and 1h."""

from __future__ import annotations

import datetime as dt
import functools
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from loaders.ingest import ingest
from tests.feature_harness import assert_matches, lean_minute_bars
from tests.features_oracle.synthetic import DEFAULT_HOLIDAYS, STALE, globex_bars, hourly
from warehouse import Warehouse
from warehouse.features import materialize
from warehouse.features.incremental import shipped_registry, tail_starts
from warehouse.features.materialize import build_features, segment_cuts
from warehouse.features.tail import TailNeeds, family_needs

ET = "America/New_York"
HOLIDAY = "2024-04-10"  # a Wednesday closure late enough in the range that the cut after it has a bounded tail
EARLY_CLOSE = "2024-04-18"  # trading date whose session stops at 13:15 ET (like the day after Thanksgiving)
#: Rows of the late stale stretch (flat OHLC, zero volume). Longer than the EMA_50 and Wilder-14 warm-ups; kept below
#: ~1,000 rows because after that rsi_2's Wilder-2 gain and loss states (halved every flat bar) become subnormal
#: doubles and their ratio is rounding noise: any tail (this build's segments, `tail_features`, the live path)
#: then differs from the full build by up to ~1e-7 relative, both off the exact constant RSI (bench/README.md,
#: "Segmented build").
STALE_ROWS = 960


def _trading_date(ts: pd.Series) -> pd.Series:
    return (ts.dt.tz_convert(ET) + pd.Timedelta(hours=6)).dt.date.astype(str)


def _warehouse(tmp_path: Path, name: str, bars: pd.DataFrame, timeframe: str = "1m") -> Warehouse:
    wh = Warehouse(tmp_path / name)
    path = tmp_path / f"{name}.parquet"
    pq.write_table(pa.Table.from_pandas(bars, preserve_index=False), path)
    [report] = ingest(wh, [path], timeframe=timeframe)
    assert report.error is None and report.rows_quarantined == 0
    return wh


def _features(wh: Warehouse, timeframe: str) -> pd.DataFrame:
    return wh.pandas(f"SELECT * FROM features_{timeframe} ORDER BY symbol, ts")


def _assert_equal(got: pd.DataFrame, want: pd.DataFrame, label: str) -> None:
    assert got[["symbol", "ts"]].equals(want[["symbol", "ts"]]), label
    assert list(got.columns) == list(want.columns) and len(got.columns) == 2 + 150
    assert_matches(got, want, list(want.columns[2:]), label=label)


def _segmented_equals_full(tmp_path: Path, bars: pd.DataFrame, timeframe: str, segments, ingest_as: str = "1m"):
    """Build the same bars unsegmented and segmented in two warehouses; return (segmented report, features)."""
    full = _warehouse(tmp_path, "full", bars, ingest_as)
    report = build_features(full, timeframe, segments=1)
    assert report.segments == {} and report.built
    want = _features(full, timeframe)
    seg = _warehouse(tmp_path, "seg", bars, ingest_as)
    got_report = build_features(seg, timeframe, segments=segments)
    assert got_report.rows == report.rows == len(want)
    assert got_report.partitions_written == report.partitions_written
    got = _features(seg, timeframe)
    _assert_equal(got, want, f"[{timeframe} segmented] ")
    assert not any((seg.root / ".staging").glob("*")), "the staging area is cleaned up"
    return got_report, got


def _union_needs() -> TailNeeds:
    return functools.reduce(TailNeeds.merge, (family_needs(f) for f in shipped_registry("1m").families), TailNeeds(0))


@pytest.fixture(scope="module")
def awkward() -> tuple[pd.DataFrame, list[pd.Timestamp], int]:
    """36 sessions of ES and CL with a late holiday, an early close and a late stale stretch, and the awkward cut
    times."""
    bars = globex_bars(symbols=("ESH4", "CLJ4"), sessions=36, seed=8, holidays=(*DEFAULT_HOLIDAYS, HOLIDAY))
    et = bars.ts.dt.tz_convert(ET)
    td = _trading_date(bars.ts)
    early = (td == EARLY_CLOSE) & (et.dt.hour * 60 + et.dt.minute >= 13 * 60 + 15) & (et.dt.hour < 17)
    bars = bars[~early].reset_index(drop=True)
    td = _trading_date(bars.ts)
    cuts, stale_end = [], None
    for symbol in ("ESH4", "CLJ4"):
        rows = bars.index[bars.symbol == symbol]
        start = rows[0] + int(len(rows) * 0.88)  # in the last sessions: ~4,400 rows from the end
        stale = slice(start, start + STALE_ROWS - 1)  # .loc is inclusive
        bars.loc[stale, ["open", "high", "low", "close"]] = bars.close[start - 1]
        bars.loc[stale, "volume"] = 0
        stale_end = stale_end or bars.ts[start + STALE_ROWS - 60]
    es = bars[bars.symbol == "ESH4"]
    es_td = td[bars.symbol == "ESH4"]
    et = es.ts.dt.tz_convert(ET)
    first_session = es_td == es_td.iloc[0]
    cuts = [
        # inside the synthetic stale block of session 2 (tail: the whole history, its first sessions)
        es.ts[es_td == sorted(es_td.unique())[STALE[0]]].iloc[STALE[1] + 150],
        # the first bar after the mid-week holiday
        es.ts[es_td > HOLIDAY].iloc[0],
        # mid-week, mid-RTH: Wednesday 2024-04-17 10:17 ET
        es.ts[(es_td == "2024-04-17") & (et.dt.hour == 10) & (et.dt.minute == 17)].iloc[0],
        # the first bar after the early close
        es.ts[es_td > EARLY_CLOSE].iloc[0],
        # inside the late stale stretch, 60 rows before its end
        stale_end,
    ]
    assert not first_session[es.ts.isin(cuts)].any()
    return bars, sorted(cuts), stale_end


def test_segmented_build_with_awkward_cuts_equals_the_full_build(tmp_path, awkward, monkeypatch):
    bars, cuts, stale_end = awkward
    # The late cuts really are bounded tails (not the whole history); the one in the stale stretch reaches back to
    # the 2,031-row warm-up (WILDER_50) before the stretch's last active bar.
    con = Warehouse(tmp_path / "probe").connect()
    con.register("bars", bars)
    needs = _union_needs()
    es = bars[bars.symbol == "ESH4"].reset_index(drop=True)
    for cut in cuts[1:]:
        start = tail_starts(con, "bars", "1m", needs, ["ESH4"], cut.to_pydatetime())["ESH4"]
        assert es.ts.iloc[0] < pd.Timestamp(start) < cut
    start = pd.Timestamp(tail_starts(con, "bars", "1m", needs, ["ESH4"], stale_end.to_pydatetime())["ESH4"])
    assert start <= es.ts[es.index[es.ts == stale_end][0] - STALE_ROWS - 2031]
    monkeypatch.setattr(materialize, "SEGMENT_WORKERS", 2)  # concurrent segments even on a one-core machine
    report, got = _segmented_equals_full(tmp_path, bars, "1m", [c.to_pydatetime() for c in cuts])
    assert report.segments == {"ES": len(cuts) + 1, "CL": len(cuts) + 1}
    assert set(got.symbol) == {"ES", "CL"}


def test_automatic_cuts_are_session_opens_of_equal_shares(awkward):
    bars, _, _ = awkward
    es = bars[bars.symbol == "ESH4"]
    days = {d: f"{len(g)}:0:{g.ts.iloc[0].isoformat()}" for d, g in es.groupby(_trading_date(es.ts))}
    cuts = segment_cuts(days, 4)
    opens = {g.ts.iloc[0].to_pydatetime() for _, g in es.groupby(_trading_date(es.ts))}
    assert len(cuts) == 3 and set(cuts) <= opens and cuts == sorted(cuts)
    shares = [(es.ts < c).sum() / len(es) for c in cuts]
    assert all(abs(s - k / 4) < 0.05 for s, k in zip(shares, (1, 2, 3)))
    assert segment_cuts(days, 1) == [] and segment_cuts(days, None) == []  # below SEGMENT_ROWS: one segment
    # explicit cuts are kept as given, after the first bar only
    late = es.ts.iloc[-5].to_pydatetime()
    assert segment_cuts(days, [late, es.ts.iloc[0].to_pydatetime()]) == [late]


def test_automatic_segmentation_above_the_row_threshold(tmp_path, monkeypatch):
    bars = globex_bars(symbols=("ESH4",), sessions=24, seed=4)
    monkeypatch.setattr(materialize, "SEGMENT_ROWS", 12_000)  # ~33k bars: 3 segments by default
    report, _ = _segmented_equals_full(tmp_path, bars, "1m", None)
    assert report.segments == {"ES": 3}


def test_hourly_segmented_build_equals_the_full_build(tmp_path):
    # 100 sessions of 1h bars (~2,300 rows): the cuts after the 2,031-row warm-up (WILDER_50) have bounded tails.
    bars = hourly(globex_bars(symbols=("ESH4",), sessions=100, seed=6))
    td = _trading_date(bars.ts)
    et = bars.ts.dt.tz_convert(ET)
    after_holiday = bars.ts[td > "2024-03-29"].iloc[0]  # first bar after Good Friday (tail: everything before)
    wednesday = bars.ts[(et.dt.weekday == 2) & (et.dt.hour == 11)].iloc[-2]  # mid-week mid-session, late
    session_open = bars.ts[td == sorted(td.unique())[-5]].iloc[0]
    cuts = [after_holiday, wednesday, session_open]
    con = Warehouse(tmp_path / "probe").connect()
    con.register("bars", bars)
    needs = functools.reduce(TailNeeds.merge, (family_needs(f) for f in shipped_registry("1h").families))
    start = tail_starts(con, "bars", "1h", needs, ["ESH4"], wednesday.to_pydatetime())["ESH4"]
    assert bars.ts.iloc[0] < pd.Timestamp(start)
    report, _ = _segmented_equals_full(tmp_path, bars, "1h", sorted(c.to_pydatetime() for c in cuts), ingest_as="1h")
    assert report.segments == {"ES": 4}


@pytest.fixture(scope="module")
def real_es() -> pd.DataFrame:
    return lean_minute_bars("201312", "ESZ3")


@pytest.mark.parametrize("timeframe", ["1m", "1h"])
def test_real_es_bars_segmented_equals_full_build(tmp_path, real_es, timeframe):
    ts = real_es.ts.sort_values().reset_index(drop=True)
    cuts = [ts[len(ts) * 2 // 5].to_pydatetime(), ts[len(ts) * 3 // 4].to_pydatetime(), ts.iloc[-300].to_pydatetime()]
    report, _ = _segmented_equals_full(tmp_path, real_es, timeframe, cuts)
    assert report.segments == {"ES": 4}
