"""LiveFeatures (warehouse.features.live): bars appended one at a time give the full build's rows, every catalog
feature, within the catalog tolerances and with identical NULLs.

The oracle is the full batch build over the same bars (``build_features(wh, full=True)`` and the ``features_1m``
view, or the same templates' single query over the warehouse's feature source at a moment when the adjusted
history is still moving), itself checked against the numpy/pandas oracle by the family tests.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from loaders.ingest import ingest
from tests.feature_harness import assert_matches, lean_minute_bars
from tests.features_oracle.synthetic import globex_bars
from warehouse import Warehouse
from warehouse.errors import QEError
from warehouse.features.incremental import shipped_registry
from warehouse.features.live import RUNNING_ROWS, LiveFeatures
from warehouse.features.materialize import build_features
from warehouse.features.registry import feature_query
from warehouse.templates import render

SOURCE = f"({render('features/_source.sql', timeframe='1m')})"


def _ingest(wh: Warehouse, frame: pd.DataFrame, path: Path) -> None:
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    [report] = ingest(wh, [path], timeframe="1m")
    assert report.error is None, report.error


def _source_bars(wh: Warehouse, since: pd.Timestamp, until: pd.Timestamp | None = None,
                 timeframe: str = "1m") -> pa.Table:
    """The feature source's bars (back-adjusted) from ``since`` (to ``until``), as the live loop passes them."""
    con = wh.new_connection()
    source = SOURCE if timeframe == "1m" else f"({render('features/_source.sql', timeframe=timeframe)})"
    try:
        return con.execute(f"SELECT symbol, ts, open, high, low, close, volume FROM {source} "
                           "WHERE ts >= $a AND ($b IS NULL OR ts <= $b) ORDER BY ts, symbol",
                           {"a": since.to_pydatetime(), "b": None if until is None else until.to_pydatetime()}
                           ).to_arrow_table()
    finally:
        con.close()


def _append_each(live: LiveFeatures, bars: pa.Table) -> pa.Table:
    """Append the bars one timestamp at a time (all roots' bars of that minute together)."""
    out = []
    stamps = bars.column("ts").to_pylist()
    for ts in sorted(set(stamps)):
        out.append(live.append(bars.filter(pa.array([s == ts for s in stamps]))))
    return pa.concat_tables(out)


def _assert_rows(got: pa.Table, want: pd.DataFrame, label: str) -> None:
    got = got.to_pandas().sort_values(["symbol", "ts"]).reset_index(drop=True)
    want = want.sort_values(["symbol", "ts"]).reset_index(drop=True)
    assert got[["symbol", "ts"]].equals(want[["symbol", "ts"]]), label
    assert list(got.columns) == list(want.columns)
    assert len(got.columns) == 2 + 150
    assert_matches(got, want, list(want.columns[2:]), label=label)


def _full_view(wh: Warehouse, since: pd.Timestamp) -> tuple[pd.DataFrame, pa.Schema]:
    """The full build's rows from ``since`` on (``features_1m`` after ``build_features(full=True)``) and the
    view's schema."""
    build_features(wh, "1m", full=True)
    wh.refresh()
    table = wh.sql("SELECT * FROM features_1m WHERE ts >= ? ORDER BY symbol, ts", [since.to_pydatetime()])
    return table.to_pandas(), table.schema


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> dict:
    """Two roots x 24 sessions of synthetic Globex bars; the bars from 25 minutes before the last session's close
    (Friday 2024-04-05) to 25 minutes after the next open (Sunday 18:00 ET, trading date Monday 2024-04-08) are
    appended one minute at a time, with a trim every 20 bars: the carried session state crosses a weekend."""
    tmp = tmp_path_factory.mktemp("live")
    bars = globex_bars(symbols=("ESH4", "CLJ4"), sessions=24, seed=3)
    trading_date = (bars.ts.dt.tz_convert("America/New_York") + pd.Timedelta(hours=6)).dt.date
    last_open = bars.ts[trading_date == trading_date.max()].min()
    stamps = sorted(bars.ts.unique())
    k = stamps.index(last_open)
    cut, end = stamps[k - 25], stamps[k + 24]
    bars = bars[bars.ts <= end]
    wh = Warehouse(tmp / "wh")
    _ingest(wh, bars[bars.ts < cut], tmp / "history.parquet")
    live = LiveFeatures(wh, "1m", ["ES", "CL"], trim_every=20, workers=2)  # the threaded path
    rows_before = live.rows()
    _ingest(wh, bars[bars.ts >= cut], tmp / "new.parquet")
    got = _append_each(live, _source_bars(wh, cut))
    want, schema = _full_view(wh, cut)
    yield {"live": live, "got": got, "want": want, "schema": schema, "rows_before": rows_before, "wh": wh}
    live.close()


def test_appending_bars_one_at_a_time_equals_the_full_build_across_a_session_boundary(synthetic):
    assert synthetic["got"].num_rows >= 2 * 50 - 5  # a few minutes are gaps in the synthetic bars
    _assert_rows(synthetic["got"], synthetic["want"], "[synthetic live] ")


def test_rows_have_the_features_view_columns_and_types(synthetic):
    assert synthetic["got"].schema.names == synthetic["schema"].names
    assert synthetic["got"].schema.types == synthetic["schema"].types


def test_tails_stay_bounded_and_the_volume_family_reads_no_21_session_tail(synthetic):
    """Trims keep each tail near its bound; the volume family's session-history features come from the carried
    state (one row per root and minute of day, one per session), not from ~29k bars per root."""
    rows = synthetic["live"].rows()
    per_root = {name: n / 2 for name, n in rows.items()}
    assert per_root["features/02_volume.sql"] < 3 * 1440 + 40
    assert per_root["features/03_volatility.sql"] < 2031 + 40
    for name, n in rows.items():
        assert n <= synthetic["rows_before"][name] + 2 * 40, name


def test_a_bar_not_after_the_last_or_of_another_root_is_refused(synthetic):
    live, got = synthetic["live"], synthetic["got"]
    last = got.slice(got.num_rows - 1, 1).select(["symbol", "ts"])
    bar = pa.table({"symbol": last.column("symbol"), "ts": last.column("ts"), "open": [1.0], "high": [1.0],
                    "low": [1.0], "close": [1.0], "volume": pa.array([1], pa.int64())})
    with pytest.raises(QEError, match="not after its last bar"):
        live.append(bar)
    with pytest.raises(QEError, match="not among the roots"):
        live.append(bar.set_column(0, "symbol", pa.array(["NQ"])))


def test_real_es_bars_through_a_roll_equal_the_full_build(tmp_path):
    """Real ESZ3 and ESH4 minute bars (LEAN), appended through the December 2013 volume roll (effective at the
    18:00 ET open of 2013-12-18): until ESZ3's and ESH4's last common bar before the roll (22:14 UTC) every new
    bar moves the roll's prices and with them the whole back-adjusted history, which the live path reloads;
    each row equals the full build over the warehouse as it was then. After it, the bars of the new front
    (ESH4) and the next session's (2013-12-20) equal the final full build."""
    bars = pd.concat([lean_minute_bars("201312", "ESZ3"), lean_minute_bars("201403", "ESH4")])
    bars = bars[bars.ts < "2013-12-20 00:20"].sort_values(["ts", "symbol"]).reset_index(drop=True)
    cut = pd.Timestamp("2013-12-18 22:12", tz="UTC")
    wh = Warehouse(tmp_path / "wh")
    _ingest(wh, bars[bars.ts < cut], tmp_path / "history.parquet")
    live = LiveFeatures(wh, "1m", ["ES"])
    registry = shipped_registry("1m")
    try:
        loads = []
        for k, ts in enumerate(pd.date_range(cut, periods=3, freq="min")):
            _ingest(wh, bars[bars.ts == ts], tmp_path / f"bar{k}.parquet")
            adjusted = live._segments["ES"]
            got = live.append(_source_bars(wh, ts, ts))
            loads.append(live._segments["ES"] != adjusted)
            con = wh.new_connection()
            want = con.execute(f"SELECT * FROM ({feature_query(registry, SOURCE, '1m')}) WHERE ts = $t",
                               {"t": ts.to_pydatetime()}).df()
            con.close()
            _assert_rows(got, want, f"[ES {ts}, roll prices moving] ")
        assert any(loads), "the roll's prices did not move: the reload path was not exercised"

        rest = bars[bars.ts >= cut + pd.Timedelta(minutes=3)]
        _ingest(wh, rest, tmp_path / "rest.parquet")
        since = cut + pd.Timedelta(minutes=3)
        got = _append_each(live, _source_bars(wh, since))
        want, _ = _full_view(wh, since)
        assert {"ESZ3", "ESH4"} <= set(bars.symbol[bars.ts >= since]) and len(want) >= 60
        _assert_rows(got, want, "[ES through the roll] ")
    finally:
        live.close()


def test_a_corrected_bar_then_reload_gives_the_full_builds_rows(tmp_path):
    """A bar already appended is corrected in the warehouse (same ts, new values); after ``reload`` the next bars'
    rows read the corrected bar, as the full build over the corrected bars does."""
    bars = globex_bars(symbols=("ESH4",), sessions=3, seed=11)
    stamps = list(bars.ts)
    cut, mid, end = stamps[-10], stamps[-5], stamps[-1]
    wh = Warehouse(tmp_path / "wh")
    _ingest(wh, bars[bars.ts < cut], tmp_path / "history.parquet")
    live = LiveFeatures(wh, "1m", ["ES"], workers=1)
    try:
        first = bars[(bars.ts >= cut) & (bars.ts < mid)].copy()
        _ingest(wh, first, tmp_path / "first.parquet")
        _append_each(live, _source_bars(wh, cut))
        k = first.index[2]
        first.loc[k, ["high", "close"]] = first.loc[k, "high"] + 3.0
        _ingest(wh, first, tmp_path / "first.parquet")  # same file name: a corrected re-delivery
        live.reload(["ES"])
        _ingest(wh, bars[bars.ts >= mid], tmp_path / "second.parquet")
        got = _append_each(live, _source_bars(wh, mid))
        want, _ = _full_view(wh, mid)
        assert len(want) == 5 and want.ts.max() == end
        _assert_rows(got, want, "[ES after a corrected bar] ")
        # The correction reached the features: the 20-bar windows of the next rows hold the corrected bar.
        plain = live_without_correction(bars, tmp_path, mid)
        assert got.column("rv_cc_20").to_pylist() != pytest.approx(plain.column("rv_cc_20").to_pylist())
    finally:
        live.close()


def test_bars_featured_before_validation_then_one_not_stored_reload_before_it_and_go_on(tmp_path):
    """The live loop computes a batch's features while the batch is validated: here two minutes of two roots in one
    append, ES's first minute a bad tick that validation then quarantines while the rest is stored. Reloading ES
    from the warehouse's bars before the bad one (``before``) and appending its stored later minute again gives the
    full build's rows (which never held the bad tick); CL's rows from the first append stand."""
    bars = globex_bars(symbols=("ESH4", "CLJ4"), sessions=3, seed=12)
    stamps = sorted(bars.ts.unique())
    cut, second, rest = stamps[-10], stamps[-9], stamps[-8]
    wh = Warehouse(tmp_path / "wh")
    _ingest(wh, bars[bars.ts < cut], tmp_path / "history.parquet")
    live = LiveFeatures(wh, "1m", ["ES", "CL"], workers=2)
    try:
        bad = (bars.ts == cut) & (bars.symbol == "ESH4")
        _ingest(wh, bars[(bars.ts >= cut) & ~bad], tmp_path / "new.parquet")  # validation kept all but the bad tick
        stored = _source_bars(wh, cut, second)
        batch = stored.to_pandas()
        tick = bars[bad].iloc[0]
        batch = pd.concat([batch, pd.DataFrame([{"symbol": "ES", "ts": tick.ts, **{c: tick[c] * 10 for c in (
            "open", "high", "low", "close")}, "volume": tick.volume}])]).sort_values(["symbol", "ts"])
        first = live.append(pa.Table.from_pandas(batch, preserve_index=False).cast(stored.schema))
        assert first.num_rows == 4
        live.reload(["ES"], before={"ES": tick.ts.to_pydatetime()})
        stored_second = _source_bars(wh, second, second)
        again = live.append(stored_second.filter(pa.compute.equal(stored_second["symbol"], "ES")))
        later = _append_each(live, _source_bars(wh, rest))
        got = pa.concat_tables([first.filter(pa.compute.equal(first["symbol"], "CL")), again, later])
        want, _ = _full_view(wh, cut)
        assert not ((want.symbol == "ES") & (want.ts == tick.ts)).any()
        _assert_rows(got, want, "[ES bad tick dropped, CL kept] ")
    finally:
        live.close()


def live_without_correction(bars: pd.DataFrame, tmp_path: Path, mid: pd.Timestamp) -> pa.Table:
    """The rows of the bars from ``mid`` on without the correction, through a second warehouse."""
    wh = Warehouse(tmp_path / "plain")
    _ingest(wh, bars[bars.ts < mid], tmp_path / "plain_history.parquet")
    live = LiveFeatures(wh, "1m", ["ES"], workers=1)
    try:
        _ingest(wh, bars[bars.ts >= mid], tmp_path / "plain_new.parquet")
        return _append_each(live, _source_bars(wh, mid))
    finally:
        live.close()


# -- carried recursive-filter state ------------------------------------------------------------------------------

#: sha256 of the full build's rendered SQL (every family, the single query and the staged family statements) on
#: main before the families took optional filter seeds (706a273): left undefined, the seeds change no byte.
FULL_BUILD_SQL = {"1m": "135194dd0f11eae5782490ea0c513017619b3df1dcb407a0e7cd6d73ec31b5e5",
                  "1h": "b54593de1e15083da7ab566dd0dc25e8829b5d856206b5b22d06e8524169680f",
                  "1d": "8c8f0246a1ce5ebb8abe3f27dd14aa7ddb146429bc96ec5e76d45c3c2e505d08"}


@pytest.mark.parametrize("timeframe", ["1m", "1h", "1d"])
def test_the_full_builds_sql_is_unchanged_without_seeds(timeframe):
    """Rendered without ``filter_seeds`` and ``session_seeds`` (the full build, the staged build, the incremental
    tails) every family is byte-identical to its render before the seeds existed, and names no seed or state
    column; with them and ``filter_states``, the families with recursive filters (01, 03) and those with session
    features (02, 04) output their states after the declared features."""
    import hashlib

    from warehouse.features.registry import build_registry, staged_queries

    registry = build_registry(timeframe=timeframe)
    text = ("\n".join(f.sql for f in registry.families) + "\n" + feature_query(registry, "bars", timeframe) + "\n"
            + "\n".join(staged_queries(registry, "bars", timeframe).families))
    assert hashlib.sha256(text.encode()).hexdigest() == FULL_BUILD_SQL[timeframe], (
        "the full build's rendered SQL changed: if a template was changed on purpose, pin the new hash")
    assert "seed_" not in text and "__state__" not in text
    unseeded = build_registry(timeframe=timeframe, filter_seeds=False, session_seeds=False)
    assert [f.sql for f in unseeded.families] == [f.sql for f in registry.families]
    live = build_registry(timeframe=timeframe, filter_seeds=True, session_seeds=True)
    assert not any(f.states for f in live.families)
    seeded = build_registry(timeframe=timeframe, filter_seeds=True, session_seeds=True, filter_states=True)
    assert {f.template: f.states for f in seeded.families if f.states} == {
        "features/01_price_action.sql": ["e12", "e26", "e50", "wd2", "wa2", "wd14", "wa14", "atr", "k1", "k2", "k3",
                                         "sig"],
        "features/02_volume.sql": ["e12", "e26", "esv", "evs", "u3", "u10", "atr", "sess_open", "sess_v", "sess_vd",
                                   "sess_vdd", "sess_tpv", "sess_sv", "sess_p_vwap"],
        "features/03_volatility.sql": ["atr5", "atr10", "atr14", "atr50", "ema20", "r2"],
        "features/04_structure.sql": ["dmp", "dmm", "dmt", "adx", "sess_open", "sess_hi", "sess_lo", "sess_rth_open",
                                      "sess_rth_close",
                                      "sess_p_high", "sess_p_low", "sess_p_close", "sess_p_rth_close"]}
    assert [s.name for s in seeded.features] == [s.name for s in registry.features]


#: The families carrying their recursive filters' state (seeded once every filter has a state); volume and
#: structure carry their session state in the same seed rows.
SEEDED = ("features/01_price_action.sql", "features/02_volume.sql", "features/03_volatility.sql",
          "features/04_structure.sql")


def _tail_rows(live: LiveFeatures) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for tail in live._tails:
        rows = live._con.execute(f"SELECT symbol, count(*) FROM {tail.table} GROUP BY symbol").fetchall()
        out[tail.family.template] = dict(rows)
    return out


def _seeded_roots(live: LiveFeatures) -> dict[str, set[str]]:
    return {t.family.template: {r[0] for r in live._con.execute(f"SELECT symbol FROM {t.seeds}").fetchall()}
            for t in live._tails if t.seeds}


def test_the_state_families_carry_state_and_read_short_tails(synthetic):
    """After the appends and trims of the synthetic fixture (whose rows equal the full build, across a session
    boundary with trims inside both sessions): price action and volatility continue their filters from seeds,
    reading their windows' look-back (240 / 259 rows before the next bar, plus at most the 20 rows appended between
    trims), not the EMA_50 / WILDER_50 warm-ups (1,051 / 2,031); volume and structure continue their sessions and
    their filters (EMAs, WILDER_14 ATR, DMI, ADX) from carried state too, reading their windows' look-back (60 / 239
    rows), not the previous session from its open and the current one (~2,700 rows)."""
    live = synthetic["live"]
    assert _seeded_roots(live) == {name: {"ES", "CL"} for name in SEEDED}
    rows = _tail_rows(live)
    for root in ("ES", "CL"):
        assert 241 <= rows["features/01_price_action.sql"][root] <= 241 + 20
        assert 260 <= rows["features/03_volatility.sql"][root] <= 260 + 20
        assert 61 <= rows["features/02_volume.sql"][root] <= 61 + 20
        assert 240 <= rows["features/04_structure.sql"][root] <= 240 + 20


def _live_then_new_bars(tmp_path: Path, bars: pd.DataFrame, cut: pd.Timestamp,
                        seeded: set[str] | dict[str, set[str]], timeframe: str = "1m",
                        trim_every: int | None = None) -> tuple[Warehouse, LiveFeatures]:
    """A warehouse with the bars before ``cut``, LiveFeatures loaded over it (the state families seeded for the
    roots ``seeded``, or per family), then the bars from ``cut`` on ingested."""
    wh = Warehouse(tmp_path / "wh")
    _ingest(wh, bars[bars.ts < cut], tmp_path / "history.parquet")
    live = LiveFeatures(wh, timeframe, ["ES"], trim_every=trim_every)
    assert _seeded_roots(live) == (seeded if isinstance(seeded, dict) else {name: seeded for name in SEEDED})
    _ingest(wh, bars[bars.ts >= cut], tmp_path / "new.parquet")
    return wh, live


def _batches(live: LiveFeatures, bars: pa.Table, size: int) -> pa.Table:
    """Append the bars ``size`` timestamps per call (every root's bars of those minutes together)."""
    stamps = sorted(set(bars.column("ts").to_pylist()))
    out = []
    for k in range(0, len(stamps), size):
        chunk = set(stamps[k:k + size])
        out.append(live.append(bars.filter(pa.array([s in chunk for s in bars.column("ts").to_pylist()]))))
    return pa.concat_tables(out)


def test_through_a_stale_stretch_with_trims_inside_it(tmp_path):
    """The synthetic stale block (300 minutes of zero-range bars, unchanged close: zero TR and |dc| inputs, the
    filters only decay) is appended three minutes per call with a trim every 9 rows, so seeds are taken inside it
    and carried through it and out of it; every row equals the full build."""
    from tests.features_oracle.synthetic import STALE

    bars = globex_bars(symbols=("ESH4",), sessions=3, seed=5)
    td = (bars.ts.dt.tz_convert("America/New_York") + pd.Timedelta(hours=6)).dt.date
    session, offset, length = STALE
    first = bars.index[td == sorted(td.unique())[session]][0]
    cut, end = bars.ts[first + offset + 40], bars.ts[first + offset + length + 30]
    wh, live = _live_then_new_bars(tmp_path, bars[bars.ts <= end], cut, {"ES"}, trim_every=9)
    try:
        got = _batches(live, _source_bars(wh, cut), 3)
        want, _ = _full_view(wh, cut)
        assert len(want) >= length - 40
        _assert_rows(got, want, "[synthetic stale stretch] ")
        assert _seeded_roots(live) == {name: {"ES"} for name in SEEDED}
    finally:
        live.close()


def test_a_young_series_runs_without_seeds_until_its_filters_have_state(tmp_path):
    """A series of 150 bars at load (younger than the short tails: the states at their first row are still in the
    SMA seeds' warm-up) runs as the batch build does, from its first bar; once the short tail's first row has every
    filter's state, the trims seed it. Every row equals the full build."""
    bars = globex_bars(symbols=("ESH4",), sessions=1, seed=13)
    stamps = list(bars.ts)
    cut, end = stamps[150], stamps[449]
    # The volume family's filters have their states from row 25 on: its 60-row short tail is seeded at once.
    at_load = {**{name: set() for name in SEEDED}, "features/02_volume.sql": {"ES"}}
    wh, live = _live_then_new_bars(tmp_path, bars[bars.ts <= end], cut, at_load, trim_every=10)
    try:
        got = _batches(live, _source_bars(wh, cut), 5)
        want, _ = _full_view(wh, cut)
        assert len(want) == 300
        _assert_rows(got, want, "[young series] ")
        assert _seeded_roots(live) == {name: {"ES"} for name in SEEDED}
    finally:
        live.close()


def _real_es_appended(tmp_path: Path, cut: str, until: str, trim_every: int) -> tuple[pa.Table, pd.DataFrame,
                                                                                      LiveFeatures]:
    """Real ESZ3 minutes (LEAN) before ``until``: those from ``cut`` on appended one at a time to LiveFeatures
    loaded over the earlier ones (seeded), trimming every ``trim_every`` rows; (live rows, full build rows, live)."""
    bars = lean_minute_bars("201312", "ESZ3")
    bars = bars[bars.ts < until].sort_values("ts").reset_index(drop=True)
    start = pd.Timestamp(cut, tz="UTC")
    wh, live = _live_then_new_bars(tmp_path, bars, start, {"ES"}, trim_every=trim_every)
    got = _append_each(live, _source_bars(wh, start))
    want, _ = _full_view(wh, start)
    return got, want, live

def test_real_es_bars_with_carried_state_across_trims_and_a_session_boundary(tmp_path):
    """Real ESZ3 minute bars (LEAN), appended one at a time from 20 minutes before the 2013-10-09 close to 30
    minutes after the next open, trimming every 15 rows: equal to the full build."""
    got, want, live = _real_es_appended(tmp_path, "2013-10-09 20:40", "2013-10-09 22:30", trim_every=15)
    try:
        assert len(want) >= 40 and want.ts.max() > pd.Timestamp("2013-10-09 22:20", tz="UTC")
        _assert_rows(got, want, "[real ES, carried state] ")
        rows = _tail_rows(live)
        assert rows["features/03_volatility.sql"]["ES"] <= 260 + 15
        assert rows["features/02_volume.sql"]["ES"] <= 61 + 15
        assert rows["features/04_structure.sql"]["ES"] <= 240 + 15
    finally:
        live.close()



def test_real_es_bars_across_the_rth_open_inside_trimmed_tails(tmp_path):
    """Real ESZ3 minutes appended from 13:12 to 13:52 UTC on 2013-10-10 (the RTH open is 09:30 ET = 13:30 UTC),
    trimming every 6 rows: the tails are cut mid-session before the RTH open, the open then falls inside a tail,
    and later trims carry it (and the previous date's RTH close) as session state: ``overnight_gap`` and the
    RTH clocks equal the full build's on every row, and so does everything else."""
    got, want, live = _real_es_appended(tmp_path, "2013-10-10 13:12", "2013-10-10 13:53", trim_every=6)
    try:
        assert len(want) == 41
        rth = want[want.ts >= pd.Timestamp("2013-10-10 13:30", tz="UTC")]
        assert rth.overnight_gap.notna().all() and want[want.ts < rth.ts.min()].overnight_gap.isna().all()
        _assert_rows(got, want, "[real ES, RTH open inside trimmed tails] ")
    finally:
        live.close()

def test_the_per_bar_running_sums_hold_up_to_their_bound_and_beyond_it_the_block_form_takes_over(tmp_path):
    """The per-bar statements of price action (block-state sums), volatility and structure (one filter block) sum
    their filters as running sums, valid up to RUNNING_ROWS rows per root (their weights grow as exp(lam*k)). Real ESZ3
    minutes appended 100 at a time without a trim grow the tables from the short tails to past the bound: the
    running form runs on tables up to ~2,600 rows (weights near e^600), the batch build's block form beyond; every
    row equals the full build."""
    bars = lean_minute_bars("201312", "ESZ3")
    bars = bars[bars.ts < pd.Timestamp("2013-10-11 00:00", tz="UTC")].sort_values("ts").reset_index(drop=True)
    start = pd.Timestamp("2013-10-08 12:00", tz="UTC")
    wh, live = _live_then_new_bars(tmp_path, bars, start, {"ES"}, trim_every=100_000)
    try:
        running = [tail for tail in live._tails if tail.has_long]
        assert sorted(t.family.template for t in running) == ["features/01_price_action.sql",
                                                               "features/03_volatility.sql",
                                                               "features/04_structure.sql"]
        new = _source_bars(wh, start)
        stamps = sorted(set(new.column("ts").to_pylist()))
        out, longest = [], {t.family.template: [] for t in running}
        for k in range(0, len(stamps), 100):
            chunk = set(stamps[k:k + 100])
            out.append(live.append(new.filter(pa.array([s in chunk for s in new.column("ts").to_pylist()]))))
            for tail in running:
                longest[tail.family.template].append(tail.rows_at_reset + tail.grown)
        want, _ = _full_view(wh, start)
        _assert_rows(pa.concat_tables(out), want, "[running sums up to the bound and past it] ")
        for name, seen in longest.items():
            assert max(n for n in seen if n <= RUNNING_ROWS) > RUNNING_ROWS - 100, name
            assert max(seen) > RUNNING_ROWS and seen == sorted(seen) and seen[0] < 400, name
    finally:
        live.close()


def test_hourly_bars_carry_state_too(tmp_path):
    """1h bars (resampled from 30 sessions of synthetic minutes, 690 hours: the WILDER_50 warm-up alone would
    read 2,031): appended one hour at a time through a session boundary with a trim every 5 rows, equal to the
    full 1h build; the filter families hold a few hundred hourly rows."""
    from tests.features_oracle.synthetic import hourly

    minutes = globex_bars(symbols=("ESH4",), sessions=30, seed=17)
    hours = sorted(hourly(minutes).ts)
    cut = hours[-30]
    wh, live = _live_then_new_bars(tmp_path, minutes, cut, {"ES"}, timeframe="1h", trim_every=5)
    try:
        got = _append_each(live, _source_bars(wh, cut, timeframe="1h"))
        build_features(wh, "1h", full=True)
        wh.refresh()
        want = wh.sql("SELECT * FROM features_1h WHERE ts >= ? ORDER BY symbol, ts", [cut.to_pydatetime()]).to_pandas()
        assert len(want) == 30
        _assert_rows(got, want, "[1h, carried state] ")
        rows = _tail_rows(live)
        assert rows["features/03_volatility.sql"]["ES"] <= 260 + 5
        assert rows["features/02_volume.sql"]["ES"] <= 61 + 5
        assert rows["features/04_structure.sql"]["ES"] <= 240 + 5
    finally:
        live.close()
