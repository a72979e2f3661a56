"""Training plumbing shared by notebooks 01 to 03: the token blocks they train on and the learning rate they use."""
import pytest
from transformers import AutoTokenizer

from course_utils.paths import TINY_MODEL_DIR
from course_utils.profiles import PROFILES
from course_utils.training import block_dataset, learning_rate, max_length_for

needs_tiny_model = pytest.mark.skipif(not (TINY_MODEL_DIR / "tokenizer.json").exists(),
                                      reason="the bundled tiny model (data/tiny_model) is missing")


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(TINY_MODEL_DIR)


@needs_tiny_model
def test_blocks_are_the_token_stream_cut_in_order_with_end_of_text_between_texts(tokenizer):
    texts = ["The rain fell on the tents and the men sat inside.", "It was cold in the mountains that year."]
    stream = []
    for text in texts:
        stream += tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    blocks = block_dataset(tokenizer, texts, block_size=4)
    assert len(blocks) == len(stream) // 4  # the incomplete last block is dropped
    assert sum(blocks["input_ids"], []) == stream[:len(blocks) * 4]
    assert all(mask == [1, 1, 1, 1] for mask in blocks["attention_mask"])


@needs_tiny_model
def test_too_little_text_for_one_block_is_a_clear_error(tokenizer):
    with pytest.raises(ValueError, match="fewer than one block of 512"):
        block_dataset(tokenizer, ["Too short."], block_size=512)


def test_tiny_model_trains_with_larger_steps_than_hub_models():
    tiny, t4 = PROFILES["tiny"], PROFILES["t4"]
    for job in ("full", "lora", "qlora"):
        assert learning_rate(tiny, job) > learning_rate(t4, job)
    assert learning_rate(t4, "full") < learning_rate(t4, "lora") == 2e-4  # full fine-tuning needs the smallest steps


def test_unknown_job_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown job .pretrain.: choose one of"):
        learning_rate(PROFILES["tiny"], "pretrain")
    with pytest.raises(ValueError, match="no learning rate for job 'inference'"):
        learning_rate(PROFILES["tiny"], "inference")


def test_the_training_length_is_raised_to_the_longest_example_where_the_context_allows():
    tiny, t4 = PROFILES["tiny"], PROFILES["t4"]
    assert max_length_for(tiny, longest=100, context=512) == tiny.max_seq_length  # short data: the profile's
    assert max_length_for(tiny, longest=238, context=512) == 238  # a chat longer than the profile's length
    assert max_length_for(tiny, longest=900, context=512) == 512  # never beyond what the model takes
    assert max_length_for(t4, longest=238, context=None) == t4.max_seq_length  # no known context: no cap
