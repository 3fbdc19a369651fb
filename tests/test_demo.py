"""`qe demo`, the main job of a fresh install, end to end in a fresh warehouse."""

from __future__ import annotations

import json

from tests.test_cli import qe


def test_demo_runs_end_to_end_and_is_idempotent_on_data(tmp_path) -> None:  # noqa: ANN001
    root = tmp_path / "qe_data"
    first = qe("demo", warehouse=root)
    assert first.returncode == 0, first.stderr
    for text in ("Rolls", "Features:", "Portfolio backtest", "grouped by reason", "HTML report"):
        assert text in first.stdout, text
    runs = json.loads(qe("sql", "SELECT run_id, symbols FROM runs", "--format", "json", warehouse=root).stdout)
    assert len(runs) == 1 and len(runs[0]["symbols"].split(",")) >= 3  # a multi-root portfolio
    report = root / "reports" / f"{runs[0]['run_id']}.html"
    assert report.is_file() and report.stat().st_size > 10_000
    # the ledger answers: nothing is left working when a breaker or the data ends (only the last bar's orders)
    events = json.loads(qe("sql", "SELECT kind, count(*) AS n FROM run_events GROUP BY kind", "--format", "json",
                           warehouse=root).stdout)
    assert {e["kind"] for e in events} >= {"denial"}
    # a second demo loads nothing new and records a second run
    second = qe("demo", warehouse=root)
    assert second.returncode == 0, second.stderr
    assert "0 rows loaded" in second.stdout
