"""Quantization made visible: NF4, FP4 and int8 on real weight matrices, what double quantization saves, and how
much memory a loaded model really takes.

Everything here calls bitsandbytes itself (its CPU kernels), so the errors and byte counts are those of the library
QLoRA trains with, not of a re-implementation.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

BLOCKSIZE = 64  # QLoRA's block: one scale (absmax) per 64 weights
NESTED_BLOCKSIZE = 256  # double quantization: one fp32 scale per 256 quantized absmax values
METHODS = ("nf4", "fp4", "int8")  # int8: one scale per row, as load_in_8bit (LLM.int8) stores weights


def levels(quant_type: str = "nf4") -> torch.Tensor:
    """The 16 values a 4-bit code can stand for ("nf4" or "fp4"), on the scale [-1, 1], sorted."""
    import bitsandbytes.functional as F

    if quant_type not in ("nf4", "fp4"):
        raise ValueError(f"quant_type must be 'nf4' or 'fp4', not {quant_type!r}")
    return F.get_4bit_type(quant_type, device="cpu").sort().values


# ---------------------------------------------------------------------------------------------- real weight matrices

def _safetensors_files(source: str | Path) -> list[Path]:
    """The safetensors files of a local model folder."""
    files = sorted(Path(source).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors files in {source}: is {str(source)!r} a model folder?")
    return files


_SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def read_tensor(stream, name: str) -> torch.Tensor:
    """One tensor from an open safetensors file, reading only its header and the tensor's own bytes.

    The format is an 8-byte little-endian header length, a JSON header ({name: {dtype, shape, data_offsets}}),
    then the data. `stream` only needs read() and seek(), so it may be a remote file (huggingface_hub's HfFileSystem
    fetches just the byte ranges asked for) instead of a multi-GB download."""
    header_length = int.from_bytes(stream.read(8), "little")
    header = json.loads(stream.read(header_length))
    if name not in header:
        raise KeyError(name)
    entry = header[name]
    if entry["dtype"] not in _SAFETENSORS_DTYPES:
        raise ValueError(f"{name} is stored as {entry['dtype']} (already quantized?); use a model stored in 16 or 32 bits")
    start, end = entry["data_offsets"]
    stream.seek(8 + header_length + start)
    data = bytearray(stream.read(end - start))
    return torch.frombuffer(data, dtype=_SAFETENSORS_DTYPES[entry["dtype"]]).reshape(entry["shape"])


def _hub_shard(repo_id: str, name: str) -> str:
    """The safetensors file of a Hub model that holds `name` (from the small index file, for sharded models)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        index = json.loads(Path(hf_hub_download(repo_id, "model.safetensors.index.json")).read_text())
    except EntryNotFoundError:
        return "model.safetensors"
    return index["weight_map"][name]


def weight_matrix(source: str | Path, name: str = "model.layers.0.mlp.down_proj.weight") -> torch.Tensor:
    """One trained weight matrix of a model, read straight from its safetensors file (no model is built), in fp32.

    From a local folder it reads the files there; from a Hub id it reads only this tensor's bytes over HTTP (tens of
    MB), not the whole checkpoint (6.4 GB for Llama-3.2-3B)."""
    if Path(source).is_dir():
        for path in _safetensors_files(source):
            with open(path, "rb") as stream:
                try:
                    return read_tensor(stream, name).float()
                except KeyError:
                    continue
        raise KeyError(f"no tensor {name!r} in {source}")
    from huggingface_hub import HfFileSystem

    with HfFileSystem().open(f"{source}/{_hub_shard(str(source), name)}", "rb") as stream:
        return read_tensor(stream, name).float()


# ------------------------------------------------------------------------------------------------ quantization error

def round_trip(weights: torch.Tensor, method: str, blocksize: int = BLOCKSIZE) -> torch.Tensor:
    """The weights after quantizing them with bitsandbytes and back: what the model computes with."""
    import bitsandbytes.functional as F

    weights = weights.float().contiguous()
    if method in ("nf4", "fp4"):
        packed, state = F.quantize_4bit(weights, blocksize=blocksize, quant_type=method)
        return F.dequantize_4bit(packed, state)
    if method == "int8":
        codes, row_scales, _ = F.int8_vectorwise_quant(weights)
        return F.int8_vectorwise_dequant(codes, row_scales)
    raise ValueError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")


@dataclass(frozen=True)
class QuantError:
    method: str
    bits: int
    mean_abs_error: float  # mean |w - w_quantized|
    relative_error: float  # ||w - w_quantized|| / ||w|| (Frobenius norms)
    max_abs_error: float


def quantization_error(weights: torch.Tensor, method: str, blocksize: int = BLOCKSIZE) -> QuantError:
    """How far the quantized weights are from the originals."""
    error = round_trip(weights, method, blocksize) - weights.float()
    return QuantError(method, 8 if method == "int8" else 4, error.abs().mean().item(),
                      (error.norm() / weights.float().norm()).item(), error.abs().max().item())


def scaled_by_block(weights: torch.Tensor, blocksize: int = BLOCKSIZE) -> torch.Tensor:
    """Each weight divided by the largest |weight| of its block: the numbers the 4-bit levels are matched to."""
    flat = weights.float().flatten()
    if flat.numel() % blocksize:
        raise ValueError(f"{flat.numel()} weights do not split into blocks of {blocksize}")
    blocks = flat.view(-1, blocksize)
    return (blocks / blocks.abs().amax(dim=1, keepdim=True).clamp_min(1e-12)).flatten()


# ------------------------------------------------------------------------------------------ bytes per parameter

def bytes_per_param_formula(double_quant: bool, blocksize: int = BLOCKSIZE,
                            nested_blocksize: int = NESTED_BLOCKSIZE) -> float:
    """QLoRA's arithmetic: 4 bits per weight, plus one fp32 scale per block, or (double quantization) one 8-bit
    scale per block plus one fp32 scale per `nested_blocksize` blocks."""
    if double_quant:
        return 0.5 + 1 / blocksize + 4 / (blocksize * nested_blocksize)
    return 0.5 + 4 / blocksize


@dataclass(frozen=True)
class StorageCost:
    parameters: int
    packed_bytes: int  # the 4-bit codes, two per byte
    scale_bytes: int  # absmax per block (fp32, or 8-bit with double quantization) + their own scales
    table_bytes: int  # per-tensor constants: the 16 levels, the 256-entry 8-bit code, the offset

    @property
    def total_bytes(self) -> int:
        return self.packed_bytes + self.scale_bytes + self.table_bytes

    @property
    def bytes_per_param(self) -> float:
        return self.total_bytes / self.parameters


def _nbytes(tensor: torch.Tensor | None) -> int:
    return 0 if tensor is None else tensor.numel() * tensor.element_size()


def quant_state_bytes(state) -> tuple[int, int]:
    """(scale bytes, per-tensor table bytes) held in a bitsandbytes QuantState, nested state included."""
    scales, tables = _nbytes(state.absmax), _nbytes(state.code)
    if getattr(state, "state2", None) is not None:
        scales += _nbytes(state.state2.absmax)
        tables += _nbytes(state.state2.code) + 4  # the nested code and the fp32 offset
    return scales, tables


def storage_cost(weights: torch.Tensor, double_quant: bool, quant_type: str = "nf4",
                 blocksize: int = BLOCKSIZE) -> StorageCost:
    """Bytes that bitsandbytes really stores for these weights in 4 bits, counted from its tensors."""
    import bitsandbytes.functional as F

    packed, state = F.quantize_4bit(weights.float().contiguous(), blocksize=blocksize, quant_type=quant_type,
                                    compress_statistics=double_quant)
    scales, tables = quant_state_bytes(state)
    return StorageCost(weights.numel(), _nbytes(packed), scales, tables)


# ------------------------------------------------------------------------------------------ model footprints

def hidden_quantization_bytes(model) -> int:
    """Bytes that model.get_memory_footprint() does not see: the 4-bit scales (QuantState) and the int8 row scales,
    which bitsandbytes keeps as attributes of the weights rather than as parameters or buffers."""
    total = 0
    for param in model.parameters():
        state = getattr(param, "quant_state", None)
        if state is not None:
            total += sum(quant_state_bytes(state))
        total += _nbytes(getattr(param, "SCB", None))
    return total


def true_footprint(model) -> int:
    """get_memory_footprint() plus the quantization scales it leaves out, in bytes."""
    return model.get_memory_footprint() + hidden_quantization_bytes(model)


def weight_bytes(config, variant: str) -> int:
    """The weights' memory computed from a config (a real model's name or a transformers config) for a way of
    loading it (a key of LOAD_VARIANTS), counted as bitsandbytes stores it: the linear layers of the decoder are
    quantized (one scale per 64 weights in 4-bit, one per output row in int8), the embeddings, the norms and the
    output layer stay in fp16. Checked against measure_footprint in the tests."""
    from .memory import architecture

    arch = architecture(config)
    quantized = [(fan_in, fan_out) for _, fan_in, fan_out in arch.quantized_linears]
    q = arch.quantized_parameters
    rest = arch.parameters - q
    if variant in ("fp32", "fp16"):
        return arch.parameters * (4 if variant == "fp32" else 2)
    if variant == "int8":
        return q + 4 * sum(fan_out for _, fan_out in quantized) + 2 * rest
    if variant in ("nf4", "nf4+dq"):
        per_matrix = 0
        for fan_in, fan_out in quantized:
            blocks = -(-fan_in * fan_out // BLOCKSIZE)
            if variant == "nf4":
                per_matrix += 4 * blocks + 64  # fp32 absmax per block, the 16 fp32 levels
            else:  # 8-bit absmax per block, fp32 scale per 256 of them, the 16 levels, the 256-entry code, offset
                per_matrix += blocks + 4 * -(-blocks // NESTED_BLOCKSIZE) + 64 + 1024 + 4
        return q // 2 + per_matrix + 2 * rest
    raise ValueError(f"unknown variant {variant!r}: choose one of {', '.join(LOAD_VARIANTS)}")


def footprint_model_config():
    """The ~60 M-parameter Llama the course measures footprints on: memory.random_llama_config (32k vocabulary,
    8 layers) at width 640, with the output layer sharing the embedding's weights as Llama-3.2 does. Two thirds of
    its weights sit in the linear layers that bitsandbytes quantizes (embeddings and norms stay in 16 bits)."""
    from .memory import random_llama_config

    config = random_llama_config(hidden=640, layers=8, vocab=32000)
    config.tie_word_embeddings = True
    return config


def save_random_model(folder: str | Path, config=None, seed: int = 0) -> Path:
    """Build a randomly initialised model from `config` (default: footprint_model_config()) and save it once in fp32
    safetensors; later calls find it there. Returns the folder."""
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    if not (folder / "model.safetensors").exists():
        torch.manual_seed(seed)
        AutoModelForCausalLM.from_config(config or footprint_model_config()).save_pretrained(folder)
    return folder


# The ways to load one model, as (dtype of the unquantized parts, quantization config keywords or None).
LOAD_VARIANTS = {
    "fp32": (torch.float32, None),
    "fp16": (torch.float16, None),
    "int8": (torch.float16, {"load_in_8bit": True}),
    "nf4": (torch.float16, {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
                            "bnb_4bit_use_double_quant": False, "bnb_4bit_compute_dtype": torch.float16}),
    "nf4+dq": (torch.float16, {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
                               "bnb_4bit_use_double_quant": True, "bnb_4bit_compute_dtype": torch.float16}),
}


@dataclass(frozen=True)
class Footprint:
    variant: str
    parameters: int  # as PyTorch counts them (a 4-bit tensor counts two weights as one uint8 element)
    reported_bytes: int  # model.get_memory_footprint()
    true_bytes: int  # plus the quantization scales it leaves out
    load_seconds: float


def measure_footprint(folder: str | Path, variant: str) -> Footprint:
    """Load the saved model one way (a key of LOAD_VARIANTS) on the CPU and measure what it takes."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from .models import keep_4bit_trainable

    if variant not in LOAD_VARIANTS:
        raise ValueError(f"unknown variant {variant!r}: choose one of {', '.join(LOAD_VARIANTS)}")
    dtype, quant = LOAD_VARIANTS[variant]
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=dtype, device_map="cpu", use_safetensors=True,
        quantization_config=BitsAndBytesConfig(**quant) if quant else None)
    seconds = time.perf_counter() - start
    if quant and quant.get("load_in_4bit"):
        keep_4bit_trainable(model)  # every 4-bit load of the course, even one that is only measured
    result = Footprint(variant, sum(p.numel() for p in model.parameters()), model.get_memory_footprint(),
                       true_footprint(model), seconds)
    del model
    return result


def measure_footprints(folder: str | Path, variants: tuple[str, ...] = tuple(LOAD_VARIANTS)) -> dict[str, Footprint]:
    return {variant: measure_footprint(folder, variant) for variant in variants}


def footprint_ratios(footprints: dict[str, Footprint], measure: str = "true_bytes") -> dict[str, float]:
    """The ratios the course quotes: NF4 / fp32, NF4+DQ / NF4 and int8 / fp32."""
    size = {name: getattr(f, measure) for name, f in footprints.items()}
    return {"nf4 / fp32": size["nf4"] / size["fp32"], "nf4+dq / nf4": size["nf4+dq"] / size["nf4"],
            "int8 / fp32": size["int8"] / size["fp32"]}
