"""A write that fails (full disk) leaves the warehouse exactly as it was, says so, and a re-ingest completes it.

A full disk cannot be produced in CI without root, so the test makes the one function that writes a
Parquet file (``pyarrow.parquet.write_table``, used by ``warehouse.store``) behave like a full device: it
writes part of the file, then raises ``OSError(ENOSPC)``, as ``write(2)`` does.
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from loaders.ingest import ingest
from tests.conftest import REPO, write_csv
from warehouse import store

HEADER = "symbol,ts,open,high,low,close,volume"
# Two partitions (year 2023 and year 2024 of ES); file A is loaded first, file B then adds one row to each.
FILE_A = ["ESH4,2023-12-29 15:00,4800,4801,4799,4800.5,10", "ESH4,2024-01-02 15:00,4700,4701,4699,4700.5,10"]
FILE_B = ["ESH4,2023-12-29 15:01,4800.5,4802,4800,4801,12", "ESH4,2024-01-02 15:01,4700.5,4702,4700,4701,12",
          "ESH4,2024-01-02 15:02,4701,4701,4690,4690,-1"]  # the last row is quarantined (negative volume)


def _files(root: Path) -> dict[str, str]:
    """Content hash of every file under the warehouse (temporaries included, so a leftover shows)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _disk_fills_at(monkeypatch: pytest.MonkeyPatch, nth_partition: int) -> list[str]:
    """Make the ``nth_partition``-th bar partition write run out of space half way; return the paths tried."""
    real = pq.write_table
    tried: list[str] = []

    def write_table(table, where, **kwargs):  # noqa: ANN001, ANN003
        name = getattr(where, "name", str(where))
        if f"{os.sep}bars{os.sep}" in name:
            tried.append(name)
            if len(tried) == nth_partition:
                where.write(b"PAR1 part of a file")  # what reached the disk before it filled up
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(table, where, **kwargs)

    monkeypatch.setattr(store.pq, "write_table", write_table)
    return tried


def test_a_full_disk_on_the_second_partition_changes_nothing_and_a_reingest_completes(wh, tmp_path, monkeypatch):
    first = write_csv(tmp_path / "a.csv", HEADER, FILE_A)
    second = write_csv(tmp_path / "b.csv", HEADER, FILE_B)
    ingest(wh, [first], timeframe="1m")
    before = _files(wh.root)
    tried = _disk_fills_at(monkeypatch, nth_partition=2)

    [report] = ingest(wh, [second], timeframe="1m")

    assert len(tried) == 2  # the first partition was staged, the second hit the full disk
    # Every warehouse file is byte-for-byte as before: both partitions, quarantine, ingest log; no temporary.
    assert _files(wh.root) == before
    assert not list(wh.root.rglob("*.tmp"))
    assert wh.sql("SELECT count(*) AS n FROM ingest_log WHERE file = ?", [str(second)]).to_pylist()[0]["n"] == 0
    assert report.failed_at == "write"
    # The message says it was a write, which warehouse file, why, and which source file.
    year = "2024" if "year=2024" in tried[1] else "2023"
    assert report.error.startswith(f"{second}: write failed: ")
    assert f"year={year}{os.sep}data.parquet: No space left on device" in report.error
    assert "nothing from this file was written" in report.error
    assert (report.rows_loaded, report.partitions_written, report.rows_quarantined) == (0, 0, 0)

    monkeypatch.undo()  # space freed
    [again] = ingest(wh, [second], timeframe="1m")
    assert again.error is None
    # 2 good rows of B are new (A's 2 rows stay), 1 row quarantined: 4 bars in all.
    assert (again.rows_loaded, again.rows_unchanged, again.rows_quarantined) == (2, 0, 1)
    assert wh.sql("SELECT count(*) AS n FROM contract_bars_1m").to_pylist()[0]["n"] == 4
    assert wh.sql("SELECT rows_loaded FROM ingest_log WHERE file = ?", [str(second)]).to_pylist() == [{"rows_loaded": 2}]


def test_a_full_disk_on_a_new_partition_leaves_no_partition_and_no_temporary(wh, tmp_path, monkeypatch):
    path = write_csv(tmp_path / "b.csv", HEADER, FILE_B)
    _disk_fills_at(monkeypatch, nth_partition=2)
    [report] = ingest(wh, [path], timeframe="1m")
    assert not list(wh.root.rglob("*.parquet")) and not list(wh.root.rglob("*.tmp"))
    assert report.failed_at == "write" and "No space left on device" in report.error


def test_the_cli_says_a_file_was_not_written_rather_than_not_read(tmp_path):
    path = write_csv(tmp_path / "b.csv", HEADER, FILE_B)
    script = textwrap.dedent(
        f"""
        import errno, os, sys
        import pyarrow.parquet as pq
        real = pq.write_table
        def full(table, where, **kwargs):
            if os.sep + "bars" + os.sep in getattr(where, "name", ""):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(table, where, **kwargs)
        pq.write_table = full
        from engine.cli.main import main
        sys.argv = ["qe", "--warehouse", {str(tmp_path / "w")!r}, "ingest", {str(path)!r}, "--timeframe", "1m"]
        main()
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "400"})
    assert proc.returncode == 1
    assert "not written: write failed:" in proc.stdout and "No space left on device" in proc.stdout
    assert "not read" not in proc.stdout
    # one failed file: the error line is that file and its reason (issue 11)
    partition = tmp_path / "w" / "bars" / "timeframe=1m" / "symbol=ES" / "year=2023" / "data.parquet"
    assert proc.stderr.strip() == (f"Error: {path}: write failed: {partition}: No space left on device "
                                   "(nothing from this file was written)")
