"""A front change inside a resampling bucket (a continuous DBN file's change can fall mid-session).

The bucket's bar is the contract that is front at its last bar, from that contract's bars only: one row
per (symbol, ts) and never two contracts' raw prices in one bar.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from loaders.ingest import ingest
from tests.dbn_fixtures import continuous_ohlcv_1m, ns
from warehouse import Warehouse
from warehouse.features.materialize import build_features

UTC = timezone.utc
#: Instrument 1001 is front until 2024-03-15 00:00 UTC, 1002 from then: both inside the session of trading
#: date 03-15, which opened 03-14 18:00 EDT = 22:00 UTC.
BARS = [
    (1001, ns("2024-03-13T14:30"), 5190.0, 5191.0, 5189.0, 5190.5, 10),
    (1001, ns("2024-03-14T22:30"), 5200.0, 5201.0, 5199.0, 5200.5, 10),
    (1001, ns("2024-03-14T23:59"), 5201.0, 5202.0, 5200.0, 5201.5, 10),
    (1002, ns("2024-03-15T00:00"), 5250.0, 5251.0, 5249.0, 5250.5, 20),
    (1002, ns("2024-03-15T00:07"), 5251.0, 5252.0, 5250.0, 5251.5, 20),
]


@pytest.fixture(scope="module")
def rolled(tmp_path_factory) -> Warehouse:
    tmp = tmp_path_factory.mktemp("front_change")
    path = tmp / "es-v0.ohlcv-1m.dbn"
    path.write_bytes(continuous_ohlcv_1m(BARS))
    wh = Warehouse(tmp / "qe_data")
    ingest(wh, [path])
    yield wh
    wh.close()


def test_the_session_bar_is_the_contract_front_at_its_end(rolled):
    rows = rolled.sql("SELECT contract, ts, open, high, low, close, volume FROM session_bars_1d ORDER BY ts").to_pylist()
    assert [(r["contract"], r["ts"]) for r in rows] == [
        ("ES#1001", datetime(2024, 3, 12, 22, tzinfo=UTC)),  # trading date 03-13
        ("ES#1002", datetime(2024, 3, 14, 22, tzinfo=UTC)),  # trading date 03-15
    ]
    # 1002's two bars only: open 5250.0 (first), high max(5251, 5252), low min(5249, 5250), close 5251.5, 20 + 20.
    assert [rows[1][k] for k in ("open", "high", "low", "close", "volume")] == [5250.0, 5252.0, 5249.0, 5251.5, 40]


def test_hourly_and_minute_buckets_split_at_the_change(rolled):
    hourly = rolled.sql("SELECT contract, ts, volume FROM bars_1h_from_1m ORDER BY ts").to_pylist()
    assert [(r["contract"], r["ts"].hour, r["volume"]) for r in hourly] == [
        ("ES#1001", 14, 10), ("ES#1001", 22, 10), ("ES#1001", 23, 10), ("ES#1002", 0, 40)
    ]


@pytest.mark.parametrize(("timeframe", "rows"), [("1d", 2), ("1h", 4)])
def test_features_build_on_one_bar_per_bucket(rolled, timeframe, rows):
    report = build_features(rolled, timeframe)
    assert report.rows == rows
    counts = rolled.sql(f"SELECT count(*) AS n, count(DISTINCT ts) AS k FROM features_{timeframe}").to_pylist()
    assert counts == [{"n": rows, "k": rows}]
