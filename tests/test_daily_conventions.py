"""Daily bars stamped at UTC midnight, at the CME session open, or given as bare trading dates.

Hand-worked stamps: a CME trading date's session opens at 18:00 America/New_York the evening before:
18:00 EDT (UTC-4) = 22:00 UTC until the switch on Sunday 2013-11-03, 18:00 EST (UTC-5) = 23:00 UTC after it.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from loaders.ingest import ingest
from tests.conftest import LEAN, write_csv
from warehouse import Warehouse
from warehouse.features.materialize import build_features

HEADER = "symbol,contract,ts,open,high,low,close,volume"
UTC = timezone.utc
#: LEAN minute files with no roll between ESZ3 and ESH4 (the crossover is on 12-18): the front is ESZ3 in
#: 2013, then ESH0 in 2020 across a six-year gap (no adjustment), whichever bars the rolls are built from.
NO_ROLL_MINUTES = sorted(p for p in (LEAN / "minute").glob("*_trade.zip") if not p.name.startswith(("20131218", "20131220")))


def _bar(contract: str, ts: str, price: float = 1700.0) -> str:
    return f"ES,{contract},{ts},{price},{price + 1},{price - 1},{price + 0.5},100"


def _convention(wh: Warehouse) -> dict[str, str]:
    return {r["symbol"]: r["convention"] for r in wh.sql("SELECT * FROM daily_conventions").to_pylist()}


def test_a_file_of_trading_dates_is_stamped_at_their_session_opens(wh, tmp_path):
    path = write_csv(tmp_path / "d.csv", HEADER, [_bar("ESZ3", "2013-10-07"), _bar("ESZ3", "2013-11-04")])
    [report] = ingest(wh, [path], timeframe="1d")
    assert report.error is None and report.rows_loaded == 2
    stamps = wh.sql("SELECT ts FROM contract_bars_1d ORDER BY ts").column(0).to_pylist()
    # Monday 10-07 opens Sunday 10-06 18:00 EDT; Monday 11-04 opens Sunday 11-03 18:00 EST.
    assert stamps == [datetime(2013, 10, 6, 22, tzinfo=UTC), datetime(2013, 11, 3, 23, tzinfo=UTC)]
    assert _convention(wh) == {"ES": "session"}


def test_a_parquet_date_column_holds_trading_dates(wh, tmp_path):
    table = pa.table({"symbol": ["ES"], "contract": ["ESZ3"], "date": pa.array([datetime(2013, 11, 4).date()], pa.date32()),
                      "open": [1700.0], "high": [1701.0], "low": [1699.0], "close": [1700.5], "volume": [100]})
    pq.write_table(table, tmp_path / "d.parquet")
    ingest(wh, [tmp_path / "d.parquet"], timeframe="1d")
    assert wh.sql("SELECT ts FROM contract_bars_1d").column(0).to_pylist() == [datetime(2013, 11, 3, 23, tzinfo=UTC)]


def test_session_open_stamps_across_daylight_saving_are_aligned(wh, tmp_path):
    # Thursday 10-31 18:00 EDT opens Friday 11-01; Sunday 11-03 18:00 EST opens Monday 11-04; Monday 11-04
    # 18:00 EST, written with its offset, opens Tuesday 11-05.
    rows = [_bar("ESZ3", "2013-10-31T22:00:00Z"), _bar("ESZ3", "2013-11-03T23:00:00Z"), _bar("ESZ3", "2013-11-04 18:00:00-05:00")]
    [report] = ingest(wh, [write_csv(tmp_path / "s.csv", HEADER, rows)], timeframe="1d")
    assert report.rows_loaded == 3 and report.rows_quarantined == 0
    assert _convention(wh) == {"ES": "session"}


def test_utc_midnight_days_stay_utc_days(wh, tmp_path):
    rows = [_bar("ESZ3", "2013-10-07T00:00:00Z"), _bar("ESZ3", "2013-10-08 00:00")]
    [report] = ingest(wh, [write_csv(tmp_path / "u.csv", HEADER, rows)], timeframe="1d")
    assert report.rows_loaded == 2 and _convention(wh) == {"ES": "utc_day"}


def test_a_mixed_file_keeps_its_majority_convention_and_quarantines_the_rest(wh, tmp_path):
    rows = [_bar("ESZ3", "2013-10-06T22:00:00Z"), _bar("ESZ3", "2013-10-07T22:00:00Z"), _bar("ESZ3", "2013-10-09T00:00:00Z"),
            _bar("ESZ3", "2013-10-11T22:00:00Z")]  # Friday 18:00 EDT opens a Saturday: no such trading date
    path = write_csv(tmp_path / "m.csv", HEADER, rows)
    [report] = ingest(wh, [path], timeframe="1d")
    assert report.rows_loaded == 2 and report.quarantined == {"ts_not_aligned": 2}
    bad = wh.sql("SELECT row, detail FROM quarantine ORDER BY row").to_pylist()
    assert [r["row"] for r in bad] == [4, 5]  # file lines (header is line 1)
    assert bad[0]["detail"] == (
        "ts=2013-10-09 00:00:00.000000 UTC is not on the 1d grid: this file has CME session opens (18:00 ET before a "
        "weekday trading date)"
    )


def test_a_root_keeps_one_daily_convention(wh, tmp_path):
    ingest(wh, [LEAN / "daily" / "es_trade.zip"])  # vendor UTC days
    before = wh.sql("SELECT count(*) AS n FROM contract_bars_1d").to_pylist()
    path = write_csv(tmp_path / "s.csv", HEADER, [_bar("ESZ3", "2013-10-06T22:00:00Z")])
    [report] = ingest(wh, [path], timeframe="1d")
    assert report.rows_loaded == 0 and report.quarantined == {"ts_not_aligned": 1}
    [detail] = wh.sql("SELECT detail FROM quarantine WHERE file LIKE '%s.csv'").column(0).to_pylist()
    assert detail == (
        "ES daily bars are stored as UTC days (00:00 UTC), this file has CME session opens (18:00 ET before a weekday "
        "trading date): one convention per root"
    )
    assert wh.sql("SELECT count(*) AS n FROM contract_bars_1d").to_pylist() == before
    assert _convention(wh) == {"ES": "utc_day"}


# -- features_1d on stored session bars equals features_1d on session bars resampled from 1m -----------------


@pytest.fixture(scope="module")
def from_minutes(tmp_path_factory) -> Warehouse:
    """Real LEAN ES minute bars and their daily features (session bars resampled from 1m)."""
    wh = Warehouse(tmp_path_factory.mktemp("minutes") / "qe_data")
    ingest(wh, NO_ROLL_MINUTES)
    build_features(wh, "1d")
    yield wh
    wh.close()


def _export(wh: Warehouse, path: Path) -> Path:
    """``session_bars_1d`` written out as a user would (pandas CSV / Parquet)."""
    frame = wh.pandas("SELECT symbol, contract, ts, open, high, low, close, volume FROM session_bars_1d ORDER BY ts")
    frame.to_csv(path, index=False) if path.suffix == ".csv" else frame.to_parquet(path, index=False)
    return path


def _assert_same_features(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(got.columns) == list(expected.columns)
    assert got[["symbol", "ts"]].equals(expected[["symbol", "ts"]])
    for name in expected.columns[2:]:
        a, b = got[name], expected[name]
        assert (a.isna() == b.isna()).all(), f"{name}: NULL patterns differ"
        x, y = a[b.notna()].astype(float).to_numpy(), b[b.notna()].astype(float).to_numpy()
        assert np.all(np.abs(x - y) <= 1e-9 * np.maximum(np.abs(x), np.abs(y))), f"{name}: values differ"


def _features(wh: Warehouse) -> pd.DataFrame:
    return wh.pandas("SELECT * FROM features_1d ORDER BY symbol, ts")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_daily_features_on_stored_session_bars_equal_those_on_resampled_minutes(from_minutes, tmp_path, suffix):
    exported = _export(from_minutes, tmp_path / f"session_bars{suffix}")
    wh = Warehouse(tmp_path / "qe_data")
    [report] = ingest(wh, [exported], timeframe="1d")
    assert report.rows_quarantined == 0 and report.rows_loaded == from_minutes.sql("SELECT count(*) AS n FROM session_bars_1d")["n"][0].as_py()
    assert _convention(wh) == {"ES": "session"}
    build_features(wh, "1d")
    expected = _features(from_minutes)
    assert len(expected) > 0
    _assert_same_features(_features(wh), expected)


def test_stored_session_bars_are_preferred_to_resampling_a_few_minutes(from_minutes, tmp_path):
    wh = Warehouse(tmp_path / "qe_data")
    ingest(wh, [_export(from_minutes, tmp_path / "session_bars.csv")], timeframe="1d")
    ingest(wh, [LEAN / "minute" / "20131007_trade.zip"])  # one day of minutes: resampled, it would be 2 sessions
    build_features(wh, "1d")
    _assert_same_features(_features(wh), _features(from_minutes))
