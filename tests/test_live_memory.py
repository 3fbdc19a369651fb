"""The live commands keep DuckDB's freed pages mapped between bars (engine.live.memory, engine.cli.entry)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli.entry import command_words
from engine.live.memory import DECAY_MS, JEMALLOC_ENV, keep_duckdb_memory

REPO = Path(__file__).resolve().parents[1]


def _python(code: str, env_drop: tuple[str, ...] = (JEMALLOC_ENV,), **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in env_drop} | env
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=full,
                          timeout=120)


@pytest.mark.parametrize(("argv", "words"), [
    (["--debug", "live", "--paper", "-c", "x.toml"], ["live", "x.toml"]),
    (["-w", "/tmp/live", "demo", "--paper"], ["demo"]),
    (["--lock-timeout", "5", "ingest", "bars.csv"], ["ingest"]),
    (["features", "build", "--full"], ["features", "build"]),
    (["--warehouse", "live"], []),
])
def test_command_words(argv: list[str], words: list[str]) -> None:
    assert command_words(argv) == words


def test_duckdb_reads_the_setting_before_it_loads() -> None:
    """The variable's name and format are the ones DuckDB's bundled jemalloc reads: its own statistics, printed at
    exit, show the decay this module asked for."""
    done = _python("from engine.live.memory import keep_duckdb_memory, JEMALLOC_ENV\n"
                   "import os\n"
                   "assert keep_duckdb_memory()\n"
                   "os.environ[JEMALLOC_ENV] += ',stats_print:true'\n"
                   "import duckdb\n"
                   "duckdb.connect().execute('SELECT sum(i) FROM range(100000) t(i)').fetchall()\n"
                   "assert not keep_duckdb_memory()  # loaded now: too late\n")
    assert done.returncode == 0, done.stderr
    assert f"opt.dirty_decay_ms: {DECAY_MS}" in done.stderr
    assert f"opt.muzzy_decay_ms: {DECAY_MS}" in done.stderr


def test_a_users_setting_is_kept() -> None:
    done = _python("from engine.live.memory import keep_duckdb_memory, JEMALLOC_ENV\nimport os\n"
                   "keep_duckdb_memory()\nprint(os.environ[JEMALLOC_ENV])", env_drop=(),
                   **{JEMALLOC_ENV: "dirty_decay_ms:5000"})
    assert done.stdout.strip() == "dirty_decay_ms:5000"


@pytest.mark.parametrize(("argv", "set_"), [(["live", "--help"], True), (["demo", "--help"], True),
                                            (["sql", "--help"], False)])
def test_the_entry_point_sets_it_for_live_commands_only(argv: list[str], set_: bool) -> None:
    done = _python("import os, sys\n"
                   f"sys.argv = ['qe', *{argv!r}]\n"
                   "from engine.cli.entry import main\n"
                   "try:\n    main()\nexcept SystemExit:\n    pass\n"
                   f"print('SETTING', os.environ.get({JEMALLOC_ENV!r}))")
    assert done.returncode == 0, done.stderr
    setting = done.stdout.strip().splitlines()[-1]
    assert setting == (f"SETTING dirty_decay_ms:{DECAY_MS},muzzy_decay_ms:{DECAY_MS}" if set_ else "SETTING None")


def test_too_late_in_this_process() -> None:
    """The test process loaded DuckDB already: the call says so and changes nothing."""
    import duckdb  # noqa: F401

    before = os.environ.get(JEMALLOC_ENV)
    assert keep_duckdb_memory() is False
    assert os.environ.get(JEMALLOC_ENV) == before
