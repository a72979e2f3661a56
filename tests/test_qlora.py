"""QLoRA on either path: the GPU decisions as pure functions, and the CPU path really training a 4-bit base."""
import bitsandbytes as bnb
import pytest
import torch
from peft import LoraConfig

from course_utils.hardware import EXAMPLE_MACHINES
from course_utils.profiles import PROFILES, choose_profile
from course_utils.qlora import (adapters_to_fp32, load_qlora_model, optimizer_for, precision_flags,
                                unsloth_peft_arguments)

TINY = PROFILES["tiny"]
T4 = choose_profile(EXAMPLE_MACHINES["Colab free T4"])
A100 = choose_profile(EXAMPLE_MACHINES["A100 40 GB"])
LORA = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "down_proj"],
                  task_type="CAUSAL_LM")

# The parameters of unsloth's FastLanguageModel.get_peft_model (unsloth/models/llama.py, FastLlamaModel): unsloth
# cannot be imported without a GPU, so its signature is written down here from the source.
UNSLOTH_GET_PEFT_MODEL = {"r", "target_modules", "lora_alpha", "lora_dropout", "bias", "use_gradient_checkpointing",
                          "random_state", "use_rslora", "loftq_config", "modules_to_save"}


def test_paged_8bit_adamw_on_cuda_plain_adamw_on_cpu():
    assert optimizer_for(T4) == "paged_adamw_8bit" and optimizer_for(A100) == "paged_adamw_8bit"
    assert optimizer_for(TINY) == "adamw_torch"


def test_trainer_knows_the_optimizer_names():
    from transformers.training_args import OptimizerNames

    assert {optimizer_for(p) for p in (T4, TINY)} <= {o.value for o in OptimizerNames}


def test_precision_flags_follow_the_profile_never_bf16_on_a_t4():
    assert precision_flags(T4) == {"fp16": True, "bf16": False, "use_cpu": False}
    assert precision_flags(A100) == {"fp16": False, "bf16": True, "use_cpu": False}
    assert precision_flags(TINY) == {"fp16": False, "bf16": False, "use_cpu": True}


def test_unsloth_gets_the_same_hyperparameters_as_the_lora_config():
    arguments = unsloth_peft_arguments(LORA)
    assert set(arguments) <= UNSLOTH_GET_PEFT_MODEL
    assert (arguments["r"], arguments["lora_alpha"], arguments["lora_dropout"]) == (8, 16, 0.0)
    assert arguments["target_modules"] == ["down_proj", "q_proj", "v_proj"]
    assert arguments["use_gradient_checkpointing"] == "unsloth"
    assert unsloth_peft_arguments(LORA, gradient_checkpointing=False)["use_gradient_checkpointing"] is False


def test_cpu_path_trains_only_the_adapters_on_a_4bit_base():
    model, tokenizer, backend = load_qlora_model(TINY, LORA, verbose=False)
    assert backend == "transformers"
    q_proj = model.base_model.model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj.base_layer, bnb.nn.Linear4bit) and q_proj.base_layer.weight.quant_type == "nf4"
    assert q_proj.base_layer.weight.quant_state.nested  # double quantization
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    frozen_before = q_proj.base_layer.weight.clone()

    model.train()
    ids = tokenizer(["The river was clear and fast and cold in the morning."] * 2, return_tensors="pt")["input_ids"]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(2):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert torch.equal(q_proj.base_layer.weight, frozen_before)  # the 4-bit weights never change


def test_adapters_go_back_to_fp32_after_sft_trainer_casts_them_to_bf16(tmp_path):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model, tokenizer, backend = load_qlora_model(TINY, LORA, verbose=False)
    args = SFTConfig(output_dir=str(tmp_path), max_steps=1, report_to="none", **precision_flags(TINY))
    trainer = SFTTrainer(model=model, args=args, processing_class=tokenizer,
                         train_dataset=Dataset.from_dict({"text": ["The river was cold."] * 4}))
    trainable = [p for p in trainer.model.parameters() if p.requires_grad]
    assert {p.dtype for p in trainable} == {torch.bfloat16}  # what trl 1.14 does to a quantized model's adapters
    assert adapters_to_fp32(trainer.model) == len(trainable)
    assert {p.dtype for p in trainable} == {torch.float32}


def test_the_unsloth_path_loads_and_adds_adapters_with_unsloth_alone(monkeypatch):
    """On CUDA with unsloth, FastLanguageModel loads the model and adds the adapters; plain peft never sees it.
    Checked on the CPU with a stand-in for unsloth."""
    import sys
    import types

    from course_utils import qlora

    calls = []

    class FakeFastLanguageModel:
        @staticmethod
        def from_pretrained(**kwargs):
            calls.append(("from_pretrained", kwargs))
            return "unsloth-model", "tokenizer"

        @staticmethod
        def get_peft_model(model, **kwargs):
            calls.append(("get_peft_model", model))
            return "unsloth-peft-model"

    monkeypatch.setitem(sys.modules, "unsloth", types.SimpleNamespace(FastLanguageModel=FakeFastLanguageModel))
    monkeypatch.setattr(qlora, "backend_for", lambda profile, job, ok: "unsloth")
    monkeypatch.setattr(qlora, "unsloth_importable", lambda: True)
    monkeypatch.setattr(qlora, "get_peft_model", lambda *a, **k: pytest.fail("plain peft got unsloth's model"))
    monkeypatch.setattr(qlora, "load_model", lambda *a, **k: pytest.fail("load_model used on the unsloth path"))
    model, tokenizer, backend = qlora.load_qlora_model(TINY, LORA, verbose=False)
    assert (model, backend) == ("unsloth-peft-model", "unsloth")
    assert [name for name, _ in calls] == ["from_pretrained", "get_peft_model"]
    assert calls[0][1]["load_in_4bit"] is True


def test_unsloth_is_not_imported_where_the_decision_would_not_use_it(monkeypatch):
    """Importing unsloth patches transformers, trl and peft: on a CPU profile it must not even be tried."""
    from course_utils import qlora

    monkeypatch.setattr(qlora, "unsloth_importable", lambda: pytest.fail("unsloth was imported on a CPU profile"))
    model, tokenizer, backend = qlora.load_qlora_model(TINY, LORA, verbose=False)
    assert backend == "transformers"
