"""The Colab badge and install cell that open every notebook, generated from one place.

The repository's public address lives here and nowhere else. After changing it, or after adding a notebook, run

    python -m course_utils.colab      # rewrites the first two cells of every notebook

and a test fails whenever a notebook's copy has drifted from what this module generates.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat

from .paths import REPO_ROOT

REPO = "finetune-own-models/course"  # GitHub owner/name: the one place the public address is written
BRANCH = "main"
REPO_URL = f"https://github.com/{REPO}"
NOTEBOOK_FOLDERS = ("notebooks", "solutions", "exercises")


def badge_source(notebook: Path) -> str:
    relative = notebook.resolve().relative_to(REPO_ROOT).as_posix()
    url = f"https://colab.research.google.com/github/{REPO}/blob/{BRANCH}/{relative}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


def install_source() -> str:
    return f"""\
# On Colab only: fetch the course (its data and bundled model) and install what Colab lacks. Elsewhere: nothing.
import os, sys
if "google.colab" in sys.modules:
    if not os.path.exists("/content/course"):
        !git clone --quiet --depth 1 --branch {BRANCH} {REPO_URL} /content/course
        %pip install --quiet -e /content/course
        !pip install --quiet unsloth || echo "unsloth did not install: the plain transformers path will be used"
    sys.path.insert(0, "/content/course")
    os.chdir("/content/course/notebooks")"""


def header_cells(notebook: Path) -> list:
    return [
        nbformat.v4.new_markdown_cell(badge_source(notebook)),
        nbformat.v4.new_code_cell(install_source()),
    ]


def is_header_synced(nb, notebook: Path) -> bool:
    expected = header_cells(notebook)
    return len(nb.cells) >= 2 and all(
        cell.cell_type == want.cell_type and cell.source == want.source for cell, want in zip(nb.cells, expected)
    )


def sync(notebook: Path) -> bool:
    """Make the notebook's first two cells the generated badge and install cells; True if it changed."""
    nb = nbformat.read(notebook, as_version=4)
    if is_header_synced(nb, notebook):
        return False
    cells = list(nb.cells)
    if cells and "colab-badge.svg" in cells[0].source:  # an old badge cell
        cells = cells[1:]
    if cells and cells[0].cell_type == "code" and "google.colab" in cells[0].source:  # an old install cell
        cells = cells[1:]
    nb.cells = header_cells(notebook) + cells
    nbformat.write(nb, notebook)
    return True


def all_notebooks() -> list[Path]:
    return sorted(p for folder in NOTEBOOK_FOLDERS for p in (REPO_ROOT / folder).glob("*.ipynb"))


def main() -> None:
    paths = [Path(p) for p in sys.argv[1:]] or all_notebooks()
    for path in paths:
        if sync(path):
            print(f"updated {path}")


if __name__ == "__main__":
    main()
