"""QLoRA against LoRA on one ~60 M-parameter random Llama on the CPU: memory footprints and training step time.

    python benchmarks/bench_qlora.py [--steps 6] [--batch 4] [--seq 128]

Measures, in one run:
- the model's memory loaded as fp32, fp16, int8, NF4 and NF4 + double quantization (get_memory_footprint, and the
  true footprint that adds the quantization scales it misses), and the ratios NF4 / fp32, NF4+DQ / NF4, int8 / fp32;
- the median time of a training step of LoRA (fp32 base) and of QLoRA (NF4 + double quantization base, computing
  in fp32), same LoRA (r=16, seven modules), same random batches, and the ratio QLoRA / LoRA; and the peak memory
  of each during training (RSS, above the process's memory before the model was loaded) and the model's own
  footprint as trained. Each method trains in a fresh
  Python process, so that neither inherits the other's memory (nor the spike of quantizing at load time).
Prints a markdown table and writes benchmarks/results/qlora.json. Run on demand, not by the tests.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from course_utils.manifest import run_environment, write_results  # noqa: E402
from course_utils.memory import LORA_MODULES, count_parameters, measure_peak  # noqa: E402
from course_utils.models import keep_4bit_trainable  # noqa: E402
from course_utils.quantization import (footprint_model_config, footprint_ratios, measure_footprints,  # noqa: E402
                                       save_random_model, true_footprint)

RESULTS = REPO_ROOT / "benchmarks" / "results" / "qlora.json"


def load_for(method: str, folder: Path):
    """The random Llama with LoRA adapters on an fp32 base ("lora") or an NF4 + double quantization base ("qlora")."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if method == "qlora":
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=torch.float32)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, device_map="cpu",
                                                     quantization_config=quant)
        keep_4bit_trainable(model)  # as every 4-bit load of the course (bitsandbytes' avx512_bf16 trap)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    else:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, device_map="cpu")
    torch.manual_seed(0)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=list(LORA_MODULES), task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def step_times(model, steps: int, batch: int, seq: int) -> list[float]:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    model.train()
    times = []
    for _ in range(steps + 1):  # the first step (allocations, optimizer states) is not counted
        ids = torch.randint(0, model.config.vocab_size, (batch, seq), generator=generator)
        start = time.perf_counter()
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return times[1:]


def train_one(method: str, folder: Path, steps: int, batch: int, seq: int) -> dict:
    """In this process: load the model for `method`, train, and measure (the child side of main)."""
    before_load = psutil.Process().memory_info().rss
    model = load_for(method, folder)
    model_mb = round(true_footprint(model) / 1e6, 1)  # as trained: after prepare_model_for_kbit_training and LoRA
    with measure_peak("cpu") as peak:  # reset here, so that the load-time quantization spike is not counted
        times = step_times(model, steps, batch, seq)
    return {"median_step_seconds": round(statistics.median(times), 3), "step_seconds": [round(t, 3) for t in times],
            "model_footprint_mb": model_mb, "peak_above_before_load_mb": round((peak.peak - before_load) / 1e6, 1),
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--train-one", choices=["lora", "qlora"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.train_one:
        print(json.dumps(train_one(options.train_one, Path(options.folder), options.steps, options.batch, options.seq)))
        return
    environment = run_environment()  # the commit and machine as the runs start

    config = footprint_model_config()
    folder = save_random_model(Path(tempfile.mkdtemp()) / "random-llama", config)
    footprints = measure_footprints(folder)

    training = {}
    for method in ("lora", "qlora"):
        command = [sys.executable, __file__, "--train-one", method, "--folder", str(folder), "--steps",
                   str(options.steps), "--batch", str(options.batch), "--seq", str(options.seq)]
        child = subprocess.run(command, capture_output=True, text=True)
        if child.returncode != 0:
            raise RuntimeError(f"training {method} failed:\n{child.stderr[-3000:]}")
        training[method] = json.loads(child.stdout.strip().splitlines()[-1])

    results = {
        "model": {"parameters": count_parameters(config), "hidden_size": config.hidden_size,
                  "layers": config.num_hidden_layers, "vocab_size": config.vocab_size, "random_init": True},
        "footprints_mb": {name: {"get_memory_footprint": round(f.reported_bytes / 1e6, 2),
                                 "true": round(f.true_bytes / 1e6, 2), "load_seconds": round(f.load_seconds, 2)}
                          for name, f in footprints.items()},
        "ratios_true": {k: round(v, 4) for k, v in footprint_ratios(footprints).items()},
        "ratios_get_memory_footprint": {k: round(v, 4)
                                        for k, v in footprint_ratios(footprints, "reported_bytes").items()},
        "training": {"batch": options.batch, "seq_len": options.seq, "steps_measured": options.steps,
                     "lora_r": 16, "modules": list(LORA_MODULES), **training,
                     "qlora_over_lora_step_time": round(training["qlora"]["median_step_seconds"]
                                                        / training["lora"]["median_step_seconds"], 3)},
        "torch_threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    write_results(RESULTS, results, environment)

    print(f"Random Llama, {results['model']['parameters']:,} parameters, on the CPU\n")
    print("| loaded as | get_memory_footprint (MB) | true footprint (MB) | of fp32 |")
    print("|---|---:|---:|---:|")
    for name, f in footprints.items():
        print(f"| {name} | {f.reported_bytes / 1e6:.1f} | {f.true_bytes / 1e6:.1f} | "
              f"{f.true_bytes / footprints['fp32'].true_bytes:.1%} |")
    print("\n| ratio | true footprint | get_memory_footprint |\n|---|---:|---:|")
    for key, value in results["ratios_true"].items():
        print(f"| {key} | {value:.3f} | {results['ratios_get_memory_footprint'][key]:.3f} |")
    t = results["training"]
    print(f"\n| training (batch {t['batch']} x {t['seq_len']}, LoRA r=16 on 7 modules) | median step (s) | "
          "model as trained (MB) | peak RSS while training (MB) |\n|---|---:|---:|---:|")
    for method in ("lora", "qlora"):
        m = t[method]
        print(f"| {method} | {m['median_step_seconds']:.3f} | {m['model_footprint_mb']:.0f} | "
              f"{m['peak_above_before_load_mb']:.0f} |")
    print(f"\nQLoRA step time / LoRA step time: {t['qlora_over_lora_step_time']:.2f}")
    print(f"written to {RESULTS.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
