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
    bars = globex_bars(symbols=("ESH4",), sessions=23, seed=5)
    trading_date = (bars.ts.dt.tz_convert("America/New_York") + pd.Timedelta(hours=6)).dt.date
    last = trading_date == trading_date.max()
    return bars[~last].reset_index(drop=True), bars[last].reset_index(drop=True)


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
