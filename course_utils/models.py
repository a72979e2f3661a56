"""Loading a model for a profile and a job: the bundled tiny model offline, Hub models on GPU profiles.

The decisions (which model, which dtype, 4-bit or not, unsloth or transformers) are pure functions of the
profile and the job, so they are tested on a CPU box; the loading itself is one call to transformers.
(unsloth's FastLanguageModel is used only by `qlora.load_qlora_model`, on CUDA, where it imports.)
"""
from __future__ import annotations

import importlib.util
import time
import warnings
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

from .paths import TINY_MODEL_DIR
from .profiles import TINY, Profile


class ModelUnavailableError(RuntimeError):
    """A model could not be loaded (e.g. a Hub model while offline); the message says what to do next."""


def model_source(profile: Profile, job: str) -> str:
    """Where the model for this job comes from: the tiny model's folder or a Hub id."""
    model = profile.model_for(job)
    return str(TINY_MODEL_DIR) if model == TINY else model


def load_dtype(profile: Profile, job: str) -> torch.dtype:
    """The dtype the weights are loaded in. Full fine-tuning keeps fp32 master weights and lets mixed precision
    compute in fp16/bf16 (fp16 weights cannot be trained by the fp16 grad scaler); the other jobs load the
    frozen base model directly in the profile's precision."""
    if job == "full":
        return torch.float32
    return getattr(torch, profile.dtype)


def bnb_config(profile: Profile) -> BitsAndBytesConfig:
    """QLoRA's quantization: 4-bit NormalFloat with double quantization, computing in the profile's precision."""
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=getattr(torch, profile.dtype),
    )


def keep_4bit_trainable(model) -> int:
    """Stop bitsandbytes from switching this model's 4-bit layers to an inference-only kernel; returns how many
    `Linear4bit` layers it set. Called on every 4-bit load, before the first forward pass.

    bitsandbytes 0.50, on a CPU with the avx512_bf16 instructions (AMD Zen 4 and later, Intel Xeon since Cooper
    Lake), repacks a `Linear4bit` weight for a fast bf16 kernel the first time the layer runs in eval mode without
    gradients (`Linear4bit.forward`, bitsandbytes/nn/modules.py). The switch is one-way, and that kernel
    (`gemv_4bit`) has no backward: after measuring the base model once, QLoRA would train with its gradient cut at
    every frozen layer, silently. With `support_avx512bf16_for_cpu = False` the layer keeps the kernel that
    trains, and inference and training give the same numbers on every CPU. On a GPU the flag is never read."""
    import bitsandbytes as bnb

    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    packed = [m for m in layers if getattr(m.weight.quant_state, "packing_format_for_cpu", False)]
    if packed:
        raise RuntimeError(f"{len(packed)} 4-bit layers were already repacked for bitsandbytes' CPU inference "
                           "kernel, which cannot train: call keep_4bit_trainable right after loading the model")
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)


def unsloth_importable() -> bool:
    """True only where unsloth is installed and a CUDA GPU exists (it refuses to import without an accelerator).

    An import that fails in the two expected ways (a missing dependency: ImportError; no usable accelerator:
    NotImplementedError) means "not here", and the plain transformers path is used. Any other error is a broken
    install the user should see: it is reported as a warning, with its type and message, before falling back."""
    if not torch.cuda.is_available() or importlib.util.find_spec("unsloth") is None:
        return False
    try:
        import unsloth  # noqa: F401
    except (ImportError, NotImplementedError) as error:
        print(f"unsloth is installed but cannot run here ({type(error).__name__}: {error}); using transformers")
        return False
    except Exception as error:  # reported, not swallowed: the course still runs on the plain path
        warnings.warn(f"importing unsloth failed with {type(error).__name__}: {error}. The plain transformers + peft "
                      "path is used instead; reinstall unsloth (or uninstall it) to fix this", stacklevel=2)
        return False
    return True


def backend_for(profile: Profile, job: str, unsloth_ok: bool) -> str:
    """'unsloth' for the QLoRA job on CUDA when it imports, else 'transformers' (the path the tests run).

    Only `qlora.load_qlora_model` asks: it hands unsloth's model to unsloth's own get_peft_model. `load_model`
    never uses unsloth, so a FastLanguageModel is never given to plain peft or to SFTTrainer(peft_config=...)."""
    if unsloth_ok and profile.device == "cuda" and job == "qlora":  # the bundled model too (make gpu-check)
        return "unsloth"
    return "transformers"


def _unavailable(source: str, error: Exception) -> ModelUnavailableError:
    return ModelUnavailableError(
        f"Could not load the model '{source}': {type(error).__name__}: {str(error).splitlines()[0]}\n"
        "What to do next:\n"
        "  - run offline with the bundled model: set COURSE_PROFILE=tiny (or PROFILE = 'tiny' in the notebook);\n"
        f"  - or connect to the internet, unset HF_HUB_OFFLINE, and download it once: hf download {source}"
    )


def load_model(profile: Profile, job: str = "inference", verbose: bool = True):
    """(model, tokenizer) for this profile and job ("inference", "full", "lora" or "qlora")."""
    source = model_source(profile, job)
    four_bit = profile.uses_4bit(job)
    dtype = load_dtype(profile, job)
    start = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(
            source,
            dtype=dtype,
            quantization_config=bnb_config(profile) if four_bit else None,
            device_map="auto" if profile.device == "cuda" else profile.device,
            trust_remote_code=False,
            use_safetensors=True,
        )
    except (OSError, ValueError) as error:  # transformers raises OSError for "not found" and "offline"
        if Path(source).exists():
            raise
        raise _unavailable(source, error) from error
    if four_bit:
        keep_4bit_trainable(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if verbose:
        params = sum(p.numel() for p in model.parameters())
        quant = "4-bit NF4 + double quantization" if four_bit else str(dtype).removeprefix("torch.")
        name = "bundled tiny model" if profile.model_for(job) == TINY else source
        print(f"Loaded {name} for {job}: {params:,} parameters ({quant}) on {profile.device} "
              f"in {time.perf_counter() - start:.2f} s")
    return model, tokenizer


def load_base_for_merge(profile: Profile, job: str = "qlora"):
    """The job's base model unquantized, in the profile's precision: merging is done into full weights (merging
    into 4-bit weights would round the result back to 4 bits and change the model)."""
    return AutoModelForCausalLM.from_pretrained(
        model_source(profile, job), dtype=load_dtype(profile, job), trust_remote_code=False, use_safetensors=True,
        device_map="auto" if profile.device == "cuda" else profile.device)
