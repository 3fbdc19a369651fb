"""exchange_paths: two directories swapped in one step (Linux renameat2), or nothing changed where unsupported."""

from __future__ import annotations

import pytest

from warehouse.store import exchange_paths


def test_two_directories_swap_their_contents_or_nothing_changes(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "data.parquet").write_text("new")
    (b / "data.parquet").write_text("old")
    (b / "tail.parquet").write_text("old tail")
    swapped = exchange_paths(a, b)  # ext4, xfs, btrfs, tmpfs on Linux; not every file system or OS
    if swapped:
        assert sorted(p.name for p in b.iterdir()) == ["data.parquet"] and (b / "data.parquet").read_text() == "new"
        assert sorted(p.name for p in a.iterdir()) == ["data.parquet", "tail.parquet"]
    else:
        assert (b / "tail.parquet").exists() and (a / "data.parquet").read_text() == "new"


def test_a_missing_path_is_an_error_not_a_silent_fallback(tmp_path):
    from warehouse.errors import WriteError

    (tmp_path / "a").mkdir()
    if not exchange_paths(tmp_path / "a", tmp_path / "a"):
        pytest.skip("no renameat2 exchange on this system")
    with pytest.raises(WriteError):
        exchange_paths(tmp_path / "a", tmp_path / "missing")
