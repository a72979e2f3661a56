"""Plumbing for training a causal language model on plain text: fixed-length blocks of tokens."""
from __future__ import annotations

from datasets import Dataset

from .evaluation import token_ids
from .profiles import TINY, Profile


def block_dataset(tokenizer, texts: list[str], block_size: int) -> Dataset:
    """The texts as one stream of tokens (each text ends with the end-of-text token), cut into consecutive
    blocks of `block_size` tokens; the incomplete last block is dropped. Columns: input_ids, attention_mask.
    DataCollatorForLanguageModeling(mlm=False) then makes the labels (a copy of input_ids)."""
    ids = token_ids(tokenizer, texts).tolist()
    n = len(ids) // block_size
    if n == 0:
        raise ValueError(f"the texts hold {len(ids)} tokens, fewer than one block of {block_size}")
    blocks = [ids[i * block_size:(i + 1) * block_size] for i in range(n)]
    return Dataset.from_dict({"input_ids": blocks, "attention_mask": [[1] * block_size for _ in blocks]})


# The bundled tiny model, trained for a few dozen steps, needs much larger steps than a pre-trained Hub model,
# which steps that large would damage (real models: full fine-tuning ~1e-5 to 5e-5, LoRA ~1e-4 to 3e-4).
LEARNING_RATES = {"tiny": {"full": 1e-3, "lora": 3e-3, "qlora": 3e-3},
                  "hub": {"full": 2e-5, "lora": 2e-4, "qlora": 2e-4}}


def learning_rate(profile: Profile, job: str) -> float:
    """The learning rate the notebooks use for this profile's model and job."""
    rates = LEARNING_RATES["tiny" if profile.model_for(job) == TINY else "hub"]
    if job not in rates:
        raise ValueError(f"no learning rate for job {job!r}: choose one of {', '.join(rates)}")
    return rates[job]


def max_length_for(profile: Profile, longest: int, context: int | None) -> int:
    """The sequence length to train at (SFTConfig's max_length): the profile's, raised to the longest example's
    length in tokens where the model's `context` allows, never above it. Cut at the profile's short length, a
    multi-turn chat would lose its last replies; the profiles' lengths are chosen for speed, not for the data."""
    length = max(profile.max_seq_length, longest)
    return min(length, context) if context else length
