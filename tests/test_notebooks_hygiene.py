"""Every notebook is executed by the suite, is committed clean, and opens with the generated Colab cells."""
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from course_utils.colab import REPO, all_notebooks, is_header_synced
from course_utils.paths import REPO_ROOT

EXECUTED_FOLDERS = ("notebooks", "solutions")  # exercises/ hold student versions with blanks to fill


def repo_notebooks() -> list[Path]:
    return sorted(p for p in REPO_ROOT.rglob("*.ipynb")
                  if not {".venv", "outputs", ".ipynb_checkpoints"} & set(p.relative_to(REPO_ROOT).parts))


def test_there_are_notebooks():
    assert (REPO_ROOT / "notebooks" / "00_setup.ipynb") in repo_notebooks()


def test_every_notebook_is_collected_by_the_test_suite():
    folders = [f for f in EXECUTED_FOLDERS if (REPO_ROOT / f).is_dir()]
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", *folders],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    collected = {line.split("::")[0] for line in result.stdout.splitlines() if ".ipynb::" in line}
    expected = {p.relative_to(REPO_ROOT).as_posix() for p in repo_notebooks()
                if p.relative_to(REPO_ROOT).parts[0] != "exercises"}
    assert expected - collected == set(), f"notebooks the suite does not execute:\n{result.stdout[-2000:]}"


@pytest.mark.parametrize("path", repo_notebooks(), ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    notebook = json.loads(path.read_text())
    dirty = [i for i, cell in enumerate(notebook["cells"])
             if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count"))]
    assert not dirty, f"{path.name}: cells {dirty} have outputs or execution counts; clear them before committing"


@pytest.mark.parametrize("path", all_notebooks(), ids=lambda p: p.name)
def test_colab_badge_and_install_cell_are_generated(path):
    notebook = nbformat.read(path, as_version=4)
    assert is_header_synced(notebook, path), (
        f"{path.name}: the Colab badge or install cell has drifted; run `python -m course_utils.colab`")
    assert REPO in notebook.cells[0].source and f"blob/main/{path.relative_to(REPO_ROOT).as_posix()}" in notebook.cells[0].source


@pytest.mark.parametrize("path", all_notebooks(), ids=lambda p: p.name)
def test_notebook_has_a_papermill_parameters_cell_with_profile(path):
    notebook = nbformat.read(path, as_version=4)
    params = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "PROFILE = None" in params[0].source
