"""A Databento continuous file (ES.v.0): rolls appear as instrument_id changes."""

from __future__ import annotations

from datetime import date, datetime, timezone
from types import SimpleNamespace

import databento_dbn as dbn
import numpy as np

from loaders.ingest import ingest

RECORD = np.dtype([("length", "u1"), ("rtype", "u1"), ("publisher_id", "<u2"), ("instrument_id", "<u4"), ("ts_event", "<u8"),
                   ("open", "<i8"), ("high", "<i8"), ("low", "<i8"), ("close", "<i8"), ("volume", "<u8")])


def continuous_file(bars: list[tuple[int, datetime, float, int]], intervals: list[tuple[date, date, int]]) -> bytes:
    """DBN v3 ohlcv-1m bytes for ES.v.0 with (instrument_id, ts, price, volume) bars; OHLC all = price."""
    ts = [int(b[1].timestamp()) * 1_000_000_000 for b in bars]
    meta = dbn.Metadata(
        dataset="GLBX.MDP3", start=ts[0], end=ts[-1] + 60_000_000_000, stype_in=dbn.SType.CONTINUOUS,
        stype_out=dbn.SType.INSTRUMENT_ID, schema=dbn.Schema.OHLCV_1M, symbols=["ES.v.0"], partial=[], not_found=[],
        mappings=[SimpleNamespace(raw_symbol="ES.v.0", intervals=[
            SimpleNamespace(start_date=s, end_date=e, symbol=str(iid)) for s, e, iid in intervals])],
    )
    records = np.zeros(len(bars), RECORD)
    records["length"], records["rtype"], records["publisher_id"] = 14, 33, 1
    records["instrument_id"] = [b[0] for b in bars]
    records["ts_event"] = ts
    for col in ("open", "high", "low", "close"):
        records[col] = [int(round(b[2] * 1e9)) for b in bars]
    records["volume"] = [b[3] for b in bars]
    return bytes(meta.encode()) + records.tobytes()


def test_instrument_change_becomes_a_databento_roll(wh, tmp_path):
    bars = [
        (1001, datetime(2024, 3, 13, 14, 30, tzinfo=timezone.utc), 5200.00, 900),
        (1001, datetime(2024, 3, 14, 14, 30, tzinfo=timezone.utc), 5210.25, 800),
        (1002, datetime(2024, 3, 15, 14, 30, tzinfo=timezone.utc), 5250.50, 950),
        (1002, datetime(2024, 3, 15, 14, 31, tzinfo=timezone.utc), 5251.00, 700),
    ]
    intervals = [(date(2024, 3, 13), date(2024, 3, 15), 1001), (date(2024, 3, 15), date(2024, 3, 16), 1002)]
    path = tmp_path / "es-v0.ohlcv-1m.dbn"
    path.write_bytes(continuous_file(bars, intervals))
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


def test_definitions_name_the_contracts_of_a_continuous_file(wh, tmp_path):
    from tests.conftest import DATABENTO

    bars = [(5482, datetime(2020, 12, 28, 14, 30, tzinfo=timezone.utc), 3720.25, 10)]
    path = tmp_path / "es-v0.ohlcv-1m.dbn"
    path.write_bytes(continuous_file(bars, [(date(2020, 12, 28), date(2020, 12, 29), 5482)]))
    # The definition file is ingested first even when named after the bars.
    [defs, report] = ingest(wh, [path, DATABENTO / "glbx-mdp3" / "test_data.definition.dbn.zst"])
    assert defs.error is None and report.error is None
    assert wh.sql("SELECT symbol, contract FROM contract_bars_1m").to_pylist() == [{"symbol": "ES", "contract": "ESH1"}]
