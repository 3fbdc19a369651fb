"""The files between a live session and the operator's commands (engine/live/control.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone

import pytest

from engine.live.control import (
    CommandAck, LiveStatus, PositionView, WorkingOrderView, command_state, complete_command, create_session, find_session,
    post_command, read_session, read_status, stale_reason, take_commands, wait_for_ack, write_status,
)
from warehouse.errors import ConfigError, QEError

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=timezone.utc)


def status(run_id: str = "r1", **changes) -> LiveStatus:
    fields = dict(run_id=run_id, kind="paper", strategy="sma", pid=12345, state="running", started_at=T0,
                  updated_at=T0, positions={"MES": PositionView(quantity=2, contract="MESH6", avg_price=5000.25,
                                                                mark=5001.0, unrealized=7.5)},
                  working_orders=[WorkingOrderView(order_id=3, symbol="MES", quantity=-2, type="STP", stop=4980.0,
                                                   status="Submitted")],
                  pnl_today=12.5, equity=100_012.5)
    return LiveStatus(**(fields | changes))


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_session_status_round_trip_and_current(tmp_path) -> None:
    first = create_session(tmp_path, "r1", kind="paper", strategy="sma", contracts={"MES": "202603"})
    second = create_session(tmp_path, "r2", kind="live", strategy="sma", config=tmp_path / "live.toml")
    assert find_session(tmp_path) == second and find_session(tmp_path, "r1") == first
    assert read_session(second).config == str((tmp_path / "live.toml").resolve())
    assert read_session(first).contracts == {"MES": "202603"}
    written = write_status(first, status(), now=T0 + timedelta(minutes=1))
    assert read_status(first) == written == status(updated_at=T0 + timedelta(minutes=1))
    with pytest.raises(QEError, match="live status not found"):
        read_status(second)
    with pytest.raises(QEError, match="no live session 'r3'"):
        find_session(tmp_path, "r3")
    with pytest.raises(QEError, match="no live session in the warehouse"):
        find_session(tmp_path / "empty")


def test_a_reader_never_sees_a_half_written_status(tmp_path) -> None:
    directory = create_session(tmp_path, "r1", kind="paper", strategy="sma")
    # large enough that a plain write would be seen half done by a reader polling meanwhile
    big = {f"S{k}": PositionView(quantity=k, contract=f"C{k}", mark=float(k)) for k in range(2000)}
    write_status(directory, status(positions=big, message="0"))
    stop = threading.Event()
    seen: list[int] = []

    def writer() -> None:
        for k in range(1, 60):
            write_status(directory, status(positions=big, message=str(k)))
        stop.set()

    thread = threading.Thread(target=writer)
    thread.start()
    while not stop.is_set():
        read = read_status(directory)  # raises on a truncated file
        assert len(read.positions) == 2000
        seen.append(int(read.message))
    thread.join()
    assert seen == sorted(seen) and read_status(directory).message == "59"
    assert not list(directory.glob("*.tmp")) and not list(directory.glob(".*.tmp"))


def test_commands_are_taken_oldest_first_and_once(tmp_path) -> None:
    directory = create_session(tmp_path, "r1", kind="paper", strategy="sma")
    ids = [post_command(directory, "kill", reason="drawdown"), post_command(directory, "flatten", symbol="MES"),
           post_command(directory, "reset")]
    (directory / "commands" / "00000000000000000000-garbage.json").write_text("{not json")
    taken = take_commands(directory)
    assert [(c.id, c.kind, c.args) for c in taken] == [
        (ids[0], "kill", {"reason": "drawdown"}), (ids[1], "flatten", {"symbol": "MES"}), (ids[2], "reset", {})]
    assert take_commands(directory) == []
    assert (directory / "commands" / "done" / "00000000000000000000-garbage.json.invalid").is_file()
    assert command_state(directory, ids[0]) == ("taken", None)
    ack = complete_command(directory, taken[0], "halted; 1 order cancelled")
    assert command_state(directory, ids[0]) == ("done", ack)
    assert post_command(directory, "kill") and take_commands(directory)[0].args == {"reason": "operator"}


@pytest.mark.parametrize("kind, args, message", [
    ("flatten", {}, "flatten needs the symbol"), ("reset", {"symbol": "MES"}, "reset takes no arguments"),
    ("pause", {}, "unknown live command 'pause'")])
def test_bad_commands_are_refused_in_one_line(tmp_path, kind, args, message) -> None:
    directory = create_session(tmp_path, "r1", kind="paper", strategy="sma")
    with pytest.raises(ConfigError, match=message):
        post_command(directory, kind, **args)


def test_the_loop_acknowledges_commands_in_order(tmp_path) -> None:
    """The loop side in a thread: between bars it takes commands, acts, and records each in the status."""
    directory = create_session(tmp_path, "r1", kind="paper", strategy="sma")
    current = write_status(directory, status())
    handled: list[str] = []
    posted = threading.Event()
    finished = threading.Event()

    def loop() -> None:
        nonlocal current
        posted.wait(10)
        while len(handled) < 3 and not finished.is_set():
            for command in take_commands(directory):
                handled.append(command.kind)
                ack = complete_command(directory, command, f"{command.kind} done ({len(handled)})")
                current = write_status(directory, current.model_copy(update={"last_command": ack}))

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        ids = [post_command(directory, "kill", reason="x"), post_command(directory, "flatten", symbol="MES"),
               post_command(directory, "reset")]
        posted.set()
        acks = [wait_for_ack(directory, i, timeout=10) for i in ids]
    finally:
        finished.set()
        thread.join()
    assert handled == ["kill", "flatten", "reset"]
    assert [(a.id, a.result) for a in acks] == [(ids[0], "kill done (1)"), (ids[1], "flatten done (2)"),
                                               (ids[2], "reset done (3)")]
    assert read_status(directory).last_command == acks[2]


def test_no_loop_means_no_ack(tmp_path) -> None:
    directory = create_session(tmp_path, "r1", kind="paper", strategy="sma")
    command = post_command(directory, "reset")
    assert wait_for_ack(directory, command, timeout=0.1) is None
    assert command_state(directory, command) == ("waiting", None)


def test_an_ack_recorded_only_in_the_status_counts(tmp_path) -> None:
    directory = create_session(tmp_path, "r1", kind="paper", strategy="sma")
    command_id = post_command(directory, "reset")
    [command] = take_commands(directory)
    ack = CommandAck(id=command.id, kind="reset", result="reset", at=T0)
    write_status(directory, status(last_command=ack))
    assert wait_for_ack(directory, command_id, timeout=1) == ack


def test_stale_and_stuck_statuses(tmp_path) -> None:
    now = T0 + timedelta(minutes=10)
    old_dead = status(pid=dead_pid())
    assert "stale: process" in stale_reason(old_dead, now=now)
    assert stale_reason(old_dead, now=T0 + timedelta(seconds=20)) is None  # fresh enough
    assert stale_reason(old_dead.model_copy(update={"state": "stopped"}), now=now) is None  # final
    assert "stuck?" in stale_reason(status(pid=os.getpid()), now=now)
    # 3 bars of an hourly session may pass without a write
    assert stale_reason(status(pid=os.getpid(), bar_seconds=3600), now=now) is None
