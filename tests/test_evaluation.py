"""Perplexity arithmetic: a model that knows nothing has the perplexity of the vocabulary size."""
import math

import pytest
import torch

from course_utils.evaluation import mean_loss


class Uniform(torch.nn.Module):
    """A 'model' whose next-token distribution is uniform over `vocab` tokens."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, labels):
        logits = torch.zeros(*input_ids.shape, self.vocab) + self.dummy
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, self.vocab), labels[:, 1:].reshape(-1))
        return type("Output", (), {"loss": loss})()


def test_uniform_model_has_perplexity_equal_to_vocabulary_size():
    ids = torch.randint(0, 50, (1000,))
    assert math.exp(mean_loss(Uniform(50), ids, block=100)) == pytest.approx(50, rel=1e-5)


def test_mean_loss_needs_at_least_one_block():
    with pytest.raises(ValueError, match="at least 256 tokens"):
        mean_loss(Uniform(10), torch.arange(10))


def test_mean_loss_leaves_the_model_in_training_mode_if_it_was():
    model = Uniform(10)
    model.train()
    mean_loss(model, torch.randint(0, 10, (64,)), block=32)
    assert model.training


def test_continuation_logprobs_match_the_models_own_loss_on_the_continuation():
    """Summed over the continuation's tokens, the log-probability is minus the loss transformers computes when every
    prompt token is masked out of the labels (an independent path through the model)."""
    from course_utils.evaluation import continuation_logprobs
    from course_utils.models import load_model
    from course_utils.profiles import PROFILES

    model, tokenizer = load_model(PROFILES["tiny"], "lora", verbose=False)
    prompts, continuations = ["Question: How many apples?\nAnswer:", "It was late"], [" 12 apples\n#### 12", " at night."]
    found = continuation_logprobs(model, tokenizer, prompts, continuations)
    for prompt, continuation, value in zip(prompts, continuations, found):
        start = tokenizer(prompt)["input_ids"]
        added = tokenizer(continuation, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([start + added])
        labels = ids.clone()
        labels[0, :len(start)] = -100
        with torch.no_grad():
            loss = model(input_ids=ids, labels=labels).loss.item()
        assert value == pytest.approx(-loss * len(added), rel=1e-4)
        assert value < 0
    model.train()  # the model comes back in the mode it was in
    continuation_logprobs(model, tokenizer, prompts[:1], continuations[:1])
    assert model.training


def test_continuation_logprobs_need_one_continuation_per_prompt():
    from course_utils.evaluation import continuation_logprobs

    with pytest.raises(ValueError, match="2 prompts but 1 continuations"):
        continuation_logprobs(None, None, ["a", "b"], ["c"])
