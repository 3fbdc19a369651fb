"""``qe live status|flatten|reset|kill`` as an operator runs them: a real subprocess beside a session's files.

The session's loop is played by a thread of the test process (take_commands, complete_command, write_status),
so the subprocess sees exactly what it would see beside a running ``qe live``. The kill that goes to IB
directly is in tests/ib/test_ib_emergency_kill.py.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console

from engine.live.control import (
    LastBar, LiveStatus, PositionView, RiskView, WorkingOrderView, complete_command, create_session, read_status,
    take_commands, write_status,
)
from engine.live.eventlog import EventLog
from engine.live.panel import render_status, status_panel
from tests.conftest import REPO

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=timezone.utc)


def qe(warehouse: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "engine.cli", "--warehouse", str(warehouse), "live", *args],
                          cwd=REPO, capture_output=True, text=True, env=env, timeout=120)


def running(run_id: str = "run1") -> LiveStatus:
    return LiveStatus(
        run_id=run_id, kind="paper", strategy="sma", pid=os.getpid(), state="running", started_at=T0,
        updated_at=T0, last_bar=LastBar(ts=T0, symbols=["MES"]), bar_seconds=60, pnl_today=-37.5, equity=99_962.5,
        positions={"MES": PositionView(quantity=2, contract="MESH6", avg_price=5000.25, mark=4996.5,
                                       unrealized=-37.5)},
        working_orders=[WorkingOrderView(order_id=3, symbol="MES", quantity=-2, type="STP", stop=4980.0,
                                         status="Submitted")],
        risk=RiskView(state="REDUCING", reason="daily loss 80% of limit [mark-to-market]"))


@contextmanager
def loop(directory: Path) -> Iterator[list[str]]:
    """The session's side: answer every command between 'bars' until the block ends."""
    handled: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        status = read_status(directory)
        while not stop.wait(0.02):
            for command in take_commands(directory):
                handled.append(f"{command.kind} {command.args}")
                result = {"kill": "halted; 1 order cancelled, flattening MES -2", "flatten": "MES: flattening -2",
                          "reset": "risk reset to NORMAL"}[command.kind]
                ack = complete_command(directory, command, result)
                status = write_status(directory, status.model_copy(update={"last_command": ack}))

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield handled
    finally:
        stop.set()
        thread.join()


def test_status_prints_the_tables_and_the_json(tmp_path) -> None:
    directory = create_session(tmp_path, "run1", kind="paper", strategy="sma")
    written = write_status(directory, running())
    shown = qe(tmp_path, "status")
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    for fact in ("run1 (paper, sma, pid", "running", "disconnected", "-37.50", "99,962.50", "MESH6", "5,000.25",
                 "REDUCING: daily loss 80% of limit [mark-to-market]", "Working orders", "STP", "4,980"):
        assert fact in out, fact
    as_json = qe(tmp_path, "status", "--json", "--run", "run1")
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data.pop("stale") is None  # just written, by a process that is alive
    assert LiveStatus.model_validate(data) == written


def test_status_of_a_dead_session_says_stale_and_no_session_is_one_line(tmp_path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    directory = create_session(tmp_path, "run1", kind="paper", strategy="sma")
    write_status(directory, running().model_copy(update={"pid": child.pid}), now=T0)
    out = qe(tmp_path, "status").stdout
    assert f"stale: process {child.pid} is gone" in out
    missing = qe(tmp_path / "elsewhere", "status")
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "Error:" in missing.stderr
    (tmp_path / "empty").mkdir()
    none = qe(tmp_path / "empty", "status")
    assert none.returncode == 1 and "no live session in the warehouse" in none.stderr


def test_flatten_reset_and_kill_wait_for_the_sessions_answer(tmp_path) -> None:
    directory = create_session(tmp_path, "run1", kind="paper", strategy="sma")
    write_status(directory, running())
    with loop(directory) as handled:
        flatten = qe(tmp_path, "flatten", "MES")
        reset = qe(tmp_path, "reset", "--run", "run1")
        kill = qe(tmp_path, "kill", "--reason", "fat finger")
    assert (flatten.returncode, reset.returncode, kill.returncode) == (0, 0, 0), (flatten.stderr, kill.stderr)
    assert flatten.stdout.strip() == "flatten: MES: flattening -2"
    assert reset.stdout.strip() == "reset: risk reset to NORMAL"
    assert kill.stdout.strip() == "kill: halted; 1 order cancelled, flattening MES -2"
    assert handled == ["flatten {'symbol': 'MES'}", "reset {}", "kill {'reason': 'fat finger'}"]
    assert read_status(directory).last_command.kind == "kill"


def test_an_unanswered_command_is_withdrawn_in_one_line(tmp_path) -> None:
    directory = create_session(tmp_path, "run1", kind="paper", strategy="sma")
    write_status(directory, running().model_copy(update={"updated_at": datetime.now(timezone.utc)}))
    result = qe(tmp_path, "reset", "--timeout", "0.3")
    assert result.returncode == 1
    assert result.stderr.strip() == ("Error: the session did not answer reset within 0.3 s (state running); "
                                     "the command was withdrawn")
    assert take_commands(directory) == []  # nothing left to surprise the session later


def test_kill_without_an_ib_config_says_so_and_leaves_the_kill_queued(tmp_path) -> None:
    directory = create_session(tmp_path, "run1", kind="paper", strategy="sma")
    write_status(directory, running())
    result = qe(tmp_path, "kill", "--timeout", "0.2")
    assert result.returncode == 1
    assert "no IB configuration to reach IB with; pass --config live.toml" in result.stderr
    [queued] = take_commands(directory)
    assert (queued.kind, queued.args) == ("kill", {"reason": "operator"})


def test_the_panel_renders_every_fact(tmp_path) -> None:
    console = Console(width=160, record=True, color_system=None)
    console.print(status_panel(running()))
    text = console.export_text()
    assert "qe live run1" in text and "MESH6" in text and "[mark-to-market]" in text
    empty = running().model_copy(update={"positions": {}, "working_orders": []})
    console.print(render_status(empty, "stuck? process 1 is alive"))
    text = console.export_text()
    assert "No positions." in text and "No working orders." in text and "stuck? process 1" in text


def test_the_event_log_is_one_line_a_record_with_accounts_masked(tmp_path) -> None:
    log = logging.getLogger("engine.live.session")
    with EventLog(tmp_path) as events:
        log.info("bar %s closed", T0)
        log.warning("order sent for account DU1234567\nsecond line")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("strategy failed")
    log.info("after close: not recorded")
    lines = events.path.read_text().splitlines()
    assert len(lines) == 3
    assert lines[0].endswith("INFO engine.live.session: bar 2026-03-02 15:00:00+00:00 closed")
    assert "******567 | second line" in lines[1] and "DU1234567" not in lines[1]
    assert "strategy failed | Traceback" in lines[2] and "ValueError: boom" in lines[2]
    assert logging.getLogger("engine").level == logging.NOTSET  # restored


def test_the_brokers_message_dumps_go_to_their_own_log(tmp_path) -> None:
    """ib_async's INFO reprs of every broker message go to broker.log; events.log keeps its connection lines and
    its warnings."""
    with EventLog(tmp_path) as events:
        logging.getLogger("ib_async.wrapper").info("orderStatus: Trade(contract=Future(...), account DU1234567)")
        logging.getLogger("ib_async.client").info("Connected")
        logging.getLogger("ib_async.wrapper").warning("Error 2104, reqId -1: Market data farm connection is OK")
        logging.getLogger("engine.live.session").info("order 3 ES +1 MARKET: SUBMITTED")
    events_lines = events.path.read_text().splitlines()
    broker_lines = (tmp_path / "broker.log").read_text().splitlines()
    assert [line.split(" ", 2)[2] for line in events_lines] == [
        "ib_async.client: Connected", "ib_async.wrapper: Error 2104, reqId -1: Market data farm connection is OK",
        "engine.live.session: order 3 ES +1 MARKET: SUBMITTED"]
    assert len(broker_lines) == 3 and "orderStatus: Trade(" in broker_lines[0] and "DU1234567" not in broker_lines[0]
