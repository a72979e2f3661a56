"""Perplexity arithmetic: a model that knows nothing has the perplexity of the vocabulary size; the loss on a chat's
replies is the one assistant-only training computes; generation stops where it is told to."""
import math

import pytest
import torch

from course_utils.evaluation import generate_completions, mean_loss, perplexities, reply_loss
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


def small_llama(vocab: int = 40):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    return LlamaForCausalLM(config)


def test_answer_losses_are_the_mean_loss_on_each_examples_answer_tokens():
    from course_utils.evaluation import answer_losses

    model = small_llama()
    model.train()
    rows = [{"input_ids": [3, 7, 9, 11, 2], "labels": [-100, -100, 9, 11, 2]},
            {"input_ids": [5, 6, 8], "labels": [-100, 6, 8]}]
    losses = answer_losses(model, rows)
    for row, loss in zip(rows, losses):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([row["input_ids"]])).logits[0, :-1]
        targets = torch.tensor(row["labels"][1:])
        answer = targets != -100  # the prediction of each answer token from the tokens before it
        expected = torch.nn.functional.cross_entropy(logits[answer], targets[answer]).item()
        assert loss == pytest.approx(expected, rel=1e-5)
    assert model.training  # put back in the mode it was in


def test_answer_losses_refuse_an_example_without_answer_tokens():
    from course_utils.evaluation import answer_losses

    with pytest.raises(ValueError, match="row 1 has no answer token"):
        answer_losses(small_llama(), [{"input_ids": [1, 2], "labels": [-100, 2]},
                                      {"input_ids": [1, 2, 3], "labels": [1, -100, -100]}])


def test_paired_difference_is_the_mean_difference_and_its_standard_error():
    import statistics

    from course_utils.evaluation import paired_difference

    a, b = [2.0, 3.5, 1.0, 4.0, 2.5], [1.5, 3.0, 1.2, 3.1, 2.0]
    differences = [x - y for x, y in zip(a, b)]
    found = paired_difference(a, b)
    assert found.n == 5 and found.mean == pytest.approx(statistics.mean(differences))
    assert found.stderr == pytest.approx(statistics.stdev(differences) / math.sqrt(5))
    assert found.error_bar == pytest.approx(2 * found.stderr)
    assert found.resolved  # every difference but one is positive: 0.38 ± 0.37
    assert str(found) == f"{found.mean:+.3f} ± {found.error_bar:.3f} (two standard errors, n = 5)"


def test_pairing_resolves_a_shift_that_two_separate_means_cannot():
    import statistics

    from course_utils.evaluation import paired_difference

    easy_and_hard = [1.0, 5.0, 2.0, 6.0, 3.0, 7.0, 1.5, 5.5]  # the examples differ far more than the models do
    better = [x - 0.1 + 0.02 * (-1) ** i for i, x in enumerate(easy_and_hard)]
    paired = paired_difference(easy_and_hard, better)
    assert paired.mean == pytest.approx(0.1) and paired.resolved
    unpaired_error_bar = 2 * math.sqrt((statistics.variance(easy_and_hard) + statistics.variance(better))
                                       / len(better))
    assert unpaired_error_bar > 10 * paired.mean  # two separate means: the spread of the examples swamps the shift


def test_a_difference_within_two_standard_errors_is_not_resolved():
    from course_utils.evaluation import paired_difference

    assert not paired_difference([1.0, 2.0, 3.0, 4.0], [1.1, 1.9, 3.2, 3.8]).resolved


@pytest.mark.parametrize("a, b, message", [([1.0, 2.0], [1.0], "the same examples"), ([1.0], [2.0], "at least two")])
def test_paired_difference_refuses_unpaired_or_too_few_values(a, b, message):
    from course_utils.evaluation import paired_difference

    with pytest.raises(ValueError, match=message):
        paired_difference(a, b)


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


def test_perplexities_measure_each_task_on_its_own_blocks():
    ids = {"small": torch.randint(0, 50, (1000,)), "short": torch.randint(0, 50, (300,))}
    found = perplexities(Uniform(50), ids, block=100, max_blocks=2)
    assert found == pytest.approx({"small": 50, "short": 50}, rel=1e-5)
    with pytest.raises(ValueError, match="at least 400 tokens"):
        perplexities(Uniform(50), {"tiny": torch.arange(40)}, block=400)
