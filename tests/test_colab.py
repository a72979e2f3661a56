"""The Colab badge and install cell are generated from one address and inserted or refreshed idempotently."""
import nbformat

from course_utils.colab import REPO_URL, badge_source, install_source, is_header_synced, sync
from course_utils.paths import REPO_ROOT


def make_notebook(path, cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    nbformat.write(nb, path)


def test_sync_inserts_the_header_then_changes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr("course_utils.colab.REPO_ROOT", tmp_path)
    path = tmp_path / "notebooks" / "01_x.ipynb"
    path.parent.mkdir()
    make_notebook(path, [nbformat.v4.new_markdown_cell("# Title"), nbformat.v4.new_code_cell("x = 1")])
    assert sync(path) is True
    nb = nbformat.read(path, as_version=4)
    assert [c.source for c in nb.cells][2:] == ["# Title", "x = 1"]
    assert is_header_synced(nb, path)
    assert sync(path) is False


def test_sync_replaces_a_drifted_header(tmp_path, monkeypatch):
    monkeypatch.setattr("course_utils.colab.REPO_ROOT", tmp_path)
    path = tmp_path / "notebooks" / "02_y.ipynb"
    path.parent.mkdir()
    old_badge = "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://old/address)"
    make_notebook(path, [nbformat.v4.new_markdown_cell(old_badge),
                         nbformat.v4.new_code_cell('import sys\nif "google.colab" in sys.modules: pass'),
                         nbformat.v4.new_markdown_cell("# Title")])
    assert sync(path) is True
    nb = nbformat.read(path, as_version=4)
    assert len(nb.cells) == 3 and nb.cells[2].source == "# Title"
    assert "old/address" not in nb.cells[0].source


def test_badge_points_at_the_notebook_in_the_repository():
    badge = badge_source(REPO_ROOT / "notebooks" / "00_setup.ipynb")
    assert badge.endswith("/blob/main/notebooks/00_setup.ipynb)")
    assert REPO_URL in install_source()


def test_colab_constraints_hold_the_stack_and_colab_torch(tmp_path):
    """unsloth installs under constraints generated from requirements.txt: the course's pinned stack stays, and so
    does the torch Colab already has."""
    import subprocess
    import sys

    from course_utils.colab import CONSTRAINTS, pins

    path = tmp_path / "constraints.txt"
    subprocess.run([sys.executable, "-m", "course_utils.colab", "--constraints", str(path)], check=True,
                   capture_output=True)
    written = pins(path.read_text())
    requirements = pins((REPO_ROOT / "requirements.txt").read_text())
    stack = pins((REPO_ROOT / "pyproject.toml").read_text())
    from importlib.metadata import version
    assert written.pop("torch") == version("torch")
    assert written == {name: requirements[name] for name in stack}
    assert {"transformers", "trl", "peft", "bitsandbytes"} <= written.keys()
    # the cell writes the file, then installs unsloth under it
    cell = install_source()
    assert cell.index(f"--constraints {CONSTRAINTS}") < cell.index(f"pip install --quiet -c {CONSTRAINTS} unsloth")


def test_pins_reads_requirements_and_pyproject_lines():
    from course_utils.colab import pins

    assert pins('torch==2.13.0\n# x==1\n    "huggingface_hub==1.33.0",\nnumpy>=2\n') == {
        "torch": "2.13.0", "huggingface-hub": "1.33.0"}
