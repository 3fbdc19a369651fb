"""Databento DBN files through the real decoder: v1/v2/v3, zstd or plain, bars and definitions."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from loaders.dbn import read_dbn
from loaders.ingest import ingest
from tests.conftest import DATABENTO

GLBX = DATABENTO / "glbx-mdp3"
VERSIONS = DATABENTO / "dbn-versions"
NAUTILUS = DATABENTO / "nautilus-glbx"


def test_ohlcv_1m_first_bar_matches_the_fixture_readme(wh):
    ingest(wh, [GLBX / "test_data.ohlcv-1m.dbn.zst"])
    rows = wh.sql("SELECT * FROM contract_bars_1m ORDER BY ts").to_pylist()
    assert len(rows) == 4
    first = rows[0]
    # README: first bar O 3702.75 H 3704.75 L 3702.50 C 3704.75 V 306 at 2020-12-28 00:00 UTC, ESH1 id 5482.
    assert (first["symbol"], first["contract"], first["instrument_id"]) == ("ES", "ESH1", 5482)
    assert first["ts"] == datetime(2020, 12, 28, tzinfo=timezone.utc)
    assert (first["open"], first["high"], first["low"], first["close"], first["volume"]) == (3702.75, 3704.75, 3702.5, 3704.75, 306)


@pytest.mark.parametrize(
    "name, view, n",
    [
        ("test_data.ohlcv-1s.dbn.zst", "contract_bars_1s", 4),
        ("test_data.ohlcv-1h.dbn.zst", "contract_bars_1h", 4),
        ("test_data.ohlcv-1d.dbn.zst", "contract_bars_1d", 1),
    ],
)
def test_every_ohlcv_schema_lands_in_its_timeframe(wh, name, view, n):
    [report] = ingest(wh, [GLBX / name])
    assert report.error is None and report.rows_loaded == n
    assert wh.sql(f"SELECT count(*) AS n FROM {view}").to_pylist()[0]["n"] == n


def test_daily_fixture_values(wh):
    ingest(wh, [GLBX / "test_data.ohlcv-1d.dbn.zst"])
    row = wh.sql("SELECT * FROM contract_bars_1d").to_pylist()[0]
    assert (row["open"], row["high"], row["low"], row["close"], row["volume"]) == (3702.75, 3735.0, 3697.25, 3735.0, 718174)


def test_dbn_versions_1_2_3_and_plain_decode_identically():
    decoded = []
    for name in ("test_data.ohlcv-1m.v1.dbn.zst", "test_data.ohlcv-1m.v2.dbn.zst", "test_data.ohlcv-1m.v3.dbn.zst", "test_data.ohlcv-1m.dbn"):
        table = read_dbn(VERSIONS / name).bars["1m"]
        decoded.append(table.drop_columns(["_file"]).to_pylist())
    assert decoded[0] == decoded[1] == decoded[2] == decoded[3]
    # Raw open 372025000000000 at 1e-9 scale (these fixtures are 100x scaled, see their README).
    assert decoded[0][0]["open"] == 372025.0


def test_reingesting_the_same_records_from_another_version_changes_nothing(wh):
    ingest(wh, [VERSIONS / "test_data.ohlcv-1m.v1.dbn.zst"])
    [report] = ingest(wh, [VERSIONS / "test_data.ohlcv-1m.v3.dbn.zst"])
    assert (report.rows_loaded, report.rows_unchanged) == (0, 2)


def test_header_only_file_is_a_clear_error_and_writes_nothing(wh):
    [report] = ingest(wh, [VERSIONS / "test_data.ohlcv-1d.dbn"])
    assert "test_data.ohlcv-1d.dbn" in report.error and "no ohlcv-1d records" in report.error
    assert not (wh.root / "bars").exists()


def test_unsupported_schema_is_named(wh):
    [report] = ingest(wh, [GLBX / "test_data.trades.dbn.zst"])
    assert "schema 'trades' is not supported" in report.error


def test_truncated_zstd_is_a_clear_error_and_writes_nothing(wh, tmp_path):
    whole = (NAUTILUS / "historical_bars_catalog__futures_ohlcv-1m_2024-07-01T23-40_2024-07-02T00-10.dbn.zst").read_bytes()
    broken = tmp_path / "broken.ohlcv-1m.dbn.zst"
    broken.write_bytes(whole[: len(whole) // 2])
    [report] = ingest(wh, [broken])
    assert report.error is not None and str(broken) in report.error
    assert "nothing from this file was written" in report.error
    assert wh.sql("SELECT count(*) AS n FROM contract_bars_1m").to_pylist()[0]["n"] == 0


def test_definitions_give_expiry_tick_and_multiplier(wh):
    ingest(wh, [GLBX / "test_data.definition.dbn.zst"])
    row = wh.sql("SELECT * FROM definitions").to_pylist()[0]
    assert row["raw_symbol"] == "ESH1" and row["instrument_id"] == 5482
    assert row["expiration"] == datetime(2021, 3, 19, 13, 30, tzinfo=timezone.utc)
    assert (row["min_price_increment"], row["multiplier"]) == (0.25, 50.0)


def test_real_es_and_nq_bars_map_to_their_roots(wh):
    ingest(wh, [NAUTILUS / "historical_bars_catalog__futures_ohlcv-1m_2024-07-01T23-40_2024-07-02T00-10.dbn.zst"])
    rows = wh.sql(
        "SELECT symbol, contract, instrument_id, count(*) AS n, min(ts) AS first FROM contract_bars_1m GROUP BY ALL ORDER BY 1"
    ).to_pylist()
    assert [(r["symbol"], r["contract"], r["instrument_id"], r["n"]) for r in rows] == [
        ("ES", "ESU4", 118, 30),
        ("NQ", "NQU4", 4358, 30),
    ]
    assert rows[0]["first"] == datetime(2024, 7, 1, 23, 40, tzinfo=timezone.utc)


def test_truncated_plain_dbn_is_refused_not_half_loaded(wh, tmp_path):
    import databento as db

    source = NAUTILUS / "historical_bars_catalog__futures_ohlcv-1m_2024-07-01T23-40_2024-07-02T00-10.dbn.zst"
    plain = tmp_path / "plain.ohlcv-1m.dbn"
    db.DBNStore.from_file(source).to_file(plain)  # decompress
    data = plain.read_bytes()
    plain.write_bytes(data[:-30])  # cut into the last record
    [report] = ingest(wh, [plain])
    assert report.error is not None and "truncated" in report.error
    assert wh.sql("SELECT count(*) AS n FROM contract_bars_1m").to_pylist()[0]["n"] == 0
