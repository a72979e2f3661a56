"""Execute every notebook of the course on the tiny profile; record wall time and peak memory per notebook.

    python benchmarks/run_notebooks.py [notebooks/00_setup.ipynb ...]

Peak memory is the highest resident set size of the notebook's kernel process (and its children), sampled every
50 ms. Run it on an otherwise idle machine: the times are wall-clock. Results go to
benchmarks/results/notebooks.json and are printed as a markdown table.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import nbformat
import psutil
from nbclient import NotebookClient

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "benchmarks" / "results" / "notebooks.json"


def kernel_rss() -> int:
    """Resident memory of this process's children: the notebook's kernel and whatever it started."""
    total = 0
    for child in psutil.Process().children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_notebook(path: Path, parameters: dict | None = None) -> dict:
    """Execute one notebook (with papermill's `parameters` injected, if given): its wall time and peak memory."""
    if parameters:
        from papermill.iorw import load_notebook_node  # papermill's reader: every cell gets its tags list
        from papermill.parameterize import parameterize_notebook

        notebook = parameterize_notebook(load_notebook_node(str(path)), parameters)
    else:
        notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=1800, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], kernel_rss())
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    start = time.perf_counter()
    sampler.start()
    try:
        client.execute()
    finally:
        done.set()
        sampler.join()
    return {"notebook": path.relative_to(REPO_ROOT).as_posix(),
            "seconds": round(time.perf_counter() - start, 1), "peak_rss_mb": round(peak[0] / 1e6)}


def main() -> None:
    os.environ.setdefault("COURSE_PROFILE", "tiny")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp())
    paths = [Path(p).resolve() for p in sys.argv[1:]] or sorted(
        [*REPO_ROOT.glob("notebooks/*.ipynb"), *REPO_ROOT.glob("solutions/*.ipynb")])
    rows = []
    for path in paths:
        row = run_notebook(path)
        print(f"{row['notebook']}: {row['seconds']} s, {row['peak_rss_mb']} MB", flush=True)
        rows.append(row)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"profile": os.environ["COURSE_PROFILE"], "cpu_cores": os.cpu_count(),
                                   "notebooks": rows}, indent=1) + "\n")
    print("\n| notebook | wall time (s) | peak memory (MB) |\n|---|---:|---:|")
    for row in rows:
        print(f"| {row['notebook']} | {row['seconds']} | {row['peak_rss_mb']} |")


if __name__ == "__main__":
    main()
