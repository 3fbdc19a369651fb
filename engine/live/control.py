"""The contract between a running ``qe live`` session and the operator's commands in another terminal.

Everything goes through files of the session directory ``<warehouse>/live/<run_id>/``, so that the controls
work with no socket, no shared memory and even while the session process is stuck or dead::

    live/current                  run id of the newest session of the warehouse
    live/<run_id>/session.json    what does not change: kind, strategy, pid, IB config, contracts
    live/<run_id>/status.json     the session's state, rewritten by the loop after every bar and command
    live/<run_id>/commands/       one JSON file per operator command, waiting for the loop
    live/<run_id>/commands/done/  commands the loop took; their result is written into the same file
    live/<run_id>/events.log      every event, one line each (:mod:`engine.live.eventlog`)
    live/<run_id>/broker.log      every broker message ib_async handled (its INFO records), one line each

Every file is written atomically (:func:`warehouse.store.write_text_atomic`: temporary file, fsync,
rename): a reader sees the old file or the whole new one, never half of one. Command file names start with the posting time in
nanoseconds, so the loop takes them in the order they were posted.

The loop's side: :func:`create_session` once, :func:`write_status` per bar, and between bars
:func:`take_commands`, act on each, :func:`complete_command`, and put the returned :class:`CommandAck` in
``status.last_command``. The operator's side: :func:`post_command`, then :func:`wait_for_ack`.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from warehouse.errors import ConfigError, QEError
from warehouse.store import fsync_dir, write_text_atomic

__all__ = ["LIVE_DIR", "State", "SessionKind", "CommandKind", "FINAL_STATES", "SessionInfo", "ConnectionView",
           "LastBar", "PositionView", "WorkingOrderView", "RiskView", "CommandAck", "LiveStatus", "Command",
           "session_dir", "create_session", "find_session", "read_session", "write_status",
           "read_status", "pid_alive", "stale_reason", "post_command", "take_commands", "complete_command",
           "command_state", "wait_for_ack", "withdraw_command"]

#: the live sessions' directory under the warehouse root
LIVE_DIR = "live"
_CURRENT = "current"
_SESSION = "session.json"
_STATUS = "status.json"
_COMMANDS = "commands"
_DONE = "done"

State = Literal["starting", "warming_up", "running", "halted", "stopped", "failed"]
SessionKind = Literal["paper", "live"]
CommandKind = Literal["kill", "flatten", "reset", "rolls"]
#: states in which the loop no longer writes: such a status is final, never stale
FINAL_STATES = frozenset({"stopped", "failed"})
#: a status not rewritten for this many bars (at least :data:`_MIN_STALE_S` seconds) is old
_STALE_BARS = 3
_MIN_STALE_S = 30.0


def _now() -> datetime:
    return datetime.now(timezone.utc)


class _Model(BaseModel):
    # extra="ignore": an operator's `qe` of another version still reads what it knows of a newer status
    model_config = ConfigDict(extra="ignore")


class SessionInfo(_Model):
    """What a session is, written once when it starts (``session.json``).

    Attributes
    ----------
    config : str, optional
        The live configuration file (its ``[ib]`` table), absolute: ``qe live kill`` reads the account,
        gateway and client ids from it to reach IB when the session does not answer.
    contracts : dict of str to str
        Root -> contract the session trades (as in the IB config's strategy binding).
    """

    run_id: str
    kind: SessionKind
    strategy: str
    pid: int
    created_at: datetime
    config: str | None = None
    contracts: dict[str, str] = Field(default_factory=dict)


class ConnectionView(_Model):
    connected: bool = False
    since: datetime | None = None
    detail: str = ""


class LastBar(_Model):
    ts: datetime | None = None
    symbols: list[str] = Field(default_factory=list)


class PositionView(_Model):
    quantity: int
    contract: str | None = None
    avg_price: float | None = None
    mark: float | None = None
    unrealized: float | None = None


class WorkingOrderView(_Model):
    order_id: int | str
    symbol: str
    quantity: int
    type: str
    limit: float | None = None
    stop: float | None = None
    status: str = ""


class RiskView(_Model):
    state: str = "NORMAL"
    reason: str | None = None


class CommandAck(_Model):
    """The loop's answer to one command (``status.last_command``, and the command's file in ``done/``)."""

    id: str
    kind: CommandKind
    result: str
    ok: bool = True
    at: datetime


class LiveStatus(_Model):
    """The session as the loop last wrote it (``status.json``).

    ``positions`` maps a symbol (root) to its position; ``bar_seconds`` (the query's timeframe) tells how
    old a status may get before it counts as stale.
    """

    run_id: str
    kind: SessionKind
    strategy: str
    pid: int
    state: State = "starting"
    started_at: datetime
    updated_at: datetime
    connection: ConnectionView = Field(default_factory=ConnectionView)
    last_bar: LastBar = Field(default_factory=LastBar)
    positions: dict[str, PositionView] = Field(default_factory=dict)
    working_orders: list[WorkingOrderView] = Field(default_factory=list)
    pnl_today: float = 0.0
    equity: float | None = None
    risk: RiskView = Field(default_factory=RiskView)
    last_command: CommandAck | None = None
    message: str = ""
    bar_seconds: int | None = None


class Command(_Model):
    """One operator command. ``id`` is its file's stem (posting time in ns first, so names sort by age)."""

    id: str
    kind: CommandKind
    args: dict[str, str] = Field(default_factory=dict)
    posted_at: datetime
    poster_pid: int
    ack: CommandAck | None = None


# -- files ---------------------------------------------------------------------------------------------
def _read_model(path: Path, model: type[_Model], what: str) -> Any:
    try:
        return model.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise QEError(f"{what} not found: {path}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        raise QEError(f"{path}: not a valid {what} ({'.'.join(map(str, first['loc']))}: {first['msg']})") from None


# -- sessions ------------------------------------------------------------------------------------------
def session_dir(root: Path, run_id: str) -> Path:
    """``<root>/live/<run_id>`` (not created)."""
    if not run_id or "/" in run_id or run_id in (".", "..", _CURRENT):
        raise ConfigError(f"not a usable run id for a live session: {run_id!r}")
    return Path(root) / LIVE_DIR / run_id


def create_session(root: Path, run_id: str, *, kind: SessionKind, strategy: str, config: Path | None = None,
                   contracts: Mapping[str, str] | None = None, pid: int | None = None) -> Path:
    """Create (or, on a restart of the same run, reuse) the session directory and name it in ``live/current``.

    Returns
    -------
    Path
        The session directory. Commands posted while the session was down are kept for the loop.
    """
    directory = session_dir(root, run_id)
    (directory / _COMMANDS / _DONE).mkdir(parents=True, exist_ok=True)
    info = SessionInfo(run_id=run_id, kind=kind, strategy=strategy, pid=os.getpid() if pid is None else pid,
                       created_at=_now(), config=None if config is None else str(Path(config).resolve()),
                       contracts=dict(contracts or {}))
    write_text_atomic(directory / _SESSION, info.model_dump_json(indent=1))
    write_text_atomic(directory.parent / _CURRENT, run_id + "\n")
    return directory


def find_session(root: Path, run_id: str | None = None) -> Path:
    """The directory of session ``run_id``, else of the newest one (``live/current``).

    Raises
    ------
    QEError
        There is no such session in this warehouse.
    """
    if run_id is None:
        current = Path(root) / LIVE_DIR / _CURRENT
        if not current.is_file():
            raise QEError(f"no live session in the warehouse {root} (qe live starts one; another warehouse: "
                          "--warehouse DIR)")
        run_id = current.read_text(encoding="utf-8").strip()
    directory = session_dir(root, run_id)
    if not directory.is_dir():
        raise QEError(f"no live session {run_id!r} in the warehouse {root}")
    return directory


def read_session(directory: Path) -> SessionInfo:
    return _read_model(directory / _SESSION, SessionInfo, "live session file")


# -- status --------------------------------------------------------------------------------------------
def write_status(directory: Path, status: LiveStatus, now: datetime | None = None) -> LiveStatus:
    """Write ``status.json`` atomically with ``updated_at`` = ``now``; returns what was written."""
    stamped = status.model_copy(update={"updated_at": now or _now()})
    write_text_atomic(Path(directory) / _STATUS, stamped.model_dump_json(indent=1))
    return stamped


def read_status(directory: Path) -> LiveStatus:
    """The status the loop last wrote. Raises :class:`QEError` when it has written none yet."""
    return _read_model(Path(directory) / _STATUS, LiveStatus, "live status")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (one owned by another user counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_reason(status: LiveStatus, now: datetime | None = None, max_age_s: float | None = None) -> str | None:
    """Why ``status`` cannot be trusted as the session's present state, or None.

    A final status (stopped, failed) is never stale. Otherwise a status older than ``max_age_s`` (default:
    3 bars of ``bar_seconds``, at least 30 s) is stale when its process is gone (the session died without
    writing a final state) and stuck when the process is still there (the loop stopped writing).
    """
    if status.state in FINAL_STATES:
        return None
    limit = max_age_s if max_age_s is not None else max(_STALE_BARS * (status.bar_seconds or 0), _MIN_STALE_S)
    age = ((now or _now()) - status.updated_at).total_seconds()
    if age <= limit:
        return None
    if not pid_alive(status.pid):
        return f"stale: process {status.pid} is gone and the status was last written {age:.0f} s ago"
    return f"stuck? process {status.pid} is alive but has not written its status for {age:.0f} s"


# -- commands ------------------------------------------------------------------------------------------
def post_command(directory: Path, kind: CommandKind, **args: str) -> str:
    """Queue a command for the loop; returns its id.

    Parameters
    ----------
    kind : {"kill", "flatten", "reset", "rolls"}
    **args
        ``kill``: ``reason`` (default ``operator``) and ``flatten`` (``no``: halt and cancel only, the positions
        were closed at the broker already); ``flatten``: ``symbol`` (required); ``reset``, ``rolls``: none.
    """
    args = {k: str(v) for k, v in args.items()}
    if kind == "kill":
        args.setdefault("reason", "operator")
    elif kind == "flatten" and not args.get("symbol"):
        raise ConfigError("flatten needs the symbol to flatten")
    allowed = {"kill": {"reason", "flatten"}, "flatten": {"symbol"}, "reset": set(), "rolls": set()}.get(kind)
    if allowed is None:
        raise ConfigError(f"unknown live command {kind!r} (kill, flatten, reset, rolls)")
    if set(args) - allowed:
        raise ConfigError(f"{kind} takes {', '.join(sorted(allowed)) or 'no arguments'}, not "
                          f"{', '.join(sorted(set(args) - allowed))}")
    queue = Path(directory) / _COMMANDS
    if not queue.is_dir():
        raise QEError(f"{directory} is not a live session directory (no {_COMMANDS}/)")
    command_id = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
    command = Command(id=command_id, kind=kind, args=args, posted_at=_now(), poster_pid=os.getpid())
    write_text_atomic(queue / f"{command_id}.json", command.model_dump_json())
    return command_id


def take_commands(directory: Path) -> list[Command]:
    """The commands waiting for the loop, oldest first; each is moved to ``commands/done/`` as it is taken.

    A file that does not parse is moved aside as well (``done/<name>.invalid``) so that it cannot block the
    queue; it is not returned.
    """
    queue = Path(directory) / _COMMANDS
    done = queue / _DONE
    taken = []
    for path in sorted(queue.glob("*.json")):
        try:
            command = Command.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            continue  # another reader took it first
        except ValidationError:
            os.replace(path, done / f"{path.name}.invalid")
            continue
        try:
            os.replace(path, done / path.name)
        except FileNotFoundError:
            continue
        taken.append(command)
    if taken:
        fsync_dir(queue)
    return taken


def withdraw_command(directory: Path, command_id: str) -> bool:
    """Take back a command the loop has not taken yet; False when it was taken (or never posted)."""
    try:
        (Path(directory) / _COMMANDS / f"{command_id}.json").unlink()
    except FileNotFoundError:
        return False
    return True


def complete_command(directory: Path, command: Command, result: str, ok: bool = True,
                     now: datetime | None = None) -> CommandAck:
    """Record what the loop did with ``command``; returns the ack to put in ``status.last_command``."""
    ack = CommandAck(id=command.id, kind=command.kind, result=result, ok=ok, at=now or _now())
    path = Path(directory) / _COMMANDS / _DONE / f"{command.id}.json"
    write_text_atomic(path, command.model_copy(update={"ack": ack}).model_dump_json())
    return ack


def command_state(directory: Path, command_id: str) -> tuple[str, CommandAck | None]:
    """``("waiting" | "taken" | "done" | "unknown", ack)`` of one posted command."""
    queue = Path(directory) / _COMMANDS
    if (queue / f"{command_id}.json").is_file():
        return "waiting", None
    finished = queue / _DONE / f"{command_id}.json"
    if finished.is_file():
        try:
            ack = Command.model_validate_json(finished.read_bytes()).ack
        except ValidationError:
            ack = None
        if ack is None:  # a loop may record its answer in the status only
            status_file = Path(directory) / _STATUS
            if status_file.is_file():
                last = read_status(directory).last_command
                ack = last if last is not None and last.id == command_id else None
        return ("done" if ack is not None else "taken"), ack
    return "unknown", None


def wait_for_ack(directory: Path, command_id: str, timeout: float, poll_s: float = 0.05) -> CommandAck | None:
    """Wait up to ``timeout`` seconds for the loop's answer to ``command_id``; None if it did not come."""
    deadline = time.monotonic() + timeout
    while True:
        _, ack = command_state(directory, command_id)
        if ack is not None:
            return ack
        if time.monotonic() >= deadline:
            return None
        time.sleep(poll_s)
