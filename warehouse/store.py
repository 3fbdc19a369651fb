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

from warehouse.errors import WriteError

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
    batch = StagedWrites()
    with batch:
        batch.stage(table, path)
        batch.commit()


class StagedWrites:
    """Replace several files all-or-nothing: stage every new file first, rename them only once all are written.

    Each :meth:`stage` writes a complete temporary file beside its target (so the final rename stays on
    one filesystem) and flushes it to disk; :meth:`commit` then renames every temporary over its target.
    Writing is what needs disk space and can fail (``ENOSPC``); a rename needs none, so a full disk fails
    during staging, before any target changed. Leaving the ``with`` block without :meth:`commit` (or on an
    exception) removes every temporary, so a failed batch leaves no trace.

    Examples
    --------
    >>> batch = StagedWrites()                                       # doctest: +SKIP
    >>> with batch:                                                  # doctest: +SKIP
    ...     batch.stage(table_a, path_a); batch.stage(table_b, path_b)
    ...     batch.commit()
    """

    def __init__(self) -> None:
        self._staged: list[tuple[Path | None, Path]] = []  # (temporary or None = remove target, target)

    def __enter__(self) -> StagedWrites:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.abort()

    @property
    def targets(self) -> list[Path]:
        """The files this batch replaces or removes, in staging order."""
        return [path for _, path in self._staged]

    def stage(self, table: pa.Table, path: Path) -> None:
        """Write ``table`` as the next content of ``path`` (an empty table removes ``path`` at commit).

        Raises
        ------
        WriteError
            The temporary could not be written (full disk, permissions); the message names ``path``.
        """
        if table.num_rows == 0:
            self._staged.append((None, path))
            return
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}{TMP_SUFFIX}")
        self._staged.append((tmp, path))  # recorded first: a half-written temporary is removed too
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as sink:
                pq.write_table(table, sink, compression="zstd")
                sink.flush()
                os.fsync(sink.fileno())
        except OSError as exc:
            raise WriteError(str(path), exc.strerror or str(exc)) from exc

    def stage_if_changed(self, table: pa.Table, path: Path) -> bool:
        """Like :meth:`stage`, but stage nothing when ``path`` already holds ``table`` (or is absent and empty).

        Returns True when something was staged.
        """
        if path.exists():
            try:
                if pq.read_table(path).equals(table):
                    return False
            except (pa.ArrowInvalid, OSError):
                pass  # unreadable: replace it
        elif table.num_rows == 0:
            return False
        self.stage(table, path)
        return True

    def commit(self) -> None:
        """Rename every staged temporary over its target (and remove targets staged empty), then sync directories.

        Raises
        ------
        WriteError
            A rename failed (not a space problem; e.g. the directory became read-only). Targets renamed
            before it keep their new content; the rest keep their old one.
        """
        directories: set[Path] = set()
        for tmp, path in self._staged:
            try:
                if tmp is None:
                    path.unlink(missing_ok=True)
                else:
                    os.replace(tmp, path)
            except OSError as exc:
                raise WriteError(str(path), exc.strerror or str(exc)) from exc
            if path.parent.exists():
                directories.add(path.parent)
        self._staged = []
        for directory in sorted(directories):
            fsync_dir(directory)

    def abort(self) -> None:
        """Remove every temporary not yet renamed; targets are left as they were."""
        for tmp, _ in self._staged:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
        self._staged = []


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
    batch = StagedWrites()
    with batch:
        changed = batch.stage_if_changed(table, path)
        batch.commit()
    return changed


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
