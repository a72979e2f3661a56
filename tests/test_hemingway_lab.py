"""The Hemingway lab's promise on the tiny profile: a short LoRA on the author's training chapters moves the model's
style towards the author, measurably.

Correctness, not timing: after training, (1) the tuned model's completions of held-out prompts are closer to
Hemingway's style profile than the base model's (same prompts, seed and sampling), and (2) the held-out chapters,
which it never trained on, are less surprising to it (lower perplexity). The run uses a different seed from the
notebook's, so that a pass does not hinge on one lucky draw. Then: the saved adapter, merged into the unquantized
base, writes exactly what base + adapter writes.
"""
import pytest
import torch
from peft import PeftModel

from course_utils.lab import (generate_completions, lab_plan, lab_prompts, load_base_for_merge, measure,
                              prompt_completion_dataset, style_sft_config, train_style_adapter)
from course_utils.models import load_model
from course_utils.paths import TINY_MODEL_DIR
from course_utils.profiles import get_profile
from course_utils.style_corpus import build_style_corpus
from course_utils.stylometry import author_reference

SEED = 1  # the notebook uses 0

pytestmark = pytest.mark.skipif(not (TINY_MODEL_DIR / "model.safetensors").exists(),
                                reason="the bundled tiny model (data/tiny_model) is missing")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    torch.manual_seed(SEED)
    profile = get_profile("tiny")
    plan = lab_plan(profile)
    corpus = build_style_corpus("hemingway")
    reference = author_reference([p.text for p in corpus.train])
    prompts, _ = lab_prompts(corpus, plan.measure_prompts)
    held_out = [c.text for c in corpus.val_chapters]

    model, tokenizer = load_model(profile, "qlora", verbose=False)
    before = measure(model, tokenizer, prompts, reference, held_out, plan, seed=SEED)
    output_dir = tmp_path_factory.mktemp("lab")
    trainer = train_style_adapter(model, tokenizer, prompt_completion_dataset(corpus.train),
                                  style_sft_config(profile, plan, output_dir / "run", seed=SEED))
    after = measure(trainer.model, tokenizer, prompts, reference, held_out, plan, seed=SEED)
    adapter_dir = output_dir / "adapter"
    trainer.model.save_pretrained(adapter_dir)
    return {"profile": profile, "before": before, "after": after, "trainer": trainer, "tokenizer": tokenizer,
            "prompts": prompts, "adapter_dir": adapter_dir}


def test_training_ran_the_planned_steps_and_the_loss_fell(lab):
    trainer = lab["trainer"]
    assert trainer.state.global_step == lab_plan(lab["profile"]).max_steps
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5


def test_tuned_model_writes_closer_to_the_author_than_the_base(lab):
    before, after = lab["before"]["distance"], lab["after"]["distance"]
    assert after < before, f"style distance to Hemingway did not fall: base {before:.3f}, tuned {after:.3f}"


def test_tuned_model_finds_held_out_chapters_less_surprising(lab):
    before, after = lab["before"]["perplexity"], lab["after"]["perplexity"]
    assert after < before, f"held-out perplexity did not fall: base {before:.2f}, tuned {after:.2f}"


def test_same_seed_gives_same_completions(lab):
    trainer, tokenizer = lab["trainer"], lab["tokenizer"]
    again = generate_completions(trainer.model, tokenizer, lab["prompts"][:2], seed=SEED, max_new_tokens=20)
    twice = generate_completions(trainer.model, tokenizer, lab["prompts"][:2], seed=SEED, max_new_tokens=20)
    assert again == twice


def test_merged_model_writes_what_base_plus_adapter_writes(lab):
    tokenizer, prompt = lab["tokenizer"], lab["prompts"][:2]
    with_adapter = PeftModel.from_pretrained(load_base_for_merge(lab["profile"]), lab["adapter_dir"])
    expected = generate_completions(with_adapter, tokenizer, prompt, seed=0, max_new_tokens=40, temperature=None)
    merged = with_adapter.merge_and_unload()
    assert not isinstance(merged, PeftModel)
    assert generate_completions(merged, tokenizer, prompt, seed=0, max_new_tokens=40, temperature=None) == expected
