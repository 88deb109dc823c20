"""Atomic writes leave the old file or the whole new one, and no temporary file."""

from __future__ import annotations

import pytest

from feature_repo.files import atomic_path, atomic_write


def test_a_failed_write_keeps_the_old_content_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "deep" / "file.txt"
    atomic_write(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in target.parent.iterdir()] == ["file.txt"]


def test_a_finished_write_replaces_the_file(tmp_path):
    target = tmp_path / "file.bin"
    atomic_write(target, b"\x00new")
    assert target.read_bytes() == b"\x00new"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]
