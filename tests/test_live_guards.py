"""Live guards with hand-worked cases: market hours from the CME calendar, and the halt when a resumed run's
position is in another contract than the broker's front."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from engine.core.orders import market
from engine.live.bars import market_open
from engine.live.session import _market_hours


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1e9)


@pytest.mark.parametrize(("moment", "expected"), [
    # Thursday 2013-10-10, 10:00 EDT: the regular session
    (datetime(2013, 10, 10, 14, 0, tzinfo=timezone.utc), True),
    # 17:15 EDT: inside the daily maintenance halt (17:00-18:00 ET)
    (datetime(2013, 10, 10, 21, 15, tzinfo=timezone.utc), False),
    # 18:00 EDT: the next trading date's session has opened
    (datetime(2013, 10, 10, 22, 0, tzinfo=timezone.utc), True),
    # Saturday noon
    (datetime(2013, 10, 12, 16, 0, tzinfo=timezone.utc), False),
    # Christmas Day 2013, noon ET: closed
    (datetime(2013, 12, 25, 17, 0, tzinfo=timezone.utc), False),
])
def test_market_open_follows_the_cme_calendar(moment: datetime, expected: bool) -> None:
    assert market_open("ES", moment) is expected


def test_an_order_submitted_in_the_halt_is_refused_and_one_in_the_session_passes() -> None:
    in_halt = _market_hours(market("ES", 1), _ns(datetime(2013, 10, 10, 21, 0, tzinfo=timezone.utc)))
    assert in_halt is not None and in_halt.code == "MARKET_CLOSED"
    assert "ES does not trade at 2013-10-10 21:00:00 UTC" in in_halt.message
    assert _market_hours(market("ES", 1), _ns(datetime(2013, 10, 10, 20, 59, tzinfo=timezone.utc))) is None


def test_a_kernel_with_the_gate_records_the_denial_and_sends_nothing() -> None:
    from engine.backtest.run import Backtester, BacktestConfig
    from engine.data.feed import bar_type
    from engine.strategy import Strategy

    class BuyOnce(Strategy):
        def on_bar(self, bar):  # noqa: ANN001, ANN202
            return market(bar.symbol, 1) if not self.engine.orders else None

    strategy = BuyOnce()
    kernel = Backtester(strategy, BacktestConfig(timeframe="1m", initial_capital=5_000_000.0), "1m")
    strategy.engine = kernel
    kernel.submission_gate = _market_hours
    names = ["symbol", "ts", "open", "high", "low", "close", "volume", "qe_trading_day"]
    kernel.bind({n: i for i, n in enumerate(names)}, bar_type(names))
    # the bar 20:59-21:00 UTC (16:59-17:00 EDT) is the session's last: its close is in the halt
    ts = _ns(datetime(2013, 10, 10, 20, 59, tzinfo=timezone.utc))
    kernel.process([["ES"], [ts], [1690.0], [1690.25], [1689.75], [1690.0], [100], [15988]], 1)
    [order] = kernel.orders
    assert order.status.value == "DENIED" and order.detail.startswith("MARKET_CLOSED")
    assert kernel.handler.working == {}
    assert [e[2] for e in kernel.events] == ["MARKET_CLOSED"]


def test_a_resumed_position_in_the_old_contract_halts_the_run_naming_both_contracts() -> None:
    from types import SimpleNamespace

    from engine.backtest.run import Backtester, BacktestConfig
    from engine.core.orders import Fill
    from engine.live.session import LiveSession
    from engine.risk import RiskState
    from engine.strategy import Strategy

    kernel = Backtester(Strategy(), BacktestConfig(timeframe="1m"), "1m")
    kernel.portfolio.apply(Fill(0, 0, "ES", "ESZ3", 2, 1800.0, 1800.0, 50.0, 4.5, 0.0))
    session = SimpleNamespace(kernel=kernel)
    assert LiveSession.check_contracts(session, {"ES": "ESZ3"}) == []
    assert kernel.risk.state is RiskState.ACTIVE
    problems = LiveSession.check_contracts(session, {"ES": "ESH4", "NQ": "NQH4"})
    assert problems == ["ES: held +2 in ESZ3, the broker now trades ESH4"]
    assert kernel.risk.state is RiskState.HALTED and kernel.risk.reason.startswith("ROLL_NEEDED")
    assert kernel.events[-1][2] == "ROLL_NEEDED"
