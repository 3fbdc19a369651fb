"""The operator's kill switch straight at IB (engine/adapters/ib/emergency.py), with the real ib_async client.

The session's handler (orders client id) holds a long position and working orders; a person's client holds a
working order and a position in another contract. The emergency kill, from the strategy's control client id,
cancels every working order and flattens the session's contract only, journaling its orders so that the
restarted session reconciles them. Checked against the simulator's own books.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import timedelta

from ib_async import IB, Future, LimitOrder, MarketOrder

from engine.adapters.ib.accounts import IBConfig
from engine.adapters.ib.emergency import emergency_kill
from engine.adapters.ib.gateway_sim import GatewaySim
from engine.adapters.ib.journal import OrderJournal
from engine.core.orders import limit, market, stop
from engine.live.control import LiveStatus, create_session, take_commands, write_status
from tests.conftest import REPO
from tests.ib.conftest import CLOCK, TODAY, run, until

BAR = (5000.25, 5001.00, 4999.50, 5000.75)


def _config(port: int) -> IBConfig:
    return IBConfig.model_validate({
        "client_id_base": 100,
        "accounts": {"paper": {"id": "DU1234567", "kind": "paper", "port": port}},
        "strategies": {"sma": {"account": "paper", "contracts": {"MES": "202603"}, "slot": 5}}})


def _numbered(order, number: int):
    order.order_id = number
    return order


async def _person(sim: GatewaySim) -> IB:
    """A person in TWS: long 1 June MES (not the session's contract) and a working sell limit."""
    manual = IB()
    await manual.connectAsync("127.0.0.1", sim.port, clientId=99, timeout=5)
    [june] = await manual.qualifyContractsAsync(Future("MES", "202606", "CME"))
    bought = manual.placeOrder(june, MarketOrder("BUY", 1))
    await until(lambda: len(sim.book.working()) == 1, what="the person's market order at the gateway")
    sim.push_bar("MESM6", CLOCK + timedelta(minutes=1), *BAR)
    await until(bought.isDone, what="the person's fill")
    manual.placeOrder(june, LimitOrder("SELL", 1, 5100.00, tif="GTC"))
    await until(lambda: len(sim.book.working()) == 1, what="the person's working order")
    return manual


def test_emergency_kill_from_the_control_client_cancels_and_flattens(tmp_path, ib_log) -> None:
    async def body() -> None:
        async with GatewaySim(today=TODAY, clock=CLOCK, commission_per_contract=0.85) as sim:
            config = _config(sim.port)
            journal = OrderJournal(tmp_path)
            manual = await _person(sim)
            session = config.handler("sma", "run1", journal=journal)
            await session.connect()
            try:
                session.submit(_numbered(market("MES", 2), 1), None)
                await until(lambda: any(o.request.order_ref == "run1/sma/1" for o in sim.placed), what="entry")
                sim.push_bar("MESH6", CLOCK + timedelta(minutes=1), *BAR)  # long 2 at 5000.25
                await until(lambda: len(session.records) == 1, what="entry fill")
                session.submit(_numbered(limit("MES", 1, 4990.00), 2), None)
                session.submit(_numbered(stop("MES", -2, 4980.00), 3), None)
                await until(lambda: len(sim.book.working()) == 3, what="working orders")

                # the session is stuck: nothing it does matters; the operator acts from another client id
                report = await emergency_kill(config, "sma", "run1", journal=journal, fill_wait=0.2)
                # nothing of before works any more; only the flattening order, from the control client
                assert [(o.client_id, o.request.order_ref) for o in sim.book.working()] == [
                    (config.client_id("sma", "control"), report.flattened[0].order_ref)]
                sim.push_bar("MESH6", CLOCK + timedelta(minutes=2), *BAR)  # the flattening SELL 2 fills
                await until(lambda: not any(p.quantity for p in sim.book.account_positions()
                                            if p.future.local_symbol == "MESH6"), what="flattening fill")
            finally:
                session.disconnect()
                manual.disconnect()

            control_id = config.client_id("sma", "control")
            assert (report.account, report.client_id) == ("******567", control_id) == ("******567", 305)
            assert sorted((o.order_ref, o.contract, o.quantity, o.client_id) for o in report.cancelled) == [
                ("", "MESM6", -1, 99), ("run1/sma/2", "MESH6", 1, 105), ("run1/sma/3", "MESH6", -2, 105)]
            [flat] = report.flattened
            assert flat.order_ref.startswith("run1/sma/operator-kill-") and flat.order_ref.endswith("-1")
            assert (flat.contract, flat.quantity) == ("MESH6", -2)
            assert report.left_alone == {"MESM6": 1}
            assert any("left alone" in line and "MESM6 +1" in line for line in report.lines())

            # the gateway's books: the flattening order came from the control client; June MES untouched
            sent = next(o for o in sim.placed if o.request.order_ref == flat.order_ref)
            assert (sent.client_id, sent.status) == (control_id, "Filled")
            positions = {p.future.local_symbol: p.quantity for p in sim.book.account_positions()}
            assert positions == {"MESH6": 0, "MESM6": 1}

            # journaled before it was sent: the restarted session sees it as its run's order, done at IB
            assert flat.order_ref in journal.refs("run1", "sma")
            restarted = config.handler("sma", "run1", journal=journal)
            await restarted.connect()
            try:
                assert restarted.reconciliation.done[flat.order_ref] == "Filled"
                assert restarted.reconciliation.missing == []
            finally:
                restarted.disconnect()
    run(body, timeout=30)


def test_qe_live_kill_reaches_ib_when_the_session_does_not_answer(tmp_path, ib_log) -> None:
    """``qe live kill`` in a subprocess: the session (alive, stuck) does not answer; the command kills at IB."""
    warehouse = tmp_path / "w"
    config_file = tmp_path / "live.toml"

    async def body() -> tuple[int, str, str, list]:
        async with GatewaySim(today=TODAY, clock=CLOCK) as sim:
            config_file.write_text(
                f'[ib]\nclient_id_base = 100\n[ib.accounts.paper]\nid = "DU1234567"\nkind = "paper"\nport = {sim.port}\n'
                '[ib.strategies.sma]\naccount = "paper"\ncontracts = { MES = "202603" }\nslot = 5\n')
            directory = create_session(warehouse, "run1", kind="paper", strategy="sma", config=config_file,
                                       contracts={"MES": "202603"})
            write_status(directory, LiveStatus(run_id="run1", kind="paper", strategy="sma", pid=os.getpid(),
                                               state="running", started_at=CLOCK, updated_at=CLOCK))
            session = _config(sim.port).handler("sma", "run1", journal=OrderJournal(warehouse))
            await session.connect()
            try:
                session.submit(_numbered(market("MES", 2), 1), None)
                await until(lambda: len(sim.book.working()) == 1, what="entry")
                sim.push_bar("MESH6", CLOCK + timedelta(minutes=1), *BAR)
                await until(lambda: len(session.records) == 1, what="entry fill")
                session.submit(_numbered(limit("MES", 1, 4990.00), 2), None)
                await until(lambda: len(sim.book.working()) == 1, what="working order")
                # the operator's terminal; this test process is the stuck session (alive, never answering)
                command = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "engine.cli", "--warehouse", str(warehouse), "live", "kill",
                    "--timeout", "0.5", cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                    env={**os.environ, "COLUMNS": "200"})
                out, err = await asyncio.wait_for(command.communicate(), 90)
                working = [(o.client_id, o.request.order_ref, o.total_quantity) for o in sim.book.working()]
            finally:
                session.disconnect()
            return command.returncode, out.decode(), err.decode(), working

    code, out, err, working = run(body, timeout=120)
    assert code == 0, err
    assert "the session did not answer within 0.5 s: killing at IB directly" in out
    assert "cancelled run1/sma/2: MESH6 +1 LMT (client 105)" in out
    assert "flatten run1/sma/operator-kill-" in out and "MESH6 -2 MKT" in out
    assert "account ******567 (client id 305)" in out and "DU1234567" not in out + err
    assert "the session halts (without flattening again) when it takes the queued command" in out
    [(client, ref, quantity)] = working  # the session's limit is gone; only the flattening order works
    assert client == 305 and ref.startswith("run1/sma/operator-kill-") and quantity == 2
    [queued] = take_commands(warehouse / "live" / "run1")
    assert queued.kind == "kill"
