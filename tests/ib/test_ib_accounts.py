"""Several accounts in one IB config: bindings, client ids per role and strategy, and orders that never change
account."""

from __future__ import annotations

import zlib

import pytest

from engine.adapters.ib import handler as handler_module
from engine.adapters.ib.accounts import IBConfig, load_ib_config
from engine.adapters.ib.gateway_sim import GatewaySim
from engine.adapters.ib.gateway_sim.protocol import In
from engine.adapters.ib.orders import to_ib_order
from engine.adapters.ib.safety import SafetyError
from engine.core.orders import limit
from warehouse.errors import ConfigError
from tests.ib.conftest import CLOCK, TODAY, run, until

CONFIG = """
[ib]
client_id_base = 100

[ib.accounts.paper]
id = "DU1111111"
kind = "paper"

[ib.accounts.paper2]
id = "DU2222222"
kind = "paper"

[ib.accounts.live]
id = "U7654321"
kind = "live"
port = 4001

[ib.strategies.sma]
account = "paper"
contracts = { MES = "202603" }

[ib.strategies.breakout]
account = "paper2"
contracts = { MES = "202603" }
slot = 7

[ib.strategies.carry]
account = "live"
contracts = { MES = "202603" }
"""


def _config(tmp_path) -> IBConfig:
    path = tmp_path / "qe.toml"
    path.write_text(CONFIG)
    return load_ib_config(path)


def test_client_ids_per_role_and_strategy_are_distinct_and_stable(tmp_path) -> None:
    config = _config(tmp_path)
    assert zlib.crc32(b"sma") % 100 == 11  # crc32("sma") = 1125141311: slot 11
    assert [config.client_id("sma", role) for role in ("orders", "data", "control")] == [111, 211, 311]
    assert [config.client_id("breakout", role) for role in ("orders", "data", "control")] == [107, 207, 307]
    ids = [config.client_id(s, r) for s in config.strategies for r in ("orders", "data", "control")]
    assert len(set(ids)) == len(ids) and max(ids) < 100 + 1000  # below the 326 fallback ids
    # a restart reads the same config; adding a strategy moves nobody else's ids
    again = load_ib_config(tmp_path / "qe.toml")
    assert [again.client_id(s) for s in config.strategies] == [config.client_id(s) for s in config.strategies]
    grown = tmp_path / "grown.toml"
    grown.write_text(CONFIG + '[ib.strategies.zeta]\naccount = "paper"\ncontracts = { MES = "202603" }\n')
    grown_config = load_ib_config(grown)
    assert [grown_config.client_id(s) for s in config.strategies] == [config.client_id(s) for s in config.strategies]


@pytest.mark.parametrize(("patch", "message"), [
    ({"accounts": {"paper": {"id": "U7654321", "kind": "paper"}}},
     r"accounts\.paper: account \*\*\*\*\*321 is declared paper but its id says live"),
    ({"strategies": {"sma": {"account": "nowhere", "contracts": {"MES": "202603"}}}},
     "strategy 'sma' is bound to account 'nowhere', which the config does not name"),
    ({"strategies": {"a": {"account": "paper", "contracts": {}, "slot": 5},
                     "b": {"account": "paper", "contracts": {}, "slot": 5}}},
     "strategies 'a' and 'b' share client-id slot 5"),
])
def test_bad_configs_stop_with_one_masked_line(patch, message) -> None:
    data = {"accounts": {"paper": {"id": "DU1111111", "kind": "paper"}}} | patch
    with pytest.raises(ConfigError, match=message) as refused:
        load_ib_config({"ib": data})
    assert "U7654321" not in str(refused.value) and "\n" not in str(refused.value)


def test_handlers_take_account_port_and_client_id_from_the_config(tmp_path) -> None:
    config = _config(tmp_path)
    sma = config.handler("sma", "run1")
    assert (sma.requested_account, sma.port, sma.client_id, sma.port_kind) == ("DU1111111", 7497, 111, None)
    carry = config.handler("carry", "run1")
    assert (carry.requested_account, carry.port, carry.live) == ("U7654321", 4001, False)
    with pytest.raises(SafetyError, match="port 4001 is a live trading port"):
        run(carry.connect)  # the live account still needs live=True: refused before any socket
    with pytest.raises(SafetyError, match="account come from the IB config"):
        config.handler("sma", "run1", account="DU2222222")
    with pytest.raises(ConfigError, match="strategy 'nope' is not in the IB config"):
        config.handler("nope", "run1")


def test_two_strategies_on_two_accounts_never_cross(tmp_path, monkeypatch, ib_log) -> None:
    config = _config(tmp_path)

    async def body() -> None:
        async with GatewaySim(["DU1111111", "DU2222222"], today=TODAY, clock=CLOCK) as sim:
            handlers = []
            for name in ("sma", "breakout"):
                binding = config.account(name)
                handler = config.handler(name, "run1")
                handler.port, handler.connection.port = sim.port, sim.port  # the simulator's ephemeral port
                assert binding.gateway_port == 7497
                handlers.append(handler)
            sma, breakout = handlers
            await sma.connect()
            await breakout.connect()
            try:
                for k, handler in enumerate(handlers, start=1):
                    order = limit("MES", 1, 4990.00)
                    order.order_id = k
                    handler.submit(order, None)
                await until(lambda: len(sim.placed) == 2, what="both orders at the gateway")
                # a handler whose IB order would name another account refuses before sending anything
                crossed = limit("MES", 1, 4990.00)
                crossed.order_id = 9

                def elsewhere(order, account, ref, oca_group=None):
                    return to_ib_order(order, "DU2222222", ref, oca_group)

                monkeypatch.setattr(handler_module, "to_ib_order", elsewhere)
                with pytest.raises(SafetyError, match=r"not for this strategy's account \*\*\*\*\*\*111"):
                    sma.submit(crossed, None)
            finally:
                sma.disconnect()
                breakout.disconnect()
            assert [(o.client_id, o.account, o.request.order_ref) for o in sim.placed] == [
                (111, "DU1111111", "run1/sma/1"), (107, "DU2222222", "run1/breakout/2")]
            assert len(sim.requests_of(In.PLACE_ORDER)) == 2
    run(body)
