"""Memory arithmetic: exact parameter counts from real configs (on the meta device) and what the weights weigh."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

from .paths import MODEL_CONFIGS_DIR

BYTES_PER_PARAM = {"float32": 4.0, "float16": 2.0, "bfloat16": 2.0, "int8": 1.0, "nf4": 0.5}


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


def count_parameters(config: PretrainedConfig | str) -> int:
    """Exact parameter count of a model built on the meta device (no memory used); tied embeddings count once."""
    if isinstance(config, str):
        config = real_model_config(config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def weights_gb(parameters: int, dtype: str = "float16") -> float:
    """Memory of the weights alone, in GB (10^9 bytes), at a dtype of BYTES_PER_PARAM."""
    return parameters * BYTES_PER_PARAM[dtype] / 1e9
