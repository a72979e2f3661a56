"""The suite's own guards: it fails when it leaves a file in the repository, and a notebook cell fails when it
prints a warning that tests/allowed_warnings.py does not explain."""
import os
import subprocess
import sys

import nbformat
import pytest
from allowed_warnings import ALLOWED

from conftest import tree_changes, tree_snapshot
from course_utils.execution import stderr_lines, unexplained
from course_utils.paths import REPO_ROOT


def test_a_new_or_changed_file_is_noticed_ignored_files_included(tmp_path):
    (tmp_path / "kept.txt").write_text("a")
    (tmp_path / ".venv").mkdir()
    before = tree_snapshot(tmp_path)
    (tmp_path / "outputs" / "hemingway_lab").mkdir(parents=True)
    (tmp_path / "outputs" / "hemingway_lab" / "style.jsonl").write_text("{}")
    (tmp_path / "kept.txt").write_text("changed")
    os.utime(tmp_path / "kept.txt", ns=(0, 0))
    (tmp_path / ".venv" / "lib.py").write_text("the environment make setup installs is not the tree")
    assert tree_changes(before, tree_snapshot(tmp_path)) == ["changed: kept.txt",
                                                             "new: outputs/hemingway_lab/style.jsonl"]


def test_every_allowed_message_has_a_reason():
    assert ALLOWED and all(len(reason) > 40 for reason in ALLOWED.values())


def test_stderr_lines_leave_out_progress_bars_and_keep_warnings():
    outputs = [{"output_type": "stream", "name": "stderr",
                "text": "Map: 100%|██████████| 40/40 [00:00<00:00, 900.1 examples/s]\r\n"
                        "/x.py:3: UserWarning: an autograd kernel was not registered\n"},
               {"output_type": "stream", "name": "stdout", "text": "a warning printed to stdout is output\n"}]
    assert stderr_lines(outputs) == ["/x.py:3: UserWarning: an autograd kernel was not registered"]
    assert unexplained(stderr_lines(outputs), ALLOWED) == stderr_lines(outputs)


def run_cell(tmp_path, source: str) -> subprocess.CompletedProcess:
    """Run a one-cell notebook under nbval with the course's conftest.py loaded as a plugin."""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "warns.ipynb"
    nbformat.write(notebook, str(path))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "conftest", "--nbval-lax", "-q", "-p",
                           "no:cacheprovider", "--rootdir", str(tmp_path), str(path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("message, fails", [
    ("an autograd kernel was not registered; silently incorrect behavior", True),
    ("The tokenizer has new PAD/BOS/EOS tokens that differ from the model config and generation config.", False)])
def test_a_notebook_cell_fails_on_a_warning_nobody_explained(tmp_path, message, fails):
    result = run_cell(tmp_path, f"import warnings\nwarnings.warn({message!r})")
    assert (result.returncode != 0) == fails, result.stdout[-2000:]
    if fails:
        assert "allowed_warnings.py" in result.stdout and message in result.stdout
