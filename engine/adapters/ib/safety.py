"""Paper/live guards that run before the first order, and account masking.

Rules (``shared/DESIGN.md``, "Live safety"):

* Paper is the default. A live port (TWS 7496, IB Gateway 4001) or a non-paper account (paper ids start
  with ``DU``) needs an explicit ``live=True``.
* When both the port and the account say what they are, they must agree: a paper port (7497, 4002) with a
  live account, or a live port with a paper account, stops with one line. Ports can be changed in TWS, so a
  user on another port may declare its kind (``port_kind``); an undeclared unknown port is judged by the
  account alone.
* Every strategy trades one account: the one named, or the only one the gateway manages. It must be one
  the gateway manages.
* Account ids appear in messages only masked to their last 3 characters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from warehouse.errors import QEError

__all__ = ["SafetyError", "PAPER_PORTS", "LIVE_PORTS", "PortKind", "mask", "port_kind_of", "check_port",
           "bind_account"]

PAPER_PORTS = frozenset({7497, 4002})
LIVE_PORTS = frozenset({7496, 4001})
PortKind = Literal["paper", "live"]


class SafetyError(QEError):
    """Trading refused before any order was sent (one line, account ids masked)."""


def mask(account: str) -> str:
    """All but the last 3 characters hidden: ``DU1234567`` -> ``******567``."""
    return "*" * max(len(account) - 3, 0) + account[-3:]


def is_paper_account(account: str) -> bool:
    return account.startswith("DU")


def port_kind_of(port: int, declared: PortKind | None = None) -> PortKind | None:
    """What a port is: the declared kind, else the IB default it matches, else None (unknown)."""
    if declared is not None:
        if declared not in ("paper", "live"):
            raise SafetyError(f"port_kind must be 'paper' or 'live', not {declared!r}")
        return declared
    if port in PAPER_PORTS:
        return "paper"
    if port in LIVE_PORTS:
        return "live"
    return None


def check_port(port: int, live: bool, declared: PortKind | None = None) -> PortKind | None:
    """Refuse a live port without ``live=True`` (checked before connecting). Returns the port kind."""
    kind = port_kind_of(port, declared)
    if kind == "live" and not live:
        raise SafetyError(f"refusing to connect: port {port} is a live trading port; pass live=True (--live) "
                          "to trade live, or use a paper port (7497 TWS, 4002 IB Gateway)")
    return kind


def bind_account(managed: Sequence[str], wanted: str | None, live: bool, port: int,
                 kind: PortKind | None) -> str:
    """The one account this strategy may trade, after every guard; raises :class:`SafetyError` otherwise.

    Parameters
    ----------
    managed : sequence of str
        ``managedAccounts`` as the gateway reported them.
    wanted : str or None
        The account named in the config; None means "the only one the gateway manages".
    live : bool
        The explicit live flag.
    port, kind : int, {"paper", "live"} or None
        The port connected to and its kind (see :func:`port_kind_of`).
    """
    if wanted is None:
        if len(managed) != 1:
            shown = ", ".join(mask(a) for a in managed) or "none"
            raise SafetyError(f"the gateway manages {len(managed)} accounts ({shown}); name the one this strategy "
                              "trades")
        wanted = managed[0]
    elif wanted not in managed:
        raise SafetyError(f"account {mask(wanted)} is not managed by the gateway on port {port} "
                          f"(it manages {', '.join(mask(a) for a in managed) or 'none'})")
    paper = is_paper_account(wanted)
    if kind == "paper" and not paper:
        raise SafetyError(f"port {port} is a paper port but account {mask(wanted)} is a live account: refusing "
                          "(port and account disagree)")
    if kind == "live" and paper:
        raise SafetyError(f"port {port} is a live port but account {mask(wanted)} is a paper account: refusing "
                          "(port and account disagree)")
    if not paper and not live:
        raise SafetyError(f"account {mask(wanted)} is a live account (paper ids start with DU); pass live=True "
                          "(--live) to trade it")
    return wanted
