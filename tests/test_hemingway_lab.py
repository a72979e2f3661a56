"""The style lab's promise on the tiny profile, checked on what notebook 07 itself produced: a short QLoRA on the
author's training chapters moves the model's style towards the author, measurably, for Hemingway and for Poe (the
author on which the 4-bit gradient trap once made the model worse).

The notebook is executed with papermill under seed 1 (the suite's nbval run uses the notebook's seed 0, so a pass
does not hinge on one lucky draw) into a temporary folder; the tests read its manifest.json, compare.html, checkpoint
and adapter: (1) the tuned model's completions of held-out prompts are closer to the author's style than the base
model's, (2) the held-out chapters, never trained on, are at most 0.8 times as surprising (perplexity), (3) the
saved adapter, merged into the unquantized base, writes exactly what base + adapter writes, and the notebook printed
no warning that tests/allowed_warnings.py does not explain.

Also: the plan each profile gets (the chapter's recipe on GPU profiles), and the run manifest (what it records, and
that it refuses to store a token).
"""
import html
import json

import pytest
from peft import PeftModel
from transformers import AutoTokenizer

from allowed_warnings import ALLOWED
from course_utils.checkpoints import run_id
from course_utils.evaluation import generate_completions, inference_mode
from course_utils.execution import execute_notebook, notebook_stderr, unexplained
from course_utils.lab import CHAPTER_PLAN, SEVEN_MODULES, lab_plan
from course_utils.manifest import build_manifest, file_sha256, model_revision, write_manifest
from course_utils.models import load_base_for_merge
from course_utils.paths import REPO_ROOT, TINY_MODEL_DIR
from course_utils.profiles import PROFILES

SEED = 1  # the notebook's own is 0
NOTEBOOK = REPO_ROOT / "notebooks" / "07_hemingway_style_lab.ipynb"
AUTHORS = ["hemingway", "poe"]

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


@pytest.fixture(scope="module", params=AUTHORS)
def lab(request, tmp_path_factory):
    """Notebook 07 executed for one author under seed 1, and what it wrote."""
    author = request.param
    output_dir = tmp_path_factory.mktemp(f"lab-{author}")
    run = execute_notebook(NOTEBOOK, {"AUTHOR": author, "SEED": SEED, "OUTPUT_DIR": str(output_dir)},
                           output_path=output_dir / "07_executed.ipynb")
    adapter_dir = output_dir / f"{author}-lora"
    manifest = json.loads((adapter_dir / "manifest.json").read_text())
    states = sorted(output_dir.glob("checkpoints/*/checkpoint-*/trainer_state.json"))
    return {"author": author, "notebook": run.notebook, "output_dir": output_dir, "adapter_dir": adapter_dir,
            "manifest": manifest, "results": manifest["results"], "trainer_state": json.loads(states[-1].read_text()),
            "page": (output_dir / "compare.html").read_text(encoding="utf-8")}


@needs_tiny_model
def test_training_ran_the_planned_steps_and_the_loss_fell(lab):
    state = lab["trainer_state"]
    assert state["global_step"] == lab_plan(PROFILES["tiny"]).max_steps == lab["manifest"]["hyperparameters"]["steps_trained"]
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5


@needs_tiny_model
def test_the_notebook_trained_the_chapters_lora_with_the_profiles_precision(lab):
    hyper = lab["manifest"]["hyperparameters"]
    assert hyper["lora"] == {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": sorted(SEVEN_MODULES)}
    assert hyper["training"]["fp16"] is False and hyper["training"]["bf16"] is False  # float32 on the CPU
    assert lab["manifest"]["seed"] == SEED and lab["manifest"]["profile"]["name"] == "tiny"
    assert set(lab["manifest"]["machine"]["flags"]) >= {"avx2", "avx512f", "avx512_bf16"}


@needs_tiny_model
def test_tuned_model_writes_closer_to_the_author_than_the_base(lab):
    distance = lab["results"]["style_distance"]
    assert distance["tuned"] < distance["base"], f"{lab['author']}: style distance did not fall: {distance}"


@needs_tiny_model
def test_held_out_chapters_are_at_most_four_fifths_as_surprising(lab):
    perplexity = lab["results"]["held_out_perplexity"]
    assert perplexity["tuned"] <= 0.8 * perplexity["base"], f"{lab['author']}: {perplexity}"


@needs_tiny_model
def test_compare_page_shows_the_manifests_figures_and_the_rights(lab):
    distance, page = lab["results"]["style_distance"], lab["page"]
    assert f"{distance['base']:.2f} → {distance['tuned']:.2f}" in page
    assert html.escape(lab["manifest"]["rights"]) in page and lab["author"] in page.lower()  # the notice, shown whole


@needs_tiny_model
def test_the_notebook_printed_no_unexplained_warning(lab):
    lines = notebook_stderr(lab["notebook"])
    assert not unexplained([line for _, line in lines], ALLOWED), lines


@needs_tiny_model
def test_merged_model_writes_what_base_plus_adapter_writes(lab):
    assert lab["results"]["merged_matches_adapter"] is True  # the notebook's own check
    tokenizer = AutoTokenizer.from_pretrained(lab["adapter_dir"])
    prompts = ["Continue in the author's style:\n\nThe rain fell on the", "Continue in the author's style:\n\nShe"]
    with_adapter = PeftModel.from_pretrained(load_base_for_merge(PROFILES["tiny"]), lab["adapter_dir"])
    expected = generate_completions(with_adapter, tokenizer, prompts, seed=0, max_new_tokens=40, temperature=None)
    again = generate_completions(with_adapter, tokenizer, prompts, seed=3, max_new_tokens=20)
    assert again == generate_completions(with_adapter, tokenizer, prompts, seed=3, max_new_tokens=20)  # same seed
    merged = with_adapter.merge_and_unload()
    assert not isinstance(merged, PeftModel)
    assert generate_completions(merged, tokenizer, prompts, seed=0, max_new_tokens=40, temperature=None) == expected


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
