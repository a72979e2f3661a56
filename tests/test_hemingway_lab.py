"""The Hemingway lab's promise on the tiny profile: a short LoRA on the author's training chapters moves the model's
style towards the author, measurably.

Correctness, not timing: after training, (1) the tuned model's completions of held-out prompts are closer to
Hemingway's style profile than the base model's (same prompts, seed and sampling), and (2) the held-out chapters,
which it never trained on, are less surprising to it (lower perplexity). The run uses a different seed from the
notebook's, so that a pass does not hinge on one lucky draw. Then: the saved adapter, merged into the unquantized
base, writes exactly what base + adapter writes.

Also: the plan each profile gets (the chapter's recipe on GPU profiles), and the run
manifest (what it records, and that it refuses to store a token).
"""
import json

import pytest
from peft import PeftModel

from course_utils.lab import (CHAPTER_PLAN, SEVEN_MODULES, generate_completions, hub_token, inference_mode, lab_plan,
                              lab_run, load_base_for_merge, push_adapter, run_id, style_lora_config, style_sft_config)
from course_utils.manifest import build_manifest, file_sha256, model_revision, write_manifest
from course_utils.paths import TINY_MODEL_DIR
from course_utils.profiles import PROFILES

SEED = 1  # the notebook uses 0

needs_tiny_model = pytest.mark.skipif(not (TINY_MODEL_DIR / "model.safetensors").exists(),
                                      reason="the bundled tiny model (data/tiny_model) is missing")


def test_gpu_profiles_get_the_chapters_recipe():
    t4 = PROFILES["t4"]
    plan = lab_plan(t4)
    assert plan is CHAPTER_PLAN
    assert (t4.batch_size, t4.grad_accum, plan.learning_rate, plan.epochs, plan.max_steps) == (2, 4, 2e-4, 2, -1)
    assert t4.model_for("qlora") == "unsloth/Llama-3.2-3B-Instruct" and t4.uses_4bit("qlora")
    assert lab_plan(PROFILES["gpu"]) is CHAPTER_PLAN


def test_tiny_profile_trains_far_fewer_steps():
    plan = lab_plan(PROFILES["tiny"])
    assert 0 < plan.max_steps <= 60 and plan.learning_rate > CHAPTER_PLAN.learning_rate


def test_lora_is_the_chapters(tmp_path):
    lora = style_lora_config()
    assert (lora.r, lora.lora_alpha, lora.lora_dropout) == (16, 32, 0.0)
    assert set(lora.target_modules) == set(SEVEN_MODULES) and len(SEVEN_MODULES) == 7
    config = style_sft_config(PROFILES["tiny"], lab_plan(PROFILES["tiny"]), tmp_path)
    assert config.completion_only_loss and config.use_cpu and not config.bf16 and not config.fp16


def test_run_id_changes_with_what_defines_the_run():
    assert run_id(data="a", seed=0) == run_id(seed=0, data="a")
    assert run_id(data="a", seed=0) != run_id(data="b", seed=0) != run_id(data="a", seed=1)
    # sets (LoraConfig's target_modules) are hashed in sorted order, the same in every Python process
    assert run_id(modules={"q_proj", "k_proj", "v_proj"}) == run_id(modules=["k_proj", "q_proj", "v_proj"])


def test_manifest_records_the_run_and_refuses_a_token(tmp_path):
    data = tmp_path / "style.jsonl"
    data.write_text('{"text": "x"}\n')
    manifest = build_manifest(profile=PROFILES["tiny"], base_model="tiny", revision="sha256:00", data_file=data,
                              data_sha256=file_sha256(data), seed=0, hyperparameters={"lr": 2e-3}, seconds=1.26,
                              results={"distance": 1.0})
    for key in ("libraries", "profile", "base_model", "data", "seed", "hyperparameters", "seconds", "peak_memory"):
        assert key in manifest
    assert manifest["libraries"]["peft"] and manifest["peak_memory"]["ram_peak_mb"] > 0
    path = write_manifest(manifest, tmp_path / "adapter" / "manifest.json")
    assert json.loads(path.read_text())["data"]["sha256"] == file_sha256(data)
    for secret in ({"hub_token": "abc"}, {"notes": "hf_" + "a" * 30}):
        with pytest.raises(ValueError, match="secret"):
            write_manifest({**manifest, **secret}, tmp_path / "leak.json")
    assert not (tmp_path / "leak.json").exists()


@needs_tiny_model
def test_local_base_model_revision_is_the_hash_of_its_weights():
    class Config:
        _commit_hash = None

    class Model:
        config = Config()

    assert model_revision(Model(), str(TINY_MODEL_DIR)) == "sha256:" + file_sha256(TINY_MODEL_DIR / "model.safetensors")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("lab")
    run = lab_run(output_dir / "run", seed=SEED)
    run["adapter_dir"] = output_dir / "adapter"
    run["trainer"].model.save_pretrained(run["adapter_dir"])
    return run


@needs_tiny_model
def test_training_ran_the_planned_steps_and_the_loss_fell(lab):
    trainer = lab["trainer"]
    assert trainer.state.global_step == lab_plan(lab["profile"]).max_steps
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5


@needs_tiny_model
def test_tuned_model_writes_closer_to_the_author_than_the_base(lab):
    before, after = lab["before"]["distance"], lab["after"]["distance"]
    assert after < before, f"style distance to Hemingway did not fall: base {before:.3f}, tuned {after:.3f}"


@needs_tiny_model
def test_tuned_model_finds_held_out_chapters_less_surprising(lab):
    before, after = lab["before"]["perplexity"], lab["after"]["perplexity"]
    assert after < before, f"held-out perplexity did not fall: base {before:.2f}, tuned {after:.2f}"


@needs_tiny_model
def test_same_seed_gives_same_completions(lab):
    trainer, tokenizer = lab["trainer"], lab["tokenizer"]
    again = generate_completions(trainer.model, tokenizer, lab["prompts"][:2], seed=SEED, max_new_tokens=20)
    twice = generate_completions(trainer.model, tokenizer, lab["prompts"][:2], seed=SEED, max_new_tokens=20)
    assert again == twice


@needs_tiny_model
def test_merged_model_writes_what_base_plus_adapter_writes(lab):
    tokenizer, prompt = lab["tokenizer"], lab["prompts"][:2]
    with_adapter = PeftModel.from_pretrained(load_base_for_merge(lab["profile"]), lab["adapter_dir"])
    expected = generate_completions(with_adapter, tokenizer, prompt, seed=0, max_new_tokens=40, temperature=None)
    merged = with_adapter.merge_and_unload()
    assert not isinstance(merged, PeftModel)
    assert generate_completions(merged, tokenizer, prompt, seed=0, max_new_tokens=40, temperature=None) == expected


class FakeHubApi:
    """Records what push_adapter asks the Hub for, without any network."""
    calls: list = []

    def __init__(self, token=None):
        self.calls.append(("token", token))

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))


def test_push_is_private_unless_told_otherwise(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHubApi)
    FakeHubApi.calls = []
    url = push_adapter(tmp_path, "someone/hemingway-lora", token="hf_fake")
    assert url == "https://huggingface.co/someone/hemingway-lora"
    (_, token), (_, repo, create), (_, upload) = FakeHubApi.calls
    assert token == "hf_fake" and repo == "someone/hemingway-lora" and create["private"] is True
    assert upload["folder_path"] == str(tmp_path) and upload["repo_id"] == "someone/hemingway-lora"
    FakeHubApi.calls = []
    push_adapter(tmp_path, "someone/public-lora", token="hf_fake", private=False)
    assert FakeHubApi.calls[1][2]["private"] is False


def test_hub_token_comes_only_from_the_user(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    assert hub_token() == "hf_from_env"
    monkeypatch.delenv("HF_TOKEN")
    assert hub_token() is None  # not on Colab and no variable: no push


def test_unsloth_models_are_switched_to_inference_and_back_for_measuring(monkeypatch):
    """The GPU path's switch, checked on the CPU with a stand-in for unsloth's FastLanguageModel."""
    import sys
    import types

    calls = []
    fake = types.SimpleNamespace(for_inference=lambda m: calls.append(("inference", m)),
                                 for_training=lambda m: calls.append(("training", m)))
    monkeypatch.setitem(sys.modules, "unsloth", types.SimpleNamespace(FastLanguageModel=fake))
    with inference_mode("model", backend="unsloth"):
        calls.append(("measure", "model"))
    assert calls == [("inference", "model"), ("measure", "model"), ("training", "model")]
    calls.clear()
    with pytest.raises(RuntimeError):
        with inference_mode("model", backend="unsloth"):
            raise RuntimeError("generation failed")
    assert calls[-1] == ("training", "model")  # back in training mode even after an error
    calls.clear()
    with inference_mode("model", backend="transformers"):
        pass
    assert calls == []
