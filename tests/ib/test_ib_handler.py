"""Step 4: IBExecutionHandler over the real ib_async client against the gateway simulator, and its guards.

Money checks use MES March 2026 (multiplier 5). The simulator charges 0.85 per contract in its commission
reports; the fee table (warehouse/data/fees.csv, MES from 2019-05-06) estimates 0.25 IB + 0.35 exchange +
0.02 regulatory = 0.62 per contract per side, so the two are told apart.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from engine.adapters.ib.gateway_sim import GatewaySim
from engine.adapters.ib.gateway_sim.protocol import In
from engine.adapters.ib.handler import IBExecutionHandler
from engine.adapters.ib.safety import SafetyError, bind_account
from engine.core.orders import OrderStatus, limit, market, stop
from tests.ib.conftest import CLOCK, TODAY, run, until

BAR = (5000.25, 5001.00, 4999.50, 5000.75)


def _handler(sim: GatewaySim, **kwargs) -> IBExecutionHandler:
    options = {"port": sim.port, "client_id": 11} | kwargs
    return IBExecutionHandler("run1", "sma", {"MES": "202603"}, **options)


def _numbered(order, number: int):
    order.order_id = number
    return order


def test_orders_fills_commissions_and_cancel_through_the_handler(ib_log) -> None:
    async def body() -> None:
        async with GatewaySim(today=TODAY, clock=CLOCK, commission_per_contract=0.85) as sim:
            handler = _handler(sim)
            await handler.connect()
            try:
                buy = _numbered(market("MES", 2), 1)
                sell = _numbered(limit("MES", -1, 5001.00), 2)
                expiry = int(datetime(2026, 3, 3, 21, 0, tzinfo=timezone.utc).timestamp()) * 10**9
                protect = _numbered(stop("MES", -1, 4990.00, tif="GTD", expire_ts=expiry), 3)
                for order in (buy, sell, protect):
                    assert handler.submit(order, None) == []  # fills come later, from IB
                await until(lambda: len(sim.placed) == 3, what="orders at the gateway")
                sim.push_bar("MESH6", CLOCK + timedelta(minutes=1), *BAR)
                await until(lambda: len(handler.records) == 2, what="two fills with commission")
                bar_ts = int((CLOCK + timedelta(minutes=1)).timestamp()) * 10**9  # the bar the fills happened in
                fills = handler.on_bar("MES", bar_ts, *BAR, 0, 0, None)
                assert handler.on_bar("MES", bar_ts, *BAR, 0, 0, None) == []  # handed over once
                assert handler.cancel(protect, 0, "flatten") is True
                await until(lambda: protect.is_done, what="cancel confirmed")
            finally:
                handler.disconnect()
            # MKT BUY 2 at the open 5000.25; LMT SELL 1 at 5001.00 (the high reaches it)
            assert [(f.quantity, f.price, f.contract, f.multiplier) for f in fills] == [
                (2, 5000.25, "MESH6", 5.0), (-1, 5001.00, "MESH6", 5.0)]
            assert [f.commission for f in fills] == pytest.approx([1.70, 0.85])  # IB's report: 2 x 0.85, 1 x 0.85
            assert [r.commission_estimate for r in handler.records] == pytest.approx([1.24, 0.62])  # 2 x 0.62, 1 x 0.62
            assert [r.order_ref for r in handler.records] == ["run1/sma/1", "run1/sma/2"]
            assert fills[0].trading_date == (TODAY - datetime(1970, 1, 1).date()).days
            assert (buy.status, buy.filled, buy.avg_fill_price) == (OrderStatus.FILLED, 2, 5000.25)
            assert (sell.status, sell.filled, sell.avg_fill_price) == (OrderStatus.FILLED, -1, 5001.00)
            assert protect.status is OrderStatus.CANCELLED and handler.working_orders() == []
            # the gateway saw exactly these orders, on the bound account, with deterministic refs
            assert [(o.request.order_ref, o.account) for o in sim.placed] == [
                ("run1/sma/1", "DU1234567"), ("run1/sma/2", "DU1234567"), ("run1/sma/3", "DU1234567")]
            assert sim.placed[2].request.good_till_date == "20260303-21:00:00"
            assert (sim.placed[2].request.order_type, sim.placed[2].request.aux_price) == ("STP", 4990.00)
            [position] = sim.book.account_positions()
            assert position.quantity == 1  # +2 - 1
    run(body)


def test_the_same_order_is_never_sent_twice(ib_log) -> None:
    async def body() -> None:
        async with GatewaySim(today=TODAY, clock=CLOCK) as sim:
            handler = _handler(sim)
            await handler.connect()
            try:
                order = _numbered(limit("MES", 1, 4990.00), 5)
                handler.submit(order, None)
                with pytest.raises(SafetyError, match="run1/sma/5 was already sent"):
                    handler.submit(order, None)
                await until(lambda: len(sim.placed) == 1, what="the order at the gateway")
            finally:
                handler.disconnect()
            assert len(sim.requests_of(In.PLACE_ORDER)) == 1
    run(body)


@pytest.mark.parametrize("port", [7496, 4001])
def test_live_port_refused_before_connecting(port: int) -> None:
    handler = IBExecutionHandler("run1", "sma", {"MES": "202603"}, port=port)
    with pytest.raises(SafetyError, match=f"port {port} is a live trading port; pass live=True"):
        run(handler.connect)
    assert not handler.ib.isConnected()
    with pytest.raises(SafetyError, match="call connect"):
        handler.submit(_numbered(market("MES", 1), 1), None)


def test_live_account_refused_without_live_flag_and_masked(ib_log) -> None:
    async def body() -> SafetyError:
        async with GatewaySim(["U7654321"], today=TODAY, clock=CLOCK) as sim:
            handler = _handler(sim)
            with pytest.raises(SafetyError) as refused:
                await handler.connect()
            with pytest.raises(SafetyError, match="call connect"):
                handler.submit(_numbered(market("MES", 1), 1), None)
            assert sim.requests_of(In.PLACE_ORDER) == [] and sim.placed == []
            return refused.value
    message = str(run(body))
    assert "*****321 is a live account" in message and "U7654321" not in message


@pytest.mark.parametrize(("accounts", "kind", "expected"), [
    (["U7654321"], "paper", "port .* is a paper port but account \\*\\*\\*\\*\\*321 is a live account"),
    (["DU1234567"], "live", "port .* is a live port but account \\*\\*\\*\\*\\*\\*567 is a paper account"),
])
def test_port_kind_and_account_kind_mismatch_stops(accounts, kind, expected, ib_log) -> None:
    async def body() -> None:
        async with GatewaySim(accounts, today=TODAY, clock=CLOCK) as sim:
            handler = _handler(sim, live=True, port_kind=kind)
            with pytest.raises(SafetyError, match=expected):
                await handler.connect()
            assert sim.requests_of(In.PLACE_ORDER) == []
    run(body)


def test_default_ports_decide_the_kind_when_not_declared() -> None:
    # pure rule check (no gateway can listen on 4002/7496 in a test): paper port 4002 + live account
    with pytest.raises(SafetyError, match="4002 is a paper port"):
        bind_account(["U7654321"], None, True, 4002, "paper")
    assert bind_account(["U7654321"], None, True, 4001, "live") == "U7654321"  # live, explicitly
    assert bind_account(["DU1234567"], None, False, 7497, "paper") == "DU1234567"


def test_each_strategy_is_bound_to_one_account(ib_log) -> None:
    async def body() -> None:
        async with GatewaySim(["DU1111111", "DU2222222"], today=TODAY, clock=CLOCK) as sim:
            unnamed = _handler(sim)
            with pytest.raises(SafetyError, match="manages 2 accounts .*; name the one"):
                await unnamed.connect()
            stranger = _handler(sim, account="DU3333333", client_id=12)
            with pytest.raises(SafetyError, match=r"account \*\*\*\*\*\*333 is not managed"):
                await stranger.connect()
            second = _handler(sim, account="DU2222222", client_id=13)
            await second.connect()
            try:
                second.submit(_numbered(limit("MES", 1, 4990.00), 1), None)
                await until(lambda: len(sim.placed) == 1, what="the order at the gateway")
            finally:
                second.disconnect()
            assert [o.account for o in sim.placed] == ["DU2222222"]
    run(body)


def test_unknown_contract_stops_at_connect(ib_log) -> None:
    async def body() -> None:
        async with GatewaySim(today=TODAY, clock=CLOCK) as sim:
            handler = IBExecutionHandler("run1", "sma", {"MES": "202512"}, port=sim.port)  # expired
            with pytest.raises(SafetyError, match="no unique MES future for '202512' on CME .*error 200"):
                await handler.connect()
            assert not handler.ib.isConnected()
    run(body)


def test_no_log_line_shows_a_whole_account_id(ib_log) -> None:
    """ib_async logs whole Trade/Position objects; the handler's filter masks the accounts in them."""
    async def body() -> None:
        async with GatewaySim(["DU1234567"], today=TODAY, clock=CLOCK) as sim:
            handler = _handler(sim)
            await handler.connect()
            try:
                handler.submit(_numbered(market("MES", 1), 1), None)
                await until(lambda: len(sim.placed) == 1, what="order")
                sim.push_bar("MESH6", CLOCK + timedelta(minutes=1), *BAR)
                await until(lambda: len(handler.records) == 1, what="fill")
            finally:
                handler.disconnect()
    run(body)
    lines = [r.getMessage() for r in ib_log.records]
    assert any("******567" in line for line in lines)  # accounts were logged, masked
    assert not any("DU1234567" in line for line in lines)


def test_broker_factory_builds_ib_and_refuses_schwab_in_one_line() -> None:
    from engine.adapters import live_execution_handler
    from warehouse.errors import ConfigError

    handler = live_execution_handler("IB", run_id="run1", strategy="sma", contracts={"MES": "202603"})
    assert isinstance(handler, IBExecutionHandler) and handler.port == 7497  # TWS paper by default
    with pytest.raises(ConfigError, match="^Schwab is not supported: quant-engine trades through Interactive Brokers"):
        live_execution_handler("schwab")
