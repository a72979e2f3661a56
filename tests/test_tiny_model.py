"""The bundled tiny model: its model card's figures are what its own evaluation computes."""
import json
import re

import pytest

from course_utils.paths import TINY_MODEL_DIR
from course_utils.tiny_model import evaluate


@pytest.fixture(scope="module")
def figures():
    return evaluate(TINY_MODEL_DIR)


def test_evaluation_reproduces_the_recorded_figures(figures):
    recorded = json.loads((TINY_MODEL_DIR / "eval.json").read_text())
    assert figures["parameters"] == recorded["parameters"]
    assert figures["held_out_tokens"] == recorded["held_out_tokens"]
    assert figures["held_out_perplexity"] == pytest.approx(recorded["held_out_perplexity"], rel=1e-3)
    assert figures["samples"] == recorded["samples"]


def test_model_card_states_the_evaluated_figures(figures):
    card = (TINY_MODEL_DIR / "README.md").read_text()
    assert f"{figures['parameters']:,}" in card
    assert f"held-out perplexity | {figures['held_out_perplexity']}" in card
    training = json.loads((TINY_MODEL_DIR / "training_log.json").read_text())
    assert f"{training['tokens_seen']:,}" in card
    assert re.search(r"python -m course_utils\.tiny_model build", card)


def test_held_out_books_were_not_trained_on():
    training = json.loads((TINY_MODEL_DIR / "training_log.json").read_text())
    from course_utils.corpus import gutenberg_books

    assert set(training["held_out_books"]) == set(gutenberg_books("held_out"))
    assert training["train_books"] == len(gutenberg_books("train"))
