"""The `qe` command line as a user runs it: a real subprocess, a real warehouse directory."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import DATABENTO, LEAN, REPO


def qe(*args: str, warehouse: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    prefix = ["--warehouse", str(warehouse)] if warehouse else []
    return subprocess.run([sys.executable, "-m", "engine.cli.main", *prefix, *args], cwd=REPO, capture_output=True, text=True, env=full_env)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "qe_data"
    result = qe("ingest", str(LEAN / "daily"), str(DATABENTO / "glbx-mdp3" / "test_data.ohlcv-1m.dbn.zst"), warehouse=root)
    assert result.returncode == 0, result.stderr
    assert "Ingest summary" in result.stdout and "rows loaded" in result.stdout
    return root


def empty_warehouse(tmp_path: Path) -> Path:
    """A warehouse directory with nothing loaded (read commands refuse one that does not exist)."""
    root = tmp_path / "w"
    root.mkdir(exist_ok=True)
    return root


def test_sql_table_csv_json_parquet(loaded, tmp_path):
    query = "SELECT contract, count(*) AS n FROM contract_bars_1d WHERE contract IN ('ESZ3', 'ESH4') GROUP BY 1 ORDER BY 1"
    table = qe("sql", query, warehouse=loaded)
    assert table.returncode == 0 and "ESH4" in table.stdout and "(2 rows)" in table.stdout
    as_csv = qe("sql", query, "--format", "csv", warehouse=loaded)
    lines = as_csv.stdout.strip().splitlines()
    assert lines[0] == '"contract","n"' and lines[1].startswith('"ESH4",')
    as_json = json.loads(qe("sql", query, "--format", "json", warehouse=loaded).stdout)
    assert [r["contract"] for r in as_json] == ["ESH4", "ESZ3"]
    out = tmp_path / "x.parquet"
    assert qe("sql", query, "--format", "parquet", "--out", str(out), warehouse=loaded).returncode == 0
    assert pq.read_table(out).num_rows == 2


def test_warehouse_from_environment(loaded):
    result = qe("sql", "SELECT count(*) AS n FROM contract_bars_1m", env={"QE_WAREHOUSE": str(loaded)})
    assert result.returncode == 0 and "4" in result.stdout


def test_errors_are_one_line_and_debug_shows_the_traceback(loaded):
    bad = qe("sql", "SELECT * FROM no_such_view", warehouse=loaded)
    assert bad.returncode == 1
    assert bad.stderr.strip().startswith("Error: SQL error:") and len(bad.stderr.strip().splitlines()) == 1
    debug = qe("--debug", "sql", "SELECT * FROM no_such_view", warehouse=loaded)
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_unreadable_file_exits_1_with_its_name(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    result = qe("ingest", str(empty), warehouse=tmp_path / "w")
    assert result.returncode == 1
    assert "empty.csv" in result.stdout and result.stderr.strip().startswith(f"Error: {empty}: ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_contracts_lists_the_fifteen_roots(tmp_path):
    result = qe("sql", "SELECT root, tick_size * multiplier - tick_value AS err FROM contracts", "--format", "json", warehouse=empty_warehouse(tmp_path))
    rows = json.loads(result.stdout)
    assert sorted(r["root"] for r in rows) == sorted("ES NQ RTY YM MES MNQ CL NG GC SI ZB ZN ZF 6E 6J".split())
    assert all(abs(r["err"]) < 1e-9 for r in rows)
    listing = qe("contracts", warehouse=tmp_path / "w")
    assert listing.returncode == 0 and "(15 rows)" in listing.stdout


def test_rolls_build_and_show(loaded):
    built = qe("rolls", "build", "--rule", "volume", "--symbols", "ES", warehouse=loaded)
    assert built.returncode == 0 and "ESZ3" in built.stdout and "ESH4" in built.stdout
    bad = qe("rolls", "build", "--rule", "sometimes", warehouse=loaded)
    assert bad.returncode == 1 and "unknown roll rule" in bad.stderr


def test_python_api_returns_arrow_polars_pandas(loaded):
    from warehouse import Warehouse

    wh = Warehouse(loaded)
    query = "SELECT ts, close FROM bars_1d WHERE symbol = 'ES' ORDER BY ts LIMIT 3"
    arrow, frame, df = wh.sql(query), wh.polars(query), wh.pandas(query)
    assert arrow.num_rows == frame.height == len(df) == 3
    assert arrow.column("close").to_pylist() == frame["close"].to_list() == df["close"].tolist()
    assert str(df["ts"].dt.tz) == "UTC"


def test_download_without_a_key_says_how_to_set_one(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DATABENTO_API_KEY"}
    result = subprocess.run(
        [sys.executable, "-m", "engine.cli.main", "--warehouse", str(tmp_path / "w"), "download", "ES",
         "--start", "2024-01-01", "--end", "2024-02-01", "--yes"],
        cwd=tmp_path, capture_output=True, text=True, env={**env, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 1
    assert result.stderr.startswith("Error:") and "DATABENTO_API_KEY" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_download_rejects_an_unknown_root(tmp_path):
    result = qe("download", "XX", "--start", "2024-01-01", "--end", "2024-02-01", "--yes", warehouse=tmp_path / "w",
                env={"DATABENTO_API_KEY": "db-test-not-a-real-key"})
    assert result.returncode == 1 and "XX" in result.stderr
    assert "db-test-not-a-real-key" not in result.stderr + result.stdout


# -- errors and output: literal, untruncated, exact (issue 11, items 1-4) ---------------------------------

MISSING = "missing required column(s) low, close, volume; expected symbol, ts, open, high, low, close, volume"


def _bad_csv(directory: Path, name: str) -> Path:
    path = directory / name
    path.write_text("symbol,ts,open,high\nES,2024-01-02T00:00:00Z,1,2\n")
    return path


def test_ingest_errors_name_each_file_on_its_own_line_and_the_table_is_not_cut(tmp_path):
    deep = tmp_path / "a_rather_long_directory_name_for_the_vendor_files" / "and_another_level_below_it"
    deep.mkdir(parents=True)
    first, second = _bad_csv(deep, "trunc.ohlcv-1m.first.csv"), _bad_csv(deep, "trunc.ohlcv-1m.second.csv")
    result = qe("ingest", str(first), str(second), warehouse=tmp_path / "w", env={"COLUMNS": "80"})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith(f"Error: {first}: {MISSING}") and lines[1].startswith(f"Error: {second}: {MISSING}")
    assert lines[2] == "Error: 2 of 2 file(s) could not be read"
    # Not on a terminal: the summary table is as wide as it needs, whatever $COLUMNS says.
    assert os.path.relpath(first, REPO) in result.stdout and f"not read: {MISSING}" in result.stdout


def test_sql_prints_brackets_and_markup_literally(tmp_path):
    result = qe("sql", "SELECT 'c[t] / c[t-1]' AS x, '[bold]hi[/bold]' AS y, 'a[/]' AS \"[z]\"", warehouse=empty_warehouse(tmp_path))
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if "c[t]" in line)
    assert [cell.strip() for cell in row.strip("│ ").split("│")] == ["c[t] / c[t-1]", "[bold]hi[/bold]", "a[/]"]
    assert "[z]" in result.stdout


def test_sql_error_with_markup_is_printed_literally(tmp_path):
    result = qe("sql", "SELECT * FROM \"[bold]x[/]\"", warehouse=empty_warehouse(tmp_path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("Error: SQL error: Catalog Error: Table with name [bold]x[/] does not exist!")


def test_features_list_keeps_bracketed_descriptions(tmp_path):
    result = qe("features", "list", warehouse=tmp_path / "w")
    assert "simple return c / c[t-1] - 1 (fraction; NULL when c[t-1] = 0)" in result.stdout
    assert "ln(c / c[t-5])" in result.stdout


def test_duckdb_hint_is_kept_on_the_error_line(tmp_path):
    result = qe("sql", "SELECT * FROM bars_1m_adj_rato", warehouse=empty_warehouse(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip() == ('Error: SQL error: Catalog Error: Table with name bars_1m_adj_rato does not exist! '
                                     'Did you mean "bars_1m_adj_ratio"?')


def _row(stdout: str, first: str) -> list[str]:
    line = next(line for line in stdout.splitlines() if line.startswith(f"│ {first} "))
    return [cell.strip() for cell in line.strip("│ ").split("│")]


def test_ticks_and_multipliers_are_exact_and_money_has_separators_and_cents(tmp_path):
    listing = qe("contracts", warehouse=tmp_path / "w")
    assert listing.returncode == 0, listing.stderr
    header = _row(listing.stdout.replace("┃", "│"), "root")
    zf, six_j, six_e = (dict(zip(header, _row(listing.stdout, root))) for root in ("ZF", "6J", "6E"))
    assert (zf["tick_size"], zf["tick_value"], zf["multiplier"]) == ("0.0078125", "7.8125", "1,000")
    assert (six_j["tick_size"], six_j["multiplier"]) == ("0.0000005", "12,500,000")
    assert six_e["tick_size"] == "0.00005"
    assert all(re.fullmatch(r"\d{1,3}(,\d{3})*\.\d\d", zf[c]) for c in ("initial_margin", "maintenance_margin", "fees_per_side"))
    money = qe("sql", "SELECT 28425612.37::DOUBLE AS equity, 0.1::DOUBLE + 0.2::DOUBLE AS noise", warehouse=empty_warehouse(tmp_path))
    assert _row(money.stdout, "28,425,612.37") == ["28,425,612.37", "0.3"]


# -- data that is not there; help; --debug anywhere (issue 11, items 5-7) ----------------------------------


def test_query_over_unbuilt_features_says_to_build_them(loaded):
    result = qe("sql", "SELECT ts, rsi_14 FROM features_1h WHERE symbol = 'ES'", warehouse=loaded)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: features_1h is empty: run qe features build --timeframe 1h (SQL error: Binder Error")
    run = qe("backtest", "-q", "SELECT * FROM bars_1d JOIN features_1d USING (symbol, ts)", "--signal", "rsi_14", warehouse=loaded)
    assert run.returncode == 1
    assert run.stderr.strip() == "Error: features_1d is empty: run qe features build --timeframe 1d"


def test_unknown_symbols_are_named_not_run_as_zero_bars(loaded):
    run = qe("backtest", "-q", "SELECT * FROM bars_1d WHERE symbol IN ('ES', 'FOO') OR 'BAR' = symbol ORDER BY ts",
             warehouse=loaded)
    assert run.returncode == 1
    assert run.stderr.strip() == "Error: the warehouse has no bars for FOO, BAR (symbols with bars: ES)"
    rolls = qe("rolls", "build", "--symbols", "FOO", warehouse=loaded)
    assert rolls.returncode == 1
    assert rolls.stderr.strip() == "Error: the warehouse has no bars for FOO (symbols with bars: ES)"


def test_read_commands_refuse_a_missing_warehouse_and_do_not_create_it(tmp_path):
    missing = tmp_path / "nowhere"
    expected = (f"Error: no warehouse at {missing}; point at one with --warehouse DIR or QE_WAREHOUSE=DIR, "
                "or create it with qe ingest PATH or qe demo")
    for args in (("sql", "SELECT count(*) AS n FROM bars_1m"), ("runs",), ("report", "latest"), ("rolls", "show")):
        result = qe(*args, warehouse=missing)
        assert (result.returncode, result.stderr.strip()) == (1, expected), args
    assert qe("contracts", warehouse=missing).returncode == 0
    assert not missing.exists()


def test_sql_on_an_empty_warehouse_says_it_holds_no_bars(tmp_path):
    root = empty_warehouse(tmp_path)
    result = qe("sql", "SELECT count(*) AS n FROM bars_1m", "--format", "json", warehouse=root)
    assert result.returncode == 0 and json.loads(result.stdout) == [{"n": 0}]
    assert result.stderr.startswith(f"note: the warehouse {root} holds no bars yet")


def test_help_shows_flags_without_values_and_every_option_explained():
    top = qe("--help")
    assert "<bool>" not in top.stdout and "--debug " in top.stdout and "Show tracebacks on errors." in top.stdout
    build = qe("features", "build", "--help").stdout
    assert "<bool>" not in build and "Recompute every symbol, changed or not." in build
    assert "[backtest.risk]" in qe("risk", "--help").stdout
    assert "Roots to show (default all)." in qe("rolls", "show", "--help").stdout
    assert "the bars the SQL reads" in qe("features", "show", "--help").stdout
    assert "inferred from the query's views" in qe("walkforward", "--help").stdout
    demo = " ".join(qe("demo", "--help").stdout.split())
    assert "builds the features, runs a portfolio backtest" in demo and "writes its HTML report" in demo


def test_debug_is_accepted_after_the_subcommand(loaded):
    result = qe("sql", "SELECT * FROM no_such_view", "--debug", warehouse=loaded)
    assert result.returncode == 1 and "Traceback" in result.stderr and "No such option" not in result.stderr
