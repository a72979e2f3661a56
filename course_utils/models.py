"""Loading a model for a profile and a job: the bundled tiny model offline, Hub models on GPU profiles.

The decisions (which model, which dtype, 4-bit or not, unsloth or transformers) are pure functions of the
profile and the job, so they are tested on a CPU box; the loading itself is one call to transformers
(or to unsloth's FastLanguageModel where it imports, on CUDA only).
"""
from __future__ import annotations

import importlib.util
import time
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


def unsloth_importable() -> bool:
    """True only where unsloth is installed and a CUDA GPU exists (it refuses to import without an accelerator)."""
    if not torch.cuda.is_available() or importlib.util.find_spec("unsloth") is None:
        return False
    try:
        import unsloth  # noqa: F401
    except Exception:  # unsloth raises plain exceptions of several kinds when it cannot run
        return False
    return True


def backend_for(profile: Profile, job: str, unsloth_ok: bool) -> str:
    """'unsloth' for LoRA/QLoRA on CUDA when it imports, else 'transformers' (the path the tests run)."""
    if unsloth_ok and profile.device == "cuda" and job in ("lora", "qlora") and profile.model_for(job) != TINY:
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
    backend = backend_for(profile, job, unsloth_importable())
    start = time.perf_counter()
    try:
        if backend == "unsloth":
            from unsloth import FastLanguageModel

            model, tokenizer = FastLanguageModel.from_pretrained(
                model_name=source, max_seq_length=profile.max_seq_length, dtype=dtype, load_in_4bit=four_bit
            )
        else:
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
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if verbose:
        params = sum(p.numel() for p in model.parameters())
        quant = "4-bit NF4 + double quantization" if four_bit else str(dtype).removeprefix("torch.")
        name = "bundled tiny model" if profile.model_for(job) == TINY else source
        print(f"Loaded {name} for {job} with {backend}: {params:,} parameters ({quant}) on {profile.device} "
              f"in {time.perf_counter() - start:.2f} s")
    return model, tokenizer
