"""Every validation rule: the bad row goes to quarantine with file, row and rule; good rows still load."""

from __future__ import annotations

import pytest

from loaders.ingest import ingest
from tests.conftest import write_csv

HEADER = "symbol,ts,open,high,low,close,volume"
GOOD = "ES,2024-01-02 15:00:00,4700.25,4701.00,4699.50,4700.75,100"

CASES = [
    ("missing_symbol", ",2024-01-02 15:01:00,4700.25,4701.00,4699.50,4700.75,100"),
    ("bad_symbol", "EUR/USD,2024-01-02 15:01:00,1.1,1.2,1.0,1.1,100"),
    ("bad_symbol", "ES=F,2024-01-02 15:01:00,4700.25,4701.00,4699.50,4700.75,100"),
    ("unparseable_timestamp", "ES,01/02/2024 3pm,4700.25,4701.00,4699.50,4700.75,100"),
    ("unparseable_value", "ES,2024-01-02 15:01:00,abc,4701.00,4699.50,4700.75,100"),
    ("price_not_positive_finite", "ES,2024-01-02 15:01:00,-4700.25,4701.00,4699.50,4700.75,100"),
    ("price_not_positive_finite", "ES,2024-01-02 15:01:00,inf,4701.00,4699.50,4700.75,100"),
    ("volume_not_nonneg_integer", "ES,2024-01-02 15:01:00,4700.25,4701.00,4699.50,4700.75,-5"),
    ("volume_not_nonneg_integer", "ES,2024-01-02 15:01:00,4700.25,4701.00,4699.50,4700.75,2.5"),
    ("volume_not_nonneg_integer", "ES,2024-01-02 15:01:00,4700.25,4701.00,4699.50,4700.75,99999999999999999999"),
    ("ohlc_inconsistent", "ES,2024-01-02 15:01:00,4700.25,4700.50,4699.50,4700.75,100"),
    ("ohlc_inconsistent", "ES,2024-01-02 15:01:00,4700.25,4701.00,4700.50,4700.75,100"),
    ("ts_not_aligned", "ES,2024-01-02 15:01:30,4700.25,4701.00,4699.50,4700.75,100"),
    ("price_off_tick_grid", "ES,2024-01-02 15:01:00,4700.30,4701.00,4699.50,4700.75,100"),
    ("duplicate_key", "ES,2024-01-02 15:00:00,4700.25,4701.00,4699.50,4700.75,100"),
]


@pytest.mark.parametrize("rule, bad", CASES, ids=[f"{rule}-{i}" for i, (rule, _) in enumerate(CASES)])
def test_rule_quarantines_the_bad_row_and_loads_the_good_ones(wh, tmp_path, rule, bad):
    good_after = "ES,2024-01-02 15:02:00,4700.75,4702.00,4700.50,4701.25,50"
    path = write_csv(tmp_path / "bars.csv", HEADER, [GOOD, bad, good_after])
    [report] = ingest(wh, [path], timeframe="1m")
    assert report.error is None
    assert report.quarantined == {rule: 1}
    assert report.rows_loaded == 2
    [row] = wh.sql("SELECT file, row, rule, detail FROM quarantine").to_pylist()
    # The bad row is the second data row: line 3 of the file (line 1 is the header).
    assert (row["file"], row["row"], row["rule"]) == (str(path), 3, rule)
    assert row["detail"]
    assert wh.sql("SELECT count(*) AS n FROM contract_bars_1m").to_pylist()[0]["n"] == 2


def test_tick_grid_applies_only_to_known_contracts(wh, tmp_path):
    path = write_csv(tmp_path / "x.csv", HEADER, ["XYZ,2024-01-02 15:00:00,10.333,10.5,10.1,10.4,7"])
    [report] = ingest(wh, [path], timeframe="1m")
    assert report.rows_loaded == 1 and not report.quarantined


def test_quarantine_is_replaced_when_the_fixed_file_is_ingested_again(wh, tmp_path):
    path = write_csv(tmp_path / "bars.csv", HEADER, [GOOD, CASES[7][1]])
    ingest(wh, [path], timeframe="1m")
    assert wh.sql("SELECT count(*) AS n FROM quarantine").to_pylist()[0]["n"] == 1
    write_csv(path, HEADER, [GOOD, "ES,2024-01-02 15:01:00,4700.25,4701.00,4699.50,4700.75,100"])
    [report] = ingest(wh, [path], timeframe="1m")
    assert report.rows_loaded == 1 and report.rows_unchanged == 1
    assert wh.sql("SELECT count(*) AS n FROM quarantine").to_pylist()[0]["n"] == 0


def test_row_numbers_are_line_numbers_even_after_blank_lines(wh, tmp_path):
    path = tmp_path / "gappy.csv"
    path.write_text(HEADER + "\n" + GOOD + "\n\n\n" + CASES[0][1] + "\n\n")
    [report] = ingest(wh, [path], timeframe="1m")
    assert report.rows_loaded == 1 and report.quarantined == {"missing_symbol": 1}
    assert wh.sql("SELECT row FROM quarantine").to_pylist() == [{"row": 5}]
