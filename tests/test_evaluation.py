"""Perplexity arithmetic: a model that knows nothing has the perplexity of the vocabulary size."""
import math

import pytest
import torch

from course_utils.evaluation import mean_loss, perplexities


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


def test_perplexities_measure_each_task_on_its_own_blocks():
    ids = {"small": torch.randint(0, 50, (1000,)), "short": torch.randint(0, 50, (300,))}
    found = perplexities(Uniform(50), ids, block=100, max_blocks=2)
    assert found == pytest.approx({"small": 50, "short": 50}, rel=1e-5)
    with pytest.raises(ValueError, match="at least 400 tokens"):
        perplexities(Uniform(50), {"tiny": torch.arange(40)}, block=400)
