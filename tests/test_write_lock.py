"""The warehouse write lock: writers are serialized across real processes, readers never wait, a dead
holder never leaves it held, and the writer that takes it sweeps what crashed writers left behind."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from loaders.ingest import ingest
from warehouse import Warehouse
from warehouse.errors import ConfigError
from warehouse.lock import LockTimeout, read_holder, write_lock
from warehouse.store import ClaimedDirectory

REPO = Path(__file__).resolve().parents[1]
HEADER = "symbol,ts,open,high,low,close,volume"
#: Safety net against a hung child only; no assertion depends on how long anything takes.
HANG_GUARD_S = 120


def _minute_bars(path: Path, first_minute: int, count: int) -> Path:
    """``count`` valid ESH4 one-minute bars from 2024-01-02 14:00 + ``first_minute`` (all in the 2024 partition)."""
    rows = []
    for m in range(first_minute, first_minute + count):
        hour, minute = divmod(14 * 60 + m, 60)
        rows.append(f"ESH4,2024-01-02 {hour:02d}:{minute:02d},4700,4701,4699,4700.5,10")
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


def _qe(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "engine.cli.main", "--warehouse", str(root), *args], cwd=REPO,
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait_for_holder(root: Path, pid: int) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while (holder := read_holder(root)) is None or holder.pid != pid:
        assert time.monotonic() < deadline, "the first process never took the lock"
        time.sleep(0.02)


class _Holder:
    """A separate Python process that takes the lock and keeps it until its stdin closes (or it is killed)."""

    def __init__(self, root: Path, claim_staging: bool = False) -> None:
        script = textwrap.dedent(
            f"""
            import sys
            from pathlib import Path
            from warehouse.lock import write_lock
            from warehouse.store import ClaimedDirectory
            root = Path({str(root)!r})
            with write_lock(root, command="qe test-holder"):
                claim = ClaimedDirectory(root / ".staging", "equity-") if {claim_staging!r} else None
                print(claim.path if claim else "locked", flush=True)
                sys.stdin.read()
            """
        )
        self.proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.first_line = self.proc.stdout.readline().strip()
        assert self.first_line, self.proc.stderr.read()

    def stop(self) -> None:
        self.proc.stdin.close()
        assert self.proc.wait(timeout=HANG_GUARD_S) == 0, self.proc.stderr.read()

    def kill(self) -> None:
        self.proc.kill()  # SIGKILL: no cleanup code runs
        self.proc.wait(timeout=HANG_GUARD_S)


def _count(root: Path, sql: str) -> int:
    return Warehouse(root).sql(sql).column(0).to_pylist()[0]


# -- serialized writers ---------------------------------------------------------------------------------
def test_two_concurrent_ingests_into_one_partition_keep_every_row_and_the_second_says_it_waits(tmp_path):
    root = tmp_path / "wh"
    a = _minute_bars(tmp_path / "a.csv", 0, 300)     # 14:00 .. 18:59
    b = _minute_bars(tmp_path / "b.csv", 300, 200)   # 19:00 .. 22:19: same symbol and year, other minutes
    # The first holds the lock a while once it has it (test hook), so the second surely arrives meanwhile.
    first = _qe(root, "ingest", str(a), "--timeframe", "1m", env={"QE_TEST_LOCK_HOLD_SECONDS": "1.5"})
    _wait_for_holder(root, first.pid)
    second = _qe(root, "ingest", str(b), "--timeframe", "1m")
    out1, err1 = first.communicate(timeout=HANG_GUARD_S)
    out2, err2 = second.communicate(timeout=HANG_GUARD_S)
    assert first.returncode == 0, err1
    assert second.returncode == 0, err2
    assert f"waiting for the warehouse lock held by PID {first.pid} (qe ingest) since 20" in err2
    # All 300 + 200 = 500 distinct (contract, ts) rows are in the one partition file, as the ingest log says.
    [partition] = (root / "bars").rglob("data.parquet")
    assert pq.read_metadata(partition).num_rows == 500
    assert _count(root, "SELECT count(*) FROM contract_bars_1m") == 500
    assert _count(root, "SELECT sum(rows_loaded) FROM ingest_log") == 500


def test_a_writer_that_waits_too_long_fails_with_one_line_naming_the_holder(tmp_path):
    root = tmp_path / "wh"
    root.mkdir()
    holder = _Holder(root)
    try:
        with pytest.raises(LockTimeout) as caught:
            with write_lock(root, timeout=0.2, on_wait=lambda _: None):
                pass
        message = str(caught.value)
        assert "\n" not in message
        assert message.startswith("timed out after 0.2 s waiting for the warehouse lock")
        assert f"held by PID {holder.proc.pid} (qe test-holder) since " in message
        assert "--lock-timeout / QE_LOCK_TIMEOUT" in message
        # The same through the CLI option: waiting line, then "Error: ..." and exit 1.
        cli = _qe(root, "--lock-timeout", "0.3", "ingest", str(_minute_bars(tmp_path / "a.csv", 0, 3)))
        _, err = cli.communicate(timeout=HANG_GUARD_S)
        assert cli.returncode == 1
        lines = [line for line in err.splitlines() if line.strip()]
        assert lines[0].startswith(f"waiting for the warehouse lock held by PID {holder.proc.pid} (qe test-holder)")
        assert lines[-1].startswith("Error: timed out after 0.3 s waiting for the warehouse lock")
        # ... and through the environment.
        cli = _qe(root, "rolls", "build", env={"QE_LOCK_TIMEOUT": "0"})
        _, err = cli.communicate(timeout=HANG_GUARD_S)
        assert cli.returncode == 1 and "Error: timed out after 0 s" in err
    finally:
        holder.stop()
    assert not (root / "bars").exists()  # the refused ingest wrote nothing


def test_a_killed_holder_leaves_the_lock_free(tmp_path):
    root = tmp_path / "wh"
    root.mkdir()
    holder = _Holder(root)
    with pytest.raises(LockTimeout):
        with write_lock(root, timeout=0):
            pass
    holder.kill()
    with write_lock(root, timeout=0):  # free at once: the kernel dropped the dead process's lock
        assert read_holder(root).pid == os.getpid()
    assert read_holder(root) is None  # a released lock names no holder


def test_readers_run_while_a_writer_holds_the_lock(tmp_path):
    root = tmp_path / "wh"
    ingest(Warehouse(root), [_minute_bars(tmp_path / "a.csv", 0, 7)], timeframe="1m")
    holder = _Holder(root)
    try:
        reader = _qe(root, "sql", "SELECT count(*) AS n FROM contract_bars_1m", "--format", "csv")
        out, err = reader.communicate(timeout=HANG_GUARD_S)
        assert reader.returncode == 0, err
        assert out.split()[-1] == "7"
        assert "waiting" not in err
    finally:
        holder.stop()


# -- within one process -------------------------------------------------------------------------------------
def test_the_lock_is_reentrant_in_a_thread_and_excludes_other_threads(tmp_path):
    outcome: list[str] = []

    def other_thread() -> None:
        try:
            with write_lock(tmp_path, timeout=0):
                outcome.append("acquired")
        except LockTimeout:
            outcome.append("refused")

    with write_lock(tmp_path, timeout=0):
        with write_lock(tmp_path, timeout=0):  # a writer calling another writer
            assert read_holder(tmp_path).pid == os.getpid()
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        assert read_holder(tmp_path).pid == os.getpid()  # the inner exit did not release it
    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    assert outcome == ["refused", "acquired"]


def test_a_forked_child_does_not_inherit_the_lock(tmp_path):
    with write_lock(tmp_path, timeout=0):
        pid = os.fork()
        if pid == 0:  # the child: the parent holds the lock, so the child must be refused
            try:
                with write_lock(tmp_path, timeout=0):
                    os._exit(0)
            except LockTimeout:
                os._exit(7)
            os._exit(1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 7
        assert read_holder(tmp_path).pid == os.getpid()  # the child's exit did not release the parent's lock
    with write_lock(tmp_path, timeout=0):
        pass


def test_qe_lock_timeout_must_be_a_number_of_seconds(tmp_path, monkeypatch):
    monkeypatch.setenv("QE_LOCK_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match="QE_LOCK_TIMEOUT='soon': must be a number of seconds >= 0"):
        with write_lock(tmp_path):
            pass


# -- the sweep on taking the lock -----------------------------------------------------------------------
def test_taking_the_lock_sweeps_dead_writers_leftovers_but_not_a_live_backtests_spill(tmp_path):
    root = tmp_path / "wh"
    staging = root / ".staging"
    killed = _Holder(root, claim_staging=True)             # a backtest's spill in a process killed later
    killed_dir = Path(killed.first_line)
    killed.kill()
    dead = staging / "0badc0de" / "out" / "year=2024"
    dead.mkdir(parents=True)
    (dead / "data_0.parquet").write_bytes(b"")            # empty
    (dead / "data_1.parquet").write_bytes(b"PAR1 torn")   # unreadable
    live = ClaimedDirectory(staging, "equity-")            # a backtest of this process, still running
    (live.path / "equity.parquet").write_bytes(b"PAR1 being written")
    partition = root / "bars" / "timeframe=1m" / "symbol=ES" / "year=2024"
    partition.mkdir(parents=True)
    torn = partition / ".data.parquet.1234.tmp"
    torn.write_bytes(b"PAR1 torn")
    spill = root / ".duckdb_tmp" / "duckdb_temp_storage-0.tmp"  # DuckDB's own
    spill.parent.mkdir()
    spill.write_bytes(b"x")
    download = root / "downloads" / "ES" / ".2024-01.dbn.zst.99.tmp"  # a fetch runs outside the lock
    download.parent.mkdir(parents=True)
    download.write_bytes(b"x")
    Warehouse(root).sql("SELECT count(*) FROM contract_bars_1m")  # a reader removes nothing
    assert dead.exists() and torn.exists() and killed_dir.exists()
    with write_lock(root, timeout=0):
        assert sorted(staging.iterdir()) == [live.path]
        assert not torn.exists()
        assert spill.exists() and download.exists()  # young: may be a live download's
    live.release()
    old = time.time() - 7200
    os.utime(download, (old, old))
    with write_lock(root, timeout=0):
        assert list(staging.iterdir()) == []
        assert not download.exists() and spill.exists()
