"""Evaluation and generation: perplexity (how surprised a model is by a text: exp of the mean next-token loss, lower
is better), and sampling completions with a fixed seed, so that two models can be compared on the same prompts."""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import contextmanager

import torch


def token_ids(tokenizer, texts: list[str]) -> torch.Tensor:
    """The texts as one row of token ids, each text followed by the end-of-text token."""
    ids: list[int] = []
    for text in texts:  # verbose=False: a whole chapter is longer than the model's context; it is cut into blocks later
        ids += tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"] + [tokenizer.eos_token_id]
    return torch.tensor(ids, dtype=torch.long)


@torch.no_grad()
def mean_loss(model, ids: torch.Tensor, block: int = 256, batch: int = 16, max_blocks: int | None = None) -> float:
    """Mean next-token loss over consecutive, non-overlapping blocks of `ids` (a 1-D tensor)."""
    n = len(ids) // block if max_blocks is None else min(max_blocks, len(ids) // block)
    if n == 0:
        raise ValueError(f"need at least {block} tokens to measure a loss, got {len(ids)}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    blocks = ids[: n * block].view(n, block)
    total = 0.0
    for chunk in blocks.split(batch):
        chunk = chunk.to(device)
        total += model(input_ids=chunk, labels=chunk).loss.item() * len(chunk)
    model.train(was_training)
    return total / n


def perplexity(model, tokenizer, texts: list[str], block: int = 256, max_blocks: int | None = None) -> float:
    return math.exp(mean_loss(model, token_ids(tokenizer, texts), block=block, max_blocks=max_blocks))


def perplexities(model, held_out: dict[str, torch.Tensor], block: int = 256,
                 max_blocks: int | None = 32) -> dict[str, float]:
    """The model's perplexity on each task's held-out token stream ({task: token_ids(...)}), each measured on its
    first `max_blocks` blocks of `block` tokens: one model on several tasks (a merge on both specialists' tasks)."""
    return {task: math.exp(mean_loss(model, ids, block=block, max_blocks=max_blocks)) for task, ids in held_out.items()}


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


def fastest_rates(runners: dict[str, Callable[[], int]], repeats: int = 5) -> dict[str, float]:
    """Items per second of each named runner (a function that does the work and returns how many items, such as
    new tokens, it made): the best of `repeats` runs, the runners taking turns, so that a busy moment of the machine
    does not fall on one runner only."""
    best, counts = dict.fromkeys(runners, math.inf), {}
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            counts[name] = run()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: counts[name] / seconds for name, seconds in best.items()}


def generation_speed(models: dict, tokenizer, prompts: list[str], max_new_tokens: int = 48,
                     repeats: int = 5) -> dict[str, float]:
    """Greedy generation speed of each named model in new tokens per second (fastest_rates over the models)."""
    def runner(model) -> Callable[[], int]:
        def run() -> int:
            generate_completions(model, tokenizer, prompts, seed=0, max_new_tokens=max_new_tokens, temperature=None)
            return len(prompts) * max_new_tokens
        return run

    return fastest_rates({name: runner(model) for name, model in models.items()}, repeats)