"""Perplexity arithmetic: a model that knows nothing has the perplexity of the vocabulary size; the loss on a chat's
replies is the one assistant-only training computes; generation stops where it is told to."""
import math

import pytest
import torch

from course_utils.evaluation import generate_completions, mean_loss, reply_loss
from course_utils.paths import TINY_MODEL_DIR


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


# ------------------------------------------------------------ chats: the loss on the replies, generation that stops

needs_tiny_model = pytest.mark.skipif(not (TINY_MODEL_DIR / "model.safetensors").exists(),
                                      reason="the bundled tiny model (data/tiny_model) is missing")
CHATS = [{"messages": [{"role": "system", "content": "You are a detective."},
                       {"role": "user", "content": "Nice day?"}, {"role": "assistant", "content": "For somebody."},
                       {"role": "user", "content": "Who?"}, {"role": "assistant", "content": "Whoever owns the sun."}]},
         {"messages": [{"role": "user", "content": "Coffee?"}, {"role": "assistant", "content": "Black."}]}]


@pytest.fixture(scope="module")
def tiny():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoModelForCausalLM.from_pretrained(TINY_MODEL_DIR, dtype=torch.float32),
            AutoTokenizer.from_pretrained(TINY_MODEL_DIR))


@needs_tiny_model
def test_reply_loss_is_the_loss_assistant_only_training_computes(tiny):
    """The mean loss over the tokens the chat template's {% generation %} mask trains on, whole chats at once."""
    from course_utils.data import template_labels

    model, tokenizer = tiny
    total = count = 0
    for chat in CHATS:
        ids, labels = template_labels(chat, tokenizer)
        with torch.no_grad():
            loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss.item()
        trained = sum(label != -100 for label in labels)
        total, count = total + loss * trained, count + trained
    model.train()
    assert reply_loss(model, tokenizer, CHATS) == pytest.approx(total / count, rel=1e-5)
    assert model.training  # left as it was
    with pytest.raises(ValueError, match="no reply to measure"):
        reply_loss(model, tokenizer, [])


@needs_tiny_model
def test_generation_stops_at_an_extra_stop_token(tiny):
    model, tokenizer = tiny
    prompt = tokenizer.apply_chat_template(CHATS[1]["messages"][:1], tokenize=False, add_generation_prompt=True)
    free = generate_completions(model, tokenizer, [prompt], seed=0, max_new_tokens=8, temperature=None,
                                add_special_tokens=False)[0]
    first = tokenizer(free, add_special_tokens=False)["input_ids"][0]
    stopped = generate_completions(model, tokenizer, [prompt], seed=0, max_new_tokens=8, temperature=None,
                                   stop_token_ids=[first], add_special_tokens=False)[0]
    assert stopped == tokenizer.decode([first]).strip() and len(free) > len(stopped)
