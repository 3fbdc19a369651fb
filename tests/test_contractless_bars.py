"""A contract-less file of a root next to its per-contract bars: one continuous series, one row per ts.

Rule: on a CME trading date where the root's per-contract front bars exist, they are the series and the
contract-less rows of that date are left out; on other dates the contract-less rows are the series.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from loaders.ingest import ingest
from tests.conftest import LEAN, REPO
from warehouse import Warehouse

#: LEAN minute files of 2013-10-07 and 10-08 (UTC days) cover trading dates 10-07, 10-08 and 10-09.
LEAN_DAYS = [LEAN / "minute" / "20131007_trade.zip", LEAN / "minute" / "20131008_trade.zip"]
SHARED_SESSION = datetime(2013, 10, 7, 13, 30, tzinfo=timezone.utc)  # inside trading date 10-07 (LEAN has it)
OWN_SESSION = datetime(2013, 10, 11, 14, 0, tzinfo=timezone.utc)  # trading date 10-11 (LEAN files do not)

VIEWS = [
    *(f"bars_{tf}{suffix}" for tf in ("1s", "1m", "1h", "1d") for suffix in ("", "_adj_ratio", "_adj_diff")),
    "bars_5m", "bars_15m", "bars_1h_from_1m", "session_bars_1d",
]


def _contractless_csv(path: Path) -> Path:
    """ES minute bars without a contract column: 30 in a session LEAN covers, 10 in one it does not."""
    stamps = [SHARED_SESSION + timedelta(minutes=i) for i in range(30)] + [OWN_SESSION + timedelta(minutes=i) for i in range(10)]
    lines = ["symbol,ts,open,high,low,close,volume"] + [f"ES,{t.isoformat()},1690.00,1691.00,1689.00,1690.50,7" for t in stamps]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Warehouse:
    tmp = tmp_path_factory.mktemp("contractless")
    wh = Warehouse(tmp / "qe_data")
    ingest(wh, LEAN_DAYS)
    ingest(wh, [_contractless_csv(tmp / "es_generic.csv")], timeframe="1m")
    yield wh
    wh.close()


def _expected_series(wh: Warehouse) -> pd.DataFrame:
    """The rule applied with pandas to the stored rows (trading date via pandas' own time-zone conversion)."""
    [segment] = wh.sql("SELECT contract, valid_from, valid_to FROM front_segments").to_pylist()
    assert segment["valid_from"] is None and segment["valid_to"] is None  # no roll in these two days: one front
    stored = wh.pandas("SELECT contract, ts, close FROM contract_bars_1m WHERE symbol = 'ES'")
    et = stored["ts"].dt.tz_convert("America/New_York")
    stored["trading_date"] = (et.dt.tz_localize(None) + pd.Timedelta(hours=6)).dt.date  # 18:00 ET opens the next date
    front = stored[stored["contract"] == segment["contract"]]
    loose = stored[stored["contract"].isna() & ~stored["trading_date"].isin(set(front["trading_date"]))]
    return pd.concat([front, loose]).sort_values("ts").reset_index(drop=True)


def test_front_bars_define_a_session_and_contractless_rows_fill_only_other_sessions(mixed):
    expected = _expected_series(mixed)
    got = mixed.pandas("SELECT contract, ts, close FROM bars_1m WHERE symbol = 'ES' ORDER BY ts")
    pd.testing.assert_frame_equal(got, expected[["contract", "ts", "close"]], check_dtype=False)
    # The 10 rows of 10-11 are there without a contract; none of the 30 rows of 10-07 is.
    assert got["contract"].isna().sum() == 10
    assert got.loc[got["contract"].isna(), "ts"].min() == pd.Timestamp(OWN_SESSION)


@pytest.mark.parametrize("view", VIEWS)
def test_every_bars_view_has_one_row_per_symbol_and_ts(mixed, view):
    rows, keys = mixed.sql(f"SELECT count(*), count(DISTINCT (symbol, ts)) FROM {view}").to_pylist()[0].values()
    assert rows == keys


def test_daily_features_build_with_one_row_per_trading_date(mixed):
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli.main", "--warehouse", str(mixed.root), "features", "build", "-t", "1d"],
        cwd=REPO, capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr
    # Trading dates of the expected series: 10-07, 10-08, 10-09 (LEAN) and 10-11 (the contract-less file).
    dates = sorted(set(_expected_series(mixed)["trading_date"]))
    assert [d.isoformat() for d in dates] == ["2013-10-07", "2013-10-08", "2013-10-09", "2013-10-11"]
    mixed.refresh()
    rows = mixed.sql("SELECT count(*), count(DISTINCT ts) FROM features_1d WHERE symbol = 'ES'").to_pylist()[0]
    assert list(rows.values()) == [4, 4]


def test_only_roots_mixing_both_kinds_of_rows_pay_for_the_per_session_choice(mixed, wh, tmp_path):
    from warehouse.warehouse import _symbols_with_contractless_bars

    path = tmp_path / "spy.csv"
    path.write_text("symbol,ts,open,high,low,close,volume\nSPY,2024-01-02T14:30:00Z,470.1,472.0,469.5,471.2,1000\n")
    ingest(wh, [path], timeframe="1m")
    # A plain series (no contract at all) passes through without the anti-join; ES mixes both kinds.
    assert _symbols_with_contractless_bars(wh.root / "bars" / "timeframe=1m") == []
    assert wh.sql("SELECT symbol, contract, close FROM bars_1m").to_pylist() == [{"symbol": "SPY", "contract": None, "close": 471.2}]
    assert _symbols_with_contractless_bars(mixed.root / "bars" / "timeframe=1m") == ["ES"]
