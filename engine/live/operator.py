"""The running session's side of the operator controls: its status after every bar, commands between bars.

``qe live status | kill | flatten | reset | rolls`` (:mod:`engine.cli.live`) read the status file and post commands
into the session's directory (:mod:`engine.live.control`); :class:`Operator` writes the one and answers the
other, from the loop's thread, between bars (never while the kernel is inside a bar).
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from engine.live.control import (
    CommandAck,
    ConnectionView,
    LastBar,
    LiveStatus,
    PositionView,
    RiskView,
    WorkingOrderView,
    complete_command,
    take_commands,
    write_status,
)
from engine.risk import RiskState

if TYPE_CHECKING:
    from engine.live.session import LiveSession

__all__ = ["Operator"]


class Operator:
    """Status and commands of one session.

    Parameters
    ----------
    directory : Path
        The session's directory (:func:`engine.live.control.create_session`).
    session : LiveSession
    show : callable, optional
        Called with every status written (the terminal panel's refresh).
    """

    def __init__(self, directory: Path, session: LiveSession, show: Callable[[LiveStatus], None] | None = None) -> None:
        self.directory = directory
        self.session = session
        self.show = show
        self.last_command: CommandAck | None = None
        self.started_at = datetime.now(timezone.utc)

    def status(self, state: str = "running", message: str = "") -> LiveStatus:
        """The session's facts now: positions, working orders, P&L today, risk state, last bar, connection."""
        session = self.session
        kernel = session.kernel
        portfolio = kernel.portfolio
        positions = {
            symbol: PositionView(quantity=pos.quantity, contract=pos.contract, avg_price=pos.avg_price, mark=pos.mark,
                                 unrealized=pos.unrealized)
            for symbol, pos in portfolio.positions.items()
        }
        working = [WorkingOrderView(order_id=o.order_id, symbol=o.symbol, quantity=o.quantity - o.filled,
                                    type=o.order_type.value, limit=o.limit_price, stop=o.stop_price,
                                    status=o.status.value) for o in kernel.handler.working_orders()]
        last = session.decided[-1] if session.decided else None
        connected = getattr(getattr(session.handler, "ib", None), "isConnected", lambda: True)()
        halt = getattr(session.handler, "halt_reason", None)
        return LiveStatus(
            run_id=session.run_id, kind=session.kind, strategy=session.strategy_label, pid=os.getpid(), state=state,
            started_at=self.started_at, updated_at=datetime.now(timezone.utc),
            connection=ConnectionView(connected=connected, detail=halt or ""),
            last_bar=LastBar(ts=last, symbols=sorted(session.last_symbols)),
            positions=positions, working_orders=working,
            pnl_today=portfolio.equity - kernel.risk.day_start if kernel.risk.day is not None else 0.0,
            equity=portfolio.equity, risk=RiskView(state=kernel.risk.state.value, reason=kernel.risk.reason or None),
            last_command=self.last_command, message=message or session.checkpoint_error or "",
            bar_seconds=kernel.bar_ns // 1_000_000_000,
        )

    def publish(self, state: str = "running", message: str = "") -> LiveStatus:
        """Write the status file (atomically) and refresh the panel."""
        status = write_status(self.directory, self.status(state, message))
        if self.show is not None:
            self.show(status)
        return status

    def handle_commands(self) -> int:
        """Carry out the commands posted since the last bar, oldest first; returns how many."""
        commands = take_commands(self.directory)
        for command in commands:
            ok, result = self._carry_out(command.kind, command.args)
            self.last_command = complete_command(self.directory, command, result, ok)
        if commands:
            self.publish("halted" if self.session.kernel.risk.state is RiskState.HALTED else "running")
        return len(commands)

    def _carry_out(self, kind: str, args: dict[str, str]) -> tuple[bool, str]:
        kernel = self.session.kernel
        handler = self.session.handler
        if kind == "flatten" and not self.session.decided:
            return False, "no bar decided yet: nothing to flatten"
        if kind == "kill":
            reason = args.get("reason") or "operator"
            if kernel.risk.state is RiskState.HALTED and not kernel.portfolio.positions and not handler.working:
                return True, "already halted and flat"
            closed_at_broker = args.get("flatten") == "no"  # the operator's kill closed them at IB already
            kernel.kill_switch(reason, flatten=not closed_at_broker)
            if closed_at_broker:
                return True, "halted; working orders cancelled; positions were closed at the broker"
            return True, f"halted; working orders cancelled; {len(kernel.portfolio.positions)} position(s) sent to flat"
        if kind == "flatten":
            symbol = args.get("symbol", "")
            if symbol not in self.session.roots:
                return False, f"{symbol or '(none)'} is not traded by this session ({', '.join(self.session.roots)})"
            order = kernel.flatten_symbol(symbol)
            return True, f"{symbol}: working orders cancelled" + (f"; {order.quantity:+d} sent" if order else "; flat")
        if kind == "reset":
            kernel.reset_kill_switch()
            reset = getattr(handler, "reset", None)
            if reset is not None:
                reset()
            return True, "kill switch cleared: new orders are accepted"
        if kind == "rolls":
            maintenance = self.session.maintenance
            if maintenance is None:
                return False, "roll maintenance is off in this session ([live] roll_maintenance = false)"
            maintenance.requested = True
            return True, ("roll maintenance runs between the next bars (rebuild the roll table, stream the next "
                          "fronts, reload rolled features); its changes go to the event log")
        return False, f"unknown command {kind!r}"
