"""Evaluation and generation: perplexity (how surprised a model is by a text: exp of the mean next-token loss, lower
is better), the answer loss of each example and the paired difference of two models over the same examples, the
probability of one given continuation of a prompt, and sampling completions with a fixed seed, so that two models
can be compared on the same prompts."""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

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
def answer_losses(model, rows: Iterable[dict]) -> list[float]:
    """The mean loss on the answer tokens (labels != -100) of each row, one example per row with its input_ids and
    labels (as SFTTrainer prepares them, or data.completion_labels makes them); one forward pass per example, so
    that two models can be compared example by example (paired_difference)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    losses = []
    try:
        for i, row in enumerate(rows):
            if all(label == -100 for label in row["labels"][1:]):
                raise ValueError(f"row {i} has no answer token to measure (its answer was cut off by truncation, or "
                                 "it has none): leave it out")
            ids = torch.tensor([row["input_ids"]], device=device)
            labels = torch.tensor([row["labels"]], device=device)
            losses.append(model(input_ids=ids, labels=labels).loss.item())
    finally:
        model.train(was_training)
    return losses


@dataclass(frozen=True)
class PairedDifference:
    """The mean of the differences a[i] - b[i] of two measurements of the same n examples, and its standard error
    (the differences' sample standard deviation over sqrt(n)). Pairing cancels what varies from example to example
    (an easy answer is easy for both models), so it resolves a smaller difference than comparing two means."""

    mean: float
    stderr: float
    n: int

    @property
    def error_bar(self) -> float:
        """Two standard errors: roughly a 95 % interval once n is a few dozen."""
        return 2 * self.stderr

    @property
    def resolved(self) -> bool:
        """True when the mean lies at least two standard errors from zero: this measurement tells a from b."""
        return abs(self.mean) >= self.error_bar

    def __str__(self) -> str:
        return f"{self.mean:+.3f} ± {self.error_bar:.3f} (two standard errors, n = {self.n})"


def paired_difference(a: Sequence[float], b: Sequence[float]) -> PairedDifference:
    """The paired difference a - b, example by example (see PairedDifference)."""
    if len(a) != len(b):
        raise ValueError(f"paired measurements need the same examples: got {len(a)} and {len(b)} values")
    if len(a) < 2:
        raise ValueError(f"a standard error needs at least two examples, got {len(a)}")
    differences = [x - y for x, y in zip(a, b)]
    n = len(differences)
    mean = sum(differences) / n
    variance = sum((d - mean) ** 2 for d in differences) / (n - 1)
    return PairedDifference(mean, math.sqrt(variance / n), n)


def continuation_logprobs(model, tokenizer, prompts: list[str], continuations: list[str]) -> list[float]:
    """log P(continuation | prompt) for each pair: the natural log of the probability that the model writes exactly
    that continuation right after that prompt (summed over the continuation's tokens). A probability can rise long
    before it is the model's first choice, so this shows learning that generated text does not show yet. The prompt
    is tokenized as generate_completions tokenizes it, the continuation on its own, and the two are joined."""
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations: give one of each per pair")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    values = []
    for prompt, continuation in zip(prompts, continuations):
        start = tokenizer(prompt)["input_ids"]
        added = tokenizer(continuation, add_special_tokens=False)["input_ids"]
        if not start or not added:
            raise ValueError(f"an empty prompt or continuation has no tokens to score: {prompt[-40:]!r} / "
                             f"{continuation[:40]!r}")
        ids = torch.tensor([start + added], device=device)
        logprobs = model(input_ids=ids).logits[0, len(start) - 1:-1].float().log_softmax(-1)
        values.append(logprobs.gather(1, ids[0, len(start):, None]).sum().item())
    model.train(was_training)
    return values


@torch.no_grad()
def generate_completions(model, tokenizer, prompts: list[str], *, seed: int, max_new_tokens: int,
                         temperature: float | None = 1.0, top_p: float = 0.95, batch_size: int = 32,
                         stop_token_ids: list[int] | None = None, add_special_tokens: bool = True) -> list[str]:
    """The completion (new text only) of every prompt. Sampling starts from torch.manual_seed(seed), so two models
    given the same prompts, seed and settings draw from the same random stream; temperature=None means greedy.
    Generation stops at the tokenizer's end-of-text token for every model: SFTTrainer appends that token to each
    completion, and the Trainer under it rewrites the trained model's stop tokens to that one alone (transformers
    5.17), so the base model must stop at the same token for the comparison to be fair. `stop_token_ids` adds
    tokens to stop at (for chat prompts: data.end_of_turn_ids); prompts rendered by a chat template already hold
    the model's special tokens, so pass add_special_tokens=False for them."""
    torch.manual_seed(seed)
    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"  # generation continues on the right, so pad on the left
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature else {"do_sample": False}
    stops = [tokenizer.eos_token_id, *(t for t in stop_token_ids or [] if t != tokenizer.eos_token_id)]
    completions = []
    try:
        for start in range(0, len(prompts), batch_size):
            batch = tokenizer(prompts[start:start + batch_size], return_tensors="pt", padding=True,
                              add_special_tokens=add_special_tokens).to(model.device)
            output = model.generate(**batch, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                    eos_token_id=stops if len(stops) > 1 else stops[0], **sampling)
            new = output[:, batch["input_ids"].shape[1]:]
            completions += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return completions


@torch.no_grad()
def reply_loss(model, tokenizer, conversations: list[dict]) -> float:
    """Mean next-token loss (nats per token) on the assistant's replies of `conversations` (messages examples), each
    reply given the conversation before it, rendered by the tokenizer's chat template: how unsurprising the replies
    are to the model. Only the reply's tokens and the token that closes its turn count, as in assistant-only
    training; the prompt's tokens are context. Works with any template whose rendering of a conversation starts
    with the rendering of its beginning."""
    from .data import DataError, per_turn_examples

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for conversation in conversations:
        for example in per_turn_examples(conversation):
            prompt = tokenizer.apply_chat_template(example["prompt"], tokenize=False, add_generation_prompt=True)
            full = tokenizer.apply_chat_template(example["prompt"] + example["completion"], tokenize=False)
            if not full.startswith(prompt):
                raise DataError("the chat template renders a conversation differently from its beginning, so a "
                                "reply's tokens cannot be told from the prompt's")
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            reply_ids = tokenizer(full[len(prompt):].rstrip(), add_special_tokens=False)["input_ids"]
            ids = torch.tensor([prompt_ids + reply_ids], device=model.device)
            labels = torch.tensor([[-100] * len(prompt_ids) + reply_ids], device=model.device)
            total += model(input_ids=ids, labels=labels).loss.item() * len(reply_ids)
            count += len(reply_ids)
    model.train(was_training)
    if not count:
        raise ValueError("no reply to measure: give conversations with assistant turns")
    return total / count


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
