"""A live session's status as rich renderables: the running session's terminal panel and ``qe live status``.

One rendering for both, so that what the operator sees in the session's terminal and in another one is the
same facts in the same form. Every value is printed literally (rich ``Text``, never markup): a symbol, a
message or an error may hold brackets.
"""

from __future__ import annotations

from datetime import datetime

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from engine.live.control import LiveStatus

__all__ = ["render_status", "status_panel"]

_STATE_STYLE = {"running": "green", "warming_up": "yellow", "starting": "yellow", "halted": "bold red",
                "stopped": "dim", "failed": "bold red"}


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def _price(value: float | None) -> str:
    return "-" if value is None else f"{value:,.10g}"


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def _facts(status: LiveStatus, stale: str | None) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    state = Text(status.state, style=_STATE_STYLE.get(status.state, ""))
    if stale:
        state.append(f"  ({stale})", style="bold red")
    link = status.connection
    connection = Text("connected" if link.connected else "disconnected", style="" if link.connected else "red")
    if link.since is not None:
        connection.append(f" since {_when(link.since)}")
    if link.detail:
        connection.append(f" ({link.detail})")
    risk = Text(status.risk.state, style="" if status.risk.state == "NORMAL" else "bold red")
    if status.risk.reason:
        risk.append(f": {status.risk.reason}")
    bar = status.last_bar
    rows = [
        ("Run", Text(f"{status.run_id} ({status.kind}, {status.strategy}, pid {status.pid})")),
        ("State", state),
        ("Connection", connection),
        ("Last bar", Text(f"{_when(bar.ts)} {', '.join(bar.symbols)}".strip())),
        ("P&L today", Text(_money(status.pnl_today), style="red" if status.pnl_today < 0 else "")),
        ("Equity", Text(_money(status.equity))),
        ("Risk", risk),
    ]
    if status.last_command is not None:
        ack = status.last_command
        rows.append(("Last command", Text(f"{ack.kind} at {_when(ack.at)}: {ack.result}",
                                          style="" if ack.ok else "red")))
    if status.message:
        rows.append(("Message", Text(status.message)))
    rows.append(("Updated", Text(_when(status.updated_at))))
    for name, value in rows:
        grid.add_row(Text(name), value)
    return grid


def _positions(status: LiveStatus) -> Table:
    table = Table(title=Text("Positions"), header_style="bold", title_justify="left")
    for name in ("symbol", "contract", "quantity", "avg price", "mark", "unrealized"):
        table.add_column(Text(name), justify="left" if name in ("symbol", "contract") else "right")
    for symbol, p in sorted(status.positions.items()):
        table.add_row(Text(symbol), Text(p.contract or "-"), Text(f"{p.quantity:+d}"), Text(_price(p.avg_price)),
                      Text(_price(p.mark)), Text(_money(p.unrealized)))
    return table


def _orders(status: LiveStatus) -> Table:
    table = Table(title=Text("Working orders"), header_style="bold", title_justify="left")
    for name in ("id", "symbol", "quantity", "type", "limit", "stop", "status"):
        table.add_column(Text(name), justify="right" if name in ("quantity", "limit", "stop") else "left")
    for o in status.working_orders:
        table.add_row(Text(str(o.order_id)), Text(o.symbol), Text(f"{o.quantity:+d}"), Text(o.type),
                      Text(_price(o.limit)), Text(_price(o.stop)), Text(o.status))
    return table


def render_status(status: LiveStatus, stale: str | None = None) -> Group:
    """The facts, then the positions and the working orders as tables (a line saying there are none instead
    of an empty table).

    Parameters
    ----------
    status : LiveStatus
    stale : str, optional
        :func:`engine.live.control.stale_reason`'s verdict, shown beside the state.
    """
    return Group(_facts(status, stale), Text(""),
                 _positions(status) if status.positions else Text("No positions."), Text(""),
                 _orders(status) if status.working_orders else Text("No working orders."))


def status_panel(status: LiveStatus) -> Panel:
    """:func:`render_status` framed, for the session's ``rich.live.Live`` display (refreshed per bar)."""
    return Panel(render_status(status), title=Text(f"qe live {status.run_id}"), title_align="left")
