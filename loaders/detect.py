"""Which reader a file needs: from ``--format``, else from its bytes and name."""

from __future__ import annotations

from pathlib import Path

from loaders.dbn import is_dbn, read_dbn
from loaders.lean import is_lean_zip, read_lean_zip
from loaders.raw import RawFile
from loaders.tabular import read_tabular
from warehouse.errors import ConfigError, LoadError

FORMATS = ("dbn", "lean", "csv", "parquet")
_SUFFIXES = (".dbn", ".dbn.zst", ".zip", ".csv", ".parquet", ".pq")


def expand_paths(paths: list[str | Path]) -> list[Path]:
    """Files named directly, plus every bar-like file under the directories named (sorted)."""
    files: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(_SUFFIXES)))
        elif path.exists():
            files.append(path)
        else:
            raise LoadError(str(path), "no such file or directory")
    return files


def detect_format(path: Path) -> str:
    """Guess the format of ``path`` from its magic bytes, then its name."""
    name = path.name.lower()
    if is_dbn(path):
        return "dbn"
    if name.endswith(".zip"):
        if is_lean_zip(path):
            return "lean"
        raise LoadError(str(path), "a zip that is not a LEAN futures archive (members must be named like <root>_trade_<YYYYMM>.csv)")
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic == b"PAR1" or name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".csv", ".txt")):
        return "csv"
    if name.endswith((".dbn", ".zst")):
        raise LoadError(str(path), "not a readable DBN file (bad magic or truncated zstd)")
    raise LoadError(str(path), f"cannot tell the format; pass --format ({'|'.join(FORMATS)})")


def read_file(path: Path, fmt: str | None = None, timeframe: str | None = None) -> RawFile:
    """Read one file with the reader its format needs."""
    chosen = fmt or detect_format(path)
    if chosen not in FORMATS:
        raise ConfigError(f"unknown format {chosen!r}; choose one of {', '.join(FORMATS)}")
    if chosen == "dbn":
        return read_dbn(path, timeframe)
    if chosen == "lean":
        return read_lean_zip(path, timeframe)
    return read_tabular(path, chosen, timeframe)
