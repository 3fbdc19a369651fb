"""`qe backtest`, `qe runs`, `qe report` as a user runs them: real subprocesses on a real warehouse."""

from __future__ import annotations

import json

import pytest

from tests.conftest import LEAN
from tests.test_cli import qe

QUERY = "SELECT * FROM bars_1h WHERE symbol = 'ES'"


#: Risk limits that let 1-2 ES contracts trade a 1,000,000 account (the house defaults allow 5 % of equity
#: per position: less than one ES contract); breakers stay on.
RISK_TOML = """[backtest.risk]
max_single_position_pct = 1.0
max_portfolio_exposure = 1.0
max_correlated_exposure = 1.0
"""


@pytest.fixture(scope="module")
def risk_config(tmp_path_factory):  # noqa: ANN001, ANN201
    path = tmp_path_factory.mktemp("cfg") / "risk.toml"
    path.write_text(RISK_TOML)
    return path


@pytest.fixture(scope="module")
def hourly(tmp_path_factory):  # noqa: ANN001, ANN201
    root = tmp_path_factory.mktemp("cli_bt") / "qe_data"
    result = qe("ingest", str(LEAN / "hour"), warehouse=root)
    assert result.returncode == 0, result.stderr
    assert qe("rolls", "build", warehouse=root).returncode == 0
    return root


def test_backtest_records_a_run_that_sql_and_report_can_read(hourly, risk_config, tmp_path) -> None:  # noqa: ANN001
    run = qe("backtest", "-q", QUERY, "-p", "fast=5", "-p", "slow=20", "-c", str(risk_config), warehouse=hourly)
    assert run.returncode == 0, run.stderr
    assert "Report:" in run.stdout and "µs/bar" in run.stdout
    listed = qe("sql", "SELECT run_id, strategy, params, timeframe, bars FROM runs", "--format", "json", warehouse=hourly)
    rows = json.loads(listed.stdout)
    assert len(rows) == 1
    assert rows[0]["strategy"] == "engine.strategies.sma_cross:SmaCross"
    assert json.loads(rows[0]["params"]) == {"fast": 5, "slow": 20, "quantity": 1}
    assert rows[0]["timeframe"] == "1h"  # inferred from the view the query reads
    bars = json.loads(qe("sql", "SELECT count(*) AS n FROM bars_1h WHERE symbol = 'ES'", "--format", "json",
                         warehouse=hourly).stdout)[0]["n"]
    assert rows[0]["bars"] == bars
    # cross-table question: commissions in the ledger add up to the metric
    check = json.loads(qe("sql", "SELECT (SELECT sum(commission) FROM run_fills) AS fills, "
                                 "(SELECT value FROM run_metrics WHERE name = 'commissions') AS metric",
                          "--format", "json", warehouse=hourly).stdout)[0]
    assert check["fills"] == pytest.approx(check["metric"])
    out = tmp_path / "r.html"
    report = qe("report", "latest", "--out", str(out), warehouse=hourly)
    assert report.returncode == 0, report.stderr
    html = out.read_text()
    assert 'id="equity-chart"' in html and 'id="report-data"' in html
    assert 'src="http' not in html and 'href="http' not in html  # self-contained
    assert "SmaCross" in qe("runs", warehouse=hourly).stdout


def test_backtest_errors_are_one_line(hourly, tmp_path) -> None:  # noqa: ANN001
    bad_strategy = qe("backtest", "-q", QUERY, "-s", "no.such.module:X", warehouse=hourly)
    assert bad_strategy.returncode == 1 and "cannot import strategy module" in bad_strategy.stderr
    bad_param = qe("backtest", "-q", QUERY, "-p", "fast=50", "-p", "slow=20", warehouse=hourly)
    assert bad_param.returncode == 1 and "fast < slow" in bad_param.stderr
    config = tmp_path / "run.toml"
    config.write_text("[backtest]\ninitial_capital = 50000\nslipage = 1\n")
    bad_config = qe("backtest", "-q", QUERY, "-c", str(config), warehouse=hourly)
    assert bad_config.returncode == 1 and "slipage" in bad_config.stderr
    assert len(bad_config.stderr.strip().splitlines()) == 1
    misspelt = qe("backtest", "-q", QUERY, "-p", "fats=5", warehouse=hourly)
    assert misspelt.returncode == 1
    assert misspelt.stderr.strip().splitlines() == [
        "Error: engine.strategies.sma_cross:SmaCross: unknown parameter(s) fats; valid: fast (int, default "
        "20), slow (int, default 50), quantity (int, default 1)"]
    ill_typed = qe("backtest", "-q", QUERY, "-p", "fast=five", warehouse=hourly)
    assert ill_typed.returncode == 1
    assert ill_typed.stderr.strip().splitlines() == [
        "Error: engine.strategies.sma_cross:SmaCross: parameter 'fast' must be int, not 'five'"]
    unknown = qe("report", "nope", warehouse=hourly)
    assert unknown.returncode == 1 and "unknown run 'nope'" in unknown.stderr


def test_backtest_with_a_config_file_and_a_strategy_file(hourly, tmp_path) -> None:  # noqa: ANN001
    strategy = tmp_path / "mine.py"
    strategy.write_text(
        "from engine.core.orders import market\n"
        "def buy_once(bar, engine):\n"
        "    return market(bar.symbol, 2) if not engine.orders else None\n"
    )
    config = tmp_path / "run.toml"
    config.write_text('[backtest]\ninitial_capital = 250000\nfill = "signal_close"\n'
                      '[backtest.slippage]\nmodel = "fixed"\nticks = 2\n' + RISK_TOML)
    run = qe("backtest", "-q", QUERY, "-s", f"{strategy}:buy_once", "-c", str(config), warehouse=hourly)
    assert run.returncode == 0, run.stderr
    fills = json.loads(qe("sql", "SELECT f.price, f.reference_price, f.slippage, r.initial_capital FROM run_fills f "
                                 "JOIN runs r USING (run_id) WHERE r.strategy LIKE '%buy_once' AND f.kind = 'order'",
                          "--format", "json", warehouse=hourly).stdout)
    assert len(fills) == 1
    # signal-close fill two ticks (2 * 0.25) above the first bar's close; slippage cost = 2 * 0.5 * 50 = 50
    assert fills[0]["price"] - fills[0]["reference_price"] == pytest.approx(0.5)
    assert fills[0]["slippage"] == pytest.approx(50.0)
    assert fills[0]["initial_capital"] == 250000


def test_walkforward_command_records_the_stitched_run(hourly, risk_config) -> None:  # noqa: ANN001
    run = qe("walkforward", "-q", QUERY, "-c", str(risk_config), "-g", "fast=3,5", "-g", "slow=12", "--train-days", "5", "--test-days", "3",
             "--processes", "1", "--metric", "total_return", warehouse=hourly)
    assert run.returncode == 0, run.stderr
    assert "Walk-forward windows" in run.stdout
    kinds = json.loads(qe("sql", "SELECT kind, count(*) AS n FROM runs WHERE kind LIKE 'walkforward%' GROUP BY kind",
                          "--format", "json", warehouse=hourly).stdout)
    counts = {k["kind"]: k["n"] for k in kinds}
    assert counts["walkforward"] == 1 and counts["walkforward_window"] >= 1
    children = json.loads(qe("sql", "SELECT count(*) AS n FROM runs c JOIN runs p ON c.parent_run_id = p.run_id "
                                    "WHERE p.kind = 'walkforward'", "--format", "json", warehouse=hourly).stdout)
    assert children[0]["n"] == counts["walkforward_window"]
    # "latest" is the latest top-level run: the stitched walk-forward, not its last window
    stitched = json.loads(qe("sql", "SELECT run_id FROM runs WHERE kind = 'walkforward'", "--format", "json",
                             warehouse=hourly).stdout)[0]["run_id"]
    latest = qe("report", "latest", warehouse=hourly)
    assert latest.returncode == 0, latest.stderr
    assert latest.stdout.strip().endswith(f"{stitched}.html")


def test_vectorized_signal_column_from_the_command_line(hourly) -> None:  # noqa: ANN001
    query = ("SELECT *, CASE WHEN close > avg(close) OVER (PARTITION BY symbol ORDER BY ts ROWS 9 PRECEDING) "
             "THEN 1 ELSE -1 END AS target FROM bars_1h WHERE symbol = 'ES'")
    run = qe("backtest", "-q", query, "--signal", "target", warehouse=hourly)
    assert run.returncode == 0, run.stderr
    rows = json.loads(qe("sql", "SELECT kind, strategy FROM runs WHERE kind = 'vectorized'", "--format", "json",
                         warehouse=hourly).stdout)
    assert rows == [{"kind": "vectorized", "strategy": "vectorized:target"}]
    warned = json.loads(qe("sql", "SELECT count(*) AS n FROM run_events WHERE code = 'RISK_NOT_CHECKED'", "--format",
                           "json", warehouse=hourly).stdout)
    assert warned[0]["n"] == 1


def test_risk_command_shows_house_defaults_and_config_overrides(tmp_path) -> None:  # noqa: ANN001
    defaults = qe("risk")
    assert defaults.returncode == 0, defaults.stderr
    assert "house defaults" in defaults.stdout and "equity_index" in defaults.stdout
    config = tmp_path / "r.toml"
    config.write_text("[backtest.risk]\nmax_drawdown = 0.2\nmax_weekly_loss = 0.07\n")
    custom = qe("risk", "-c", str(config))
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in custom.stdout.splitlines()
            if line.count("│") >= 3}
    assert rows["max_drawdown"] == "0.2" and rows["max_weekly_loss"] == "0.07" and rows["max_daily_loss"] == "0.02"
    config.write_text("[backtest.risk]\nmax_drawdwn = 0.2\n")
    bad = qe("risk", "-c", str(config))
    assert bad.returncode == 1 and "max_drawdwn" in bad.stderr


def test_bars_before_the_fee_table_fail_before_the_run_naming_the_root_and_date(hourly) -> None:  # noqa: ANN001
    # The LEAN ES hour bars start in October 2013; shifted back one year they begin before the fee and margin
    # tables (first effective date 2013-01-01). The first hourly bar, 2013-10-06 22:00 UTC (18:00 ET, a Sunday
    # session open), is trading date 2013-10-07; a year earlier, 2012-10-06 22:00 UTC is 18:00 EDT on
    # 2012-10-06 -> trading date 2012-10-07.
    shifted = ("SELECT symbol, ts - INTERVAL 1 YEAR AS ts, open, high, low, close, volume FROM bars_1h "
               "WHERE symbol = 'ES'")
    def runs() -> int:
        return json.loads(qe("sql", "SELECT count(*) AS n FROM runs", "--format", "json", warehouse=hourly).stdout)[0]["n"]

    before = runs()
    run = qe("backtest", "-q", shifted, warehouse=hourly)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        "Error: ES: the fees table (warehouse/data/fees.csv) starts 2013-01-01, but the query has ES bars from "
        "trading date 2012-10-07: add a ES row effective on or before 2012-10-07, or set fee_per_side under "
        "[backtest.instruments.ES] in the run configuration"]
    assert "Traceback" not in run.stderr
    assert runs() == before  # nothing recorded by the refused run


def test_a_run_without_trades_stores_null_names_its_file_and_hides_annualized_ratios(hourly, tmp_path) -> None:  # noqa: ANN001
    strategy = tmp_path / "idle.py"
    strategy.write_text("def idle(bar, engine):\n    return None\n")
    run = qe("backtest", "-q", QUERY, "-s", f"{strategy}:idle", warehouse=hourly)
    assert run.returncode == 0, run.stderr
    # The 195 ES hour bars fall on 15 CME trading dates (2013-10-07..11, 11-18, 12-02, 12-17, 12-18, 12-20,
    # 2020-01-02, 01-03, 01-06..08): below the 60 that annualized ratios need.
    shown = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in run.stdout.splitlines() if line.count("│") == 3}
    assert shown["sharpe"] == shown["cagr"] == "not meaningful (15 trading dates; needs 60)"
    assert (shown["trades"], shown["trading_days"], shown["win_rate"]) == ("0", "15", "—")
    assert (shown["gross_pnl"], shown["commissions"], shown["net_pnl"]) == ("0.00", "0.00", "0.00")
    rows = json.loads(qe("sql", "SELECT r.strategy, list(m.name ORDER BY m.name) FILTER (WHERE m.value IS NULL) AS nulls, "
                                "count(*) FILTER (WHERE isnan(m.value)) AS nans FROM runs r JOIN run_metrics m USING (run_id) "
                                "WHERE r.strategy LIKE '%idle' GROUP BY ALL", "--format", "json", warehouse=hourly).stdout)
    assert rows == [{"strategy": f"{strategy}:idle", "nans": 0,
                     "nulls": ["avg_loss", "avg_trade", "avg_win", "profit_factor", "sharpe", "sharpe_bars", "sortino",
                               "win_rate"]}]
    listed = qe("runs", warehouse=hourly).stdout
    assert f"{strategy}:idle" in listed and "n/m (15 days)" in listed


def test_built_signals_are_a_view_and_a_signal_null_everywhere_is_explained(hourly) -> None:  # noqa: ANN001
    assert qe("features", "build", "-t", "1h", warehouse=hourly).returncode == 0
    built = qe("signals", "build", "composite", "-t", "1h", warehouse=hourly)
    assert built.returncode == 0, built.stderr
    # rv_pctrank_20_240 ranks 240 values of rv_cc_20, itself first defined on row 19: first row 259, so 260
    # bars of history; the LEAN ES hour sample has 195 bars.
    why = "signal is NULL on every row of ES (195 bars); its features need 260 bars of history (rv_pctrank_20_240)"
    assert built.stderr.strip() == f"warning: signals composite 1h: {why}, so nothing can trade"
    view = json.loads(qe("sql", "SELECT count(*) AS n, count(signal) AS s FROM signals_composite_1h", "--format", "json",
                         warehouse=hourly).stdout)
    assert view == [{"n": 195, "s": 0}]
    query = qe("signals", "show", "composite", "-t", "1h", warehouse=hourly).stdout
    run = qe("backtest", "-q", query, "-s", "engine.strategies.signal_follower:SignalFollower", warehouse=hourly)
    assert run.returncode == 0, run.stderr
    assert run.stderr.strip() == f"warning: backtest: {why}, so nothing can trade"
