"""Several IB accounts in one config: each strategy bound to one account name, client ids per role and strategy.

A config (TOML, the ``[ib]`` table, or JSON)::

    [ib]
    client_id_base = 100

    [ib.accounts.paper]
    id = "DU1234567"
    kind = "paper"            # its TWS / IB Gateway: 127.0.0.1:7497 unless host/port say otherwise

    [ib.accounts.live]
    id = "U7654321"
    kind = "live"             # 7496 by default; trading it needs live=True (--live) as well
    port = 4001

    [ib.strategies.sma]
    account = "paper"
    contracts = { MES = "202603" }

    [ib.strategies.breakout]
    account = "live"
    contracts = { MNQ = "202603" }
    slot = 7                  # optional: pins its client ids (see below)

Rules, checked when the config is read (one line, account ids masked):

* An account's ``kind`` must match its id (paper ids start with ``DU``); the handler checks the gateway's
  port and the id again when it connects.
* A strategy names one account of the config; its handler can only ever trade that account's id.
* Client ids: ``client_id_base + ROLE_OFFSETS[role] + slot``, with ``slot`` in ``0 .. SLOTS-1`` given in the
  config or, by default, ``crc32(strategy name) % SLOTS``. They depend on nothing but the base, the role
  and the strategy's own name (or slot), so they are the same after every restart and do not move when
  another strategy is added; IB lets only the client that placed an order change it, so this matters.
  Two strategies with the same slot are refused (give one an explicit ``slot``). Every id stays below
  ``client_id_base + TEMPORARY_ID_OFFSET``, where the 326 fallback ids begin.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from engine.adapters.ib.connection import TEMPORARY_ID_OFFSET
from engine.adapters.ib.safety import LIVE_PORTS, PAPER_PORTS, SafetyError, is_paper_account, mask
from engine.configfile import one_line, read_table
from warehouse.errors import ConfigError

__all__ = ["Role", "ROLE_OFFSETS", "SLOTS", "AccountConfig", "StrategyBinding", "IBConfig", "load_ib_config"]

Role = Literal["orders", "data", "control"]
#: client id offset of each role: ``orders`` (the strategy's execution handler), ``data`` (its bar
#: subscriptions), ``control`` (monitoring, the kill switch from another process)
ROLE_OFFSETS: dict[str, int] = {"orders": 0, "data": 100, "control": 200}
#: strategy slots per role
SLOTS = 100
assert max(ROLE_OFFSETS.values()) + SLOTS <= TEMPORARY_ID_OFFSET  # the 326 fallback ids never collide

_DEFAULT_PORT = {"paper": 7497, "live": 7496}  # TWS; IB Gateway is 4002 / 4001


class AccountConfig(BaseModel):
    """One IB account and where its TWS / IB Gateway listens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    kind: Literal["paper", "live"]
    host: str = "127.0.0.1"
    port: int | None = None

    @model_validator(mode="after")
    def _kind_matches_id(self) -> AccountConfig:
        if is_paper_account(self.id) != (self.kind == "paper"):
            raise ValueError(f"account {mask(self.id)} is declared {self.kind} but its id says "
                             f"{'paper' if is_paper_account(self.id) else 'live'} (paper ids start with DU)")
        return self

    @property
    def gateway_port(self) -> int:
        """The port to connect to: the configured one, else TWS's default for the account's kind."""
        return self.port if self.port is not None else _DEFAULT_PORT[self.kind]

    @property
    def port_kind(self) -> Literal["paper", "live"] | None:
        """The kind declared for a non-default port (a default port speaks for itself, so a live account on
        a paper port is still caught)."""
        return None if self.gateway_port in PAPER_PORTS | LIVE_PORTS else self.kind


class StrategyBinding(BaseModel):
    """A strategy's account (by name), its contracts (root -> contract) and, optionally, its client-id slot."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    account: str
    contracts: dict[str, str]
    slot: int | None = None


class IBConfig(BaseModel):
    """Accounts, strategies and client ids of one installation (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    client_id_base: int = 100
    accounts: dict[str, AccountConfig]
    strategies: dict[str, StrategyBinding] = {}

    @model_validator(mode="after")
    def _bindings(self) -> IBConfig:
        if self.client_id_base < 1:
            raise ValueError("client_id_base must be at least 1 (client id 0 is TWS's own manual-order client)")
        ids = [a.id for a in self.accounts.values()]
        if len(set(ids)) != len(ids):
            raise ValueError("two account names share one account id")
        slots: dict[int, str] = {}
        for name, binding in self.strategies.items():
            if binding.account not in self.accounts:
                raise ValueError(f"strategy {name!r} is bound to account {binding.account!r}, which the config "
                                 f"does not name ({', '.join(self.accounts)})")
            if binding.slot is not None and not 0 <= binding.slot < SLOTS:
                raise ValueError(f"strategy {name!r}: slot must be in 0..{SLOTS - 1}")
            slot = self.slot(name)
            if slot in slots:
                raise ValueError(f"strategies {slots[slot]!r} and {name!r} share client-id slot {slot}; give one "
                                 "an explicit slot")
            slots[slot] = name
        return self

    def slot(self, strategy: str) -> int:
        """The strategy's slot: its configured one, else ``crc32(name) % SLOTS`` (stable across restarts)."""
        binding = self.strategies.get(strategy)
        if binding is not None and binding.slot is not None:
            return binding.slot
        return zlib.crc32(strategy.encode()) % SLOTS

    def client_id(self, strategy: str, role: Role = "orders") -> int:
        """``client_id_base + ROLE_OFFSETS[role] + slot(strategy)``."""
        self.binding(strategy)
        if role not in ROLE_OFFSETS:
            raise ConfigError(f"unknown client role {role!r} ({', '.join(ROLE_OFFSETS)})")
        return self.client_id_base + ROLE_OFFSETS[role] + self.slot(strategy)

    def binding(self, strategy: str) -> StrategyBinding:
        binding = self.strategies.get(strategy)
        if binding is None:
            raise ConfigError(f"strategy {strategy!r} is not in the IB config ({', '.join(self.strategies) or 'none'})")
        return binding

    def account(self, strategy: str) -> AccountConfig:
        """The one account ``strategy`` may trade."""
        return self.accounts[self.binding(strategy).account]

    def handler(self, strategy: str, run_id: str, *, live: bool = False, role: Role = "orders",
                **options: Any):  # noqa: ANN201
        """The strategy's :class:`~engine.adapters.ib.handler.IBExecutionHandler`, bound to its account.

        ``live`` is still the explicit flag a live account or port needs; ``role`` picks the client id
        (``control`` for the operator's kill switch from another process); ``options`` go to the handler
        (``journal``, ``reconnect``, ``instruments``). Account, host, port and client id come from the config
        and cannot be overridden here.
        """
        from engine.adapters.ib.handler import IBExecutionHandler

        fixed = {"account", "host", "port", "client_id", "port_kind", "contracts"} & set(options)
        if fixed:
            raise SafetyError(f"{', '.join(sorted(fixed))} come from the IB config; they cannot be overridden")
        account = self.account(strategy)
        return IBExecutionHandler(run_id, strategy, self.binding(strategy).contracts, host=account.host,
                                  port=account.gateway_port, client_id=self.client_id(strategy, role), account=account.id,
                                  live=live, port_kind=account.port_kind, **options)


def load_ib_config(source: Path | str | dict[str, Any]) -> IBConfig:
    """An :class:`IBConfig` from a TOML/JSON file (its ``[ib]`` table, or the whole file) or a dict.

    Raises
    ------
    ConfigError
        One line naming the first problem (account ids masked).
    """
    if isinstance(source, dict):
        data, where = source.get("ib", source), "IB config"
    else:
        data, where = read_table(Path(source), "ib", "IB config file"), str(source)
    try:
        return IBConfig.model_validate(data)
    except ValidationError as exc:
        # the validators' own messages mask account ids; pydantic's input echo is dropped with the cause
        raise one_line(where, exc) from None
