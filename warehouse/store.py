"""Atomic Parquet writes.

A partition is replaced by writing a temporary file in the same directory, flushing it to disk and
renaming it over the old file (``os.replace`` is atomic on POSIX). A crash at any point leaves either the
old file or the new one, never half of one. Temporary files end in ``.tmp`` so the ``*.parquet`` globs
behind the views never read them; :func:`sweep_crash_leftovers` (run by the next writer, under the warehouse
write lock) removes what a crash left behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
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


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` so that a reader sees the old file or the whole new one (see
    :func:`write_bytes_atomic`)."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the whole new one (:func:`atomic_file`)."""
    with atomic_file(path) as sink:
        sink.write(data)


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content into, put in place whole when the block ends without error.

    The temporary file sits in the same directory (a rename across file systems is not atomic) and ends in
    :data:`TMP_SUFFIX`, so that no glob of a reader picks it up and the crash sweeper knows it. It is flushed
    to disk before the rename, and the directory after it; on an error it is removed and ``path`` is untouched.
    """
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}{TMP_SUFFIX}")
    try:
        with open(tmp, "wb") as sink:
            yield sink
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


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


def file_signature(path: Path) -> tuple[int, int, int] | None:
    """(inode, mtime ns, size) of ``path``; None when it is absent.

    Every writer of the warehouse replaces a file by an atomic rename (a new inode), so a file that keeps its
    signature was not rewritten: what a process read or wrote from it can be kept.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def files_signature(directory: Path, pattern: str = "*.parquet") -> tuple:
    """(name, inode, mtime ns, size) of every file of ``directory`` matching ``pattern``, sorted by name; ``()``
    when the directory is absent (see :func:`file_signature`)."""
    if not directory.is_dir():
        return ()
    signed = ((path.name, file_signature(path)) for path in directory.glob(pattern))
    # a file removed between the listing and its stat (a fold) changes the signature either way
    return tuple(sorted((name, *sig) for name, sig in signed if sig is not None))


def ts_span(path: Path) -> tuple[datetime, datetime] | None:
    """(first, last) ``ts`` of a Parquet file, from its row-group statistics (the column read when they are
    missing); None without the file or rows."""
    if not path.exists():
        return None
    meta = pq.ParquetFile(path).metadata
    column = meta.schema.names.index("ts")
    lows, highs = [], []
    for i in range(meta.num_row_groups):
        stats = meta.row_group(i).column(column).statistics
        if meta.row_group(i).num_rows == 0:
            continue
        if stats is None or not stats.has_min_max:
            bounds = pc.min_max(pq.read_table(path, columns=["ts"])["ts"]).as_py()
            return None if bounds["min"] is None else (bounds["min"], bounds["max"])
        lows.append(stats.min)
        highs.append(stats.max)
    return (min(lows), max(highs)) if lows else None


#: renameat2(2) flag: swap the two paths (Linux 3.15+, on file systems that support it: ext4, xfs, btrfs, tmpfs).
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def exchange_paths(a: Path, b: Path) -> bool:
    """Swap two existing paths (files or directories) in one atomic step: a reader sees either both old or both
    new, never one of each (Linux ``renameat2`` with ``RENAME_EXCHANGE``, through libc).

    Returns False, having changed nothing, where the system or the file system cannot (another OS, an old
    kernel or libc, a file system without the flag): the caller then falls back to separate renames.
    """
    import ctypes
    import errno

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError, TypeError):  # no such libc function, or no C library to load (Windows)
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise WriteError(str(b), os.strerror(code))


def fsync_dir(directory: Path) -> None:
    """Flush a directory entry to disk: a rename is durable only once its directory is."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: Staging directories: feature and signal builds write whole year directories here before renaming them,
#: and a recorded backtest spills its equity ledger here (claimed, see :func:`claim_directory`).
STAGING = ".staging"
#: DuckDB's spill directory: DuckDB manages (and removes) its own files.
DUCKDB_SPILL = ".duckdb_tmp"
#: Directories written outside the write lock (a download's fetch, HTML reports, a live session's status and
#: commands): a temporary file there may belong to a live process, so only one older than an hour is a crash
#: leftover.
UNLOCKED_DIRS = ("downloads", "reports", "live")


def sweep_crash_leftovers(root: Path, unlocked_min_age_s: float = 3600.0) -> int:
    """Delete what crashed writers left under ``root``; return how many entries went.

    Call it only while holding the warehouse write lock (:func:`warehouse.lock.write_lock` does, on taking
    it): then no other writer is running, so every staging directory that no live process claims (a killed
    feature build's, with its empty or half-written Parquet files) and every temporary file of a locked
    writer is garbage, whatever its age. Temporaries in :data:`UNLOCKED_DIRS` go only when older than
    ``unlocked_min_age_s``; DuckDB's spill directory is left alone.
    """
    removed = 0
    if not root.is_dir():
        return 0
    staging = root / STAGING
    if staging.is_dir():
        with _directory_guard(staging):
            for entry in staging.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    if _claimed(entry):
                        continue  # a backtest still running in some process spills here
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                removed += 1
    cutoff = time.time() - unlocked_min_age_s
    for tmp in root.rglob(f"*{TMP_SUFFIX}"):
        top = tmp.relative_to(root).parts[0]
        if top in (STAGING, DUCKDB_SPILL):
            continue
        try:
            if top in UNLOCKED_DIRS and tmp.stat().st_mtime >= cutoff:
                continue
            tmp.unlink()
            removed += 1
        except FileNotFoundError:
            pass  # its (unlocked) writer finished meanwhile
    return removed


class ClaimedDirectory:
    """A new directory under a parent, claimed by this process until :meth:`release` (or its death).

    The claim is an advisory lock on the directory itself, so the kernel drops it when the process ends;
    :func:`sweep_crash_leftovers` skips claimed directories and removes the others.
    """

    def __init__(self, parent: Path, prefix: str) -> None:
        parent.mkdir(parents=True, exist_ok=True)
        # Created and locked under the parent's guard: a sweep never sees it created but not yet claimed.
        with _directory_guard(parent):
            self.path = parent / f"{prefix}{uuid.uuid4().hex}"
            self.path.mkdir()
            self._fd: int | None = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
            fcntl.flock(self._fd, fcntl.LOCK_EX)

    def release(self) -> None:
        """Drop the claim (the directory stays; remove it or leave it to the next sweep)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


@contextmanager
def _directory_guard(directory: Path) -> Iterator[None]:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _claimed(directory: Path) -> bool:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the probe's own lock
    return False


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
