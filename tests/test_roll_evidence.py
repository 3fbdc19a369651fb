"""A roll rule without evidence for a root refuses that root and leaves its roll table as it was.

The ``databento`` rule reads front changes from continuous DBN files; for a root that has only per-contract
bars (LEAN, per-contract DBN) it would keep the first contract for ever and shrink the continuous series.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from loaders.ingest import ingest
from tests.conftest import LEAN, REPO
from tests.dbn_fixtures import continuous_ohlcv_1m, ns
from warehouse.errors import MissingEvidenceError
from warehouse.rolls import build_rolls

#: The Dec-2013 files hold ESZ3 and ESH4 (12-18: ESH4 2,261,640 vs ESZ3 284,376 contracts, a crossover).
DECEMBER = [LEAN / "minute" / f"201312{day}_trade.zip" for day in ("03", "18", "20")]


def _state(wh) -> dict[str, list[dict]]:
    """Everything a roll build writes or changes, as rows."""
    return {
        "rolls": wh.sql("SELECT * FROM rolls ORDER BY symbol, roll_ts").to_pylist(),
        "front_segments": wh.sql("SELECT * FROM front_segments ORDER BY symbol, valid_from NULLS FIRST").to_pylist(),
        "bars_1m": wh.sql("SELECT symbol, contract, count(*) AS n FROM bars_1m GROUP BY ALL ORDER BY ALL").to_pylist(),
    }


def _nq_continuous(tmp_path: Path) -> Path:
    """A continuous NQ file whose front changes from instrument 2001 to 2002 on 2024-03-15."""
    bars = [
        (2001, ns("2024-03-14T14:30"), 18000.0, 18000.0, 18000.0, 18000.0, 10),
        (2002, ns("2024-03-15T14:30"), 18100.0, 18100.0, 18100.0, 18100.0, 12),
    ]
    path = tmp_path / "nq-v0.ohlcv-1m.dbn"
    path.write_bytes(continuous_ohlcv_1m(bars, symbol="NQ.v.0"))
    return path


@pytest.fixture
def es_lean(wh):
    ingest(wh, DECEMBER)  # rolls are built with the default rule (volume): ESZ3 -> ESH4
    return wh


def test_databento_rule_without_continuous_files_is_refused_and_changes_nothing(es_lean):
    before = _state(es_lean)
    # The volume roll put both contracts into the continuous series (the data README's crossover).
    assert {r["contract"] for r in before["bars_1m"]} == {"ESZ3", "ESH4"}
    with pytest.raises(MissingEvidenceError) as caught:
        build_rolls(es_lean, rule="databento")
    message = str(caught.value)
    assert caught.value.refused == ["ES"] and "\n" not in message
    assert "ES" in message and "continuous DBN" in message and "--rule volume|open_interest|expiry:N" in message
    es_lean.refresh()
    assert _state(es_lean) == before


def test_databento_rule_builds_the_roots_with_evidence_and_refuses_the_others(es_lean, tmp_path):
    ingest(es_lean, [_nq_continuous(tmp_path)])
    before = _state(es_lean)
    with pytest.raises(MissingEvidenceError) as caught:
        build_rolls(es_lean, rule="databento")
    assert caught.value.refused == ["ES"] and "NQ" not in str(caught.value)
    [nq] = caught.value.built.to_pylist()
    assert (nq["symbol"], nq["from_contract"], nq["to_contract"], nq["rule"]) == ("NQ", "NQ#2001", "NQ#2002", "databento")
    es_lean.refresh()
    after = _state(es_lean)
    assert [r for r in after["rolls"] if r["symbol"] == "ES"] == [r for r in before["rolls"] if r["symbol"] == "ES"]
    assert [r for r in after["front_segments"] if r["symbol"] == "ES"] == [
        r for r in before["front_segments"] if r["symbol"] == "ES"
    ]
    assert [r["rule"] for r in after["rolls"] if r["symbol"] == "NQ"] == ["databento"]


def test_a_root_that_lost_its_continuous_files_falls_back_to_the_default_rule(wh, tmp_path):
    ingest(wh, [_nq_continuous(tmp_path)])
    assert wh.sql("SELECT DISTINCT rule FROM front_segments").column(0).to_pylist() == ["databento"]
    shutil.rmtree(wh.root / "instrument_runs")
    wh.refresh()
    build_rolls(wh)  # no rule given: the previous rule (databento) has no evidence any more
    assert wh.sql("SELECT DISTINCT rule FROM front_segments").column(0).to_pylist() == ["volume"]


def test_cli_refuses_the_databento_rule_without_evidence_and_exits_1(es_lean):
    before = _state(es_lean)
    rolls_files = {p: p.read_bytes() for p in (es_lean.root / "rolls").glob("*.parquet")}
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli.main", "--warehouse", str(es_lean.root), "rolls", "build", "--rule", "databento"],
        cwd=REPO, capture_output=True, text=True,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: roll rule databento needs continuous DBN files")
    assert "for ES;" in lines[0] and "--rule volume|open_interest|expiry:N" in lines[0]
    assert {p: p.read_bytes() for p in (es_lean.root / "rolls").glob("*.parquet")} == rolls_files
    es_lean.refresh()
    assert _state(es_lean) == before
