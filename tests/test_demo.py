"""`qe demo`, the main job of a fresh install, end to end in a fresh warehouse."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from engine.results.metrics import MIN_TRADING_DATES_ANNUALIZED
from tests.test_cli import qe


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:  # noqa: ANN001
    """One demo run in a fresh warehouse (the demo takes a while; every test reads the same run)."""
    root = tmp_path_factory.mktemp("demo") / "qe_data"
    return root, qe("demo", warehouse=root)


def test_demo_runs_end_to_end_and_is_idempotent_on_data(demo) -> None:  # noqa: ANN001
    root, first = demo
    assert first.returncode == 0, first.stderr
    for text in ("Rolls", "Features:", "Portfolio backtest", "HTML report"):
        assert text in first.stdout, text
    assert "Risk denials" in first.stdout or "No risk denials" in first.stdout
    runs = json.loads(qe("sql", "SELECT run_id, symbols, timeframe FROM runs", "--format", "json", warehouse=root).stdout)
    assert len(runs) == 1 and len(runs[0]["symbols"].split(",")) == 5 and runs[0]["timeframe"] == "1h"
    report = root / "reports" / f"{runs[0]['run_id']}.html"
    assert report.is_file() and report.stat().st_size > 10_000
    # a second demo loads nothing new and records a second run
    second = qe("demo", warehouse=root)
    assert second.returncode == 0, second.stderr
    assert "0 rows loaded" in second.stdout


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def test_the_demo_backtest_is_one_a_trader_would_run(demo) -> None:  # noqa: ANN001
    _, result = demo
    assert result.returncode == 0, result.stderr
    line = re.search(r"([\d,]+) closed trades in ([\d,]+) trading dates; gross P&L (-?[\d,.]+), commissions ([\d,.]+), "
                     r"slippage ([\d,.]+), net P&L (-?[\d,.]+) \(([-+][\d.]+)%\)\nSharpe (-?[\d.]+), ", result.stdout)
    assert line is not None, result.stdout[-3000:]
    trades, days, gross, commissions, slippage, net = (_number(g) for g in line.groups()[:6])
    # long enough for the annualized ratios it prints (a number, not "not meaningful")
    assert days >= MIN_TRADING_DATES_ANNUALIZED
    # a plausible pace: fewer than one round trip per root per trading date (5 roots)
    assert 0 < trades < days * 5
    # costs printed beside gross P&L and adding up: net = gross - commissions - slippage
    assert net == pytest.approx(gross - commissions - slippage, abs=0.01)
    # costs a few percent of the 1,000,000 account at most, not the 2.7 % in 10 days of the old demo
    assert commissions + slippage < 30_000


def test_paper_demo_trades_through_the_simulator_and_equals_its_backtest(tmp_path: Path) -> None:
    """`qe demo --paper`: a paper run in the ledger, its report, and an attribution with no gap at all: the
    session's orders met the same prices as the backtest's (no order may reach the gateway after the next
    bar was pushed)."""
    root = tmp_path / "qe_data"
    result = qe("demo", "--paper", "--bars", "40", warehouse=root)
    assert result.returncode == 0, result.stderr
    assert "relabelled as MES" in result.stdout
    line = next(x for x in result.stdout.splitlines() if x.startswith("Attribution against the backtest"))
    live, backtest, unexplained = (_number(v) for v in
                                   re.findall(r"live P&L (\S+), backtest (\S+), unexplained (\S+)\.", line)[0])
    assert live == backtest and unexplained == 0.0
    runs = json.loads(qe("sql", "SELECT run_id, kind, status FROM runs WHERE kind = 'paper'", "--format", "json",
                         warehouse=root).stdout)
    assert [(r["kind"], r["status"]) for r in runs] == [("paper", "stopped")]
    assert (root / "reports" / f"{runs[0]['run_id']}.html").is_file()
