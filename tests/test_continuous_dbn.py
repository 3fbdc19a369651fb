"""Databento continuous files (ES.v.0): rolls appear as instrument_id changes, within and across files."""

from __future__ import annotations

from datetime import datetime, timezone

from loaders.ingest import ingest
from tests.conftest import DATABENTO
from tests.dbn_fixtures import continuous_definitions, continuous_ohlcv_1m, ns


def _flat(iid: int, when: str, price: float, volume: int) -> tuple:
    return (iid, ns(when), price, price, price, price, volume)


def test_instrument_change_becomes_a_databento_roll(wh, tmp_path):
    bars = [
        _flat(1001, "2024-03-13T14:30", 5200.00, 900),
        _flat(1001, "2024-03-14T14:30", 5210.25, 800),
        _flat(1002, "2024-03-15T14:30", 5250.50, 950),
        _flat(1002, "2024-03-15T14:31", 5251.00, 700),
    ]
    path = tmp_path / "es-v0.ohlcv-1m.dbn"
    path.write_bytes(continuous_ohlcv_1m(bars))
    [report] = ingest(wh, [path])
    assert report.error is None and report.rows_loaded == 4
    changes = wh.sql("SELECT * FROM instrument_changes").to_pylist()
    assert [(c["symbol"], c["continuous_symbol"], c["from_instrument_id"], c["to_instrument_id"]) for c in changes] == [
        ("ES", "ES.v.0", 1001, 1002)
    ]
    assert changes[0]["ts"] == datetime(2024, 3, 15, 14, 30, tzinfo=timezone.utc)
    [roll] = wh.sql("SELECT * FROM rolls").to_pylist()
    # No definitions were ingested, so the contracts are named by root and instrument id.
    assert (roll["from_contract"], roll["to_contract"], roll["rule"]) == ("ES#1001", "ES#1002", "databento")
    assert roll["roll_ts"] == datetime(2024, 3, 15, 14, 30, tzinfo=timezone.utc)
    # The two contracts share no bar, so the prices are the last close before and the first open after.
    assert (roll["from_price"], roll["to_price"], roll["basis_timeframe"]) == (5210.25, 5250.5, "adjacent")
    series = wh.sql("SELECT contract, close FROM bars_1m_adj_diff ORDER BY ts").to_pylist()
    assert [r["contract"] for r in series] == ["ES#1001", "ES#1001", "ES#1002", "ES#1002"]
    assert series[1]["close"] == 5210.25 + (5250.5 - 5210.25)


def test_a_roll_between_two_monthly_files_is_found(wh, tmp_path):
    february = tmp_path / "2024-02.ohlcv-1m.dbn"
    march = tmp_path / "2024-03.ohlcv-1m.dbn"
    february.write_bytes(continuous_ohlcv_1m([_flat(1001, "2024-02-28T15:00", 5000.0, 10), _flat(1001, "2024-02-29T15:00", 5001.0, 10)]))
    march.write_bytes(continuous_ohlcv_1m([_flat(1002, "2024-03-01T15:00", 5030.0, 10)]))
    ingest(wh, [february, march])
    [roll] = wh.sql("SELECT from_contract, to_contract, roll_ts FROM rolls").to_pylist()
    assert (roll["from_contract"], roll["to_contract"]) == ("ES#1001", "ES#1002")
    assert roll["roll_ts"] == datetime(2024, 3, 1, 15, 0, tzinfo=timezone.utc)


def test_definitions_name_the_contracts_of_a_continuous_file(wh, tmp_path):
    bars = [_flat(5482, "2020-12-28T14:30", 3720.25, 10)]
    path = tmp_path / "es-v0.ohlcv-1m.dbn"
    path.write_bytes(continuous_ohlcv_1m(bars))
    # The definition file is ingested first even when named after the bars.
    [defs, report] = ingest(wh, [path, DATABENTO / "glbx-mdp3" / "test_data.definition.dbn.zst"])
    assert defs.error is None and report.error is None
    assert wh.sql("SELECT symbol, contract FROM contract_bars_1m").to_pylist() == [{"symbol": "ES", "contract": "ESH1"}]


def test_continuous_definitions_resolve_both_contracts_and_expiries(wh, tmp_path):
    defs = tmp_path / "defs.definition.dbn"
    defs.write_bytes(continuous_definitions([(5002, "ESH4", "2024-03-15T13:30"), (5003, "ESM4", "2024-06-21T13:30")]))
    bars = tmp_path / "bars.ohlcv-1m.dbn"
    bars.write_bytes(continuous_ohlcv_1m([_flat(5002, "2024-03-13T15:00", 5100.0, 5), _flat(5003, "2024-03-14T15:00", 5160.0, 5)]))
    ingest(wh, [bars, defs])
    [roll] = wh.sql("SELECT from_contract, to_contract FROM rolls").to_pylist()
    assert (roll["from_contract"], roll["to_contract"]) == ("ESH4", "ESM4")
    expiries = wh.sql("SELECT raw_symbol, expiration FROM definitions ORDER BY 1").to_pylist()
    assert expiries[0] == {"raw_symbol": "ESH4", "expiration": datetime(2024, 3, 15, 13, 30, tzinfo=timezone.utc)}
