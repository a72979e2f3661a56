"""LoRA against full fine-tuning on the CPU: step time and peak memory, and the memory estimator's error.

    python benchmarks/bench_lora_vs_full.py [--steps 4] [--threads 1]

For the bundled tiny model and a randomly initialised Llama of about 58 M parameters, trains a few fp32 steps of
full fine-tuning and of LoRA (r=16, the seven projections, AdamW), all in one fresh process, and records the
median step time and the peak RSS of each (course_utils.memory.measure_training_runs). Prints a markdown table and
writes benchmarks/results/lora_vs_full.json.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from course_utils.manifest import run_environment, write_results
from course_utils.memory import estimate_memory, measure_training_runs, random_llama_config, training_run

RESULTS = Path(__file__).resolve().parent / "results" / "lora_vs_full.json"
# (label, config for the estimator, what the measuring process builds, batch size, sequence length)
MODELS = [
    ("tiny model", "tiny", "tiny", 8, 128),
    ("random Llama ~58M", random_llama_config(), random_llama_config(), 4, 128),
]
METHODS = ("full", "lora")


def run(steps: int, threads: int) -> dict:
    runs = [training_run(source, method, batch, seq, steps)
            for _, _, source, batch, seq in MODELS for method in METHODS]
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    measurements = iter(measure_training_runs(runs, threads=threads))
    rows = []
    for label, config, _, batch, seq in MODELS:
        for method in METHODS:
            measured = next(measurements)
            estimate = estimate_memory(config, method, "float32", "adamw", batch, seq)
            rows.append({"model": label, "method": method, "parameters": measured.parameters,
                         "trainable": measured.trainable_parameters, "batch": batch, "seq_len": seq,
                         "seconds_per_step": measured.seconds_per_step, "measured_mb": measured.peak_bytes / 1e6,
                         "estimated_mb": estimate.total / 1e6,
                         "estimate_error": estimate.total / measured.peak_bytes - 1})
    ratios = []
    for label, *_ in MODELS:
        full, lora = (next(r for r in rows if r["model"] == label and r["method"] == m) for m in METHODS)
        ratios.append({"model": label, "step_time_lora_over_full": lora["seconds_per_step"] / full["seconds_per_step"],
                       "peak_memory_lora_over_full": lora["measured_mb"] / full["measured_mb"]})
    return {"machine": {"cpus": os.cpu_count(), "torch_threads": threads, "load_average_at_start": load_before,
                        "platform": platform.platform(), "torch": torch.__version__},
            "steps": steps, "wall_seconds": time.perf_counter() - start, "runs": rows, "ratios": ratios}


def markdown(result: dict) -> str:
    lines = ["| model | method | trainable params | batch x seq | s/step | peak MB (measured) | peak MB (estimated) "
             "| estimate error |", "|---|---|---:|---|---:|---:|---:|---:|"]
    for r in result["runs"]:
        lines.append(f"| {r['model']} | {r['method']} | {r['trainable']:,} | {r['batch']} x {r['seq_len']} "
                     f"| {r['seconds_per_step']:.3f} | {r['measured_mb']:.1f} | {r['estimated_mb']:.1f} "
                     f"| {r['estimate_error']:+.1%} |")
    lines += ["", "| model | step time, LoRA / full | peak memory, LoRA / full |", "|---|---:|---:|"]
    for r in result["ratios"]:
        lines.append(f"| {r['model']} | {r['step_time_lora_over_full']:.2f} | {r['peak_memory_lora_over_full']:.2f} |")
    m = result["machine"]
    lines.append(f"\n{m['cpus']} CPUs, {m['torch_threads']} torch thread(s), load average "
                 f"{m['load_average_at_start']:.1f} at start; {result['steps']} steps per run, median of steps 2..n; "
                 "fp32, AdamW, LoRA r=16 on seven modules")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="training steps per run (at least 2)")
    parser.add_argument("--threads", type=int, default=1, help="PyTorch threads in the measuring process")
    options = parser.parse_args()
    environment = run_environment()  # the commit and machine as the runs start
    result = run(options.steps, options.threads)
    write_results(RESULTS, result, environment)
    print(markdown(result))
    print(f"\nwritten to {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}")


if __name__ == "__main__":
    main()
