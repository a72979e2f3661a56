"""Profiles: one decision, made from the hardware, that every notebook follows.

A notebook never asks "am I on a GPU?". It asks for a profile, and the profile says which model to load for
each job, in which dtype, whether in 4-bit, with which batch size, sequence length and number of steps.
Choose one by hand with the environment variable COURSE_PROFILE or the notebook's PROFILE parameter.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from .hardware import Hardware, detect_hardware, precision_for

TINY = "tiny"  # the bundled model in data/tiny_model
JOBS = ("inference", "full", "lora", "qlora")
ENV_VAR = "COURSE_PROFILE"
GPU_CHECK = "tiny-gpu"  # the bundled model on CUDA, chosen by name only (course_utils.gpu_check)


@dataclass(frozen=True)
class Profile:
    name: str
    device: str
    dtype: str  # "float32", "float16" or "bfloat16": the precision that training and inference use
    models: dict[str, str]  # job -> model ("tiny" or a Hub id)
    four_bit_jobs: tuple[str, ...]  # jobs whose base model is loaded in 4-bit NF4
    batch_size: int
    grad_accum: int
    max_seq_length: int
    max_steps: int  # length of the notebooks' short training runs
    needs_network: bool
    about: str
    reasons: tuple[str, ...] = field(default=())
    hardware: Hardware | None = None

    def model_for(self, job: str) -> str:
        if job not in JOBS:
            raise ValueError(f"unknown job {job!r}: choose one of {', '.join(JOBS)}")
        return self.models[job]

    def uses_4bit(self, job: str) -> bool:
        self.model_for(job)  # validates the job name
        return job in self.four_bit_jobs

    def summary(self) -> str:
        """What was chosen and why, for a person to read."""
        lines = [f"Profile '{self.name}': {self.about}"]
        if self.hardware:
            lines.append(f"  hardware : {self.hardware.describe()}")
        lines += [f"  why      : {r}" for r in self.reasons]
        lines.append(f"  device   : {self.device}, precision {self.dtype}")
        for job in JOBS:
            model = "bundled tiny model (data/tiny_model)" if self.models[job] == TINY else self.models[job]
            quant = ", 4-bit NF4" if self.uses_4bit(job) else ""
            lines.append(f"  {job:<9}: {model}{quant}")
        lines.append(f"  training : batch {self.batch_size} x accumulation {self.grad_accum}, "
                     f"sequences of {self.max_seq_length} tokens, {self.max_steps} steps per short run")
        return "\n".join(lines)


_TINY_MODELS = dict.fromkeys(JOBS, TINY)

PROFILES: dict[str, Profile] = {
    p.name: p
    for p in [
        Profile("tiny", "cpu", "float32", _TINY_MODELS, ("qlora",), 8, 1, 128, 30, False,
                "the bundled tiny model on the CPU: offline, seconds per run"),
        Profile("cpu-hub", "cpu", "float32", dict.fromkeys(JOBS, "HuggingFaceTB/SmolLM2-135M-Instruct"), ("qlora",),
                4, 2, 256, 30, True, "a small ungated Hub model on a CPU with internet"),
        Profile("mps", "mps", "float32", dict.fromkeys(JOBS, "HuggingFaceTB/SmolLM2-360M-Instruct"), (),
                4, 2, 256, 60, True, "a Mac's GPU through Apple MPS (bitsandbytes 4-bit is not available there)"),
        Profile("t4", "cuda", "float16",
                {"inference": "unsloth/Llama-3.2-3B-Instruct", "full": "HuggingFaceTB/SmolLM2-360M-Instruct",
                 "lora": "unsloth/Llama-3.2-1B-Instruct", "qlora": "unsloth/Llama-3.2-3B-Instruct"},
                ("qlora",), 2, 4, 1024, 60, True,
                "a 16 GB GPU without bf16 (Colab's free T4): fp16, 4-bit for models over ~1.5 B parameters"),
        Profile("gpu", "cuda", "bfloat16",
                {"inference": "unsloth/Llama-3.2-3B-Instruct", "full": "unsloth/Llama-3.2-1B-Instruct",
                 "lora": "unsloth/Llama-3.2-3B-Instruct", "qlora": "unsloth/Meta-Llama-3.1-8B-Instruct"},
                ("qlora",), 4, 2, 2048, 60, True, "an Ampere or newer GPU (compute capability 8.0+): bf16"),
        # Never chosen by the hardware, only by name: the GPU self-check (course_utils.gpu_check, make gpu-check) runs
        # every notebook offline on CUDA with the bundled model, in the GPU's precision (choose_profile sets the dtype
        # from the compute capability), 4-bit for QLoRA, with the CUDA-only choices (paged 8-bit AdamW, unsloth).
        Profile(GPU_CHECK, "cuda", "float16", _TINY_MODELS, ("qlora",), 8, 1, 128, 30, False,
                "the bundled tiny model on a CUDA GPU, offline: the GPU self-check of every notebook (make gpu-check)"),
    ]
}


def choose_profile(hardware: Hardware, requested: str | None = None) -> Profile:
    """The profile for this hardware (a pure function). `requested` names one by hand."""
    precision = precision_for(hardware)
    if requested:
        if requested not in PROFILES:
            raise ValueError(f"unknown profile {requested!r}: choose one of {', '.join(PROFILES)}")
        profile = PROFILES[requested]
        if profile.device != "cpu" and profile.device != hardware.device:
            raise ValueError(f"profile {requested!r} needs a {profile.device.upper()} device, but this machine has "
                             f"{hardware.describe()}. Use COURSE_PROFILE=tiny (offline) or cpu-hub (online).")
        reasons = [f"asked for by name ({ENV_VAR} or the PROFILE parameter)"]
    elif hardware.device == "cuda":
        major, minor = hardware.compute_capability or (0, 0)
        name = "gpu" if precision == "bfloat16" else "t4"
        profile = PROFILES[name]
        reasons = [f"CUDA GPU with compute capability {major}.{minor}: "
                   + ("8.0 or more, so bf16 is native" if name == "gpu" else "below 8.0, so no native bf16: fp16")]
    elif hardware.device == "mps":
        profile, reasons = PROFILES["mps"], ["Apple GPU found (MPS); fp32, since mixed precision there is not reliable"]
    else:
        profile = PROFILES["tiny"]
        reasons = ["no GPU found: the bundled tiny model runs offline on the CPU "
                   "(set COURSE_PROFILE=cpu-hub to use a small Hub model instead)"]
    if profile.device == "cuda" and precision != profile.dtype:
        # e.g. "t4" asked for on an A100: keep the profile's models, take the precision the hardware supports best
        reasons.append(f"precision {precision} from compute capability {hardware.compute_capability}")
        profile = replace(profile, dtype=precision)
    return replace(profile, reasons=tuple(reasons), hardware=hardware)


def get_profile(requested: str | None = None) -> Profile:
    """The profile for this machine: `requested` (a notebook's PROFILE parameter) wins over the
    COURSE_PROFILE environment variable, which wins over the automatic choice."""
    return choose_profile(detect_hardware(), requested or os.environ.get(ENV_VAR) or None)
