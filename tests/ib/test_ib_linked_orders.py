"""Brackets and OCO groups at IB: the handler's parent/child and OCA mapping, and the simulator honouring them.

MES March 2026 (MESH6, multiplier 5, tick 0.25); the simulator charges 0.85 per contract. Intrabar path
O -> H -> L -> C (the backtest broker's, which the simulator reuses), no slippage.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from datetime import timedelta

import pytest
from ib_async import IB, Future, LimitOrder, MarketOrder, StopOrder

from engine.adapters.ib.gateway_sim import GatewaySim
from engine.adapters.ib.gateway_sim.protocol import In
from engine.adapters.ib.handler import IBExecutionHandler
from engine.adapters.ib.journal import OrderJournal
from engine.adapters.ib.safety import SafetyError
from engine.core.orders import OCA_TYPE, OrderStatus, bracket, market, oco, stop
from engine.core.orders import limit as limit_order
from tests.ib.conftest import CLOCK, TODAY, run, until

MINUTE = timedelta(minutes=1)


def _numbered(orders, first: int):
    """Number orders as the engine does (a bracket's exits right after their entry)."""
    for k, order in enumerate(orders):
        order.order_id = first + k
    return orders


@asynccontextmanager
async def _connected(sim: GatewaySim, client_id: int = 11, journal: OrderJournal | None = None):  # noqa: ANN202
    """The strategy's handler (run1/sma, MES March 2026) connected to ``sim``; disconnected on the way out."""
    handler = IBExecutionHandler("run1", "sma", {"MES": "202603"}, port=sim.port, client_id=client_id,
                                 journal=journal)
    await handler.connect()
    try:
        yield handler
    finally:
        handler.disconnect()


def _books_agree(handler: IBExecutionHandler, sim: GatewaySim) -> None:
    """Every simulator execution is booked once by the handler, same size, price and commission."""
    ours = sorted((r.exec_id, r.fill.quantity, r.fill.price, r.fill.commission) for r in handler.records)
    theirs = sorted((e.exec_id, e.shares if e.side == "BOT" else -e.shares, e.price, e.commission)
                    for e in sim.book.executions)
    assert ours == theirs


def test_bracket_take_profit_first_cancels_the_stop(tmp_path, ib_log) -> None:
    journal = OrderJournal(tmp_path)

    async def body() -> None:
        async with GatewaySim(today=TODAY, clock=CLOCK, commission_per_contract=0.85) as sim:
            async with _connected(sim, client_id=11, journal=journal) as handler:
                entry, take, protect = _numbered(bracket("MES", 1, take_profit=5010.00, stop_loss=4990.00), 1)
                handler.submit(entry, None)
                await until(lambda: len(sim.placed) == 3, what="the bracket at the gateway")
                requests = sim.requests_of(In.PLACE_ORDER)
                # bar 1: O 5000.25 H 5001 L 4999.5 C 5000.75 -> the MKT entry buys at the open 5000.25; the exits
                # work from there on the rest of the path, which reaches neither 5010 nor 4990
                sim.push_bar("MESH6", CLOCK + MINUTE, 5000.25, 5001.00, 4999.50, 5000.75)
                await until(lambda: len(handler.records) == 1, what="entry fill")
                assert [o.status for o in sim.placed] == ["Filled", "Submitted", "PreSubmitted"]
                # bar 2: O 5005 H 5011 L 5004 C 5009 -> the take-profit (sell limit 5010) fills at 5010; the stop
                # at 4990 is never reached and is cancelled as its OCA sibling filled
                sim.push_bar("MESH6", CLOCK + 2 * MINUTE, 5005.00, 5011.00, 5004.00, 5009.00)
                await until(lambda: len(handler.records) == 2 and protect.is_done, what="exit fill, stop cancelled")
        parent_id = int(requests[0][1])
        # transmit 0, 0, 1; both children name the entry; the exits are one OCA group of type 2
        assert [(r[27], int(r[28] or 0)) for r in requests] == [("0", 0), ("0", parent_id), ("1", parent_id)]
        assert [(o.request.oca_group, o.request.oca_type) for o in sim.placed[1:]] == [
            ("run1/sma/bracket:1", OCA_TYPE)] * 2
        assert [o.request.order_ref for o in sim.placed] == ["run1/sma/1", "run1/sma/2", "run1/sma/3"]
        assert [o.status for o in sim.placed] == ["Filled", "Filled", "Cancelled"]
        assert [(o.status, o.filled, o.avg_fill_price) for o in (entry, take)] == [
            (OrderStatus.FILLED, 1, 5000.25), (OrderStatus.FILLED, -1, 5010.00)]
        assert protect.status is OrderStatus.CANCELLED and protect.filled == 0
        assert [(f.quantity, f.price, f.commission) for f in handler.drain_fills()] == [
            (1, 5000.25, 0.85), (-1, 5010.00, 0.85)]
        _books_agree(handler, sim)
        [position] = sim.book.account_positions()
        assert position.quantity == 0  # +1 - 1; (5010 - 5000.25) x 5 = 48.75 made
        # the three legs were journaled as one batch, linked as the engine links them
        assert len(list(journal.directory.glob("*.parquet"))) == 1
        rows = journal.read("run1", "sma").select(["order_ref", "quantity", "parent_id", "oca_group"]).to_pylist()
        assert [tuple(r.values()) for r in rows] == [
            ("run1/sma/1", 1, None, None), ("run1/sma/2", -1, 1, "bracket:1"), ("run1/sma/3", -1, 1, "bracket:1")]
    run(body)


def test_bracket_exits_are_sized_to_a_partial_entry_and_the_stop_fills(ib_log) -> None:
    async def body() -> None:
        # at most floor(0.5 x 2) = 1 contract per bar: the IOC entry for 2 fills 1, its remainder is cancelled
        async with GatewaySim(today=TODAY, clock=CLOCK, participation=0.5, commission_per_contract=0.85) as sim:
            async with _connected(sim, client_id=11) as handler:
                entry, take, protect = _numbered(
                    bracket("MES", 2, take_profit=5010.00, stop_loss=4990.00, tif="IOC"), 1)
                handler.submit(entry, None)
                await until(lambda: len(sim.placed) == 3, what="the bracket at the gateway")
                sim.push_bar("MESH6", CLOCK + MINUTE, 5000.25, 5001.00, 4999.50, 5000.75, volume=2)
                await until(lambda: entry.is_done and take.quantity == -1 and protect.quantity == -1,
                            what="entry done, exits resized to its fill")
                # bar 2: O 4995 H 4996 L 4985 C 4988 -> the sell stop at 4990 is touched falling H -> L: 4990
                sim.push_bar("MESH6", CLOCK + 2 * MINUTE, 4995.00, 4996.00, 4985.00, 4988.00, volume=2)
                await until(lambda: len(handler.records) == 2 and take.is_done, what="stop fill, take-profit cancelled")
        assert (entry.status, entry.filled, entry.avg_fill_price) == (OrderStatus.CANCELLED, 1, 5000.25)
        assert (protect.status, protect.filled, protect.avg_fill_price) == (OrderStatus.FILLED, -1, 4990.00)
        assert (take.status, take.filled) == (OrderStatus.CANCELLED, 0)
        assert [o.total_quantity for o in sim.placed] == [2, 1, 1]
        _books_agree(handler, sim)
        [position] = sim.book.account_positions()
        assert position.quantity == 0  # +1 - 1; (4990 - 5000.25) x 5 = -51.25 lost
    run(body)


def test_oco_pair_stop_hit_cancels_the_limit(ib_log) -> None:
    async def body() -> None:
        async with GatewaySim(today=TODAY, clock=CLOCK, commission_per_contract=0.85) as sim:
            async with _connected(sim, client_id=11) as handler:
                [buy] = _numbered([market("MES", 2)], 1)
                handler.submit(buy, None)
                await until(lambda: len(sim.placed) == 1, what="entry at the gateway")
                sim.push_bar("MESH6", CLOCK + MINUTE, 5000.25, 5001.00, 4999.50, 5000.75)  # buys 2 at 5000.25
                await until(lambda: buy.is_done, what="entry fill")
                take, protect = _numbered(oco(limit_order("MES", -2, 5010.00), stop("MES", -2, 4990.00),
                                              group="exit-1"), 2)
                handler.submit(take, None)
                handler.submit(protect, None)
                await until(lambda: len(sim.placed) == 3, what="the OCO pair at the gateway")
                # O 4995 H 4996 L 4985 C 4988: the stop 4990 is touched falling H -> L and sells 2 at 4990
                sim.push_bar("MESH6", CLOCK + 2 * MINUTE, 4995.00, 4996.00, 4985.00, 4988.00)
                await until(lambda: len(handler.records) == 2 and take.is_done, what="stop fill, limit cancelled")
        assert [(o.request.oca_group, o.request.oca_type, o.request.transmit) for o in sim.placed[1:]] == [
            ("run1/sma/exit-1", OCA_TYPE, True)] * 2
        assert (protect.status, protect.filled, protect.avg_fill_price) == (OrderStatus.FILLED, -2, 4990.00)
        assert (take.status, take.filled) == (OrderStatus.CANCELLED, 0)
        assert [o.status for o in sim.placed] == ["Filled", "Cancelled", "Filled"]
        _books_agree(handler, sim)
        [position] = sim.book.account_positions()
        assert position.quantity == 0  # +2 - 2
    run(body)


async def _raw_client(sim: GatewaySim) -> tuple[IB, Future]:
    ib = IB()
    await ib.connectAsync("127.0.0.1", sim.port, clientId=31, timeout=5, raiseSyncErrors=True)
    [mes] = await ib.qualifyContractsAsync(Future("MES", "202603", "CME"))
    return ib, mes


def test_gateway_holds_untransmitted_orders_and_never_fills_two_oca_legs(ib_log) -> None:
    async def body() -> None:
        async with GatewaySim(today=TODAY, clock=CLOCK) as sim:
            ib, mes = await _raw_client(sim)
            try:
                staged = MarketOrder("BUY", 1, transmit=False)
                staged_trade = ib.placeOrder(mes, staged)
                await until(lambda: len(sim.book.staged) == 1, what="the staged order at the gateway")
                sim.push_bar("MESH6", CLOCK + MINUTE, 5000.25, 5001.00, 4999.50, 5000.75)
                assert sim.book.executions == [] and staged_trade.orderStatus.status == "PendingSubmit"
                ib.cancelOrder(staged)
                await until(lambda: not sim.book.staged, what="the staged order cancelled")
                # one bar reaching both legs: O 5000 H 5011 L 4985 C 4990; along O -> H the sell limit 5010 is
                # reached first and sells 1 at 5010, so the sell stop at 4990 (reached on H -> L) is cancelled
                legs = [LimitOrder("SELL", 1, 5010.00, ocaGroup="pair", ocaType=2),
                        StopOrder("SELL", 1, 4990.00, ocaGroup="pair", ocaType=2)]
                trades = [ib.placeOrder(mes, leg) for leg in legs]
                await until(lambda: len(sim.placed) == 2, what="both legs")
                sim.push_bar("MESH6", CLOCK + 2 * MINUTE, 5000.00, 5011.00, 4985.00, 4990.00)
                await until(lambda: all(t.isDone() for t in trades), what="one leg filled, the other cancelled")
                refused = ib.placeOrder(mes, LimitOrder("SELL", 1, 5020.00, ocaGroup="other", ocaType=1))
                await until(lambda: refused.isDone(), what="ocaType 1 refused")
            finally:
                ib.disconnect()
            assert [t.orderStatus.status for t in trades] == ["Filled", "Cancelled"]
            assert [(e.price, e.shares) for e in sim.book.executions] == [(5010.00, 1)]
            assert "ocaType 1 is not simulated" in refused.log[-1].message
    run(body)


@pytest.mark.parametrize("cancel", ["entry", "take_profit"])
def test_cancelling_an_unfilled_entry_ends_its_exits_and_a_leg_only_itself(cancel: str, ib_log) -> None:
    async def body() -> None:
        async with GatewaySim(today=TODAY, clock=CLOCK) as sim:
            async with _connected(sim, client_id=11) as handler:
                legs = _numbered(bracket("MES", 1, entry=4980.00, take_profit=5010.00, stop_loss=4970.00), 1)
                handler.submit(legs[0], None)
                await until(lambda: len(sim.placed) == 3, what="the bracket at the gateway")
                target = legs[0] if cancel == "entry" else legs[1]
                handler.cancel(target, 0)
                await until(lambda: target.is_done, what="cancel confirmed")
                if cancel == "entry":
                    await until(lambda: all(o.is_done for o in legs), what="exits ended with the entry")
            statuses = [o.status for o in legs]
            if cancel == "entry":
                assert statuses == [OrderStatus.CANCELLED] * 3
                assert [o.status for o in sim.placed] == ["Cancelled"] * 3
            else:  # IB cancels only that leg: the entry and the stop still work (held)
                assert statuses == [OrderStatus.OPEN, OrderStatus.CANCELLED, OrderStatus.OPEN]
                assert [o.status for o in sim.placed] == ["Submitted", "Cancelled", "PreSubmitted"]
    run(body)


def test_a_restarted_process_adopts_the_working_exits_of_a_bracket(tmp_path, ib_log) -> None:
    journal = OrderJournal(tmp_path)

    async def body() -> None:
        async with GatewaySim(today=TODAY, clock=CLOCK, commission_per_contract=0.85) as sim:
            first = IBExecutionHandler("run1", "sma", {"MES": "202603"}, port=sim.port, client_id=11, journal=journal)
            await first.connect()
            first.submit(_numbered(bracket("MES", 1, take_profit=5010.00, stop_loss=4990.00), 1)[0], None)
            await until(lambda: len(sim.placed) == 3, what="the bracket at the gateway")
            sim.push_bar("MESH6", CLOCK + MINUTE, 5000.25, 5001.00, 4999.50, 5000.75)  # entry buys 1 at 5000.25
            await until(lambda: len(first.records) == 1, what="entry fill")
            first.disconnect()  # the process ends; the exits keep working at IB
            second = IBExecutionHandler("run1", "sma", {"MES": "202603"}, port=sim.port, client_id=11,
                                        journal=journal)
            await second.connect()
            try:
                found = second.reconciliation
                assert (found.working, found.done) == (["run1/sma/2", "run1/sma/3"], {"run1/sma/1": "Filled"})
                assert (found.recovered_fills, found.missing, found.external) == (1, [], [])
                take, protect = (second.working_orders()[k] for k in (0, 1))
                assert [(o.quantity, o.parent_id, o.oca_group) for o in (take, protect)] == [
                    (-1, 1, "bracket:1"), (-1, 1, "bracket:1")]
                # O 4995 H 4996 L 4985 C 4988: the stop sells at 4990; IB cancels the take-profit
                sim.push_bar("MESH6", CLOCK + 2 * MINUTE, 4995.00, 4996.00, 4985.00, 4988.00)
                await until(lambda: take.is_done and protect.is_done and len(second.records) == 2, what="exit")
            finally:
                second.disconnect()
            assert (protect.status, protect.filled, protect.avg_fill_price) == (OrderStatus.FILLED, -1, 4990.00)
            assert take.status is OrderStatus.CANCELLED
            assert len(sim.requests_of(In.PLACE_ORDER)) == 3  # nothing sent again
            [position] = sim.book.account_positions()
            assert position.quantity == 0
    run(body)


def test_orders_of_one_batch_are_one_journal_write_sent_in_order_and_working_from_their_submission(
        tmp_path, ib_log) -> None:
    journal = OrderJournal(tmp_path)
    seen: dict = {}

    async def body() -> None:
        async with GatewaySim(today=TODAY, clock=CLOCK, commission_per_contract=0.85) as sim:
            async with _connected(sim, client_id=12, journal=journal) as handler:
                first, second, third = _numbered([market("MES", 1), limit_order("MES", 2, 4900.00),
                                                  limit_order("MES", -1, 5100.00)], 1)
                with handler.one_batch():
                    handler.submit(first, None)
                    handler.submit(second, None)
                    # held, yet already this handler's: counted as working, refused a second time
                    seen["working"] = [o.order_id for o in handler.working["MES"]]
                    with pytest.raises(SafetyError, match="already sent"):
                        handler.submit(second, None)
                    seen["files inside"] = len(list(journal.directory.glob("*.parquet")))
                    handler.submit(third, None)
                    handler.cancel(third, 0)  # a held order: sent with the others first, then cancelled
                    seen["files after the cancel"] = len(list(journal.directory.glob("*.parquet")))
                handler.submit(_numbered([market("MES", -1)], 4)[0], None)  # outside a block: at once
                await until(lambda: len(sim.placed) == 4 and third.is_done, what="the four orders at the gateway")
                seen["refs"] = [o.request.order_ref for o in sim.placed]
                seen["third"] = third.status

    run(body)
    assert seen["working"] == [1, 2]
    assert seen["files inside"] == 0  # nothing journaled (nor sent) while the block holds them
    assert seen["files after the cancel"] == 1  # the three held orders: one journal batch
    assert seen["refs"] == ["run1/sma/1", "run1/sma/2", "run1/sma/3", "run1/sma/4"]
    assert seen["third"] is OrderStatus.CANCELLED
    batches = sorted(journal.directory.glob("*.parquet"))
    assert len(batches) == 2
    assert journal.read()["order_ref"].to_pylist() == ["run1/sma/1", "run1/sma/2", "run1/sma/3", "run1/sma/4"]


def test_a_bracket_in_a_batch_keeps_ib_order_ids_rising_in_the_order_sent(tmp_path, ib_log) -> None:
    """IB refuses an order id below one it has seen: a bracket's entry takes its id at submission, so every held
    order must too (a market order held before the bracket would otherwise get a higher id, sent first)."""
    journal = OrderJournal(tmp_path)
    seen: dict = {}

    async def body() -> None:
        async with GatewaySim(today=TODAY, clock=CLOCK, commission_per_contract=0.85) as sim:
            async with _connected(sim, client_id=13, journal=journal) as handler:
                orders = _numbered([market("MES", 1), *bracket("MES", 1, take_profit=5010.00, stop_loss=4990.00),
                                    market("MES", -1)], 1)
                with handler.one_batch():
                    handler.submit(orders[0], None)
                    handler.submit(orders[1], None)  # the bracket's entry, its exits with it
                    handler.submit(orders[4], None)
                await until(lambda: len(sim.placed) == 5, what="the five orders at the gateway")
                seen["requests"] = [int(r[1]) for r in sim.requests_of(In.PLACE_ORDER)]
                seen["refs"] = [o.request.order_ref for o in sim.placed]

    run(body)
    assert seen["refs"] == [f"run1/sma/{k}" for k in range(1, 6)]
    ids = seen["requests"]
    assert ids == sorted(ids) and len(set(ids)) == 5, ids
