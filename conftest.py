"""Test environment, set before anything is imported or any notebook kernel starts (kernels inherit it):
offline, the tiny profile, and every output and cache in a temporary folder instead of the repository or $HOME.

The suite must leave the repository as it found it (a test run that wrote outputs/hemingway_lab once made the next
`make run` find a finished run and train nothing): the files under the repository are listed when the session
starts and again when it ends, and any file that appeared or changed fails the run, named."""
import os
import sys
import tempfile
from pathlib import Path

import pytest
from nbval.plugin import IPyNbCell

_cache = tempfile.mkdtemp(prefix="course-test-cache-")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["COURSE_PROFILE"] = "tiny"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["COURSE_OUTPUT_DIR"] = os.path.join(_cache, "outputs")  # notebooks' outputs (course_utils.paths)
os.environ["COURSE_CHECKPOINT_DIR"] = os.path.join(_cache, "checkpoints")  # each test run trains from scratch
os.environ["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ in the tree, from this process or any kernel
sys.dont_write_bytecode = True
os.environ["HYPOTHESIS_STORAGE_DIRECTORY"] = os.path.join(_cache, "hypothesis")  # not .hypothesis/ in the tree
# OpenMP threads that spin while waiting slow bitsandbytes' CPU kernels badly on a busy 2-core machine
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
for var, sub in [("HF_HOME", "hf"), ("MPLCONFIGDIR", "matplotlib"), ("IPYTHONDIR", "ipython"),
                 ("JUPYTER_CONFIG_DIR", "jupyter-config"), ("JUPYTER_DATA_DIR", "jupyter-data"),
                 ("JUPYTER_RUNTIME_DIR", "jupyter-runtime")]:
    os.environ[var] = os.path.join(_cache, sub)

from course_utils.paths import REPO_ROOT  # noqa: E402  (after the environment above is set)

_NOT_THE_TREE = {".git", ".venv"}  # git's own files, and the environment `make setup` installs


def tree_snapshot(root: Path = REPO_ROOT) -> dict[str, tuple[int, int]]:
    """{path: (size, modification time)} of every file under the repository, ignored files included."""
    files = {}
    for folder, subfolders, names in os.walk(root):
        if Path(folder) == root:
            subfolders[:] = [d for d in subfolders if d not in _NOT_THE_TREE]
        for name in names:
            path = Path(folder, name)
            try:
                stat = path.stat()
            except OSError:
                continue
            files[path.relative_to(root).as_posix()] = (stat.st_size, stat.st_mtime_ns)
    return files


def tree_changes(before: dict, after: dict) -> list[str]:
    """The files that appeared or changed between two snapshots, as readable lines."""
    return sorted([f"new: {p}" for p in after.keys() - before.keys()] +
                  [f"changed: {p}" for p in after.keys() & before.keys() if after[p] != before[p]])


def pytest_sessionstart(session):
    session.config._tree_before = tree_snapshot()


def pytest_sessionfinish(session, exitstatus):
    before = getattr(session.config, "_tree_before", None)
    if before is None or hasattr(session.config, "workerinput"):
        return
    changes = tree_changes(before, tree_snapshot())
    if changes:
        shown = "\n  ".join(changes[:40]) + (f"\n  ... and {len(changes) - 40} more" if len(changes) > 40 else "")
        print(f"\nFAILED: the test suite wrote into the repository (tests must write under a temporary folder):"
              f"\n  {shown}", file=sys.stderr)
        session.exitstatus = 1


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """A notebook cell (run by nbval) fails when it printed to stderr anything that tests/allowed_warnings.py does
    not explain."""
    result = yield
    if isinstance(item, IPyNbCell) and item.test_outputs:
        from course_utils.execution import stderr_lines, unexplained
        from tests.allowed_warnings import ALLOWED

        found = unexplained(stderr_lines(item.test_outputs), ALLOWED)
        if found:
            raise AssertionError(f"{item.name} printed to stderr what no entry of tests/allowed_warnings.py explains "
                                 "(fix it, or explain it in the notebook and add it there):\n  " + "\n  ".join(found))
        if Path(item.path).parent.name == "solutions":  # a master's own answers must pass its public tests
            failed = [line for output in item.test_outputs if output.get("name") == "stdout"
                      for line in output.get("text", "").splitlines() if line.startswith("FAIL test_")]
            if failed:
                raise AssertionError(f"{item.name}: the master fails its own public tests:\n  " + "\n  ".join(failed))
    return result
