"""The Colab badge and install cell that open every notebook, generated from one place.

The repository's public address lives here and nowhere else. After changing it, or after adding a notebook, run

    python -m course_utils.colab      # rewrites the first two cells of every notebook

On Colab, the install cell runs `python -m course_utils.colab --constraints FILE` to write the pip constraints that
keep the course's pinned stack while unsloth installs.

and a test fails whenever a notebook's copy has drifted from what this module generates.
"""
from __future__ import annotations

import re
import sys
from importlib.metadata import version
from pathlib import Path

import nbformat

from .paths import REPO_ROOT

REPO = "finetune-own-models/course"  # GitHub owner/name: the one place the public address is written
BRANCH = "main"
REPO_URL = f"https://github.com/{REPO}"
NOTEBOOK_FOLDERS = ("notebooks", "solutions", "exercises")
CONSTRAINTS = "/content/course-constraints.txt"  # written on Colab by the install cell, before unsloth installs


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
        !python -m course_utils.colab --constraints {CONSTRAINTS}
        !pip install --quiet -c {CONSTRAINTS} unsloth || echo "unsloth did not install: the plain transformers path will be used"
    sys.path.insert(0, "/content/course")
    os.chdir("/content/course/notebooks")"""


def pins(text: str) -> dict[str, str]:
    """{package: version} of the `name==version` lines of a requirements or pyproject text (names lower-cased)."""
    return {m[1].lower().replace("_", "-"): m[2]
            for m in re.finditer(r"^\s*\"?([A-Za-z0-9_.\-]+)==([^\s\",;#]+)", text, flags=re.M)}


def colab_constraints(requirements: str, pyproject: str, torch_version: str) -> str:
    """pip constraints that keep the course's stack in place while unsloth installs on Colab.

    The stack is what `pip install -e` of the course pins (pyproject's `==` dependencies), at the versions of
    requirements.txt; torch is held at the version Colab already has, so that unsloth cannot swap Colab's CUDA
    build for another. Everything else (numpy, Jupyter, ...) stays Colab's own."""
    stack = pins(pyproject)
    pinned = pins(requirements)
    lines = [f"torch=={torch_version}"] + [f"{name}=={pinned[name]}" for name in sorted(stack) if name in pinned]
    return "\n".join(lines) + "\n"


def write_constraints(path: Path) -> None:
    text = colab_constraints((REPO_ROOT / "requirements.txt").read_text(), (REPO_ROOT / "pyproject.toml").read_text(),
                             version("torch"))
    Path(path).write_text(text)
    print(f"constraints for unsloth's install (the course's stack stays): {path}")


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
    if sys.argv[1:2] == ["--constraints"]:
        write_constraints(Path(sys.argv[2]))
        return
    paths = [Path(p) for p in sys.argv[1:]] or all_notebooks()
    for path in paths:
        if sync(path):
            print(f"updated {path}")


if __name__ == "__main__":
    main()
