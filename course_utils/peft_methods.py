"""The PEFT methods of notebook 08, one registry shared by the notebook, its benchmark and its test: each method's
peft config, the optimizer it needs, whether it merges, the learning rates it is swept over; and the style task they
are all trained and measured on, the same for every method.

The notebook spells every config out (LoraConfig(use_dora=True, ...), VeraConfig, IA3Config, PrefixTuningConfig,
PromptTuningConfig, PromptEncoderConfig, create_loraplus_optimizer, ...) and checks that it is the one this registry
builds; the benchmark (benchmarks/bench_peft_methods.py) sweeps and repeats them.
"""
from __future__ import annotations

import json
import math
import shutil
import time
import warnings
from contextlib import contextmanager
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from peft import (IA3Config, LoraConfig, PeftConfig, PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig,
                  PromptTuningInit, VeraConfig, get_peft_model)
from peft.optimizers import create_lorafa_optimizer, create_loraplus_optimizer

from .corpus import gutenberg_books
from .lab import SEVEN_MODULES, TINY_PLAN, LabPlan, held_out_perplexity
from .paths import REPO_ROOT, TINY_MODEL_DIR
from .style_corpus import INSTRUCTION, StyleCorpus, build_style_corpus, held_out_prompts, instruction_examples
from .stylometry import AuthorReference, author_reference

RESULTS = REPO_ROOT / "benchmarks" / "results" / "peft_methods.json"

# The chapter's LoRA (rank 16, alpha 32, all seven projections, no dropout) for every LoRA variant, so that they
# differ only in what makes them a variant; 16 virtual tokens for the soft prompts.
RANK, ALPHA, DROPOUT = 16, 32, 0.0
VIRTUAL_TOKENS = 16
LORAPLUS_RATIO = 16  # LoRA+: B learns 16 times faster than A (the paper's default)
VERA_RANK = 256  # VeRA's shared random matrices are wide (peft's default): only two scaling vectors train per layer
IA3_MODULES = ["k_proj", "v_proj", "down_proj"]  # (IA)^3's choice for Llama: keys, values and the MLP's input
IA3_FEEDFORWARD = ["down_proj"]  # scaled on its input, not its output


def lora_config(**variant) -> LoraConfig:
    """The chapter's LoRA, with a variant's one switch (use_rslora, use_dora, init_lora_weights)."""
    return LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=SEVEN_MODULES, lora_dropout=DROPOUT, bias="none",
                      task_type="CAUSAL_LM", **variant)


# Learning rates swept per family, from the rate known to move the tiny model in a few dozen steps (3e-3 for LoRA,
# training.LEARNING_RATES) upwards, since this budget is shorter still. rsLoRA scales by alpha/sqrt(r) = 8 instead of
# alpha/r = 2, LoRA+ trains B at 16x the rate and PiSSA/OLoRA start from large A and B: they are swept one step
# lower. The vector and soft-prompt methods train far fewer numbers and are swept higher (prompt tuning's paper: 0.3).
LORA_RATES = (3e-3, 1e-2, 3e-2)
LOWER_RATES = (1e-3, 3e-3, 1e-2)
VECTOR_RATES = (1e-2, 3e-2, 1e-1)
PROMPT_RATES = (3e-2, 1e-1, 3e-1)


@dataclass(frozen=True)
class Method:
    """One PEFT method: how to configure it, how it is optimized, whether it merges, which rates it is swept over."""
    name: str
    label: str
    family: str  # "LoRA variant", "scaling vectors" or "soft prompt"
    build_config: Callable[[str], PeftConfig]  # model folder or Hub id -> config (text-initialised prompts need it)
    learning_rates: tuple[float, ...]
    optimizer: str = "adamw"  # "adamw" (the Trainer's), "loraplus" or "lorafa"
    mergeable: bool = True  # merge_and_unload folds it into the weights; soft prompts stay extra tokens
    converts_initialisation: bool = False  # PiSSA/OLoRA change the base weights: saved converted to a plain LoRA
    about: str = ""

    def config(self, model_source: str | Path = TINY_MODEL_DIR) -> PeftConfig:
        return self.build_config(str(model_source))


def _text_prompt(source: str) -> PromptTuningConfig:
    return PromptTuningConfig(num_virtual_tokens=VIRTUAL_TOKENS, prompt_tuning_init=PromptTuningInit.TEXT,
                              prompt_tuning_init_text=INSTRUCTION, tokenizer_name_or_path=source, task_type="CAUSAL_LM")


METHODS: dict[str, Method] = {m.name: m for m in [
    Method("lora", "LoRA", "LoRA variant", lambda s: lora_config(), LORA_RATES,
           about="W + (alpha/r) B A on the seven projections; B starts at zero"),
    Method("rslora", "rsLoRA", "LoRA variant", lambda s: lora_config(use_rslora=True), LOWER_RATES,
           about="LoRA scaled by alpha/sqrt(r) instead of alpha/r, so higher ranks keep learning"),
    Method("dora", "DoRA", "LoRA variant", lambda s: lora_config(use_dora=True), LORA_RATES,
           about="the weight split into magnitude and direction; LoRA updates the direction, a vector the magnitude"),
    Method("loraplus", "LoRA+", "LoRA variant", lambda s: lora_config(), LOWER_RATES, optimizer="loraplus",
           about=f"LoRA with B trained at {LORAPLUS_RATIO}x A's learning rate (create_loraplus_optimizer)"),
    Method("pissa", "PiSSA", "LoRA variant", lambda s: lora_config(init_lora_weights="pissa"), LOWER_RATES,
           converts_initialisation=True,
           about="A and B start from the top singular vectors of W; the base keeps the residual"),
    Method("olora", "OLoRA", "LoRA variant", lambda s: lora_config(init_lora_weights="olora"), LOWER_RATES,
           converts_initialisation=True, about="A and B start from a QR decomposition of W"),
    Method("lorafa", "LoRA-FA", "LoRA variant", lambda s: lora_config(), LORA_RATES, optimizer="lorafa",
           about="A frozen at its random start, only B trains (create_lorafa_optimizer)"),
    Method("vera", "VeRA", "scaling vectors",
           lambda s: VeraConfig(r=VERA_RANK, target_modules=SEVEN_MODULES, vera_dropout=DROPOUT, task_type="CAUSAL_LM"),
           VECTOR_RATES, about="one pair of frozen random matrices shared by all layers; two vectors per layer train"),
    Method("ia3", "IA3", "scaling vectors",
           lambda s: IA3Config(target_modules=IA3_MODULES, feedforward_modules=IA3_FEEDFORWARD, task_type="CAUSAL_LM"),
           VECTOR_RATES, about="learned vectors that rescale keys, values and the MLP's inner activations"),
    Method("prefix", "prefix tuning", "soft prompt",
           lambda s: PrefixTuningConfig(num_virtual_tokens=VIRTUAL_TOKENS, task_type="CAUSAL_LM"), PROMPT_RATES,
           mergeable=False, about=f"{VIRTUAL_TOKENS} trained key/value vectors prepended in every layer"),
    Method("prompt", "prompt tuning (random)", "soft prompt",
           lambda s: PromptTuningConfig(num_virtual_tokens=VIRTUAL_TOKENS, prompt_tuning_init=PromptTuningInit.RANDOM,
                                        task_type="CAUSAL_LM"), PROMPT_RATES,
           mergeable=False, about=f"{VIRTUAL_TOKENS} trained input embeddings, started at random"),
    Method("prompt_text", "prompt tuning (text init)", "soft prompt", _text_prompt, PROMPT_RATES, mergeable=False,
           about=f"the same, started from the embeddings of the instruction {INSTRUCTION!r}"),
    Method("ptuning", "P-tuning", "soft prompt",
           lambda s: PromptEncoderConfig(num_virtual_tokens=VIRTUAL_TOKENS, encoder_hidden_size=128,
                                         task_type="CAUSAL_LM"), PROMPT_RATES,
           mergeable=False, about=f"{VIRTUAL_TOKENS} virtual tokens produced by a small trained MLP encoder"),
]}


def method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown PEFT method {name!r}: choose one of {', '.join(METHODS)}")
    return METHODS[name]


def add_adapter(base, m: Method, model_source: str | Path = TINY_MODEL_DIR):
    """The base wrapped by peft with method m's adapter (get_peft_model)."""
    return get_peft_model(base, m.config(model_source))


def make_optimizer(model, m: Method, learning_rate: float) -> torch.optim.Optimizer | None:
    """LoRA+'s and LoRA-FA's own optimizers (peft.optimizers); None: the Trainer's AdamW."""
    if m.optimizer == "loraplus":
        return create_loraplus_optimizer(model, torch.optim.AdamW, lr=learning_rate, loraplus_lr_ratio=LORAPLUS_RATIO)
    if m.optimizer == "lorafa":  # freezes every lora_A and projects B's gradient
        return create_lorafa_optimizer(model, r=RANK, lora_alpha=ALPHA, lr=learning_rate)
    return None


def trainable_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --------------------------------------------------------------------------------------------------
# Saving: PiSSA and OLoRA converted back to a LoRA on the original base
# --------------------------------------------------------------------------------------------------

INITIAL = "initial_adapter"


@contextmanager
def _converting():
    """peft warns that PiSSA/OLoRA "should not be used with other adapters" whenever a second adapter joins one: the
    initial copy saved for the conversion, and peft's own loading of it while converting. Both are the conversion
    that the warning recommends, so only that message is silenced, and only here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*changes the base weights of the model", category=UserWarning)
        yield


def save_initial_adapter(model, m: Method, folder: str | Path) -> Path | None:
    """For PiSSA/OLoRA, before training: the adapter as it starts (its config marked init_lora_weights=True, as peft
    needs it to convert), under folder/initial_adapter. None for every other method (nothing to convert)."""
    if not m.converts_initialisation:
        return None
    config = model.peft_config["default"]
    start, config.init_lora_weights = config.init_lora_weights, True
    try:
        with _converting():
            model.save_pretrained(Path(folder) / INITIAL)
    finally:
        config.init_lora_weights = start
    return Path(folder) / INITIAL


def save_method_adapter(model, m: Method, folder: str | Path, initial: Path | None = None) -> Path:
    """Save the trained adapter into folder/adapter. PiSSA/OLoRA are converted with
    path_initial_model_for_weight_conversion: the saved adapter (rank 2r) then loads on the original base."""
    target = Path(folder) / "adapter"
    if m.converts_initialisation:
        if initial is None:
            raise ValueError(f"{m.label} changes the base weights: save its initial adapter before training "
                             "(save_initial_adapter) and pass it here")
        with _converting():
            model.save_pretrained(target, path_initial_model_for_weight_conversion=str(initial))
    else:
        model.save_pretrained(target)
    return target


def folder_mb(folder: str | Path) -> float:
    """The size of the adapter's weight files in MB."""
    return sum(p.stat().st_size for p in Path(folder).glob("*.safetensors")) / 1e6


# --------------------------------------------------------------------------------------------------
# The task: notebook 07's style task, with the held-out chapters split into validation and test
# --------------------------------------------------------------------------------------------------

# Measuring all methods many times needs a lighter plan than the lab's: fewer blocks and prompts, shorter samples.
METHODS_PLAN = replace(TINY_PLAN, measure_prompts=16, max_new_tokens=64, eval_blocks=16, eval_batch=16,
                       why="notebook 08: thirteen methods, three seeds and a sweep; half the lab's prompts, shorter "
                           "samples, 16 blocks of 128 tokens per perplexity")
STEPS, BATCH, MAX_LENGTH = 16, 8, 128  # the same step budget for every method: 16 steps of 8 examples
EVAL_CHARS = 9_000  # each perplexity is measured on about this much text (~2,300 tokens), drawn from all its sources


@dataclass
class StyleTask:
    """What every method is trained and measured on (one author)."""
    corpus: StyleCorpus
    train_examples: list[dict]  # prompt/completion pairs of the training chapters
    validation_texts: list[str]  # half the held-out chapters: the learning rate is chosen on them
    test_texts: list[str]  # the other half: what is reported
    prompts: list[str]  # prompts from the test chapters (style distance)
    reference: AuthorReference
    seen_texts: list[str]  # Gutenberg text the base was pre-trained on (forgetting)
    unseen_texts: list[str]  # the two Gutenberg books held out of its pre-training
    plan: LabPlan = METHODS_PLAN

    def describe(self) -> str:
        return (f"{self.corpus.author}: {len(self.train_examples)} training examples; held-out chapters split into "
                f"{len(self.validation_texts)} for validation (choosing the rate) and {len(self.test_texts)} for test; "
                f"{len(self.prompts)} test prompts; forgetting on passages of {len(self.seen_texts)} pre-training "
                f"books and on the {len(self.unseen_texts)} books held out of pre-training")


def spread(texts: list[str], chars: int = EVAL_CHARS) -> list[str]:
    """An equal share of `chars` characters from the middle of each text, so that a perplexity measured on the first
    few thousand tokens covers every text (every book, every chapter) and not the first one alone."""
    share = chars // len(texts)
    return [text[max(0, len(text) // 2 - share // 2):][:share] for text in texts]


def pretraining_passages(split: str = "train", chars: int = EVAL_CHARS) -> list[str]:
    """Passages from the middle of every Gutenberg book of the split: "train", the books the tiny model was
    pre-trained on (course_utils.tiny_model), or "held_out", the two it never saw (corpus.HELD_OUT_BOOKS)."""
    return spread(list(gutenberg_books(split).values()), chars)


def style_task(author: str = "hemingway", plan: LabPlan = METHODS_PLAN) -> StyleTask:
    """The style task of notebook 07 for `author`; held-out chapters alternate between validation and test."""
    from .style_corpus import to_prompt_completion

    corpus = build_style_corpus(author)
    validation = corpus.val_chapters[0::2]
    test = corpus.val_chapters[1::2]
    test_keys = {(c.book, c.number) for c in test}
    test_corpus = replace(corpus, val=[p for p in corpus.val if (p.book, p.chapter) in test_keys])
    prompts, _ = held_out_prompts(test_corpus, plan.measure_prompts)
    return StyleTask(corpus, [to_prompt_completion(e) for e in instruction_examples(corpus.train)],
                     spread([c.text for c in validation]), spread([c.text for c in test]), prompts,
                     author_reference([p.text for p in corpus.train]), pretraining_passages("train"),
                     pretraining_passages("held_out"), plan)


def completion_dataset(tokenizer, examples: list[dict], max_length: int = MAX_LENGTH):
    """Prompt/completion pairs as token ids with labels on the completion only (-100 on the prompt), as SFTTrainer's
    completion_only_loss trains in notebook 07; truncated to max_length tokens."""
    from datasets import Dataset

    rows = {"input_ids": [], "attention_mask": [], "labels": []}
    for e in examples:
        prompt = tokenizer(e["prompt"], add_special_tokens=False)["input_ids"]
        completion = tokenizer(e["completion"], add_special_tokens=False, verbose=False)["input_ids"]
        ids = (prompt + completion + [tokenizer.eos_token_id])[:max_length]
        labels = ([-100] * len(prompt) + completion + [tokenizer.eos_token_id])[:max_length]
        rows["input_ids"].append(ids)
        rows["attention_mask"].append([1] * len(ids))
        rows["labels"].append(labels)
    return Dataset.from_dict(rows)


# --------------------------------------------------------------------------------------------------
# One run: train a method for the step budget and measure it
# --------------------------------------------------------------------------------------------------

def train_method(model, tokenizer, dataset, m: Method, learning_rate: float, seed: int, output_dir: str | Path,
                 steps: int = STEPS, batch_size: int = BATCH, profile=None) -> dict:
    """Train with the Trainer for `steps` steps (linear decay, 2 warm-up steps), with the method's optimizer, in the
    profile's precision (None: fp32 on the CPU). Returns seconds, the median seconds per step, the peak memory above
    the start in MB (RSS on the CPU, allocated memory on CUDA) and the last logged loss."""
    from transformers import DataCollatorForSeq2Seq, PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    from .memory import measure_peak
    from .qlora import precision_flags

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.times = []

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter())

    args = TrainingArguments(output_dir=str(output_dir), per_device_train_batch_size=batch_size, max_steps=steps,
                             learning_rate=learning_rate, lr_scheduler_type="linear", warmup_steps=2,
                             logging_steps=max(1, steps // 4), save_strategy="no", report_to="none", seed=seed,
                             disable_tqdm=True, dataloader_num_workers=0,
                             **(precision_flags(profile) if profile else {"use_cpu": True}))
    timer = StepTimes()
    trainer = Trainer(model=model, args=args, train_dataset=dataset, callbacks=[timer],
                      data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100),
                      optimizers=(make_optimizer(model, m, learning_rate), None))
    trainer.remove_callback(PrinterCallback)  # the losses are returned, not printed at every logging step
    start = time.perf_counter()
    with measure_peak(profile.device if profile else "cpu") as peak:
        trainer.train()
    seconds = time.perf_counter() - start
    gaps = [b - a for a, b in zip(timer.times, timer.times[1:])]
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"seconds": round(seconds, 2), "seconds_per_step": round(sorted(gaps)[len(gaps) // 2], 4),
            "peak_mb": round(peak.above_baseline / 1e6, 1), "final_loss": round(losses[-1], 4)}


def measure_forgetting_and_learning(model, tokenizer, task: StyleTask, style: bool = True, seed: int = 0) -> dict:
    """Perplexity on the author's validation chapters and on Gutenberg text seen in pre-training; with style=True
    (the runs that are reported) also on the test chapters and the books unseen in pre-training, and the style
    distance of completions of the test prompts."""
    from .evaluation import generate_completions
    from .stylometry import style_distance

    plan = task.plan
    figures = {"validation_perplexity": held_out_perplexity(model, tokenizer, task.validation_texts, plan),
               "seen_gutenberg_perplexity": held_out_perplexity(model, tokenizer, task.seen_texts, plan)}
    if style:
        figures["test_perplexity"] = held_out_perplexity(model, tokenizer, task.test_texts, plan)
        figures["unseen_gutenberg_perplexity"] = held_out_perplexity(model, tokenizer, task.unseen_texts, plan)
        with warnings.catch_warnings():
            # soft prompts: generate() passes position ids, which peft drops (the model then numbers the virtual
            # tokens and the prompt together itself, as in training)
            warnings.filterwarnings("ignore", message="Position ids are not supported", category=UserWarning)
            completions = generate_completions(model, tokenizer, task.prompts, seed=seed,
                                               max_new_tokens=plan.max_new_tokens, temperature=plan.temperature,
                                               top_p=plan.top_p)
        figures["style_distance"] = style_distance(completions, task.reference)
    return {k: round(v, 4) for k, v in figures.items()}


def run_method(m: Method, learning_rate: float, seed: int, task: StyleTask, tokenizer, dataset, work_dir: str | Path,
               steps: int = STEPS, style: bool = True, profile=None) -> dict:
    """A fresh base, method m's adapter (seeded), `steps` steps of training, the measurements (style=False: only
    validation and forgetting, as the sweep needs), and the adapter saved (PiSSA/OLoRA converted) to weigh it. The
    base is the profile's LoRA model (None: the tiny model in fp32, as the benchmark runs)."""
    from transformers import set_seed

    from .models import load_model, model_source

    work = Path(work_dir) / f"{m.name}-{learning_rate:g}-{seed}"
    shutil.rmtree(work, ignore_errors=True)
    set_seed(seed)
    base = load_model(profile, "lora", verbose=False)[0] if profile else load_tiny_base()
    model = add_adapter(base, m, model_source(profile, "lora") if profile else TINY_MODEL_DIR)
    initial = save_initial_adapter(model, m, work)
    trainable = trainable_parameters(model)
    training = train_method(model, tokenizer, dataset, m, learning_rate, seed, work / "trainer", steps=steps,
                            profile=profile)
    figures = measure_forgetting_and_learning(model, tokenizer, task, style=style, seed=seed)
    adapter = save_method_adapter(model, m, work, initial)
    size = folder_mb(adapter)
    shutil.rmtree(work, ignore_errors=True)
    return {"method": m.name, "learning_rate": learning_rate, "seed": seed, "steps": steps,
            "trainable_parameters": trainable, "adapter_mb": round(size, 4), **training, **figures}


def load_tiny_base():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(TINY_MODEL_DIR, dtype=torch.float32, use_safetensors=True)


# --------------------------------------------------------------------------------------------------
# Summaries: mean and 95 % t-interval over seeds
# --------------------------------------------------------------------------------------------------

def t_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """(mean, half-width) of the Student-t interval over independent runs; the half-width is nan for one run."""
    from scipy.stats import t

    n = len(values)
    if n == 0:
        raise ValueError("no values to summarise")
    mean = sum(values) / n
    if n == 1:
        return mean, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)


SUMMARISED = ("test_perplexity", "style_distance", "seen_gutenberg_perplexity", "unseen_gutenberg_perplexity",
              "learned", "forgot", "seconds_per_step", "peak_mb")


def with_changes(run: dict, base: dict) -> dict:
    """A run with what it learned (relative fall of the author's test perplexity) and forgot (relative rise of the
    perplexity on Gutenberg text seen in pre-training), both from the base's figures."""
    return {**run, "learned": 1 - run["test_perplexity"] / base["test_perplexity"],
            "forgot": run["seen_gutenberg_perplexity"] / base["seen_gutenberg_perplexity"] - 1}


def summarise(runs: list[dict], base: dict) -> dict[str, dict]:
    """Per method: every summarised figure as {"mean", "ci95"} over its seeds, and its constant facts."""
    by_method: dict[str, list[dict]] = {}
    for run in runs:
        by_method.setdefault(run["method"], []).append(with_changes(run, base))
    summary = {}
    for name, rs in by_method.items():
        figures = {}
        for key in SUMMARISED:
            mean, half = t_interval([r[key] for r in rs if r.get(key) is not None])
            figures[key] = {"mean": round(mean, 5), "ci95": round(half, 5)}
        m = METHODS[name]
        summary[name] = {"label": m.label, "family": m.family, "seeds": sorted(r["seed"] for r in rs),
                         "learning_rate": rs[0]["learning_rate"], "trainable_parameters": rs[0]["trainable_parameters"],
                         "adapter_mb": rs[0]["adapter_mb"], "mergeable": m.mergeable, **figures}
    return summary


def best_rates(sweep: list[dict]) -> dict[str, dict]:
    """Per method, the swept rate with the lowest validation perplexity, and whether it lies at an end of the sweep
    (then a rate outside it might have done better)."""
    best = {}
    for name in dict.fromkeys(r["method"] for r in sweep):
        rs = sorted((r for r in sweep if r["method"] == name), key=lambda r: r["learning_rate"])
        winner = min(rs, key=lambda r: r["validation_perplexity"])
        best[name] = {"learning_rate": winner["learning_rate"], "at_edge": winner in (rs[0], rs[-1]),
                      "validation_perplexity": {f"{r['learning_rate']:g}": r["validation_perplexity"] for r in rs}}
    return best


# The sweep widens where it must: a best rate at an end of the rates tried gets the next rate beyond it on this
# ladder (half-decade steps), up to MAX_EXTENSIONS times, so that the rate kept is a real optimum, not an edge.
RATE_LADDER = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
MAX_EXTENSIONS = 2


def rate_beyond_edge(sweep: list[dict], name: str) -> float | None:
    """The next rate to try for method `name`: one ladder step beyond its best rate when that lies at an end of the
    rates tried, else None (also when the ladder ends or MAX_EXTENSIONS rates were already added)."""
    tried = sorted(r["learning_rate"] for r in sweep if r["method"] == name)
    best = best_rates(sweep)[name]
    if not best["at_edge"] or len(tried) >= len(METHODS[name].learning_rates) + MAX_EXTENSIONS:
        return None
    rung = min(range(len(RATE_LADDER)), key=lambda i: abs(math.log(RATE_LADDER[i] / best["learning_rate"])))
    rung += -1 if best["learning_rate"] == tried[0] else 1
    return RATE_LADDER[rung] if 0 <= rung < len(RATE_LADDER) else None


def read_benchmark(path: str | Path = RESULTS) -> dict | None:
    """The benchmark's results (benchmarks/results/peft_methods.json), or None with a message saying how to make
    them where the file is absent."""
    path = Path(path)
    if not path.exists():
        print(f"No benchmark results at {path}: run `python benchmarks/bench_peft_methods.py` (it takes a while: "
              "every method at several rates and seeds) to make them; the cells that read them will then show the comparison.")
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def results_table(bench: dict) -> str:
    """The comparison as a markdown table: each method's figures, mean ± 95 % interval over seeds."""
    def cell(figure: dict, scale: float = 1.0, digits: int = 1) -> str:
        half = "" if math.isnan(figure["ci95"]) else f" ± {figure['ci95'] * scale:.{digits}f}"
        return f"{figure['mean'] * scale:.{digits}f}{half}"

    lines = [("| method | rate | trainable params | adapter (MB) | learned: author ppl fall (%) | style distance | "
              "forgot: Gutenberg ppl rise (%) | s/step | peak RAM (MB) | merges |"),
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, s in bench["summary"].items():
        edge = "*" if bench["best_rates"][name]["at_edge"] else ""
        lines.append(f"| {s['label']} | {s['learning_rate']:g}{edge} | {s['trainable_parameters']:,} | "
                     f"{s['adapter_mb']:.3f} | {cell(s['learned'], 100)} | {cell(s['style_distance'], 1, 2)} | "
                     f"{cell(s['forgot'], 100, 2)} | {cell(s['seconds_per_step'], 1, 3)} | {cell(s['peak_mb'])} | "
                     f"{'yes' if s['mergeable'] else 'no'} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# A real model on a T4: exact trainable parameters, and the memory estimator where it models the method
# --------------------------------------------------------------------------------------------------

# The methods the estimator (memory.estimate_memory) models: those that train exactly LoRA's A and B with AdamW at
# LoRA's shapes. DoRA's magnitude vectors and its weight norms, LoRA-FA's frozen A, VeRA, IA3 and the soft prompts
# keep other tensors, which it does not model.
MODELLED_AS_LORA = ("lora", "rslora", "loraplus", "pissa", "olora")


def trainable_on(model_name: str, m: Method) -> int:
    """Exact trainable parameters of method m on a real model (data/model_configs), built on the meta device.
    PiSSA/OLoRA are counted with LoRA's default start (same shapes: their SVD/QR cannot run on meta tensors), the
    text-initialised prompt with a random one (same shape); for LoRA-FA only B, since its optimizer freezes A."""
    from .memory import meta_model

    counted = METHODS["lora"] if m.converts_initialisation else METHODS["prompt"] if m.name == "prompt_text" else m
    with warnings.catch_warnings():  # peft's notes on building adapters on meta tensors
        warnings.simplefilter("ignore")
        model = get_peft_model(meta_model(model_name), counted.config(model_name))
    if m.optimizer == "lorafa":
        return sum(p.numel() for n, p in model.named_parameters() if "lora_B" in n)
    return trainable_parameters(model)


def t4_rows(model_name: str = "meta-llama/Llama-3.2-3B-Instruct") -> list[dict]:
    """Per method on a Colab T4 as the t4 profile trains the 3B model (4-bit NF4 base, fp16, paged 8-bit AdamW, batch
    2 x 1024 tokens, gradient checkpointing): exact trainable parameters, and the estimator's peak memory in GB where it
    models the method (None: unmodelled). The estimator models no time: seconds per step are unmodelled for all."""
    from .lab import CHAPTER_PLAN
    from .memory import estimate_memory
    from .profiles import PROFILES
    from .qlora import optimizer_for

    t4 = PROFILES["t4"]
    estimate = estimate_memory(model_name, method="qlora", dtype=t4.dtype, optimizer=optimizer_for(t4),
                               batch_size=t4.batch_size, seq_len=t4.max_seq_length,
                               gradient_checkpointing=CHAPTER_PLAN.gradient_checkpointing, lora_r=RANK,
                               lora_modules=tuple(SEVEN_MODULES))
    return [{"method": name, "label": m.label, "trainable_parameters": trainable_on(model_name, m),
             "memory_gb": round(estimate.total / 1e9, 2) if name in MODELLED_AS_LORA else None,
             "seconds_per_step": None, "setting": estimate.describe()} for name, m in METHODS.items()]
