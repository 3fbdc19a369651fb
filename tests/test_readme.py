"""The README's examples, run as written (through bash, with ``qe`` the real command) on a fresh warehouse."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import LEAN, REPO
from tests.test_cli import qe

README = (REPO / "README.md").read_text(encoding="utf-8")


def readme_block(language: str, containing: str) -> str:
    """The first fenced ``language`` block of the README that contains ``containing``."""
    blocks = re.findall(rf"```{language}\n(.*?)```", README, re.DOTALL)
    return next(b for b in blocks if containing in b)


def readme_commands(containing: str = "") -> list[str]:
    """Every ``qe ...`` command of the README's bash blocks that mentions ``containing``, as written.

    Lines may hold several commands separated by `` ; `` and end with a ``# comment``; an optional part in
    brackets (``qe risk [-c run.toml]``, ``[--symbols ES]``) is taken, and of alternatives
    (``--rule volume | open_interest``) the first.
    """
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.DOTALL):
        for line in block.splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            for command in line.split(" ; "):
                if command.startswith("qe ") and containing in command:
                    command = re.sub(r"(\S+)(?: \| \S+)+", r"\1", command)  # alternatives a | b | c: the first
                    commands.append(re.sub(r"\[(-[^\]]+)\]", r"\1", command))
    return commands


#: README commands that cannot run in a test: paths of the reader's own files and a paid download.
NOT_RUNNABLE = ("~/", "bars.csv", "qe download")


def run_in_bash(command: str, warehouse: Path, cwd: Path) -> subprocess.CompletedProcess:
    """``command`` in bash with ``qe`` the repository's CLI on ``warehouse`` (output not on a terminal)."""
    prelude = f'qe() {{ "{sys.executable}" -m engine.cli.main --warehouse "{warehouse}" "$@"; }}\n'
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(["bash", "-c", prelude + command], cwd=cwd, capture_output=True, text=True, env=env)


@pytest.fixture(scope="module")
def hourly_with_features(tmp_path_factory) -> Path:  # noqa: ANN001
    root = tmp_path_factory.mktemp("readme") / "qe_data"
    for args in (("ingest", str(LEAN / "hour")), ("rolls", "build"), ("features", "build", "--timeframe", "1h")):
        result = qe(*args, warehouse=root)
        assert result.returncode == 0, (args, result.stderr)
    return root


def test_the_sample_run_config_works_with_every_command_the_readme_uses_it_with(hourly_with_features, tmp_path):
    (tmp_path / "run.toml").write_text(readme_block("toml", "[backtest]"))
    commands = readme_commands("run.toml")
    assert [c.split()[1] for c in commands] == ["backtest", "risk"]  # the README's two uses of run.toml
    for command in commands:
        result = run_in_bash(command, hourly_with_features, tmp_path)
        assert result.returncode == 0, (command, result.stderr)
    # With --signal (the vectorized path) the same config is refused by naming the key to change.
    signal = run_in_bash("qe backtest -q \"SELECT *, 1 AS target FROM bars_1h WHERE symbol = 'ES'\" --signal target "
                         "-c run.toml", hourly_with_features, tmp_path)
    assert signal.returncode == 1
    assert signal.stderr.startswith("Error: --signal (the vectorized path) has no volume participation cap: remove "
                                    "participation = 0.1 from [backtest] in the run configuration, or run it through "
                                    "the event engine with a strategy instead of --signal")


def test_the_readme_says_where_qe_is_and_how_to_get_the_browser_tests():
    using = README.index("## Using it")
    first_example = README.index("qe ingest", using)
    assert ".venv/bin/qe" in README[using:first_example] and "source .venv/bin/activate" in README[using:first_example]
    quickstart = README[:using]
    assert "skipped" in quickstart and "chromium" in quickstart and "QE_REQUIRE_BROWSER=1" in quickstart
    ci = (REPO / ".ci" / "run").read_text()
    assert "QE_REQUIRE_BROWSER=1" in ci and "apt-get install" in ci  # what the README says .ci/run does


@pytest.fixture(scope="module")
def demo_warehouse(tmp_path_factory) -> Path:  # noqa: ANN001
    """A fresh warehouse after the quickstart's ``qe demo``: what a reader has when trying the examples."""
    root = tmp_path_factory.mktemp("readme_demo") / "qe_data"
    result = qe("demo", warehouse=root)
    assert result.returncode == 0, result.stderr
    return root


def test_every_readme_command_runs_as_written_after_the_demo(demo_warehouse, tmp_path):
    (tmp_path / "run.toml").write_text(readme_block("toml", "[backtest]"))
    commands = [c for c in readme_commands() if not any(mark in c for mark in NOT_RUNNABLE)]
    assert len(commands) >= 20  # the examples of "Using it" and "Backtests"
    failed = []
    for command in commands:
        result = run_in_bash(command, demo_warehouse, tmp_path)
        if result.returncode != 0 or "Traceback" in result.stderr:
            failed.append(f"{command}\n  -> {result.stderr.strip()[-500:]}")
    assert not failed, "\n".join(failed)
