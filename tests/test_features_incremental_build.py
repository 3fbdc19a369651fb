"""`build_features` after appending a day or correcting a bar: only the changed rows are computed (from a bounded
tail) and spliced into their year partition, and the result equals a full build over all bars (the oracle),
every catalog feature, within the catalog tolerances and with identical NULLs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from loaders.ingest import ingest
from tests.feature_harness import assert_matches
from tests.features_oracle.synthetic import globex_bars
from warehouse import Warehouse
from warehouse.features.materialize import build_features

QUERY = "SELECT * FROM features_1m ORDER BY symbol, ts"


def _ingest(wh: Warehouse, frame: pd.DataFrame, path: Path) -> None:
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    [report] = ingest(wh, [path], timeframe="1m")
    assert report.error is None


def _full(tmp_path: Path, name: str, bars: pd.DataFrame) -> pd.DataFrame:
    wh = Warehouse(tmp_path / name)
    _ingest(wh, bars, tmp_path / f"{name}.parquet")
    build_features(wh, "1m", full=True)
    return wh.pandas(QUERY)


def _assert_equal(got: pd.DataFrame, want: pd.DataFrame, label: str) -> None:
    assert got[["symbol", "ts"]].equals(want[["symbol", "ts"]]), label
    assert list(got.columns) == list(want.columns)
    assert_matches(got, want, list(want.columns[2:]), label=label)


@pytest.fixture(scope="module")
def days() -> tuple[pd.DataFrame, pd.DataFrame]:
    return _split_last_date(globex_bars(symbols=("ESH4",), sessions=23, seed=5))


def test_append_a_day_then_correct_a_bar_mid_day_equals_full_builds(tmp_path, days):
    history, last_day = days
    wh = Warehouse(tmp_path / "inc")
    _ingest(wh, history, tmp_path / "history.parquet")
    first = build_features(wh, "1m")
    assert first.tail == [] and first.built == ["ES"]

    _ingest(wh, last_day, tmp_path / "day.parquet")
    report = build_features(wh, "1m")
    # Only the new day's rows were computed, from a bounded tail, and only its year partition was rewritten.
    assert report.tail == ["ES"] and report.rows == len(last_day) and report.partitions_written == 1
    _assert_equal(wh.pandas(QUERY), _full(tmp_path, "full", pd.concat([history, last_day])), "append a day: ")

    # A corrected bar in the middle of the last day (same ts, new values) is recomputed from its day on.
    corrected = last_day.copy()
    k = len(corrected) // 2
    corrected.loc[k, ["high", "close"]] = corrected.loc[k, "high"] + 2.0
    _ingest(wh, corrected, tmp_path / "day.parquet")  # same file name: a corrected re-delivery
    report = build_features(wh, "1m")
    assert report.tail == ["ES"] and report.partitions_written == 1
    got = wh.pandas(QUERY)
    _assert_equal(got, _full(tmp_path, "full2", pd.concat([history, corrected])), "corrected bar: ")
    row = got.index[got.ts == corrected.ts[k]][0]
    assert got.logret_1[row] != pytest.approx(got.logret_1[row - 1])  # the correction reached the features

    # Nothing changed: the symbol is skipped.
    assert build_features(wh, "1m").skipped == ["ES"]


def test_full_flag_and_a_change_on_the_first_day_rebuild_from_the_first_bar(tmp_path, days):
    history, last_day = days
    wh = Warehouse(tmp_path / "w")
    _ingest(wh, pd.concat([history, last_day]), tmp_path / "all.parquet")
    build_features(wh, "1m")
    assert build_features(wh, "1m", full=True).tail == []
    changed = pd.concat([history, last_day]).reset_index(drop=True)
    changed.loc[3, ["high", "close"]] = changed.loc[3, "high"] + 1.0
    _ingest(wh, changed, tmp_path / "all.parquet")
    report = build_features(wh, "1m")
    assert report.built == ["ES"] and report.tail == []


def _split_last_date(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    trading_date = (frame.ts.dt.tz_convert("America/New_York") + pd.Timedelta(hours=6)).dt.date
    last = trading_date == trading_date.max()
    return frame[~last].reset_index(drop=True), frame[last].reset_index(drop=True)


def _built_with_a_tail(tmp_path: Path, days) -> tuple[Warehouse, pd.DataFrame, pd.DataFrame, pd.DataFrame]:  # noqa: ANN001
    """A warehouse built on the history but its last day (A), then A appended (a tail file); and the held-back
    last day (B): (warehouse, base, day A, day B)."""
    history, day_b = days
    base, day_a = _split_last_date(history)
    wh = Warehouse(tmp_path / "w")
    _ingest(wh, base, tmp_path / "h.parquet")
    build_features(wh, "1m")
    _ingest(wh, day_a, tmp_path / "a.parquet")
    build_features(wh, "1m")
    return wh, base, day_a, day_b


def _partition(wh: Warehouse, symbol: str = "ES") -> Path:
    [directory] = (wh.root / "features" / "timeframe=1m" / f"symbol={symbol}").glob("year=*")
    return directory


def _file_rows(path: Path) -> int:
    return pq.ParquetFile(path).metadata.num_rows if path.exists() else 0


def test_appends_rewrite_only_the_tail_file_until_it_folds_into_the_data_file(tmp_path, days, monkeypatch):
    from warehouse.features import materialize

    history, day_b = days
    base, day_a = _split_last_date(history)
    wh = Warehouse(tmp_path / "inc")
    _ingest(wh, base, tmp_path / "base.parquet")
    build_features(wh, "1m")
    partition = _partition(wh)
    data, tail = partition / "data.parquet", partition / "tail.parquet"
    written = data.read_bytes()
    assert not tail.exists()

    # Two appended days: the year's data file is not touched, the tail file holds exactly their rows.
    _ingest(wh, day_a, tmp_path / "a.parquet")
    assert build_features(wh, "1m").tail == ["ES"]
    assert data.read_bytes() == written and _file_rows(tail) == len(day_a)
    _ingest(wh, day_b, tmp_path / "b.parquet")
    assert build_features(wh, "1m").tail == ["ES"]
    assert data.read_bytes() == written and _file_rows(tail) == len(day_a) + len(day_b)
    _assert_equal(wh.pandas(QUERY), _full(tmp_path, "full", pd.concat([base, day_a, day_b])), "two appends: ")

    # A corrected bar inside the tail rewrites the tail only.
    fixed_a = day_a.copy()
    fixed_a.loc[len(fixed_a) // 2, ["high", "close"]] += 1.5
    _ingest(wh, fixed_a, tmp_path / "a.parquet")
    assert build_features(wh, "1m").tail == ["ES"]
    assert data.read_bytes() == written and _file_rows(tail) == len(day_a) + len(day_b)
    _assert_equal(wh.pandas(QUERY), _full(tmp_path, "full2", pd.concat([base, fixed_a, day_b])), "tail fix: ")

    # A corrected bar of a day inside the data file: the partition becomes one data file again.
    before, last_base = _split_last_date(base)
    fixed_base = last_base.copy()
    fixed_base.loc[7, ["low", "close"]] -= 1.25
    _ingest(wh, fixed_base, tmp_path / "fix.parquet")
    assert build_features(wh, "1m").tail == ["ES"]
    assert not tail.exists() and _file_rows(data) == len(base) + len(day_a) + len(day_b)
    want = _full(tmp_path, "full3", pd.concat([before, fixed_base, fixed_a, day_b]))
    _assert_equal(wh.pandas(QUERY), want, "data fix: ")

    # Past TAIL_FILE_ROWS the tail is folded into the data file.
    monkeypatch.setattr(materialize, "TAIL_FILE_ROWS", 10)
    fixed_b = day_b.copy()
    fixed_b.loc[3, ["high", "close"]] += 0.75
    _ingest(wh, fixed_b, tmp_path / "b.parquet")
    assert build_features(wh, "1m").tail == ["ES"]
    assert not tail.exists() and _file_rows(data) == len(base) + len(day_a) + len(day_b)
    _assert_equal(wh.pandas(QUERY), _full(tmp_path, "full4", pd.concat([before, fixed_base, fixed_a, fixed_b])),
                  "folded: ")


def test_a_full_build_drops_the_tail_and_a_fold_cut_short_by_a_crash_is_repaired(tmp_path, days):
    import duckdb

    wh, base, day_a, day_b = _built_with_a_tail(tmp_path, days)
    partition = _partition(wh)
    data, tail = partition / "data.parquet", partition / "tail.parquet"
    assert _file_rows(tail) == len(day_a)
    # A full build writes whole years: a tail file left beside a rewritten data file would double its rows.
    build_features(wh, "1m", full=True)
    assert not tail.exists()
    _assert_equal(wh.pandas(QUERY), _full(tmp_path, "full", pd.concat([base, day_a])), "full build: ")

    _ingest(wh, day_b, tmp_path / "b.parquet")
    build_features(wh, "1m")
    assert _file_rows(tail) == len(day_b)
    want = _full(tmp_path, "full2", pd.concat([base, day_a, day_b]))  # the oracle: a full build of the same bars
    _assert_equal(wh.pandas(QUERY), want, "appended: ")
    # A fold that renamed the new data file (holding the tail's rows) and died before removing the tail.
    folded = tmp_path / "folded.parquet"
    duckdb.sql(f"COPY (SELECT * FROM read_parquet(['{data}', '{tail}'], union_by_name = true) ORDER BY ts) "
               f"TO '{folded}' (FORMAT parquet)")
    folded.replace(data)
    assert len(wh.pandas(QUERY)) == len(want) + len(day_b)  # the duplicates a reader would now see

    report = build_features(wh, "1m")  # nothing changed; the stale tail is recognised and removed first
    assert report.skipped == ["ES"] and not tail.exists()
    _assert_equal(wh.pandas(QUERY), want, "repaired: ")


def test_symbols_appended_together_are_computed_in_one_tail_pass(tmp_path, monkeypatch):
    from warehouse.features import materialize

    bars = globex_bars(symbols=("ESH4", "NQH4", "CLJ4"), sessions=12, seed=9)
    history, last_day = _split_last_date(bars)
    wh = Warehouse(tmp_path / "w")
    _ingest(wh, history, tmp_path / "h.parquet")
    build_features(wh, "1m")
    passes: list[list[str]] = []
    real = materialize.tail_features

    def counted(con, source, timeframe, since, symbols, registry):  # noqa: ANN001, ANN202
        passes.append(sorted(symbols))
        return real(con, source, timeframe, since, symbols, registry)

    monkeypatch.setattr(materialize, "tail_features", counted)
    # Every root gets the new day; CL also a corrected bar ten days back (its own pass, from that day).
    early = history[history.symbol == "CLJ4"].index[len(history[history.symbol == "CLJ4"]) // 4]
    fixed = history.copy()
    fixed.loc[early, ["high", "close"]] += 0.5
    _ingest(wh, fixed, tmp_path / "h.parquet")
    _ingest(wh, last_day, tmp_path / "d.parquet")
    report = build_features(wh, "1m")
    assert sorted(report.tail) == ["CL", "ES", "NQ"]
    assert passes == [["CL"], ["ES", "NQ"]]
    _assert_equal(wh.pandas(QUERY), _full(tmp_path, "full", pd.concat([fixed, last_day])), "grouped: ")


def test_tail_groups_span_at_most_the_group_span():
    import datetime as dt

    from warehouse.features.materialize import TAIL_GROUP_SPAN, _SymbolPlan, _tail_groups

    t0 = dt.datetime(2024, 3, 4, 23, tzinfo=dt.timezone.utc)
    plans = [_SymbolPlan(s, {}, {}, since=t0 + offset) for s, offset in
             [("NQ", dt.timedelta(minutes=1)), ("ES", dt.timedelta(0)), ("CL", -dt.timedelta(days=10)),
              ("GC", TAIL_GROUP_SPAN), ("ZN", TAIL_GROUP_SPAN + dt.timedelta(seconds=1))]]
    assert [[p.symbol for p in g] for g in _tail_groups(plans)] == [["CL"], ["ES", "NQ", "GC"], ["ZN"]]


def test_unchanged_bars_are_skipped_whatever_the_manifest_says_of_years(tmp_path, days):
    # The skip rests on the exact day fingerprints and the templates' signature: a manifest whose year entries
    # were written another way (an earlier version) does not make unchanged bars rebuild.
    import json

    history, _ = days
    wh = Warehouse(tmp_path / "w")
    _ingest(wh, history, tmp_path / "h.parquet")
    build_features(wh, "1m")
    path = wh.root / "features" / "timeframe=1m" / "_manifest.json"
    manifest = json.loads(path.read_text())
    manifest["ES"]["all"] = "0" * 24
    manifest["ES"]["years"] = {year: "f" * 24 for year in manifest["ES"]["years"]}
    path.write_text(json.dumps(manifest))
    assert build_features(wh, "1m").skipped == ["ES"]
    manifest["ES"]["days"][max(manifest["ES"]["days"])] = "1:2:2024-01-01T00:00:00+00:00"  # one day differs
    path.write_text(json.dumps(manifest))
    report = build_features(wh, "1m")
    assert report.tail == ["ES"] and report.rows > 0


def test_a_reader_never_sees_a_partition_half_changed(tmp_path, days, monkeypatch):
    # A correction reaching data.parquet, and a full build, each replace data.parquet and remove tail.parquet;
    # a reader without the lock (a live session) queries the view at every step of the change.
    import os

    from warehouse.features import materialize
    from warehouse.store import exchange_paths

    (tmp_path / "p").mkdir(), (tmp_path / "q").mkdir()
    if not exchange_paths(tmp_path / "p", tmp_path / "q"):
        pytest.skip("this file system cannot swap directories (the fallback is tested below)")
    wh, base, day_a, day_b = _built_with_a_tail(tmp_path, days)
    reader = Warehouse(tmp_path / "w")
    seen: list[tuple[int, int]] = []

    def peek() -> None:
        reader.refresh()
        seen.append(reader.connect().sql("SELECT count(*), count(DISTINCT ts) FROM features_1m").fetchone())

    real_replace, real_exchange = os.replace, materialize.exchange_paths

    def replace(src, dst):  # noqa: ANN001, ANN202
        real_replace(src, dst)
        peek()

    def exchange(a, b):  # noqa: ANN001, ANN202
        swapped = real_exchange(a, b)
        peek()
        return swapped

    monkeypatch.setattr(materialize.os, "replace", replace)
    monkeypatch.setattr(materialize, "exchange_paths", exchange)
    tail = _partition(wh) / "tail.parquet"
    fixed = base.copy()
    fixed.loc[len(fixed) - 30, ["high", "close"]] += 1.0  # inside data.parquet
    _ingest(wh, fixed, tmp_path / "h.parquet")
    build_features(wh, "1m")
    assert not tail.exists() and seen
    rows = len(base) + len(day_a)
    assert all(n == rows and k == rows for n, k in seen), seen
    _ingest(wh, day_b, tmp_path / "b.parquet")
    build_features(wh, "1m")
    assert tail.exists()
    seen.clear()
    build_features(wh, "1m", full=True)
    rows += len(day_b)
    assert not tail.exists() and seen and all(n == rows and k == rows for n, k in seen), seen
    _assert_equal(wh.pandas(QUERY), _full(tmp_path, "full", pd.concat([fixed, day_a, day_b])), "swapped: ")


def test_without_the_directory_swap_the_partition_ends_the_same(tmp_path, days, monkeypatch):
    from warehouse.features import materialize

    monkeypatch.setattr(materialize, "exchange_paths", lambda a, b: False)  # another OS or file system
    history, last_day = days
    wh = Warehouse(tmp_path / "w")
    _ingest(wh, history, tmp_path / "h.parquet")
    build_features(wh, "1m")
    _ingest(wh, last_day, tmp_path / "d.parquet")
    build_features(wh, "1m")
    fixed = history.copy()
    fixed.loc[len(fixed) - 30, ["high", "close"]] += 1.0
    _ingest(wh, fixed, tmp_path / "h.parquet")
    build_features(wh, "1m")
    partition = _partition(wh)
    assert sorted(p.name for p in partition.iterdir()) == ["data.parquet"]
    assert not list(partition.parent.glob(".year=*"))
    _assert_equal(wh.pandas(QUERY), _full(tmp_path, "full", pd.concat([fixed, last_day])), "fallback: ")


def test_chosen_symbols_are_built_and_an_unknown_one_is_named(tmp_path):
    from warehouse.errors import QEError

    bars = globex_bars(symbols=("ESH4", "NQH4"), sessions=3, seed=4)
    wh = Warehouse(tmp_path / "w")
    _ingest(wh, bars, tmp_path / "b.parquet")
    assert build_features(wh, "1m", symbols=["NQ"]).built == ["NQ"]
    assert build_features(wh, "1m").built == ["ES"] and build_features(wh, "1m").skipped == ["ES", "NQ"]
    with pytest.raises(QEError, match="no 1m bars for CL, ZN"):
        build_features(wh, "1m", symbols=["ES", "ZN", "CL"])
