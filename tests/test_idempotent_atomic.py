"""Idempotent re-ingest and crash-safe partition writes."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

from loaders.ingest import ingest
from warehouse import Warehouse
from tests.conftest import DATABENTO, LEAN, REPO, write_csv


def _snapshot(root: Path) -> dict[str, str]:
    """Content hash of every data file (the ingest log's timestamp aside)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.parquet"))
        if "ingest_log" not in p.parts
    }


def test_ingesting_the_same_files_twice_leaves_the_warehouse_unchanged(wh, tmp_path):
    bad = write_csv(tmp_path / "with_bad_rows.csv", "symbol,ts,open,high,low,close,volume",
                    ["NQH4,2024-01-02 15:00,16800.25,16801,16800,16800.5,3", "NQH4,2024-01-02 15:01,16800.3,16801,16800,16800.5,3"])
    inputs = [LEAN / "minute" / "20131218_trade.zip", LEAN / "daily", DATABENTO / "glbx-mdp3" / "test_data.ohlcv-1m.dbn.zst", bad]
    first = ingest(wh, inputs, timeframe=None)
    before = _snapshot(wh.root)
    mtimes = {p: p.stat().st_mtime_ns for p in wh.root.rglob("*.parquet") if "ingest_log" not in p.parts}
    second = ingest(wh, inputs)
    assert _snapshot(wh.root) == before
    # Unchanged partitions are not even rewritten.
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    assert sum(r.rows_loaded for r in second) == 0
    assert sum(r.rows_unchanged for r in second) == sum(r.rows_loaded for r in first)
    assert sum(r.rows_quarantined for r in second) == sum(r.rows_quarantined for r in first) == 1


def test_a_crash_mid_write_leaves_the_old_partition_whole(wh, tmp_path):
    header = "symbol,ts,open,high,low,close,volume"
    first = write_csv(tmp_path / "a.csv", header, ["ESH4,2024-01-02 15:00,4700,4701,4699,4700.5,10"])
    second = write_csv(tmp_path / "b.csv", header, ["ESH4,2024-01-02 15:01,4700.5,4702,4700,4701,12"])
    ingest(wh, [first], timeframe="1m")
    partition = next((wh.root / "bars").rglob("data.parquet"))
    old_bytes = partition.read_bytes()
    # A separate process dies (os._exit, no cleanup) after writing half of the new partition file.
    script = textwrap.dedent(
        f"""
        import os, pyarrow.parquet as pq, warehouse.store as store
        real = pq.write_table
        def dying_write(table, sink, **kwargs):
            sink.write(b"PAR1 half a file")
            sink.flush()
            os._exit(137)
        store.pq.write_table = dying_write
        from loaders.ingest import ingest
        from warehouse import Warehouse
        ingest(Warehouse({str(wh.root)!r}), [{str(second)!r}], timeframe="1m")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 137, proc.stderr
    assert partition.read_bytes() == old_bytes
    leftovers = list(wh.root.rglob("*.tmp"))
    assert leftovers, "the dying writer should have left its temporary file behind"
    # The views never see the temporary file, and a reader never deletes anything.
    fresh = Warehouse(wh.root)
    assert fresh.sql("SELECT count(*) AS n FROM contract_bars_1m").to_pylist()[0]["n"] == 1
    assert list(wh.root.rglob("*.tmp")) == leftovers
    # The next writer, holding the write lock, knows no other writer runs: the leftover goes, young or not.
    [report] = ingest(fresh, [second], timeframe="1m")
    assert not list(wh.root.rglob("*.tmp"))
    assert report.rows_loaded == 1
    assert fresh.sql("SELECT count(*) AS n FROM contract_bars_1m").to_pylist()[0]["n"] == 2


def test_a_new_row_replaces_the_stored_one_with_the_same_key(wh, tmp_path):
    header = "symbol,ts,open,high,low,close,volume"
    path = write_csv(tmp_path / "a.csv", header, ["ESH4,2024-01-02 15:00,4700,4701,4699,4700.5,10"])
    ingest(wh, [path], timeframe="1m")
    write_csv(path, header, ["ESH4,2024-01-02 15:00,4700,4701,4699,4700.75,11"])
    [report] = ingest(wh, [path], timeframe="1m")
    assert (report.rows_loaded, report.rows_unchanged) == (1, 0)
    assert wh.sql("SELECT close, volume FROM contract_bars_1m").to_pylist() == [{"close": 4700.75, "volume": 11}]


def test_a_corrected_file_replaces_what_it_loaded_before(wh, tmp_path):
    header = "symbol,ts,open,high,low,close,volume"
    path = write_csv(tmp_path / "a.csv", header, ["ESH4,2024-01-02 15:00,4700,4701,4699,4700.5,10",
                                                  "ESH4,2024-01-02 15:01,4700,4701,4699,4700.5,10"])
    ingest(wh, [path], timeframe="1m")
    # The corrected file drops 15:01 and now has a bad 15:00 row: neither old row may survive.
    write_csv(path, header, ["ESH4,2024-01-02 15:00,4700,4701,4699,4700.5,-100", "ESH4,2024-01-02 15:02,4700,4701,4699,4700.5,3"])
    [report] = ingest(wh, [path], timeframe="1m")
    assert report.quarantined == {"volume_not_nonneg_integer": 1}
    assert any("no longer holds were removed" in note for note in report.notes)
    rows = wh.sql("SELECT strftime(ts, '%H:%M') AS t, volume FROM contract_bars_1m ORDER BY ts").to_pylist()
    assert rows == [{"t": "15:02", "volume": 3}]


def test_a_conflicting_row_from_another_file_is_reported(wh, tmp_path):
    header = "symbol,ts,open,high,low,close,volume"
    first = write_csv(tmp_path / "a.csv", header, ["ESH4,2024-01-02 15:00,4700,4701,4699,4700.5,10"])
    second = write_csv(tmp_path / "b.csv", header, ["ESH4,2024-01-02 15:00,4700,4701,4699,4700.75,12"])
    ingest(wh, [first], timeframe="1m")
    [report] = ingest(wh, [second], timeframe="1m")
    assert any("replaced different values loaded earlier from another file" in n for n in report.notes)
    assert wh.sql("SELECT close, source FROM contract_bars_1m").to_pylist() == [{"close": 4700.75, "source": str(second)}]


def test_duckdb_spills_inside_the_warehouse_and_its_memory_can_be_capped(tmp_path, monkeypatch):
    import pytest

    from warehouse.errors import QEError

    monkeypatch.setenv("QE_DUCKDB_MEMORY_LIMIT", "512MB")
    wh = Warehouse(tmp_path / "w")
    row = wh.sql("SELECT current_setting('memory_limit') AS m, current_setting('temp_directory') AS t").to_pylist()[0]
    assert row["t"] == str(wh.root / ".duckdb_tmp")
    assert row["m"].startswith("488") or row["m"].startswith("512")  # DuckDB reports MiB
    monkeypatch.setenv("QE_DUCKDB_MEMORY_LIMIT", "lots")
    with pytest.raises(QEError, match="QE_DUCKDB_MEMORY_LIMIT"):
        Warehouse(tmp_path / "v").connect()


def test_connections_side_by_side_share_the_memory_cap(tmp_path, monkeypatch):
    """A segmented feature build runs its segments in databases of their own: each gets its share of
    QE_DUCKDB_MEMORY_LIMIT (hand-worked: 2GB = 2,000,000,000 bytes over 2 = 1,000,000,000 B = 953.6 MiB)."""
    import duckdb

    from warehouse.warehouse import configure_connection

    monkeypatch.setenv("QE_DUCKDB_MEMORY_LIMIT", "2GB")
    con = duckdb.connect()
    configure_connection(con, tmp_path, share=2)
    assert con.execute("SELECT current_setting('memory_limit')").fetchone()[0] == "953.6 MiB"
    assert con.execute("SELECT current_setting('temp_directory')").fetchone()[0] == str(tmp_path / ".duckdb_tmp")
