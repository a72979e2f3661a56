"""Perplexity: how surprised a model is by a text (exp of the mean next-token loss). Lower is better."""
from __future__ import annotations

import math

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
