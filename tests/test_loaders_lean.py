"""LEAN futures zips on the real ES sample data, checked against the CSVs read independently."""

from __future__ import annotations

import csv
import io
import zipfile
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from loaders.ingest import ingest
from tests.conftest import LEAN


def _oracle_minute_rows() -> list[tuple[str, datetime, float, float, float, float, int]]:
    """Every minute trade row, parsed with the csv module (independent of the loader)."""
    rows = []
    for archive_path in sorted((LEAN / "minute").glob("*_trade.zip")):
        with zipfile.ZipFile(archive_path) as archive:
            for name in archive.namelist():
                day = datetime.strptime(name[:8], "%Y%m%d").replace(tzinfo=timezone.utc)
                month = name.rsplit("_", 1)[1][:6]
                code = "FGHJKMNQUVXZ"[int(month[4:]) - 1]
                contract = f"ES{code}{month[3]}"
                for ms, o, h, lo, c, v in csv.reader(io.TextIOWrapper(archive.open(name))):
                    rows.append((contract, day + timedelta(milliseconds=int(ms)), float(o), float(h), float(lo), float(c), int(v)))
    return rows


def test_minute_bars_match_the_csvs_row_for_row(wh):
    reports = ingest(wh, [LEAN / "minute"])
    assert not [r.error for r in reports if r.error]
    expected = _oracle_minute_rows()
    # The provenance README's hand count: 23,948 minute bars, ESZ3 16,673, ESH4 5,116, ESH0 1,425.
    assert len(expected) == 23_948
    got = wh.sql("SELECT contract, ts, open, high, low, close, volume FROM contract_bars_1m ORDER BY contract, ts").to_pylist()
    assert len(got) == 23_948
    counts = Counter(r["contract"] for r in got)
    assert (counts["ESZ3"], counts["ESH4"], counts["ESH0"]) == (16_673, 5_116, 1_425)
    assert sorted(expected) == [tuple(r.values()) for r in got]


def test_sunday_globex_open_is_22_utc(wh):
    ingest(wh, [LEAN / "minute" / "20131006_trade.zip"])
    first = wh.sql("SELECT min(ts) AS ts FROM contract_bars_1m").to_pylist()[0]["ts"]
    assert first == datetime(2013, 10, 6, 22, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("folder, view", [("hour", "contract_bars_1h"), ("daily", "contract_bars_1d")])
def test_hour_and_daily_resolution_from_folder(wh, folder, view):
    ingest(wh, [LEAN / folder / "es_trade.zip"])
    with zipfile.ZipFile(LEAN / folder / "es_trade.zip") as archive:
        n = sum(1 for name in archive.namelist() for line in archive.read(name).decode().splitlines() if line.strip())
        first = archive.read("es_trade_201312.csv").decode().splitlines()[0].split(",")
    assert wh.sql(f"SELECT count(*) AS n FROM {view}").to_pylist()[0]["n"] == n
    row = wh.sql(f"SELECT * FROM {view} WHERE contract = 'ESZ3' ORDER BY ts LIMIT 1").to_pylist()[0]
    assert row["ts"] == datetime.strptime(first[0], "%Y%m%d %H:%M").replace(tzinfo=timezone.utc)
    assert (row["open"], row["high"], row["low"], row["close"], row["volume"]) == (
        float(first[1]), float(first[2]), float(first[3]), float(first[4]), int(first[5])
    )


def test_timeframe_option_overrides_the_folder(wh, tmp_path):
    copy = tmp_path / "elsewhere" / "es_trade.zip"
    copy.parent.mkdir()
    copy.write_bytes((LEAN / "daily" / "es_trade.zip").read_bytes())
    [report] = ingest(wh, [copy])
    assert "resolution" in report.error and "--timeframe" in report.error
    [report] = ingest(wh, [copy], timeframe="1d")
    assert report.error is None and wh.sql("SELECT count(*) AS n FROM contract_bars_1d").to_pylist()[0]["n"] > 0


def test_open_interest_is_stored(wh):
    ingest(wh, [LEAN / "daily" / "es_openinterest.zip"])
    row = wh.sql(
        "SELECT open_interest FROM open_interest WHERE contract = 'ESZ3' AND ts = '2013-10-06 00:00:00+00'"
    ).to_pylist()
    assert row == [{"open_interest": 2_691_941}]


def test_archiver_junk_is_ignored_and_minute_names_give_the_resolution(wh, tmp_path):
    original = LEAN / "minute" / "20131220_trade.zip"
    copy = tmp_path / "anywhere" / "20131220_trade.zip"
    copy.parent.mkdir()
    with zipfile.ZipFile(original) as src, zipfile.ZipFile(copy, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, src.read(name))
        dst.writestr("__MACOSX/._20131220_es_minute_trade_201312.csv", b"\x00\x05junk")
    [report] = ingest(wh, [copy])
    assert report.error is None
    with zipfile.ZipFile(original) as src:
        expected = sum(len(src.read(n).decode().split()) for n in src.namelist())
    assert wh.sql("SELECT count(*) AS n FROM contract_bars_1m").to_pylist()[0]["n"] == expected
