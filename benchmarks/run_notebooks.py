"""Execute every notebook of the course on the tiny profile; record wall time and peak memory per notebook.

    python benchmarks/run_notebooks.py [notebooks/00_setup.ipynb ...]

Peak memory is the highest resident set size of the notebook's kernel process (and its children), sampled every
50 ms. Run it on an otherwise idle machine: the times are wall-clock. Results go to
benchmarks/results/notebooks.json and are printed as a markdown table.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from course_utils.execution import execute_notebook  # noqa: E402
from course_utils.manifest import run_environment, write_results  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results" / "notebooks.json"


def run_notebook(path: Path, parameters: dict | None = None) -> dict:
    """Execute one notebook (with papermill's `parameters` injected, if given): its wall time and peak memory."""
    run = execute_notebook(path, parameters)
    return {"notebook": path.relative_to(REPO_ROOT).as_posix(), "seconds": run.seconds, "peak_rss_mb": run.peak_rss_mb}


def main() -> None:
    os.environ.setdefault("COURSE_PROFILE", "tiny")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp())
    os.environ.setdefault("COURSE_OUTPUT_DIR", tempfile.mkdtemp(prefix="course-benchmark-"))
    environment = run_environment()  # the commit and machine as the runs start
    paths = [Path(p).resolve() for p in sys.argv[1:]] or sorted(
        [*REPO_ROOT.glob("notebooks/*.ipynb"), *REPO_ROOT.glob("solutions/*.ipynb")])
    rows = []
    for path in paths:
        row = run_notebook(path)
        print(f"{row['notebook']}: {row['seconds']} s, {row['peak_rss_mb']} MB", flush=True)
        rows.append(row)
    write_results(RESULTS, {"profile": os.environ["COURSE_PROFILE"], "notebooks": rows}, environment)
    print("\n| notebook | wall time (s) | peak memory (MB) |\n|---|---:|---:|")
    for row in rows:
        print(f"| {row['notebook']} | {row['seconds']} | {row['peak_rss_mb']} |")


if __name__ == "__main__":
    main()
