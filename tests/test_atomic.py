"""The one atomic writer (course_utils.atomic), which datasets, checkpoint markers, manifests and reports all use: a
failure at any moment leaves the old file intact and no temporary file behind."""
import json
import os
import stat

import pytest

from course_utils import atomic


def test_text_and_json_are_written_whole_and_readable_by_everyone(tmp_path):
    path = atomic.write_json(tmp_path / "sub" / "manifest.json", {"author": "Αθήνα", "steps": 40})
    assert json.loads(path.read_text(encoding="utf-8")) == {"author": "Αθήνα", "steps": 40}
    assert "Αθήνα" in path.read_text(encoding="utf-8")  # UTF-8 text, not \u escapes
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert os.listdir(path.parent) == ["manifest.json"]


def test_a_replaced_file_keeps_its_permissions(tmp_path):
    path = tmp_path / "report.html"
    path.write_text("old")
    path.chmod(0o600)
    atomic.write_text(path, "new")
    assert path.read_text() == "new" and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_refuses_to_replace_a_file_unless_asked(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("precious")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        atomic.write_text(path, "new", overwrite=False)
    assert path.read_text() == "precious"


def test_a_failed_rename_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    atomic.write_text(path, "old")

    def fail(*_):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        atomic.write_json(path, {"new": True})
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["state.json"]


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    path = tmp_path / "data.jsonl"
    atomic.write_text(path, "old")
    with pytest.raises(KeyboardInterrupt):
        with atomic.atomic_open(path) as stream:
            stream.write(b"half of the new")
            raise KeyboardInterrupt  # the kernel interrupted half-way
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["data.jsonl"]


def test_a_file_system_that_refuses_fsync_still_gets_the_file(tmp_path, monkeypatch):
    def refuse(_):
        raise OSError("fsync not supported")

    monkeypatch.setattr(atomic.os, "fsync", refuse)
    assert atomic.write_text(tmp_path / "x.txt", "kept").read_text() == "kept"
