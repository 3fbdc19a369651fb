"""Generic CSV and Parquet bars: columns, time zones, contracts named in `symbol`, clear errors."""

from __future__ import annotations

from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from loaders.ingest import ingest
from tests.conftest import write_csv

HEADER = "symbol,ts,open,high,low,close,volume"


def test_naive_timestamps_are_utc_and_zoned_ones_are_converted(wh, tmp_path):
    path = write_csv(
        tmp_path / "bars.csv",
        HEADER,
        ["ESZ4,2024-12-02 14:30:00,6050.25,6051.00,6050.00,6050.75,120",
         "ESZ4,2024-12-02T09:31:00-05:00,6050.75,6051.25,6050.50,6051.00,80"],
    )
    [report] = ingest(wh, [path])
    assert report.error is None and report.rows_loaded == 2
    rows = wh.sql("SELECT symbol, contract, ts FROM contract_bars_1m ORDER BY ts").to_pylist()
    assert [r["ts"] for r in rows] == [
        datetime(2024, 12, 2, 14, 30, tzinfo=timezone.utc),
        datetime(2024, 12, 2, 14, 31, tzinfo=timezone.utc),
    ]
    # A contract code in `symbol` is split into the root and the contract.
    assert {(r["symbol"], r["contract"]) for r in rows} == {("ES", "ESZ4")}


def test_plain_series_without_contract_passes_through_to_bars_view(wh, tmp_path):
    path = write_csv(tmp_path / "spy.csv", HEADER, ["SPY,2024-01-02,470.1,472.0,469.5,471.2,1000", "SPY,2024-01-03,471.2,471.9,466.0,467.0,900"])
    [report] = ingest(wh, [path])
    assert report.error is None
    rows = wh.sql("SELECT symbol, contract, close FROM bars_1d ORDER BY ts").to_pylist()
    assert rows == [{"symbol": "SPY", "contract": None, "close": 471.2}, {"symbol": "SPY", "contract": None, "close": 467.0}]


def test_parquet_with_optional_columns_and_zoned_timestamps(wh, tmp_path):
    table = pa.table(
        {
            "Symbol": ["CL", "CL"],
            "timestamp": pa.array([datetime(2024, 3, 1, 15, 0), datetime(2024, 3, 1, 16, 0)]).cast(pa.timestamp("ns", tz="America/New_York")),
            "open": [78.10, 78.20], "high": [78.30, 78.40], "low": [78.00, 78.10], "close": [78.20, 78.30],
            "volume": [1500, 1700], "contract": ["CLJ4", "CLJ4"], "open_interest": [300_000, 301_000],
        }
    )
    path = tmp_path / "cl.parquet"
    pq.write_table(table, path)
    [report] = ingest(wh, [path])
    assert report.error is None and report.rows_loaded == 2
    rows = wh.sql("SELECT ts, contract, open_interest FROM contract_bars_1h ORDER BY ts").to_pylist()
    assert rows[0] == {"ts": datetime(2024, 3, 1, 15, 0, tzinfo=timezone.utc), "contract": "CLJ4", "open_interest": 300_000}


def test_missing_columns_name_the_file_and_the_columns(wh, tmp_path):
    path = write_csv(tmp_path / "bad.csv", "symbol,ts,open,close", ["ES,2024-01-02 10:00,1,1"])
    [report] = ingest(wh, [path])
    assert str(path) in report.error and "high, low, volume" in report.error
    assert not (wh.root / "bars").exists()


def test_empty_file_is_a_clear_error(wh, tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    [report] = ingest(wh, [path])
    assert report.error == f"{path}: the file is empty (nothing from this file was written)"


def test_header_only_file_is_a_clear_error(wh, tmp_path):
    path = write_csv(tmp_path / "header.csv", HEADER, [])
    [report] = ingest(wh, [path])
    assert "no rows" in report.error


def test_timeframe_is_inferred_or_must_be_given(wh, tmp_path):
    one = write_csv(tmp_path / "one.csv", HEADER, ["ES,2024-01-02 10:00,4700,4701,4699,4700.5,10"])
    [report] = ingest(wh, [one])
    assert "--timeframe" in report.error
    [report] = ingest(wh, [one], timeframe="1m")
    assert report.error is None and report.rows_loaded == 1


@pytest.mark.parametrize("epoch, unit", [(1_704_189_600, "s"), (1_704_189_600_000, "ms"), (1_704_189_600_000_000_000, "ns")])
def test_integer_epochs_in_parquet(wh, tmp_path, epoch, unit):
    table = pa.table({"symbol": ["GC"], "ts": [epoch], "open": [2070.0], "high": [2071.0], "low": [2069.0], "close": [2070.5], "volume": [5]})
    pq.write_table(table, tmp_path / f"{unit}.parquet")
    [report] = ingest(wh, [tmp_path / f"{unit}.parquet"], timeframe="1h")
    assert report.error is None
    assert wh.sql("SELECT ts FROM contract_bars_1h").to_pylist()[0]["ts"] == datetime(2024, 1, 2, 10, 0, tzinfo=timezone.utc)


def test_mixed_zones_in_one_file_never_shift_naive_rows(wh, tmp_path):
    # DuckDB's text-to-TIMESTAMPTZ cast can carry a zone name over to later naive rows; ours must not.
    path = write_csv(
        tmp_path / "mixed.csv",
        HEADER,
        ["ESZ3,2013-10-07 09:30:00 America/New_York,1680,1681,1679,1680.5,1",
         "ESZ3,2013-10-07 13:31:00,1680,1681,1679,1680.5,2",
         "ESZ3,2013-10-07 13:32:00Z,1680,1681,1679,1680.5,3",
         "ESZ3,2013-10-07T09:33:00-04:00,1680,1681,1679,1680.5,4",
         "ESZ3,1381152840,1680,1681,1679,1680.5,5",
         "ESZ3,1381152900000,1680,1681,1679,1680.5,6"],
    )
    [report] = ingest(wh, [path], timeframe="1m")
    assert report.rows_loaded == 6, report.quarantined
    rows = wh.sql("SELECT ts, volume FROM contract_bars_1m ORDER BY volume").to_pylist()
    assert [r["ts"].strftime("%H:%M") for r in rows] == ["13:30", "13:31", "13:32", "13:33", "13:34", "13:35"]


def test_lower_case_symbols_are_exchange_symbols(wh, tmp_path):
    path = write_csv(tmp_path / "lower.csv", HEADER, ["esz3,2013-10-07 13:30,1680,1681,1679,1680.5,1"])
    ingest(wh, [path], timeframe="1m")
    assert wh.sql("SELECT symbol, contract FROM contract_bars_1m").to_pylist() == [{"symbol": "ES", "contract": "ESZ3"}]
