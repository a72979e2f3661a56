"""The loader: the bundled tiny model offline, the decisions for GPU profiles, and a clear error offline."""
import re

import pytest
import torch

from course_utils.corpus import gutenberg_books
from course_utils.hardware import EXAMPLE_MACHINES
from course_utils.models import (ModelUnavailableError, backend_for, bnb_config, load_dtype, load_model,
                                 model_source)
from course_utils.paths import TINY_MODEL_DIR
from course_utils.profiles import PROFILES, choose_profile

TINY = PROFILES["tiny"]
T4 = choose_profile(EXAMPLE_MACHINES["Colab free T4"])
A100 = choose_profile(EXAMPLE_MACHINES["A100 40 GB"])


@pytest.fixture(scope="module")
def tiny():
    return load_model(TINY, "inference", verbose=False)


def test_tiny_model_is_small_and_committed_in_safetensors():
    weights = TINY_MODEL_DIR / "model.safetensors"
    assert weights.exists() and weights.stat().st_size < 20e6
    assert not list(TINY_MODEL_DIR.glob("*.bin"))
    assert (TINY_MODEL_DIR / "README.md").exists()


def test_tiny_model_writes_english_looking_text(tiny):
    model, tokenizer = tiny
    vocabulary = set(re.findall(r"[a-z]+", " ".join(gutenberg_books("all").values()).lower()))
    words = []
    for seed, prompt in enumerate(["The house was", "She looked at him and", "In the morning"]):
        torch.manual_seed(seed)
        ids = tokenizer(prompt, return_tensors="pt")
        out = model.generate(**ids, max_new_tokens=50, do_sample=True, temperature=0.8, top_p=0.95)
        words += re.findall(r"[a-z]+", tokenizer.decode(out[0, ids["input_ids"].shape[1]:]).lower())
    assert len(words) >= 60
    real = sum(w in vocabulary for w in words) / len(words)
    assert real >= 0.9, f"only {real:.0%} of generated words are English words"


def test_tiny_tokenizer_has_a_chat_template_that_marks_the_assistant(tiny):
    _, tokenizer = tiny
    chat = [{"role": "user", "content": "Hello there."}, {"role": "assistant", "content": "Good day."}]
    encoded = tokenizer.apply_chat_template(chat, return_dict=True, return_assistant_tokens_mask=True)
    trained = [t for t, keep in zip(encoded["input_ids"], encoded["assistant_masks"]) if keep]
    assert tokenizer.decode(trained) == "Good day.<|im_end|>"


def test_tiny_model_loads_in_4bit_for_qlora_on_cpu():
    import bitsandbytes as bnb

    model, _ = load_model(TINY, "qlora", verbose=False)
    assert isinstance(model.model.layers[0].self_attn.q_proj, bnb.nn.Linear4bit)
    assert model.model.layers[0].self_attn.q_proj.weight.quant_type == "nf4"


def test_load_dtypes():
    assert load_dtype(TINY, "inference") == torch.float32
    assert load_dtype(T4, "lora") == torch.float16
    assert load_dtype(T4, "full") == torch.float32  # fp32 master weights, fp16 autocast
    assert load_dtype(A100, "qlora") == torch.bfloat16


def test_bnb_config_is_nf4_with_double_quant_in_the_profile_precision():
    config = bnb_config(T4)
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype == torch.float16
    assert bnb_config(A100).bnb_4bit_compute_dtype == torch.bfloat16


def test_unsloth_only_for_the_qlora_job_on_cuda():
    assert backend_for(T4, "qlora", unsloth_ok=True) == "unsloth"
    assert backend_for(T4, "lora", unsloth_ok=True) == "transformers"  # notebook 02 hands its model to plain peft
    assert backend_for(T4, "full", unsloth_ok=True) == "transformers"
    assert backend_for(T4, "qlora", unsloth_ok=False) == "transformers"
    assert backend_for(TINY, "qlora", unsloth_ok=True) == "transformers"


def test_hub_model_offline_gives_an_error_that_says_what_to_do():
    with pytest.raises(ModelUnavailableError) as error:
        load_model(PROFILES["cpu-hub"], "inference")
    message = str(error.value)
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in message and "COURSE_PROFILE=tiny" in message
    assert "hf download" in message


def test_model_source_is_the_bundled_folder_for_tiny():
    assert model_source(TINY, "lora") == str(TINY_MODEL_DIR)
    assert model_source(T4, "qlora") == "unsloth/Llama-3.2-3B-Instruct"


@pytest.mark.parametrize("error, reported", [(NotImplementedError("Unsloth cannot find any torch accelerator"), None),
                                             (ImportError("no module named triton"), None),
                                             (RuntimeError("version mismatch"), UserWarning)])
def test_unsloth_that_cannot_import_falls_back_and_says_why(monkeypatch, capsys, error, reported):
    """Where unsloth is installed on a GPU but does not import, the plain path is used and the reason is shown:
    expected reasons (no accelerator, a missing dependency) as a line, anything else as a warning."""
    import builtins
    import importlib.util

    from course_utils import models

    real_import = builtins.__import__

    def failing_import(name, *args, **kwargs):
        if name == "unsloth":
            raise error
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(models.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name == "unsloth" else None)
    monkeypatch.setattr(builtins, "__import__", failing_import)
    if reported:
        with pytest.warns(reported, match="version mismatch"):
            assert models.unsloth_importable() is False
    else:
        assert models.unsloth_importable() is False
        assert type(error).__name__ in capsys.readouterr().out


def test_load_model_never_asks_for_unsloth(monkeypatch):
    """Only load_qlora_model may use unsloth: a FastLanguageModel must never reach plain peft or SFTTrainer."""
    from course_utils import models

    def refuse():
        raise AssertionError("load_model asked whether unsloth imports")

    monkeypatch.setattr(models, "unsloth_importable", refuse)
    model, _ = load_model(TINY, "lora", verbose=False)
    assert type(model).__module__.startswith("transformers.")
