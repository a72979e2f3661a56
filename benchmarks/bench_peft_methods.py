"""Benchmark of notebook 08: every PEFT method of course_utils.peft_methods on the style task, measured fairly.

    python benchmarks/bench_peft_methods.py [--methods lora dora ...] [--seeds 1 2 3] [--steps 16] [--author hemingway]

1. Sweep: every method is trained at each of its three learning rates (seed 0) for the same step budget, and the rate
   with the lowest perplexity on the *validation* half of the author's held-out chapters is kept. Where that rate lies
   at an end of the rates tried, the next rate beyond it is tried too (twice at most: peft_methods.rate_beyond_edge).
2. Seeds: every method is trained again at its kept rate with three other seeds (1, 2, 3) and measured on the *test*
   half: the author's perplexity (learned), the style distance of completions of test prompts, the perplexity of
   Gutenberg text the base was pre-trained on (forgotten) and of the two books held out of its pre-training, trainable
   parameters, adapter size, seconds per step and peak RAM of training. The base model is measured with the same seeds.

On a shared 2-core machine time is noisy: the runs are interleaved (every method at one rate, or one seed, before
the next), so that a busy moment falls on all methods alike; the load average is recorded at the start and end of
the benchmark and with every run. Results (with the CPU, its flags, the library versions and the commit) go to
benchmarks/results/peft_methods.json, rewritten after every run, and the table is printed as markdown.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from course_utils.manifest import run_environment, write_results  # noqa: E402
from course_utils.paths import TINY_MODEL_DIR  # noqa: E402
from course_utils.peft_methods import (MAX_EXTENSIONS, METHODS, RESULTS, STEPS, best_rates,  # noqa: E402
                                       completion_dataset, load_tiny_base, measure_forgetting_and_learning,
                                       rate_beyond_edge, results_table, run_method, style_task, summarise)


def load() -> float:
    return round(os.getloadavg()[0], 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--author", default="hemingway")
    parser.add_argument("--threads", type=int, default=1, help="PyTorch threads (1: steadier on a shared machine)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)

    environment = run_environment()  # the commit and machine as the runs start
    record = {"profile": "tiny", "author": args.author, "steps": args.steps, "torch_threads": args.threads,
              "load_average": {"start": list(os.getloadavg())}, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "note": "runs interleaved across methods within each rate and each seed; timings share the machine",
              "complete": False}
    task = style_task(args.author)
    tokenizer = AutoTokenizer.from_pretrained(TINY_MODEL_DIR)
    dataset = completion_dataset(tokenizer, task.train_examples)
    record["task"] = task.describe()
    print(task.describe(), flush=True)

    record["base"] = {}
    for seed in args.seeds:
        record["base"][str(seed)] = measure_forgetting_and_learning(load_tiny_base(), tokenizer, task, seed=seed)
    record["sweep"], record["runs"] = [], []

    def save():
        write_results(args.output, record, environment)

    work = Path(tempfile.mkdtemp(prefix="bench-peft-"))
    start = time.perf_counter()
    sweep_jobs = [(name, i) for i in range(3) for name in args.methods]  # rate by rate, every method in turn
    for name, i in tqdm(sweep_jobs, desc="learning-rate sweep"):
        m = METHODS[name]
        run = run_method(m, m.learning_rates[i], 0, task, tokenizer, dataset, work, steps=args.steps, style=False)
        record["sweep"].append({**run, "load": load()})
        save()
    for _ in range(MAX_EXTENSIONS):  # widen the sweep where a best rate lies at its end
        extra = [(name, rate) for name in args.methods if (rate := rate_beyond_edge(record["sweep"], name))]
        for name, rate in tqdm(extra, desc="rates beyond an edge"):
            run = run_method(METHODS[name], rate, 0, task, tokenizer, dataset, work, steps=args.steps, style=False)
            record["sweep"].append({**run, "load": load()})
            save()
    record["best_rates"] = best_rates(record["sweep"])
    seed_jobs = [(name, seed) for seed in args.seeds for name in args.methods]  # seed by seed, every method in turn
    for name, seed in tqdm(seed_jobs, desc="seeds at the best rate"):
        rate = record["best_rates"][name]["learning_rate"]
        run = run_method(METHODS[name], rate, seed, task, tokenizer, dataset, work, steps=args.steps)
        record["runs"].append({**run, "load": load()})
        save()
    base = {k: sum(b[k] for b in record["base"].values()) / len(record["base"]) for k in record["base"][str(args.seeds[0])]}
    record["summary"] = summarise(record["runs"], base)
    record["load_average"]["end"] = list(os.getloadavg())
    record["seconds"] = round(time.perf_counter() - start, 1)
    record["complete"] = True
    save()
    print(json.dumps(record["best_rates"], indent=1))
    print(results_table(record))


if __name__ == "__main__":
    main()
