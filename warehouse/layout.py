"""Where each table lives inside a warehouse directory.

::

    <root>/bars/timeframe=1m/symbol=ES/year=2013/data.parquet   per-contract raw bars
    <root>/bars/timeframe=1m/symbol=ES/year=2026/live-2026-03-02.parquet   bars appended live, one file per UTC
                                                                 day (folded into data.parquet by the next ingest)
    <root>/open_interest/symbol=ES/data.parquet                  open interest samples
    <root>/definitions/source=<hash>.parquet                     Databento instrument definitions
    <root>/instrument_runs/source=<hash>.parquet                 front-contract runs in continuous DBN files
    <root>/quarantine/source=<hash>.parquet                      rejected rows, with file, row and rule
    <root>/ingest_log/source=<hash>.parquet                      one row per ingested file
    <root>/data_quality/*.parquet                                dataset-condition flags (download)
    <root>/rolls/<symbol>.parquet, <root>/front_segments/<symbol>.parquet   roll table, front segments

Partition columns live only in the directory names (hive style), never inside the files, so DuckDB's
``hive_partitioning`` never sees a column twice.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

#: Bar timeframes that can be stored, with their length in seconds.
TIMEFRAMES: dict[str, int] = {"1s": 1, "1m": 60, "1h": 3600, "1d": 86400}

DEFAULT_WAREHOUSE = "qe_data"


def resolve_root(path: str | os.PathLike[str] | None) -> Path:
    """Return the warehouse directory: the argument, else ``$QE_WAREHOUSE``, else ``./qe_data``."""
    chosen = path or os.environ.get("QE_WAREHOUSE") or DEFAULT_WAREHOUSE
    return Path(chosen).expanduser().resolve()


def bar_partition(root: Path, timeframe: str, symbol: str, year: int) -> Path:
    """File of one (timeframe, symbol, year) bar partition."""
    return root / "bars" / f"timeframe={timeframe}" / f"symbol={symbol}" / f"year={year}" / "data.parquet"


#: Live bars of one UTC day are appended to their own file beside ``data.parquet`` (rewriting a small file per
#: bar instead of a year); the views read every ``*.parquet`` of a partition, and a key is in one file only.
LIVE_PREFIX = "live-"


def live_bar_file(root: Path, timeframe: str, symbol: str, day: date) -> Path:
    """Live day file of ``symbol``'s bars opening on UTC date ``day``, in the partition of that year."""
    return bar_partition(root, timeframe, symbol, day.year).with_name(f"{LIVE_PREFIX}{day.isoformat()}.parquet")


def live_bar_files(partition_dir: Path) -> list[Path]:
    """The live day files of one bar partition directory (``.../symbol=ES/year=2026``), oldest first."""
    return sorted(partition_dir.glob(f"{LIVE_PREFIX}*.parquet"))


def bars_glob(root: Path, timeframe: str) -> str:
    """Glob over every bar partition of one timeframe."""
    return str(root / "bars" / f"timeframe={timeframe}" / "*" / "*" / "*.parquet")


def safe_name(symbol: str) -> str:
    """``symbol`` as a file name: letters, digits, ``.``, ``_`` and ``-`` kept, anything else ``_``."""
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in symbol)


def table_dir(root: Path, table: str) -> Path:
    """Directory of a non-bar table (quarantine, definitions, rolls, ...)."""
    return root / table
