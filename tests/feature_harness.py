"""Compare SQL features with the independent oracle, using the catalog's own tolerances.

The tolerance of every feature is read from the catalog table in shared/FEATURES.md (section 6), so the
test and the specification cannot drift apart.
"""

from __future__ import annotations

import re
from functools import lru_cache

import duckdb
import numpy as np
import pandas as pd

from tests.conftest import SHARED
from warehouse.features.registry import build_registry, family_templates, feature_query

CATALOG = SHARED.parent / "FEATURES.md"


@lru_cache(maxsize=1)
def catalog() -> dict[str, dict]:
    """name -> {index, type, rtol, atol, exact} from the catalog table."""
    rows = {}
    for line in CATALOG.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 8 or not cells[0].isdigit():
            continue
        name = cells[1].strip("`")
        tolerance = cells[-1]
        rtol = re.search(r"rtol=([0-9.e-]+)", tolerance)
        atol = re.search(r"atol=([0-9.e-]+)", tolerance)
        rows[name] = {
            "index": int(cells[0]),
            "type": cells[3],
            "exact": tolerance.startswith("exact"),
            "rtol": float(rtol.group(1)) if rtol else 0.0,
            "atol": float(atol.group(1)) if atol else 0.0,
        }
    return rows


def sql_features(bars: pd.DataFrame, timeframe: str, templates: list[tuple[str, str]] | None = None) -> pd.DataFrame:
    """Run the SQL features (all shipped families, or ``templates``) over ``bars`` in a real DuckDB."""
    registry = build_registry(templates or family_templates(), timeframe=timeframe)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("bars", bars[["symbol", "ts", "open", "high", "low", "close", "volume"]])
    out = con.sql(feature_query(registry, "bars", timeframe)).df()
    con.close()
    return out


def family_template(prefix: str) -> list[tuple[str, str]]:
    """The shipped template whose file name starts with ``prefix`` (e.g. "01_")."""
    found = [t for t in family_templates() if t[0].split("/")[-1].startswith(prefix)]
    assert found, f"no template sql/features/{prefix}*.sql"
    return found


def assert_matches(sql: pd.DataFrame, oracle: pd.DataFrame, columns: list[str], label: str = "") -> None:
    """Identical NULL patterns and values within the catalog tolerance, column by column.

    The failure message names the feature, the first offending row and both values.
    """
    tolerances = catalog()
    problems = []
    for name in columns:
        got = pd.to_numeric(sql[name], errors="coerce").to_numpy(dtype=float)
        want = oracle[name].to_numpy(dtype=float)
        assert not np.isinf(got).any(), f"{label}{name}: inf in SQL output"
        null_got, null_want = np.isnan(got), np.isnan(want)
        if (null_got != null_want).any():
            row = int(np.argmax(null_got != null_want))
            problems.append(f"{name}: NULL pattern differs first at row {row}: sql={got[row]!r} oracle={want[row]!r}")
            continue
        ok = ~null_want
        tol = tolerances[name]
        if tol["exact"]:
            bad = got[ok] != want[ok]
        else:
            bad = np.abs(got[ok] - want[ok]) > tol["atol"] + tol["rtol"] * np.abs(want[ok])
        if bad.any():
            rows = np.flatnonzero(ok)[bad]
            row = int(rows[0])
            problems.append(
                f"{name}: {len(rows)} value(s) outside rtol={tol['rtol']}, atol={tol['atol']}; first at row {row}: "
                f"sql={got[row]!r} oracle={want[row]!r}"
            )
    assert not problems, label + "\n".join(problems)


def compare_family(prefix: str, oracle_module, bars: pd.DataFrame, timeframe: str) -> None:  # noqa: ANN001
    """Every column of one family, per symbol, against its oracle."""
    sql = sql_features(bars, timeframe, family_template(prefix))
    for symbol, part in bars.groupby("symbol", sort=True):
        part = part.sort_values("ts").reset_index(drop=True)
        expected = oracle_module.compute(part, timeframe)
        got = sql[sql.symbol == symbol].reset_index(drop=True)
        assert len(got) == len(part)
        assert_matches(got, expected, oracle_module.COLUMNS, label=f"[{symbol} {timeframe}] ")


@lru_cache(maxsize=4)
def _lean_minute(contract_month: str, symbol: str) -> pd.DataFrame:
    import io
    import zipfile

    from tests.conftest import LEAN

    frames = []
    for path in sorted((LEAN / "minute").glob("*_trade.zip")):
        midnight = pd.Timestamp(path.name[:8], tz="UTC")
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if member.endswith(f"_{contract_month}.csv"):
                    raw = pd.read_csv(io.BytesIO(archive.read(member)), header=None,
                                      names=["ms", "open", "high", "low", "close", "volume"])
                    raw["ts"] = midnight + pd.to_timedelta(raw.pop("ms"), unit="ms")
                    frames.append(raw)
    assert frames, f"no {contract_month} minute data under {LEAN}"
    bars = pd.concat(frames, ignore_index=True).sort_values("ts", kind="mergesort").reset_index(drop=True)
    bars.insert(0, "symbol", symbol)
    bars["ts"] = bars["ts"].astype("datetime64[ns, UTC]")
    bars["volume"] = bars["volume"].astype(np.int64)
    return bars[["symbol", "ts", "open", "high", "low", "close", "volume"]]


def lean_minute_bars(contract_month: str = "201312", symbol: str = "ES") -> pd.DataFrame:
    """One contract's real minute bars from the LEAN zips (rows ms since midnight UTC of the file's date)."""
    return _lean_minute(contract_month, symbol).copy()
