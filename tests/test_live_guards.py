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


def test_a_resumed_position_in_the_old_contract_halts_the_run_naming_both_contracts_without_auto_roll() -> None:
    from types import SimpleNamespace

    from engine.backtest.run import Backtester, BacktestConfig
    from engine.core.orders import Fill
    from engine.live.session import LiveSession, LiveSettings
    from engine.risk import RiskState
    from engine.strategy import Strategy

    kernel = Backtester(Strategy(), BacktestConfig(timeframe="1m"), "1m")
    kernel.portfolio.apply(Fill(0, 0, "ES", "ESZ3", 2, 1800.0, 1800.0, 50.0, 4.5, 0.0))
    session = SimpleNamespace(kernel=kernel, settings=LiveSettings(auto_roll=False))
    assert LiveSession.check_contracts(session, {"ES": "ESZ3"}) == []
    assert kernel.risk.state is RiskState.ACTIVE
    problems = LiveSession.check_contracts(session, {"ES": "ESH4", "NQ": "NQH4"})
    assert problems == ["ES: held +2 in ESZ3, the broker now trades ESH4"]
    assert kernel.risk.state is RiskState.HALTED and kernel.risk.reason.startswith("ROLL_NEEDED")
    assert kernel.events[-1][2] == "ROLL_NEEDED"


def test_with_auto_roll_a_resumed_position_in_the_old_contract_does_not_halt() -> None:
    """The default: the first row naming the new front rolls the position (orders), so nothing halts."""
    from types import SimpleNamespace

    from engine.backtest.run import Backtester, BacktestConfig
    from engine.core.orders import Fill
    from engine.live.session import LiveSession, LiveSettings
    from engine.risk import RiskState
    from engine.strategy import Strategy

    kernel = Backtester(Strategy(), BacktestConfig(timeframe="1m"), "1m")
    kernel.portfolio.apply(Fill(0, 0, "ES", "ESZ3", 2, 1800.0, 1800.0, 50.0, 4.5, 0.0))
    session = SimpleNamespace(kernel=kernel, settings=LiveSettings())
    assert LiveSession.check_contracts(session, {"ES": "ESH4"}) == ["ES: held +2 in ESZ3, the broker now trades ESH4"]
    assert kernel.risk.state is RiskState.ACTIVE and kernel.events == []


def _kernel(capital: float = 5_000_000.0):
    from engine.backtest.run import Backtester, BacktestConfig
    from engine.data.feed import bar_type
    from engine.strategy import Strategy

    kernel = Backtester(Strategy(), BacktestConfig(timeframe="1m", initial_capital=capital), "1m")
    kernel.strategy.engine = kernel
    names = ["symbol", "ts", "open", "high", "low", "close", "volume", "qe_trading_day", "contract"]
    kernel.bind({n: i for i, n in enumerate(names)}, bar_type(names))
    return kernel


def _bar(ts: datetime, close: float, day: int) -> list[list]:
    return [["ES"], [_ns(ts)], [close], [close], [close], [close], [100], [day], ["ESZ3"]]


def test_a_fill_that_arrives_with_the_first_bar_of_a_day_counts_in_that_day() -> None:
    """Hand-worked: 5,000,000 of cash; a sell of 1 ES at 1,700 with 2.25 commission arrives with the first bar
    of trading date 15988 (2013-10-10). The day starts at 5,000,000 (before the fill), the fill's cash mark
    belongs to the new bar's equity point (index 1), and today's P&L shows the commission."""
    from engine.core.orders import Fill

    kernel = _kernel()
    kernel.process(_bar(datetime(2013, 10, 9, 20, 0, tzinfo=timezone.utc), 1700.0, 15987), 1)
    fill = Fill(0, _ns(datetime(2013, 10, 9, 22, 0, 30, tzinfo=timezone.utc)), "ES", "ESZ3", -1, 1700.0, 1700.0,
                50.0, 2.25, 0.0, "order", 15988)
    kernel.process(_bar(datetime(2013, 10, 9, 22, 0, tzinfo=timezone.utc), 1700.0, 15988), 1, arrived=[fill])
    assert kernel.risk.day == 15988 and kernel.risk.day_start == 5_000_000.0
    assert kernel._cash_marks[-1][0] == 1  # the second equity point (the first one's bar was the day before)
    assert kernel.portfolio.equity == 5_000_000.0 - 2.25


def test_a_broker_refusal_denies_the_order_and_the_run_goes_on() -> None:
    from engine.core.orders import market
    from warehouse.errors import QEError

    kernel = _kernel()

    def refuse(order, bar, close_known=True):  # noqa: ANN001, ANN202 - a disconnected broker
        raise QEError("not connected with every guard passed")

    kernel.handler.submit = refuse
    kernel.process(_bar(datetime(2013, 10, 10, 14, 0, tzinfo=timezone.utc), 1700.0, 15988), 1)
    order = kernel.submit(market("ES", 1))
    assert order.status.value == "DENIED" and order.detail == "BROKER_REFUSED: not connected with every guard passed"


def test_flattening_a_position_held_in_another_contract_than_the_one_orders_go_to_is_refused() -> None:
    from engine.core.orders import Fill
    from warehouse.errors import QEError

    kernel = _kernel()
    kernel.process(_bar(datetime(2013, 12, 19, 14, 0, tzinfo=timezone.utc), 1800.0, 16058), 1)
    kernel.portfolio.apply(Fill(0, 0, "ES", "ESZ3", 2, 1800.0, 1800.0, 50.0, 4.5, 0.0))
    kernel.handler.traded_contract = lambda root: "ESH4"  # the broker's front moved on
    with pytest.raises(QEError, match="ES is held in ESZ3 but orders now go to ESH4"):
        kernel.flatten_symbol("ES")
    assert kernel.orders == []
    kernel.handler.traded_contract = lambda root: "ESZ3"
    order = kernel.flatten_symbol("ES")
    assert order is not None and order.quantity == -2 and order.origin == "operator"


def test_new_limits_on_a_running_account_move_the_loss_floor() -> None:
    """Hand-worked: equity 1,000,000 at the day's start; a 2 % daily loss limit puts the floor at 980,000;
    tightened to 1 % it is 990,000."""
    from engine.core.instruments import InstrumentBook
    from engine.risk import RiskLimits, RiskManager

    risk = RiskManager(RiskLimits(max_daily_loss=0.02, max_weekly_loss=None, max_drawdown=None), InstrumentBook())
    risk.start(1_000_000.0)
    risk.new_day(15988, 1_000_000.0)
    assert risk.floor == pytest.approx(980_000.0)
    risk.replace_limits(RiskLimits(max_daily_loss=0.01, max_weekly_loss=None, max_drawdown=None))
    assert risk.floor == pytest.approx(990_000.0)
