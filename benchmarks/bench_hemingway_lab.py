"""Benchmark of the Hemingway style lab (notebook 07) on the tiny profile.

    python benchmarks/bench_hemingway_lab.py [--no-notebook] [--seeds 0 1 2]

1. The whole lab: runs notebook 07 end to end as `make run` does (into a temporary OUTPUT_DIR) and records
   its wall time, the peak resident memory of its kernel (sampled every 50 ms), and the two style-shift figures its
   run manifest reports: the style distance to the author and the held-out perplexity, base -> tuned.
2. Robustness and the learning rate: trains the tiny plan (40 steps) with several seeds at the plan's learning
   rate, and once at the chapter's 2e-4, and measures both figures each time (notebook 07 cites this comparison).

Results go to benchmarks/results/hemingway_lab.json and are printed as markdown tables.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "benchmarks" / "results" / "hemingway_lab.json"
NOTEBOOK = REPO_ROOT / "notebooks" / "07_hemingway_style_lab.ipynb"
CHAPTER_LEARNING_RATE = 2e-4


def run_lab_notebook(output_dir: Path) -> dict:
    """Execute notebook 07 on the tiny profile: wall time, kernel peak memory and the figures of its manifest."""
    from run_notebooks import run_notebook

    row = run_notebook(NOTEBOOK, {"PROFILE": "tiny", "OUTPUT_DIR": str(output_dir)})
    results = json.loads((output_dir / "hemingway-lora" / "manifest.json").read_text())["results"]
    return {"seconds": row["seconds"], "peak_rss_mb": row["peak_rss_mb"],
            "training_seconds": results["training_seconds"], "style_distance": results["style_distance"],
            "held_out_perplexity": results["held_out_perplexity"],
            "merged_matches_adapter": results["merged_matches_adapter"]}


def train_and_measure(seed: int, learning_rate: float | None = None) -> dict:
    """One lab run in this process (no notebook): base and tuned figures for a seed and a learning rate."""
    from course_utils.lab import TINY_PLAN, lab_run

    learning_rate = learning_rate or TINY_PLAN.learning_rate
    with tempfile.TemporaryDirectory() as tmp:
        run = lab_run(tmp, seed=seed, learning_rate=learning_rate)
    before, after = run["before"], run["after"]
    return {"seed": seed, "learning_rate": learning_rate, "steps": run["trainer"].state.global_step,
            "training_seconds": round(run["training_seconds"], 1),
            "distance_base": round(before["distance"], 3), "distance_tuned": round(after["distance"], 3),
            "perplexity_base": round(before["perplexity"], 2), "perplexity_tuned": round(after["perplexity"], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-notebook", action="store_true", help="skip the whole-notebook run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    os.environ.setdefault("COURSE_PROFILE", "tiny")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp())
    sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "benchmarks")]

    results: dict = {"profile": "tiny", "cpu_cores": os.cpu_count()}
    if not args.no_notebook:
        with tempfile.TemporaryDirectory() as tmp:
            results["notebook"] = run_lab_notebook(Path(tmp))
        print("whole lab:", results["notebook"], flush=True)
    runs = []
    for seed in args.seeds:
        runs.append(train_and_measure(seed))
        print(runs[-1], flush=True)
    runs.append(train_and_measure(args.seeds[0], CHAPTER_LEARNING_RATE))
    print(runs[-1], flush=True)
    results["runs"] = runs

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    if "notebook" in results:
        nb = results["notebook"]
        print("\n| whole lab (notebook 07, tiny) | wall time (s) | training (s) | peak memory (MB) | "
              "style distance base -> tuned | held-out perplexity base -> tuned |\n|---|---:|---:|---:|---|---|")
        print(f"| {NOTEBOOK.name} | {nb['seconds']} | {nb['training_seconds']} | {nb['peak_rss_mb']} | "
              f"{nb['style_distance']['base']:.3f} -> {nb['style_distance']['tuned']:.3f} | "
              f"{nb['held_out_perplexity']['base']:.2f} -> {nb['held_out_perplexity']['tuned']:.2f} |")
    print("\n| seed | learning rate | steps | training (s) | distance base -> tuned | perplexity base -> tuned |\n"
          "|---:|---:|---:|---:|---|---|")
    for r in runs:
        print(f"| {r['seed']} | {r['learning_rate']:g} | {r['steps']} | {r['training_seconds']} | "
              f"{r['distance_base']} -> {r['distance_tuned']} | {r['perplexity_base']} -> {r['perplexity_tuned']} |")


if __name__ == "__main__":
    main()
