"""A run is visible in the ledger views only once committed (its ``runs`` row, written last, exists); a
recording that crashed halfway is invisible, and the next recording removes its files."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.backtest.run import BacktestConfig, run_backtest
from engine.results.ledger import load_run
from engine.risk import RiskLimits
from engine.strategies.sma_cross import SmaCross
from warehouse import Warehouse
from warehouse.errors import QEError
from warehouse.schemas import RUN_TABLES

REPO = Path(__file__).resolve().parents[1]
#: 120 one-minute ES bars oscillating around 4000 (period ~38 bars): a 2/5 SMA cross trades several times.
QUERY = """
SELECT 'ES' AS symbol, TIMESTAMPTZ '2024-01-02 15:00:00+00' + i * INTERVAL 1 MINUTE AS ts,
       p AS open, p + 1 AS high, p - 1 AS low, p AS close, 100 AS volume
FROM (SELECT i, 4000 + round(80 * sin(i / 6.0)) / 4 AS p FROM range(120) t(i))
ORDER BY ts
"""
LEDGER_VIEWS = [name for name in RUN_TABLES if name != "runs"]
#: Tables this backtest leaves empty (no risk events; broker executions exist for live and paper runs only).
EMPTY = {"run_events", "run_executions"}


def _backtest(wh: Warehouse) -> str:
    config = BacktestConfig(timeframe="1m", initial_capital=10_000_000.0, risk=RiskLimits.off())
    return run_backtest(wh, QUERY, SmaCross(fast=2, slow=5), config).run_id


def _run_ids(wh: Warehouse, view: str) -> set[str]:
    wh.refresh()
    return set(wh.sql(f"SELECT DISTINCT run_id FROM {view}").column("run_id").to_pylist())


def _crash_while_recording(root: Path) -> str:
    """Run a backtest in another process that dies (os._exit: no cleanup) just before writing its runs row."""
    script = textwrap.dedent(
        f"""
        import os
        import engine.results.ledger as ledger
        from tests.test_ledger_commit import _backtest
        from warehouse import Warehouse
        real = ledger.write_parquet_atomic
        def dying(table, path):
            if path.parent.name == "runs" and path.parent.parent.name == "runs":
                print(path.stem, flush=True)
                os._exit(137)
            real(table, path)
        ledger.write_parquet_atomic = dying
        _backtest(Warehouse({str(root)!r}))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 137, proc.stderr
    return proc.stdout.strip()


def test_a_recording_that_crashed_before_its_runs_row_is_never_shown_and_the_next_recording_removes_it(tmp_path):
    wh = Warehouse(tmp_path / "wh")
    committed = _backtest(wh)
    assert all(_run_ids(wh, view) == {committed} for view in LEDGER_VIEWS if view not in EMPTY)
    crashed = _crash_while_recording(wh.root)
    # Its tables are on disk (all but the runs row) ...
    orphans = [wh.root / "runs" / view / f"{crashed}.parquet" for view in LEDGER_VIEWS]
    assert [p.exists() for p in orphans if p.parent.name not in EMPTY] == [True] * (len(LEDGER_VIEWS) - len(EMPTY))
    assert not (wh.root / "runs" / "runs" / f"{crashed}.parquet").exists()
    # ... but no view shows any of it, and it cannot be loaded.
    for view in LEDGER_VIEWS:
        assert crashed not in _run_ids(wh, view), view
    assert _run_ids(wh, "runs") == {committed}
    with pytest.raises(QEError, match="unknown run"):
        load_run(wh, crashed)
    # The next recording removes the crashed one's files and leaves the committed runs whole.
    latest = _backtest(wh)
    assert not any(p.exists() for p in orphans)
    assert _run_ids(wh, "runs") == {committed, latest}
    for view in LEDGER_VIEWS:
        if view not in EMPTY:
            assert _run_ids(wh, view) == {committed, latest}, view
    run, tables, metrics = load_run(wh, committed)
    assert run["run_id"] == committed and tables["fills"].num_rows > 0 and metrics
