"""Atomic Parquet writes.

A partition is replaced by writing a temporary file in the same directory, flushing it to disk and
renaming it over the old file (``os.replace`` is atomic on POSIX). A crash at any point leaves either the
old file or the new one, never half of one. Temporary files end in ``.tmp`` so the ``*.parquet`` globs
behind the views never read them; :func:`remove_stale_temporaries` sweeps what a crash left behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

TMP_SUFFIX = ".tmp"


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` so that readers see the old file or the complete new one.

    Parameters
    ----------
    table : pyarrow.Table
        Rows to write; an empty table removes the file instead.
    path : Path
        Destination ``.parquet`` file; parent directories are created.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if table.num_rows == 0:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}{TMP_SUFFIX}")
    try:
        with open(tmp, "wb") as sink:
            pq.write_table(table, sink, compression="zstd")
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Flush a directory entry to disk: a rename is durable only once its directory is."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temporaries(root: Path, min_age_s: float = 3600.0) -> int:
    """Delete temporary files a crashed writer left under ``root``; return how many.

    Only files older than ``min_age_s`` go: a younger one may belong to a writer that is still running in
    another process (an ingest or a download while the user runs ``qe sql``).
    """
    removed = 0
    if not root.exists():
        return 0
    cutoff = time.time() - min_age_s
    staging = root / ".staging"  # feature builds write whole year directories here before renaming them
    if staging.is_dir():
        for directory in staging.iterdir():
            if directory.stat().st_mtime < cutoff:
                shutil.rmtree(directory, ignore_errors=True)
                removed += 1
    duckdb_spill = root / ".duckdb_tmp"  # DuckDB manages (and removes) its own spill files
    for tmp in root.rglob(f"*{TMP_SUFFIX}"):
        if duckdb_spill in tmp.parents:
            continue
        try:
            if tmp.stat().st_mtime < cutoff:
                tmp.unlink()
                removed += 1
        except FileNotFoundError:
            pass  # its writer finished (renamed or removed it) meanwhile
    return removed


def write_parquet_if_changed(table: pa.Table, path: Path) -> bool:
    """Like :func:`write_parquet_atomic`, but leave ``path`` untouched when it already holds ``table``.

    Returns True when the file was written (or removed). Re-running a build that produces the same rows
    therefore changes nothing on disk, not even modification times.
    """
    if path.exists():
        try:
            if pq.read_table(path).equals(table):
                return False
        except (pa.ArrowInvalid, OSError):
            pass  # unreadable: replace it
    elif table.num_rows == 0:
        return False
    write_parquet_atomic(table, path)
    return True


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
