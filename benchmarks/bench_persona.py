"""Benchmark of Exercise 2 (a persona) on the tiny profile: the master notebook run with several seeds.

    python benchmarks/bench_persona.py [--seeds 0 1 2]

Each run executes solutions/exercise_2_persona.ipynb end to end into a temporary output folder, with the line
`SEED = 0` of its set-up cell set to the run's seed (an exercise's parameters cell holds only PROFILE), and records
its wall time, the peak resident memory of its kernel and the figures of its `measures.json`: the mean sentence
length, the noir words per 100 words and the loss on the detective's held-out replies, base -> tuned, with the
detective's own replies as the yardstick. The master reads the results back (benchmarks/results/persona.json,
written with the CPU, its flags, the library versions and the commit) and prints them as a table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import nbformat

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from course_utils.execution import execute_notebook  # noqa: E402
from course_utils.manifest import run_environment, write_results  # noqa: E402

NAME = "exercise_2_persona"
MASTER = REPO_ROOT / "solutions" / f"{NAME}.ipynb"
RESULTS = REPO_ROOT / "benchmarks" / "results" / "persona.json"
SEED_LINE = "SEED = 0"


def with_seed(seed: int, folder: Path) -> Path:
    """A copy of the master whose set-up cell sets SEED = seed."""
    notebook = nbformat.read(MASTER, as_version=4)
    setup = next(cell for cell in notebook.cells if cell.get("id") == "setup")
    if setup.source.count(SEED_LINE) != 1:
        raise ValueError(f"{MASTER.name}: the set-up cell must hold the line {SEED_LINE!r} exactly once")
    setup.source = setup.source.replace(SEED_LINE, f"SEED = {seed}")
    path = folder / MASTER.name
    nbformat.write(notebook, path)
    return path


def persona_run(seed: int) -> dict:
    """One execution of the master: its figures, from the measures.json it wrote."""
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["COURSE_OUTPUT_DIR"] = tmp
        run = execute_notebook(with_seed(seed, Path(tmp)), {"PROFILE": "tiny"})
        figures = json.loads((Path(tmp) / NAME / "measures.json").read_text())
    return {"seconds": run.seconds, "peak_rss_mb": run.peak_rss_mb, **figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    os.environ.setdefault("COURSE_PROFILE", "tiny")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the test suite runs (conftest.py)
    os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp())

    environment = run_environment()  # the commit and machine as the runs start
    runs = []
    for seed in args.seeds:
        runs.append(persona_run(seed))
        print(json.dumps(runs[-1]), flush=True)
    write_results(RESULTS, {"profile": "tiny", "notebook": f"solutions/{NAME}.ipynb", "runs": runs}, environment)

    print("\n| seed | words per sentence base -> tuned (detective) | noir words per 100 base -> tuned (detective) |"
          " loss base -> tuned | notebook (s) |\n|---:|---|---|---|---:|")
    for r in runs:
        print(f"| {r['seed']} | {r['base']['sentence']:.1f} -> {r['tuned']['sentence']:.1f} "
              f"({r['detective']['sentence']:.1f}) | {r['base']['noir']:.2f} -> {r['tuned']['noir']:.2f} "
              f"({r['detective']['noir']:.2f}) | {r['base']['loss']:.3f} -> {r['tuned']['loss']:.3f} | {r['seconds']} |")


if __name__ == "__main__":
    main()
