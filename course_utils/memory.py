"""Memory arithmetic: exact parameter counts, a training-memory estimator, and measured peaks to check it.

- Parameter counts are exact: the model is built from its real config on PyTorch's `meta` device (no memory).
- `estimate_memory` breaks the peak memory of a training step into weights, gradients, optimizer states,
  activations, the cross-entropy's logits buffers and (in 16-bit) the weight copies autocast makes.
  It models decoder-only transformers of the Llama family (Llama, Mistral, Qwen2, SmolLM2, TinyLlama).
- `measure_peak` measures a peak (RSS on the CPU, `torch.cuda.max_memory_allocated` on CUDA), and
  `measure_training_runs` trains a few steps in a fresh Python process and measures them, so that
  the estimator can be checked against reality (tests/test_memory.py, benchmarks/bench_lora_vs_full.py).

Sizes are in bytes; GB means 10^9 bytes throughout the course.
"""
from __future__ import annotations

import ctypes
import gc
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, PretrainedConfig

from .paths import MODEL_CONFIGS_DIR, REPO_ROOT, TINY_MODEL_DIR

BYTES_PER_PARAM = {"float32": 4.0, "float16": 2.0, "bfloat16": 2.0, "int8": 1.0, "nf4": 0.5}
# NF4 with double quantization (bitsandbytes): 4 bits per weight, one 8-bit scale per block of 64 weights,
# and one fp32 scale per block of 256 of those scales (plus one fp32 offset per tensor, negligible).
NF4_DOUBLE_QUANT_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)

METHODS = ("full", "lora", "qlora")
DTYPES = ("float32", "float16", "bfloat16")
# Bytes of optimizer state per trainable parameter: AdamW keeps two fp32 moments (m and v); the 8-bit
# AdamW of bitsandbytes keeps them in 8 bits (the paged variant too, in memory that can spill to CPU RAM);
# plain SGD without momentum keeps nothing.
ESTIMATE_TOLERANCE = 0.25  # the tests hold estimate_memory within ±25 % of a measured peak (tests/test_memory.py)
OPTIMIZER_BYTES = {"adamw": 8.0, "adamw_8bit": 2.0, "paged_adamw_8bit": 2.0, "sgd": 0.0}
LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# Ungated Hub models (with configs in data/model_configs) that a student can download without a licence
# approval, smallest first; unsloth's mirror of Llama-3.2-1B-Instruct has Meta's config.
UNGATED_CANDIDATES = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "HuggingFaceTB/SmolLM2-360M-Instruct": "HuggingFaceTB/SmolLM2-360M-Instruct",
    "Qwen/Qwen2.5-0.5B-Instruct": "Qwen/Qwen2.5-0.5B-Instruct",
    "TinyLlama/TinyLlama-1.1B-Chat-v1.0": "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
    "unsloth/Llama-3.2-1B-Instruct": "meta-llama/Llama-3.2-1B-Instruct",
    "Qwen/Qwen2.5-1.5B-Instruct": "Qwen/Qwen2.5-1.5B-Instruct",
    "HuggingFaceTB/SmolLM2-1.7B-Instruct": "HuggingFaceTB/SmolLM2-1.7B-Instruct",
}


# --------------------------------------------------------------------------------------------------
# Real configs and exact parameter counts
# --------------------------------------------------------------------------------------------------

def real_model_config(name: str) -> PretrainedConfig:
    """The config of a real model from data/model_configs, by Hub id ("meta-llama/Llama-2-7b-hf") or file stem."""
    path = MODEL_CONFIGS_DIR / (name.replace("/", "__") + ".json")
    if not path.exists():
        known = ", ".join(p.stem.replace("__", "/") for p in sorted(MODEL_CONFIGS_DIR.glob("*.json")))
        raise FileNotFoundError(f"no config for {name!r} in {MODEL_CONFIGS_DIR}; known models: {known}")
    data = json.loads(path.read_text())
    data.pop("quantization_config", None)  # count the logical (unquantized) parameters
    return AutoConfig.for_model(data.pop("model_type"), **data)


def real_model_names() -> list[str]:
    return [p.stem.replace("__", "/") for p in sorted(MODEL_CONFIGS_DIR.glob("*.json"))]


def _as_config(config: PretrainedConfig | str) -> PretrainedConfig:
    if isinstance(config, str):
        if config == "tiny":
            return AutoConfig.from_pretrained(TINY_MODEL_DIR)
        if config in UNGATED_CANDIDATES:
            return real_model_config(UNGATED_CANDIDATES[config])
        return real_model_config(config)
    return config


def meta_model(config: PretrainedConfig | str) -> torch.nn.Module:
    """The model built on the `meta` device: every shape is real, no memory is allocated."""
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(_as_config(config))


def count_parameters(config: PretrainedConfig | str) -> int:
    """Exact parameter count of a model built on the meta device (no memory used); tied embeddings count once."""
    if isinstance(config, str):
        return _count_parameters_by_name(config)
    return sum(p.numel() for p in meta_model(config).parameters())


@lru_cache(maxsize=64)
def _count_parameters_by_name(name: str) -> int:
    return sum(p.numel() for p in meta_model(name).parameters())


def weights_gb(parameters: int, dtype: str = "float16") -> float:
    """Memory of the weights alone, in GB (10^9 bytes), at a dtype of BYTES_PER_PARAM."""
    return parameters * BYTES_PER_PARAM[dtype] / 1e9


@dataclass(frozen=True)
class Architecture:
    """What the estimator needs to know about a model, read from its config and its meta-device build."""
    parameters: int
    linears: tuple[tuple[str, int, int], ...]  # (module name, in_features, out_features) of every nn.Linear
    lm_head_parameters: int  # 0 when the output layer shares the embedding's weights
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_dim: int  # key/value width: num_key_value_heads * head_dim
    vocab: int

    @property
    def quantized_linears(self) -> tuple[tuple[str, int, int], ...]:
        """The linear layers bitsandbytes quantizes when the model loads in 4 or 8 bits: all but the output layer."""
        return tuple(linear for linear in self.linears if not linear[0].endswith("lm_head"))

    @property
    def quantized_parameters(self) -> int:
        """How many parameters those layers hold; the rest (embeddings, output layer, norms) stay unquantized."""
        return sum(fan_in * fan_out for _, fan_in, fan_out in self.quantized_linears)


@lru_cache(maxsize=64)
def _architecture(config_json: str) -> Architecture:
    data = json.loads(config_json)
    config = AutoConfig.for_model(data.pop("model_type"), **data)
    needed = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
    missing = [name for name in needed if getattr(config, name, None) is None]
    if missing:
        raise ValueError(f"the estimator models Llama-like decoders; this {config.model_type} config lacks {missing}")
    model = meta_model(config)
    linears = tuple((name, m.in_features, m.out_features) for name, m in model.named_modules()
                    if isinstance(m, torch.nn.Linear))
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is model.get_input_embeddings().weight
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return Architecture(
        parameters=sum(p.numel() for p in model.parameters()),
        linears=linears,
        lm_head_parameters=0 if tied or head is None else head.weight.numel(),
        layers=config.num_hidden_layers,
        hidden=config.hidden_size,
        intermediate=config.intermediate_size,
        heads=heads,
        kv_dim=(getattr(config, "num_key_value_heads", None) or heads) * head_dim,
        vocab=config.vocab_size,
    )


def architecture(config: PretrainedConfig | str) -> Architecture:
    config = _as_config(config)
    data = config.to_dict()
    data.pop("quantization_config", None)
    data["model_type"] = config.model_type
    return _architecture(json.dumps(data, sort_keys=True, default=str))


def _targeted(name: str, modules: tuple[str, ...]) -> bool:
    # peft's rule for a list of names: the module's name is one of them or ends with "." + one of them
    return any(name == m or name.endswith("." + m) for m in modules)


def lora_tensor_sizes(config: PretrainedConfig | str, r: int = 16, modules: tuple[str, ...] = LORA_MODULES) -> list[int]:
    """The number of elements of every LoRA tensor: r * in for each A and out * r for each B, per targeted layer."""
    arch = architecture(config)
    sizes = [r * width for name, fan_in, fan_out in arch.linears if _targeted(name, tuple(modules))
             for width in (fan_in, fan_out)]
    if not sizes:
        raise ValueError(f"none of the modules {list(modules)} is a linear layer of this model")
    return sizes


def lora_parameter_count(config: PretrainedConfig | str, r: int = 16, modules: tuple[str, ...] = LORA_MODULES) -> int:
    """Trainable parameters of LoRA: r * (in + out) for every targeted linear layer (A is r x in, B is out x r)."""
    return sum(lora_tensor_sizes(config, r, modules))


# --------------------------------------------------------------------------------------------------
# The estimator
# --------------------------------------------------------------------------------------------------

COMPONENT_NOTES = {
    "weights": "the parameters themselves",
    "gradients": "one gradient per trainable parameter (fp32)",
    "optimizer states": "what the optimizer keeps per trainable parameter",
    "activations": "tensors the forward pass saves for the backward pass",
    "logits buffers": "cross-entropy over the vocabulary: log-probabilities and two gradients, fp32",
    "weight copies": "16-bit copies of fp32 weights made by autocast, or a dequantized 4-bit layer",
}


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak memory of one training step, by component, in bytes.

    `total` is their sum. That is slightly pessimistic when gradients and activations are both large: the backward
    pass frees activations while it fills gradients, so both are never at their maximum at once.
    """
    method: str
    dtype: str
    optimizer: str
    batch_size: int
    seq_len: int
    gradient_checkpointing: bool
    parameters: int  # of the base model
    trainable_parameters: int
    weights: int
    gradients: int
    optimizer_states: int
    activations: int
    logits_buffers: int
    weight_copies: int
    notes: tuple[str, ...] = field(default=())

    @property
    def components(self) -> dict[str, int]:
        return {"weights": self.weights, "gradients": self.gradients, "optimizer states": self.optimizer_states,
                "activations": self.activations, "logits buffers": self.logits_buffers,
                "weight copies": self.weight_copies}

    @property
    def total(self) -> int:
        return sum(self.components.values())

    def as_gb(self) -> dict[str, float]:
        """The components and the total in GB (10^9 bytes)."""
        return {**{k: v / 1e9 for k, v in self.components.items()}, "total": self.total / 1e9}

    def as_mb(self) -> dict[str, float]:
        return {**{k: v / 1e6 for k, v in self.components.items()}, "total": self.total / 1e6}

    def describe(self) -> str:
        """One line: what was estimated."""
        ckpt = ", gradient checkpointing" if self.gradient_checkpointing else ""
        return (f"{self.method} fine-tuning, {self.dtype}, {self.optimizer}, batch {self.batch_size} x "
                f"{self.seq_len} tokens{ckpt}: {self.trainable_parameters:,} of {self.parameters:,} "
                f"parameters trainable")

    def breakdown(self, unit: str = "auto") -> str:
        """A table a person can read: each component, its size and what it is."""
        if unit == "auto":
            unit = "GB" if self.total >= 1e9 else "MB"
        scale = {"GB": 1e9, "MB": 1e6}[unit]
        lines = [self.describe()]
        for name, size in self.components.items():
            lines.append(f"  {name:<17}{size / scale:>10.2f} {unit}   {COMPONENT_NOTES[name]}")
        lines.append(f"  {'total':<17}{self.total / scale:>10.2f} {unit}")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.breakdown()


def _check_choice(name: str, value: str, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}: choose one of {', '.join(allowed)}")


def _activation_bytes(arch: Architecture, method: str, dtype: str, tokens: int, lora_rank_sum: int,
                      gradient_checkpointing: bool) -> int:
    """Bytes saved for the backward pass by the decoder layers (not the logits).

    Per token and layer, a Llama block saves: the inputs of its two RMSNorms and (when the norm weights train)
    their normalized values, kept in fp32; the normalized outputs that feed the attention and the MLP, the
    query, key and value after RoPE, the attention output (SDPA keeps no seq x seq matrix, only a log-sum-exp
    per head), and four MLP tensors (gate, SiLU(gate), up, their product). LoRA adds the r-wide output of each
    A matrix. With gradient checkpointing only each layer's input is kept, plus one layer recomputed.
    """
    h, kv, i = arch.hidden, arch.kv_dim, arch.intermediate
    compute = BYTES_PER_PARAM[dtype]
    if method == "full":
        fp32_elems, compute_elems, final = 4 * h, 4 * h + 2 * kv + 4 * i, 3 * h
    else:  # frozen norms keep only their fp32 input; each adapted layer's A output is r wide
        fp32_elems, compute_elems, final = 2 * h, 4 * h + 2 * kv + 4 * i, h
    per_layer = tokens * (4 * fp32_elems + compute * compute_elems + 4 * arch.heads)
    per_layer_lora = tokens * compute * lora_rank_sum // max(arch.layers, 1)
    one_layer = per_layer + per_layer_lora
    if gradient_checkpointing:
        # the residual stream is fp32 under autocast (full) and after prepare_model_for_kbit_training (qlora)
        residual = 4 if method != "lora" or dtype == "float32" else compute
        return arch.layers * tokens * h * residual + one_layer + tokens * final * 4
    return arch.layers * one_layer + tokens * final * 4


def estimate_memory(config: PretrainedConfig | str, method: str = "full", dtype: str = "float32",
                    optimizer: str = "adamw", batch_size: int = 1, seq_len: int = 256,
                    gradient_checkpointing: bool = False, lora_r: int = 16,
                    lora_modules: tuple[str, ...] = LORA_MODULES, mixed_precision: bool = True) -> MemoryEstimate:
    """Peak memory of a training step, by component.

    config: a transformers config, or the name of a real model in data/model_configs ("tiny": the bundled model).
    method: "full" (every weight trains), "lora" (frozen base in `dtype`, LoRA matrices in fp32) or "qlora"
      (linear layers in 4-bit NF4 with double quantization; the other frozen weights in fp32, as peft's
      prepare_model_for_kbit_training leaves them; LoRA matrices in fp32).
    dtype: the compute precision. For full fine-tuning in float16/bfloat16 this is mixed precision, as the
      course trains: fp32 master weights, gradients and optimizer states, 16-bit copies of the weights for the
      forward and backward passes (autocast).
    optimizer: "adamw", "adamw_8bit", "paged_adamw_8bit" or "sgd" (without momentum).
    mixed_precision: False for full fine-tuning kept entirely in a 16-bit `dtype` (weights, gradients and AdamW
      states in 16 bits, no fp32 master copy), as some benchmarks train; it loses small updates, so the course
      does not train that way.
    Assumes lora_dropout=0 (peft's default) and SDPA attention. On a GPU, add the CUDA context (~0.3-0.5 GB),
    which max_memory_allocated does not count either.
    """
    _check_choice("method", method, METHODS)
    _check_choice("dtype", dtype, DTYPES)
    _check_choice("optimizer", optimizer, OPTIMIZER_BYTES)
    if batch_size < 1 or seq_len < 1:
        raise ValueError(f"batch_size and seq_len must be positive, got {batch_size} and {seq_len}")
    arch = architecture(config)
    compute = BYTES_PER_PARAM[dtype]
    tokens = batch_size * seq_len
    notes = []
    if method == "full":
        trainable = arch.parameters
        lora_rank_sum = 0
        pure_16_bit = not mixed_precision and dtype != "float32"
        weights = int((compute if pure_16_bit else 4) * arch.parameters)  # fp32 master weights unless pure 16-bit
        linear_params = sum(fan_in * fan_out for _, fan_in, fan_out in arch.linears)
        weight_copies = 0 if dtype == "float32" or pure_16_bit else int(compute * linear_params)
        if pure_16_bit:
            notes.append(f"pure {dtype}: weights, gradients and optimizer states all in {dtype}, no fp32 master copy")
        elif dtype != "float32":
            notes.append("mixed precision: fp32 master weights, gradients and optimizer states; "
                         f"{dtype} copies of the linear weights for the forward and backward passes")
    else:
        modules = tuple(lora_modules)
        trainable = lora_parameter_count(config, lora_r, modules)
        lora_rank_sum = lora_r * sum(1 for name, _, _ in arch.linears if _targeted(name, modules))
        if method == "lora":
            weights = int(compute * arch.parameters) + 4 * trainable
            weight_copies = 0
        else:
            quantized, quantized_params = arch.quantized_linears, arch.quantized_parameters
            weights = (int(NF4_DOUBLE_QUANT_BYTES * quantized_params)
                       + 4 * (arch.parameters - quantized_params) + 4 * trainable)
            weight_copies = int(compute * max(a * b for _, a, b in quantized))  # one layer dequantized at a time
            notes.append(f"{quantized_params:,} linear-layer weights in NF4 ({NF4_DOUBLE_QUANT_BYTES:.4f} bytes "
                         "each with double quantization); embeddings, norms and lm_head in fp32")
        notes.append(f"LoRA r={lora_r} on {', '.join(modules)}: {trainable:,} trainable parameters in fp32")
    state_scale = compute / 4 if method == "full" and not mixed_precision and dtype != "float32" else 1
    gradients = int(4 * state_scale * trainable)
    optimizer_states = int(OPTIMIZER_BYTES[optimizer] * (state_scale if optimizer in ("adamw", "sgd") else 1) * trainable)
    if optimizer == "paged_adamw_8bit":
        notes.append("paged optimizer states can move to CPU RAM when the GPU runs short")
    activations = _activation_bytes(arch, method, dtype, tokens, lora_rank_sum, gradient_checkpointing)
    logits_buffers = 3 * 4 * tokens * arch.vocab
    return MemoryEstimate(method, dtype, optimizer, batch_size, seq_len, gradient_checkpointing, arch.parameters,
                          trainable, weights, gradients, optimizer_states, activations, logits_buffers,
                          weight_copies, tuple(notes))


def longest_sequence(config: PretrainedConfig | str, method: str, memory_gb: float, step: int = 64,
                     limit: int = 131072, **settings) -> int:
    """The longest sequence (a multiple of `step` tokens, at most `limit`) whose estimate fits in `memory_gb`;
    0 if not even `step` tokens fit. `settings` are estimate_memory's (dtype, optimizer, batch_size, ...)."""
    def fits(tokens: int) -> bool:
        return estimate_memory(config, method, seq_len=tokens, **settings).total <= memory_gb * 1e9

    low, high = 0, limit // step  # fits(low * step) holds (0 tokens), search the largest multiple that fits
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle * step):
            low = middle
        else:
            high = middle - 1
    return low * step


def choose_full_finetune_model(memory_gb: float, candidates: dict[str, str] | None = None, dtype: str = "float16",
                               optimizer: str = "adamw", batch_size: int = 2, seq_len: int = 1024,
                               gradient_checkpointing: bool = False, usable_fraction: float = 0.9
                               ) -> tuple[str | None, dict[str, MemoryEstimate]]:
    """The largest candidate whose full fine-tuning estimate fits in `usable_fraction` of `memory_gb`.

    Returns (the chosen Hub id or None, every candidate's estimate). The margin leaves room for the CUDA
    context, allocator fragmentation and the evaluation pass, which the estimate does not count.
    """
    candidates = UNGATED_CANDIDATES if candidates is None else candidates
    estimates = {name: estimate_memory(config, "full", dtype, optimizer, batch_size, seq_len, gradient_checkpointing)
                 for name, config in candidates.items()}
    budget = usable_fraction * memory_gb * 1e9
    fitting = [name for name, e in estimates.items() if e.total <= budget]
    chosen = max(fitting, key=lambda name: estimates[name].parameters, default=None)
    return chosen, estimates


# --------------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------------

def _proc_status_kb(key: str) -> int | None:
    try:
        match = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark of this process's RSS (Linux); False where that is impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _proc_status_kb("VmHWM") is not None


def _current_rss() -> int:
    kb = _proc_status_kb("VmRSS")
    if kb is not None:
        return kb * 1024
    import psutil

    return psutil.Process().memory_info().rss


def release_freed_memory() -> bool:
    """Make glibc give freed tensor memory back to the operating system (Linux only; False elsewhere).

    By default glibc's malloc keeps freed blocks of up to 32 MB in its heap for reuse, so the RSS of a
    PyTorch process creeps up over the first training steps and stays there (20-60 % above what the tensors
    need, measured on the tiny model). Fixing the threshold above which blocks are mapped directly from
    the OS (128 KB, glibc's own starting value) and trimming the heap makes RSS track the live tensors.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD: also switches off glibc's dynamic threshold
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


class PeakSampler:
    """Polls a memory reading (a function returning bytes) in a thread and keeps its maximum, where no peak
    counter exists: `with PeakSampler(read) as sampler: ...`, then `sampler.peak`."""

    def __init__(self, read: Callable[[], int], interval: float = 0.002):
        self.read, self.interval, self.peak = read, interval, read()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.read())
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.read())


@dataclass
class PeakMemory:
    """A measured peak: `above_baseline` is what the measured code added at its worst moment."""
    device: str
    method: str = ""  # how it was measured
    baseline: int = 0
    peak: int = 0

    @property
    def above_baseline(self) -> int:
        return max(0, self.peak - self.baseline)

    def __str__(self) -> str:
        return (f"peak {self.above_baseline / 1e6:,.1f} MB above the baseline of {self.baseline / 1e6:,.1f} MB "
                f"({self.method})")


@contextmanager
def measure_peak(device: str = "cpu") -> Iterator[PeakMemory]:
    """Measure the peak memory of the code in the `with` block, above what was in use when it started.

    cpu: the process's resident set size (RSS), from the kernel's high-water mark on Linux (reset at entry,
    after release_freed_memory()) or by polling elsewhere. cuda: torch.cuda.max_memory_allocated.
    mps: the MPS allocator, polled.
    """
    device = torch.device(device).type
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        result = PeakMemory(device, "torch.cuda.max_memory_allocated", torch.cuda.memory_allocated())
        yield result
        torch.cuda.synchronize()
        result.peak = torch.cuda.max_memory_allocated()
    elif device == "mps":
        read = torch.mps.current_allocated_memory
        result = PeakMemory(device, "MPS allocated memory, polled", read())
        with PeakSampler(read) as sampler:
            yield result
        result.peak = sampler.peak
    elif release_freed_memory() and _reset_peak_rss():
        result = PeakMemory(device, "peak RSS, kernel high-water mark", _current_rss())
        yield result
        result.peak = _proc_status_kb("VmHWM") * 1024
    else:
        result = PeakMemory(device, "RSS, polled", _current_rss())
        with PeakSampler(_current_rss) as sampler:
            yield result
        result.peak = sampler.peak


def process_peak_memory_mb() -> dict[str, float]:
    """The peak memory of this whole process so far (for a run's manifest): resident RAM in MB, from the kernel's
    record (getrusage), and the CUDA memory PyTorch allocated at its peak, if a GPU was used."""
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux, bytes on macOS
    peak = {"ram_peak_mb": round(rss / (1e6 if sys.platform == "darwin" else 1e3), 1)}
    if torch.cuda.is_available():
        peak["cuda_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 1e6, 1)
    return peak


def random_llama_config(hidden: int = 512, layers: int = 8, vocab: int = 32000) -> LlamaConfig:
    """A randomly initialised Llama of about 58 M parameters (default sizes), to check the estimator
    on a model whose shape is closer to a real one than the tiny model (a 32k vocabulary, an untied head)."""
    return LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=3 * hidden, num_hidden_layers=layers,
                       num_attention_heads=max(1, hidden // 64), num_key_value_heads=max(1, hidden // 128),
                       tie_word_embeddings=False, max_position_embeddings=2048)


@dataclass
class TrainingMeasurement:
    peak_bytes: int  # above the baseline (a warmed-up process before the model was built): includes the weights
    seconds_per_step: float  # median over the steps after the first
    parameters: int
    trainable_parameters: int
    method: str
    steps: int


def training_run(model: PretrainedConfig | str, method: str = "full", batch_size: int = 1, seq_len: int = 256,
                 steps: int = 3, optimizer: str = "adamw", gradient_checkpointing: bool = False, lora_r: int = 16,
                 lora_modules: tuple[str, ...] = LORA_MODULES) -> dict:
    """The description of one training run to measure (see measure_training_runs)."""
    _check_choice("method", method, ("full", "lora"))
    _check_choice("optimizer", optimizer, ("adamw", "sgd"))
    if steps < 2:
        raise ValueError("measure at least 2 steps: the optimizer's states exist from the second step on")
    source = model if isinstance(model, str) else {"model_type": model.model_type, **model.to_dict()}
    return dict(model=source, method=method, batch_size=batch_size, seq_len=seq_len, steps=steps, optimizer=optimizer,
                gradient_checkpointing=gradient_checkpointing, lora_r=lora_r, lora_modules=list(lora_modules))


def measure_training_runs(runs: list[dict], threads: int = 1) -> list[TrainingMeasurement]:
    """Train each run (a `training_run(...)`) for a few steps on random tokens, fp32 on the CPU, in one fresh
    Python process, and measure the peak RSS of each, one after the other.

    A fresh process, so that nothing the caller allocated hides in the peak. PyTorch's one-off start-up
    allocations are made by a warm-up step on a throwaway model first; each run's baseline is taken after
    release_freed_memory() and before its model is built, so its peak includes the weights.
    One PyTorch thread by default: threads change the time, not the memory, and on a shared machine a single
    thread is both faster and steadier than several that wait for each other.
    """
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    job = json.dumps({"runs": runs, "threads": threads})
    done = subprocess.run([sys.executable, "-m", "course_utils.memory"], input=job, capture_output=True, text=True,
                          env=env, cwd=REPO_ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"the measuring process failed:\n{done.stderr[-3000:]}")
    return [TrainingMeasurement(**result) for result in json.loads(done.stdout.strip().splitlines()[-1])]


def measure_training(model: PretrainedConfig | str, method: str = "full", batch_size: int = 1, seq_len: int = 256,
                     steps: int = 3, **options) -> TrainingMeasurement:
    """Measure one training run in a fresh process (see measure_training_runs); `model` is "tiny" or a config."""
    return measure_training_runs([training_run(model, method, batch_size, seq_len, steps, **options)])[0]


def _train_steps(model, batch_size: int, seq_len: int, steps: int, optimizer: str) -> list[float]:
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4) if optimizer == "adamw" else torch.optim.SGD(trainable, lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    times = []
    model.train()
    for _ in range(steps):
        ids = torch.randint(0, model.config.vocab_size, (batch_size, seq_len), generator=generator)
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return times


def _measure_one(run: dict) -> TrainingMeasurement:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    with measure_peak("cpu") as peak:
        if run["model"] == "tiny":
            model = AutoModelForCausalLM.from_pretrained(TINY_MODEL_DIR, dtype=torch.float32)
        else:
            data = dict(run["model"])
            model = AutoModelForCausalLM.from_config(AutoConfig.for_model(data.pop("model_type"), **data))
        parameters = sum(p.numel() for p in model.parameters())
        if run["gradient_checkpointing"]:
            model.gradient_checkpointing_enable()
        if run["method"] == "lora":
            model = get_peft_model(model, LoraConfig(r=run["lora_r"], lora_alpha=2 * run["lora_r"],
                                                     target_modules=run["lora_modules"], lora_dropout=0.0))
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        times = _train_steps(model, run["batch_size"], run["seq_len"], run["steps"], run["optimizer"])
        del model
    later = sorted(times[1:])
    return TrainingMeasurement(peak.above_baseline, later[len(later) // 2], parameters, trainable, run["method"],
                               run["steps"])


def _main() -> None:
    """The measuring process of measure_training_runs: JSON runs in, a JSON list of results out."""
    job = json.loads(sys.stdin.read())
    torch.set_num_threads(job["threads"])
    warm_up = AutoModelForCausalLM.from_config(random_llama_config(hidden=64, layers=1, vocab=256))
    _train_steps(warm_up, 2, 16, 2, "adamw")
    del warm_up
    print(json.dumps([asdict(_measure_one(run)) for run in job["runs"]]))


if __name__ == "__main__":
    _main()
