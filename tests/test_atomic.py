"""asr.atomic: every file the project writes goes through one atomic writer."""

from __future__ import annotations

import os

import pytest

from asr.atomic import WriteError, atomic_write_text


def test_atomic_write_replaces_whole_files_and_leaves_no_temporaries(tmp_path):
    path = tmp_path / "out.txt"
    atomic_write_text(path, "first\n")
    atomic_write_text(path, "second\n")
    assert path.read_text() == "second\n"
    with pytest.raises(TypeError):
        atomic_write_text(path, 123)  # type: ignore[arg-type]
    assert path.read_text() == "second\n"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_parent_directories_are_created(tmp_path):
    path = tmp_path / "a" / "b" / "out.txt"
    atomic_write_text(path, "x")
    assert path.read_text() == "x"


def test_an_unwritable_target_is_a_write_error_naming_it(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory should be")
    with pytest.raises(WriteError, match="blocker"):
        atomic_write_text(blocker / "x.txt", "x")
    assert blocker.read_text() == "a file where a directory should be"
