"""The persona dataset of Exercise 2 (data/persona/): valid training data for the course's data module, multi-turn
throughout, as large as its PROVENANCE.md says, and with a lexicon that tells the detective's register."""
import hashlib
import re

import pytest
from transformers import AutoTokenizer

from course_utils import data
from course_utils.corpus import gutenberg_books
from course_utils.paths import PERSONA_DIR, TINY_MODEL_DIR
from course_utils.stylometry import lexicon_rate, load_lexicon

DATASET = PERSONA_DIR / "noir_detective.jsonl"
LEXICON = PERSONA_DIR / "noir_lexicon.txt"
PROVENANCE = PERSONA_DIR / "PROVENANCE.md"


@pytest.fixture(scope="module")
def conversations():
    report = data.validate_file(DATASET)
    assert report.ok and report.format == "messages", report.summary()
    return report.examples


def turns(conversation, role):
    return [m["content"] for m in conversation["messages"] if m["role"] == role]


def table_row(name: str) -> list[str]:
    """The cells of the PROVENANCE.md table row of one file."""
    row = next(line for line in PROVENANCE.read_text(encoding="utf-8").splitlines() if line.startswith(f"| {name} |"))
    return [cell.strip() for cell in row.strip("|").split("|")]


def test_the_dataset_is_valid_and_fits_the_tiny_models_context():
    tokenizer = AutoTokenizer.from_pretrained(TINY_MODEL_DIR)
    report = data.validate_file(DATASET, tokenizer=tokenizer, max_tokens=data.context_length(tokenizer))
    assert report.ok, report.summary()


def test_at_least_120_conversations_each_multi_turn_with_the_same_system_prompt(conversations):
    assert len(conversations) >= 120
    systems = {conversation["messages"][0]["content"] for conversation in conversations}
    assert len(systems) == 1 and "1940s Los Angeles" in systems.pop()
    for number, conversation in enumerate(conversations, 1):
        roles = [m["role"] for m in conversation["messages"]]
        exchanges = roles.count("assistant")
        assert exchanges >= 2, f"line {number} has {exchanges} exchange(s)"
        assert roles == ["system"] + ["user", "assistant"] * exchanges, f"line {number}: {roles}"


def test_no_conversation_or_reply_is_repeated(conversations):
    assert data.exact_duplicates([data.example_text(c) for c in conversations]).dropped == []
    replies = [reply for c in conversations for reply in turns(c, "assistant")]
    assert len(set(replies)) == len(replies)


def test_provenance_states_the_files_sizes_counts_and_checksums(conversations):
    for path in (DATASET, LEXICON):
        cells = table_row(path.name)
        raw = path.read_bytes()
        assert cells[-2:] == [str(len(raw)), hashlib.sha256(raw).hexdigest()], f"{path.name}: rerun sha256sum"
    user = [t for c in conversations for t in turns(c, "user")]
    assistant = [t for c in conversations for t in turns(c, "assistant")]
    counts = table_row(DATASET.name)[2]
    assert counts == (f"{len(conversations)} conversations, {len(user) + len(assistant)} turns ({len(user)} user + "
                      f"{len(assistant)} assistant), {sum(len(t.split()) for t in user + assistant):,} words")
    text = PROVENANCE.read_text(encoding="utf-8")
    assert f"the assistant turns hold {sum(len(t.split()) for t in assistant):,} of them" in text
    assert table_row(LEXICON.name)[2] == f"{len(load_lexicon(LEXICON))} words"
    assert "CC BY 4.0" in text and "Written for this course" in text


def test_the_lexicon_tells_the_detectives_register_from_the_books_the_tiny_model_read(conversations):
    lexicon = load_lexicon(LEXICON)
    assert len(lexicon) >= 100 and all(re.fullmatch(r"[a-z]+", word) for word in lexicon)
    replies = "\n".join(t for c in conversations for t in turns(c, "assistant"))
    books = gutenberg_books("held_out")
    assert all(lexicon_rate(replies, lexicon) > 3 * lexicon_rate(text, lexicon) for text in books.values())
