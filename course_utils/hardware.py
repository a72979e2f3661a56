"""What machine is this? A plain description of the hardware, read once, so that decisions can be pure functions."""
from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass

import psutil
import torch


@dataclass(frozen=True)
class Hardware:
    device: str  # "cpu", "cuda" or "mps"
    ram_gb: float
    cpu_cores: int
    gpu_name: str | None = None
    gpu_memory_gb: float | None = None
    compute_capability: tuple[int, int] | None = None
    on_colab: bool = False

    def describe(self) -> str:
        if self.device == "cuda":
            major, minor = self.compute_capability or (0, 0)
            gpu = f"{self.gpu_name}, {self.gpu_memory_gb:.1f} GB, compute capability {major}.{minor}"
        elif self.device == "mps":
            gpu = "Apple GPU (MPS), memory shared with the CPU"
        else:
            gpu = "no GPU"
        where = "Google Colab" if self.on_colab else "local machine"
        return f"{where}: {gpu}; {self.cpu_cores} CPU cores, {self.ram_gb:.1f} GB RAM"


# The CPU features that change what libraries compute or how fast: bitsandbytes picks its CPU kernels by them
# (avx512_bf16 switched its 4-bit layers to an inference-only kernel: see models.keep_4bit_trainable).
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def cpu_description() -> dict:
    """The CPU this runs on, for every benchmark and manifest: model name, cores, and which of CPU_FLAGS it has
    (read from /proc/cpuinfo on Linux; elsewhere the flags are "unknown")."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())  # the first processor's lines
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    flags = set(fields["flags"].split()) if "flags" in fields else None
    return {"model": name, "machine": platform.machine(), "cores": os.cpu_count() or 1,
            "flags": {f: (f in flags) if flags is not None else "unknown" for f in CPU_FLAGS}}


def on_colab() -> bool:
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


def detect_hardware() -> Hardware:
    """Read the hardware of this machine (the only impure step; everything after it is a pure function)."""
    ram_gb = psutil.virtual_memory().total / 1e9  # GB = 10^9 bytes throughout the course
    cores = os.cpu_count() or 1
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return Hardware(
            device="cuda",
            ram_gb=ram_gb,
            cpu_cores=cores,
            gpu_name=props.name,
            gpu_memory_gb=props.total_memory / 1e9,
            compute_capability=(props.major, props.minor),
            on_colab=on_colab(),
        )
    if torch.backends.mps.is_available():
        return Hardware(device="mps", ram_gb=ram_gb, cpu_cores=cores, on_colab=False)
    return Hardware(device="cpu", ram_gb=ram_gb, cpu_cores=cores, on_colab=on_colab())


def precision_for(hardware: Hardware) -> str:
    """The training dtype: bf16 from compute capability 8.0 (Ampere) on, fp16 on older GPUs (a T4 is 7.5),
    fp32 on CPU and Apple MPS. Never ask torch.cuda.is_bf16_supported(): it says True on a T4, counting emulation."""
    if hardware.device == "cuda":
        return "bfloat16" if (hardware.compute_capability or (0, 0)) >= (8, 0) else "float16"
    return "float32"


# Four machines the course is written for, as plain descriptions (used by notebook 00 and the profile tests).
EXAMPLE_MACHINES = {
    "CPU laptop": Hardware(device="cpu", ram_gb=16.0, cpu_cores=8),
    "Colab free T4": Hardware(device="cuda", ram_gb=12.7, cpu_cores=2, gpu_name="Tesla T4", gpu_memory_gb=15.0,
                              compute_capability=(7, 5), on_colab=True),
    "A100 40 GB": Hardware(device="cuda", ram_gb=85.0, cpu_cores=12, gpu_name="NVIDIA A100-SXM4-40GB",
                           gpu_memory_gb=39.4, compute_capability=(8, 0)),
    "Mac (Apple M2)": Hardware(device="mps", ram_gb=16.0, cpu_cores=8),
}
