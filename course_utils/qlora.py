"""QLoRA on either path: unsloth's FastLanguageModel where it imports (CUDA only), transformers + peft +
bitsandbytes everywhere else. One function loads the model for either, so everything after it (data, SFTTrainer,
checkpoints, evaluation) is the same code on a CPU test box and on a Colab T4.

The decisions (which backend, which optimizer, which precision flags) are pure functions of the profile, tested
on a CPU; the GPU-only calls are spelled out here and checked against the libraries' signatures.
"""
from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

from .models import backend_for, load_dtype, load_model, model_source, unsloth_importable
from .profiles import Profile

JOB = "qlora"
# PyTorch's recommended (non-reentrant) activation checkpointing; pass the same to SFTConfig.
CHECKPOINTING_KWARGS = {"use_reentrant": False}


def optimizer_for(profile: Profile) -> str:
    """The Trainer `optim` name. On CUDA, bitsandbytes' paged 8-bit AdamW: its two moment buffers take 1 byte per
    trainable parameter instead of 4, and, allocated in CUDA unified memory, they are paged out to CPU RAM when a
    long batch spikes the GPU's memory instead of crashing with out-of-memory. (bitsandbytes 0.50 pages only tensors
    of 100,000 elements or more and keeps 32-bit states for tensors under 4,096 elements; see
    bitsandbytes/optim/optimizer.py.) On a CPU there is no GPU memory to page to or from (bitsandbytes falls back to
    its unpaged 8-bit AdamW there, with a warning), and the adapter's optimizer state is a few MB: plain PyTorch
    AdamW, the reference."""
    return "paged_adamw_8bit" if profile.device == "cuda" else "adamw_torch"


def precision_flags(profile: Profile) -> dict[str, bool]:
    """The mixed-precision switches for SFTConfig/TrainingArguments, from the profile's dtype (never hard-coded):
    fp16 on a T4 (compute capability 7.5 has no bf16), bf16 from Ampere on, neither on a CPU."""
    return {"fp16": profile.dtype == "float16", "bf16": profile.dtype == "bfloat16", "use_cpu": profile.device == "cpu"}


def unsloth_peft_arguments(lora_config: LoraConfig, gradient_checkpointing: bool = True, seed: int = 0) -> dict:
    """The same hyperparameters as `lora_config`, as keyword arguments of unsloth's FastLanguageModel.get_peft_model
    (model, r, target_modules, lora_alpha, lora_dropout, bias, use_gradient_checkpointing, random_state, use_rslora,
    ...). unsloth's own gradient checkpointing ("unsloth") also offloads activations to CPU RAM."""
    modules = lora_config.target_modules
    return {
        "r": lora_config.r,
        "lora_alpha": lora_config.lora_alpha,
        "lora_dropout": lora_config.lora_dropout,
        "target_modules": sorted(modules) if not isinstance(modules, str) else modules,
        "bias": lora_config.bias,
        "use_rslora": lora_config.use_rslora,
        "use_gradient_checkpointing": "unsloth" if gradient_checkpointing else False,
        "random_state": seed,
    }


def adapters_to_fp32(model) -> int:
    """Put the trainable (LoRA) weights back in fp32; returns how many tensors changed. Call it after building
    the trainer, on either path.

    trl 1.14's SFTTrainer casts the trainable weights of every model that has `is_loaded_in_4bit` or
    `is_loaded_in_8bit` to bf16 when it is built (trl/trainer/sft_trainer.py, "the PEFT adapter weights are converted
    to bf16"): unsloth's 4-bit models carry the same attribute, so its path is cast too. A T4 has no bf16, fp16 mixed
    precision keeps fp32 master weights, and small Adam updates vanish when rounded to bf16's 8-bit mantissa: peft's
    own default, fp32 adapters, is the safe one."""
    changed = 0
    for param in model.parameters():
        if param.requires_grad and param.dtype in (torch.bfloat16, torch.float16):
            param.data = param.data.float()
            changed += 1
    return changed


def load_qlora_model(profile: Profile, lora_config: LoraConfig, gradient_checkpointing: bool = True,
                     verbose: bool = True):
    """(model with LoRA adapters on a 4-bit base, tokenizer, backend), backend being "unsloth" or "transformers".

    transformers path: load_model(profile, "qlora") loads the base in 4-bit NF4 with double quantization
    (models.bnb_config), prepare_model_for_kbit_training casts the few unquantized weights (norms, embeddings) to
    fp32 and turns on gradient checkpointing, and get_peft_model adds `lora_config`'s adapters.
    unsloth path (CUDA, when it imports): FastLanguageModel loads the same model in 4-bit and adds the same adapters
    with its own kernels. The profile decides whether the base is 4-bit (uses_4bit): on the CPU profiles it is."""
    # import unsloth only where the decision would pick it (importing it patches transformers, trl and peft)
    backend = backend_for(profile, JOB, backend_for(profile, JOB, True) == "unsloth" and unsloth_importable())
    if backend == "unsloth":
        from unsloth import FastLanguageModel  # imported here only: the QLoRA job on CUDA

        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=model_source(profile, JOB), max_seq_length=profile.max_seq_length,
            dtype=load_dtype(profile, JOB), load_in_4bit=profile.uses_4bit(JOB))
        model = FastLanguageModel.get_peft_model(model, **unsloth_peft_arguments(lora_config, gradient_checkpointing))
    else:
        model, tokenizer = load_model(profile, JOB, verbose=verbose)
        if profile.uses_4bit(JOB):
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing,
                                                    gradient_checkpointing_kwargs=CHECKPOINTING_KWARGS)
        elif gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=CHECKPOINTING_KWARGS)
            model.enable_input_require_grads()
        model = get_peft_model(model, lora_config)
    if verbose:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        path = ("unsloth's FastLanguageModel" if backend == "unsloth"
                else "transformers + peft + bitsandbytes (prepare_model_for_kbit_training, get_peft_model)")
        print(f"QLoRA model ready via {path}: {trainable:,} trainable parameters")
    return model, tokenizer, backend
