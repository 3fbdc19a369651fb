"""Step 2: futures contract details from the contracts table; error 200 for unknown and ambiguous contracts."""

from __future__ import annotations

from ib_async import IB, Contract, Future

from engine.adapters.ib.gateway_sim import GatewaySim
from tests.ib.conftest import CLOCK, TODAY, run


async def _connected(sim: GatewaySim) -> IB:
    ib = IB()
    await ib.connectAsync("127.0.0.1", sim.port, clientId=21, timeout=5, raiseSyncErrors=True)
    return ib


def test_qualify_futures_by_month_and_by_local_symbol(ib_log) -> None:
    async def body() -> None:
        async with GatewaySim(today=TODAY, clock=CLOCK) as sim:
            ib = await _connected(sim)
            try:
                mes, cl, zn, gc = await ib.qualifyContractsAsync(
                    Future("MES", "202603", "CME"),
                    Contract(secType="FUT", localSymbol="CLK6", exchange="NYMEX"),
                    Future("ZN", "202606", "CBOT"),
                    Future("GC", "202604", "COMEX"),
                )
            finally:
                ib.disconnect()
        # MES March 2026: 3rd Friday of March 2026 is the 20th; multiplier 5, tick 0.25 (contracts.csv);
        # conId = (position of MES in contracts.csv (4) + 1) * 1_000_000 + 202603.
        assert (mes.conId, mes.localSymbol, mes.tradingClass, mes.multiplier) == (5_202_603, "MESH6", "MES", "5")
        assert mes.lastTradeDateOrContractMonth == "20260320" and mes.exchange == "CME" and mes.currency == "USD"
        # CL May 2026 (CLK6): 25 April 2026 is a Saturday, so 3 business days before the last business day
        # before it (Fri 24th): Thu 23, Wed 22, Tue 21 April.
        assert (cl.symbol, cl.multiplier, cl.lastTradeDateOrContractMonth) == ("CL", "1000", "20260421")
        assert (zn.exchange, zn.multiplier) == ("CBOT", "1000")
        assert (gc.exchange, gc.localSymbol) == ("COMEX", "GCJ6")
    run(body)


def test_contract_details_carry_tick_and_multiplier(ib_log) -> None:
    async def body() -> None:
        async with GatewaySim(today=TODAY, clock=CLOCK) as sim:
            ib = await _connected(sim)
            try:
                [details] = await ib.reqContractDetailsAsync(Future("ES", "202606", "CME"))
            finally:
                ib.disconnect()
        assert details.minTick == 0.25 and details.contract.multiplier == "50"
        assert details.contract.localSymbol == "ESM6" and details.contractMonth == "202606"
        assert details.longName == "E-mini S&P 500" and details.timeZoneId == "US/Central"
    run(body)


def test_unknown_and_ambiguous_contracts_get_error_200(ib_log) -> None:
    errors: list[tuple[int, str]] = []

    async def body() -> None:
        async with GatewaySim(today=TODAY, clock=CLOCK) as sim:
            ib = await _connected(sim)
            ib.errorEvent += lambda req_id, code, text, contract: errors.append((code, text))
            try:
                unknown, expired, old_name, ambiguous = await ib.qualifyContractsAsync(
                    Future("XYZ", "202603", "CME"),
                    Future("MES", "202512", "CME"),  # expired before the simulator's today
                    Future("MES", "202603", "GLOBEX"),  # IB renamed GLOBEX to CME
                    Future("MES", exchange="CME"),  # four listed quarterlies match
                )
            finally:
                ib.disconnect()
        assert (unknown, expired, old_name, ambiguous) == (None, None, None, None)
        assert [code for code, _ in errors] == [200, 200, 200, 200]
        assert sum("ambiguous" in text for _, text in errors) == 1
    run(body)
