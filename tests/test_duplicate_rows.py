"""Rows of one file that share a key: identical ones are one bar; different ones are all rejected, with a hole report."""

from __future__ import annotations

import hashlib

from loaders.ingest import ingest
from tests.conftest import write_csv

HEADER = "symbol,ts,open,high,low,close,volume"
# Real-looking ESH4 bars at 14:58..15:01 UTC. The first row is a 10:00 New York bar whose time was written
# as if it were UTC: it lands on the genuine 15:00 bar further down (4700 vs 4712.5).
MISSTAMPED = "ESH4,2024-01-02 15:00,4700.00,4701.00,4699.50,4700.75,900"
GENUINE = [
    "ESH4,2024-01-02 14:58,4711.00,4712.00,4710.50,4711.75,40",
    "ESH4,2024-01-02 14:59,4711.75,4712.25,4711.00,4712.00,35",
    "ESH4,2024-01-02 15:00,4712.00,4713.00,4711.75,4712.50,41",
    "ESH4,2024-01-02 15:01,4712.50,4712.75,4712.00,4712.25,30",
]


def test_rows_that_disagree_on_one_key_are_all_quarantined_with_both_values(wh, tmp_path):
    path = write_csv(tmp_path / "bars.csv", HEADER, [MISSTAMPED, *GENUINE])
    [report] = ingest(wh, [path], timeframe="1m")
    # 5 rows: the two 15:00 rows go, 14:58, 14:59 and 15:01 load.
    assert report.quarantined == {"duplicate_conflict": 2}
    assert report.rows_loaded == 3
    rows = wh.sql("SELECT row, rule, detail FROM quarantine ORDER BY row").to_pylist()
    assert [(r["row"], r["rule"]) for r in rows] == [(2, "duplicate_conflict"), (5, "duplicate_conflict")]
    for r in rows:  # both variants, with their line numbers, in each detail
        assert "(ES, ESH4, 2024-01-02 15:00:00)" in r["detail"]
        assert "row 2: open=4700.00 high=4701.00 low=4699.50 close=4700.75 volume=900" in r["detail"]
        assert "row 5: open=4712.00 high=4713.00 low=4711.75 close=4712.50 volume=41" in r["detail"]
    # Neither value is in the warehouse: the bar is a hole, and the report says so.
    loaded = wh.sql("SELECT strftime(ts, '%H:%M') AS t FROM contract_bars_1m ORDER BY ts").to_pylist()
    assert [r["t"] for r in loaded] == ["14:58", "14:59", "15:01"]
    [note] = [n for n in report.notes if "duplicate_conflict" in n]
    assert note.startswith("1 1m bar(s) missing") and "ESH4 2024-01-02 15:00:00 UTC" in note


def test_identical_repeats_of_a_row_load_once(wh, tmp_path):
    path = write_csv(tmp_path / "bars.csv", HEADER, [GENUINE[2], GENUINE[3], GENUINE[2], GENUINE[2]])
    [report] = ingest(wh, [path], timeframe="1m")
    assert (report.rows_loaded, report.quarantined) == (2, {"duplicate_key": 2})
    # The first occurrence (line 2) stays; the repeats on lines 4 and 5 are the quarantined ones.
    assert wh.sql("SELECT row FROM quarantine ORDER BY row").to_pylist() == [{"row": 4}, {"row": 5}]
    assert wh.sql("SELECT close, volume FROM contract_bars_1m ORDER BY ts").to_pylist() == [
        {"close": 4712.50, "volume": 41}, {"close": 4712.25, "volume": 30}]
    assert not [n for n in report.notes if "missing" in n]


def test_a_conflict_only_in_volume_is_still_a_conflict(wh, tmp_path):
    path = write_csv(tmp_path / "bars.csv", HEADER, [GENUINE[2], GENUINE[2].replace(",41", ",42")])
    [report] = ingest(wh, [path], timeframe="1m")
    assert (report.rows_loaded, report.quarantined) == (0, {"duplicate_conflict": 2})


def test_reingesting_a_file_with_conflicts_changes_nothing(wh, tmp_path):
    path = write_csv(tmp_path / "bars.csv", HEADER, [MISSTAMPED, *GENUINE])
    ingest(wh, [path], timeframe="1m")

    def snapshot() -> dict[str, str]:
        return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(wh.root.rglob("*.parquet")) if "ingest_log" not in p.parts}

    before = snapshot()
    [again] = ingest(wh, [path], timeframe="1m")
    assert snapshot() == before
    assert (again.rows_loaded, again.rows_unchanged, again.quarantined) == (0, 3, {"duplicate_conflict": 2})
