"""Plumbing of the style lab (notebook 07) shared by the notebook, its test and its benchmark.

The notebook itself shows the lesson (LoraConfig, SFTConfig, SFTTrainer, save_pretrained, merge_and_unload); this
module holds what is the same every time: the plan each profile gets, sampling with a fixed seed, the two
style-shift measurements, loading the unquantized base for merging, and the optional push to the Hub.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from .evaluation import mean_loss, token_ids
from .models import load_dtype, model_source
from .profiles import TINY, Profile, get_profile
from .qlora import CHECKPOINTING_KWARGS, adapters_to_fp32, load_qlora_model, optimizer_for, precision_flags
from .style_corpus import StyleCorpus, build_style_corpus, instruction_examples, prompt_text
from .stylometry import AuthorReference, author_reference, style_profile, text_distance

# The seven projection matrices of every Llama block: attention (q, k, v, o) and the MLP (gate, up, down).
SEVEN_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SEED = 0


@dataclass(frozen=True)
class LabPlan:
    """How long and how hard the lab trains, and how it samples and measures, on one profile."""
    learning_rate: float
    epochs: float
    max_steps: int  # -1: train for `epochs` passes over the data
    gradient_checkpointing: bool
    logging_steps: int
    eval_steps: int  # validation loss every this many steps
    save_steps: int  # a checkpoint every this many steps (to resume after a disconnect)
    max_new_tokens: int
    temperature: float
    top_p: float
    measure_prompts: int  # held-out prompts whose completions the style distance is measured on (5 are shown)
    eval_block: int  # held-out perplexity: blocks of this many tokens ...
    eval_blocks: int  # ... this many of them
    eval_batch: int
    why: str

    def describe(self) -> str:
        length = f"{self.max_steps} steps" if self.max_steps > 0 else f"{self.epochs:g} epochs"
        return (f"learning rate {self.learning_rate:g}, {length}, gradient checkpointing "
                f"{'on' if self.gradient_checkpointing else 'off'}; sampling {self.max_new_tokens} new tokens at "
                f"temperature {self.temperature}, top-p {self.top_p}; style measured on {self.measure_prompts} "
                f"held-out prompts, perplexity on {self.eval_blocks} blocks of {self.eval_block} tokens\n"
                f"  why: {self.why}")


# The chapter's recipe (batch 2 x accumulation 4 comes from the t4 profile itself). Completions are sampled at
# temperature 1.0 (top-p 0.95) for measuring: the style of the model's own distribution. Lower temperatures make any
# model repeat its commonest words, which the type-token ratio and the function words would then count as style.
CHAPTER_PLAN = LabPlan(
    learning_rate=2e-4, epochs=2, max_steps=-1, gradient_checkpointing=True, logging_steps=5, eval_steps=30,
    save_steps=30, max_new_tokens=256, temperature=1.0, top_p=0.95, measure_prompts=20, eval_block=512,
    eval_blocks=40, eval_batch=2, why="the chapter's recipe: learning rate 2e-4 for 2 epochs")
# The tiny model: well under a minute of training on 2 CPU cores. A 2.4 M-parameter model needs a far higher
# learning rate than 2e-4 to move in 40 steps (benchmarks/bench_hemingway_lab.py measures both).
TINY_PLAN = LabPlan(
    learning_rate=2e-3, epochs=1, max_steps=40, gradient_checkpointing=False, logging_steps=2, eval_steps=20,
    save_steps=40, max_new_tokens=120, temperature=1.0, top_p=0.95, measure_prompts=32, eval_block=128,
    eval_blocks=96, eval_batch=16, why="bundled tiny model on the CPU: 40 steps at a learning rate ten times the "
    "chapter's, so that a 2.4 M-parameter model moves in so few steps")


def lab_plan(profile: Profile) -> LabPlan:
    """The tiny plan for the bundled model, the chapter's plan for every real model."""
    return TINY_PLAN if profile.model_for("qlora") == TINY else CHAPTER_PLAN


def run_id(**settings) -> str:
    """A short fingerprint of what defines a training run (data hash, model, plan, seed...): checkpoints are kept
    under it, so a rerun resumes its own checkpoint and never one of a different run."""
    def plain(value):  # sets (e.g. LoraConfig.target_modules) in sorted order: the same in every process
        return sorted(value) if isinstance(value, (set, frozenset)) else str(value)

    text = json.dumps(settings, sort_keys=True, default=plain)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def lab_prompts(corpus: StyleCorpus, n: int) -> tuple[list[str], list[str]]:
    """n prompts from validation passages spread over the held-out chapters, and the author's own continuations.
    The prompt is the instruction form the model was trained on: instruction, blank line, the first 50 words."""
    examples = instruction_examples(corpus.val)
    if len(examples) < n:
        raise ValueError(f"only {len(examples)} validation passages are long enough for a prompt; {n} are needed")
    picked = [examples[round(i * (len(examples) - 1) / max(n - 1, 1))] for i in range(n)]
    return [prompt_text(e["input"], e["instruction"]) for e in picked], [e["output"] for e in picked]


@torch.no_grad()
def generate_completions(model, tokenizer, prompts: list[str], *, seed: int, max_new_tokens: int,
                         temperature: float | None = 1.0, top_p: float = 0.95, batch_size: int = 32) -> list[str]:
    """The completion (new text only) of every prompt. Sampling starts from torch.manual_seed(seed), so two models
    given the same prompts, seed and settings draw from the same random stream; temperature=None means greedy.
    Generation stops at the tokenizer's end-of-text token for every model: SFTTrainer appends that token to each
    completion, and the Trainer under it rewrites the trained model's stop tokens to that one alone (transformers
    5.17), so the base model must stop at the same token for the comparison to be fair."""
    torch.manual_seed(seed)
    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"  # generation continues on the right, so pad on the left
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature else {"do_sample": False}
    completions = []
    try:
        for start in range(0, len(prompts), batch_size):
            batch = tokenizer(prompts[start:start + batch_size], return_tensors="pt", padding=True).to(model.device)
            output = model.generate(**batch, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                    eos_token_id=tokenizer.eos_token_id, **sampling)
            new = output[:, batch["input_ids"].shape[1]:]
            completions += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return completions


def held_out_perplexity(model, tokenizer, texts: list[str], plan: LabPlan) -> float:
    """Perplexity of the author's held-out chapters (the first plan.eval_blocks blocks of plan.eval_block tokens)."""
    ids = token_ids(tokenizer, texts)
    return math.exp(mean_loss(model, ids, block=plan.eval_block, batch=plan.eval_batch, max_blocks=plan.eval_blocks))


def style_distance(completions: list[str], reference: AuthorReference) -> float:
    """Distance from all the completions together (one text) to the author's style."""
    return text_distance("\n\n".join(completions), reference)


@contextmanager
def inference_mode(model, backend: str = "transformers"):
    """Generation and evaluation on an unsloth model need FastLanguageModel.for_inference first, and
    FastLanguageModel.for_training after, before the trainer takes over again. On the transformers path there is
    nothing to switch (generate_completions puts the model in eval mode and back itself)."""
    if backend != "unsloth":
        yield model
        return
    from unsloth import FastLanguageModel

    FastLanguageModel.for_inference(model)
    try:
        yield model
    finally:
        FastLanguageModel.for_training(model)


def measure(model, tokenizer, prompts: list[str], reference: AuthorReference, held_out: list[str], plan: LabPlan,
            seed: int = SEED, backend: str = "transformers") -> dict:
    """Completions of the prompts, their style profile and distance to the author, and held-out perplexity.
    `backend` is load_qlora_model's ("unsloth" or "transformers")."""
    with inference_mode(model, backend):
        completions = generate_completions(model, tokenizer, prompts, seed=seed, max_new_tokens=plan.max_new_tokens,
                                           temperature=plan.temperature, top_p=plan.top_p)
        perplexity = held_out_perplexity(model, tokenizer, held_out, plan)
    text = "\n\n".join(completions)
    return {"completions": completions, "profile": style_profile(text), "distance": text_distance(text, reference),
            "perplexity": perplexity}


def load_base_for_merge(profile: Profile):
    """The lab's base model unquantized, in the profile's precision: merging is done into full weights (merging
    into 4-bit weights would round the result back to 4 bits and change the model)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        model_source(profile, "qlora"), dtype=load_dtype(profile, "qlora"), trust_remote_code=False,
        use_safetensors=True, device_map="auto" if profile.device == "cuda" else profile.device)


def hub_token() -> str | None:
    """The user's Hugging Face token, if they gave one: the HF_TOKEN environment variable, or on Colab the
    notebook secret HF_TOKEN. It is only ever passed to the Hub client: never printed, never saved."""
    token = os.environ.get("HF_TOKEN")
    if token:
        return token
    try:
        from google.colab import userdata  # type: ignore[import-not-found]

        return userdata.get("HF_TOKEN")
    except Exception:  # not on Colab, or no such secret, or access not granted
        return None


def push_adapter(folder, repo_id: str, token: str, private: bool = True) -> str:
    """Upload the adapter folder (with its manifest) to a Hub model repository, private unless told otherwise."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                      commit_message="Style adapter from the course's Hemingway lab")
    return f"https://huggingface.co/{repo_id}"


def style_lora_config():
    """The chapter's LoRA (r=16, alpha=32, the seven projections, no dropout), as notebook 07 spells it out."""
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=32, target_modules=SEVEN_MODULES, lora_dropout=0.0, bias="none",
                      task_type="CAUSAL_LM")


def style_sft_config(profile: Profile, plan: LabPlan, output_dir, seed: int = SEED, **overrides):
    """The training arguments notebook 07 spells out, without evaluation or checkpoints (for tests and benchmarks);
    `overrides` replace any of them (e.g. learning_rate=2e-4)."""
    from trl import SFTConfig

    settings = dict(
        output_dir=str(output_dir), per_device_train_batch_size=profile.batch_size,
        gradient_accumulation_steps=profile.grad_accum, learning_rate=plan.learning_rate,
        num_train_epochs=plan.epochs, max_steps=plan.max_steps, lr_scheduler_type="linear", warmup_steps=5,
        optim=optimizer_for(profile), max_length=profile.max_seq_length, completion_only_loss=True,
        gradient_checkpointing=plan.gradient_checkpointing, gradient_checkpointing_kwargs=CHECKPOINTING_KWARGS,
        logging_steps=plan.logging_steps, save_strategy="no",
        seed=seed, report_to="none", disable_tqdm=True, **precision_flags(profile),
    )
    return SFTConfig(**{**settings, **overrides})


def train_style_adapter(model, tokenizer, train_dataset, sft_config, backend: str = "transformers"):
    """Train the LoRA adapter of `model` (a peft model from qlora.load_qlora_model) with trl's SFTTrainer, as
    notebook 07 does: prompt/completion data (loss on the completion only), the adapter put back in fp32 after
    SFTTrainer casts it to bf16. Returns the trainer; trainer.model is the trained peft model."""
    from trl import SFTTrainer

    trainer = SFTTrainer(model=model, args=sft_config, train_dataset=train_dataset, processing_class=tokenizer)
    adapters_to_fp32(trainer.model, backend)
    trainer.train()
    return trainer


def prompt_completion_dataset(passages):
    """A datasets.Dataset of prompt/completion pairs, one per passage long enough for the instruction form."""
    from datasets import Dataset

    from .style_corpus import to_prompt_completion

    return Dataset.from_list([to_prompt_completion(e) for e in instruction_examples(passages)])


def lab_run(output_dir, seed: int = SEED, **overrides) -> dict:
    """The lab's measure-train-measure loop without the notebook (for the test and the benchmark): the Hemingway
    corpus, the tiny profile's model with the chapter's LoRA, base and tuned measured on the same held-out prompts.
    `overrides` replace training arguments (e.g. learning_rate=2e-4). Returns the pieces the callers check."""
    from transformers import set_seed

    profile = get_profile("tiny")
    plan = lab_plan(profile)
    corpus = build_style_corpus("hemingway")
    reference = author_reference([p.text for p in corpus.train])
    prompts, _ = lab_prompts(corpus, plan.measure_prompts)
    held_out = [c.text for c in corpus.val_chapters]
    set_seed(seed)
    model, tokenizer, backend = load_qlora_model(profile, style_lora_config(),
                                                 gradient_checkpointing=plan.gradient_checkpointing, verbose=False)
    with model.disable_adapter():
        before = measure(model, tokenizer, prompts, reference, held_out, plan, seed=seed, backend=backend)
    start = time.perf_counter()
    trainer = train_style_adapter(model, tokenizer, prompt_completion_dataset(corpus.train),
                                  style_sft_config(profile, plan, output_dir, seed=seed, **overrides), backend)
    training_seconds = time.perf_counter() - start
    after = measure(trainer.model, tokenizer, prompts, reference, held_out, plan, seed=seed, backend=backend)
    return {"profile": profile, "plan": plan, "prompts": prompts, "tokenizer": tokenizer, "trainer": trainer,
            "before": before, "after": after, "training_seconds": training_seconds}
