"""Property-based tests (hypothesis) of the validator and the cleaner: they never crash on arbitrary input, cleaning
is idempotent, and no valid example is ever dropped (by validation, by cleaning, or by a write and a re-read)."""
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from course_utils import data as D

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any text at all, surrogates and control characters included.
any_text = st.text(st.characters(exclude_categories=()), max_size=60)
# Text a validator must accept as content: it has something visible.
visible_text = st.builds(lambda pad, core, tail: pad + core + tail,
                         st.sampled_from(["", " ", "\n", "\t  "]),
                         st.text(st.characters(exclude_categories=("Cs", "Cc", "Z")), min_size=1, max_size=30)
                         .filter(lambda s: not D.is_blank(s)),
                         any_text.map(lambda s: D.clean_text(s)))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | any_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(
        ["messages", "role", "content", "prompt", "completion", "instruction", "input", "response", "text", "x"]),
        children, max_size=4),
    max_leaves=12)


@st.composite
def valid_examples(draw):
    fmt = draw(st.sampled_from(D.FORMATS))
    if fmt == "messages":
        turns = draw(st.integers(1, 3))
        messages = [{"role": "system", "content": draw(visible_text)}] if draw(st.booleans()) else []
        for _ in range(turns):
            messages += [{"role": "user", "content": draw(visible_text)},
                         {"role": "assistant", "content": draw(visible_text)}]
        return {"messages": messages}
    if fmt == "instruction":
        example = {"instruction": draw(visible_text), "response": draw(visible_text)}
        if draw(st.booleans()):
            example["input"] = draw(any_text.map(D.clean_text))
        return example
    if fmt == "prompt_completion":
        return {"prompt": draw(visible_text), "completion": draw(visible_text)}
    return {"text": draw(visible_text)}


def validate_bytes(raw: bytes, fmt=None) -> D.ValidationReport:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.jsonl"
        path.write_bytes(raw)
        report = D.validate_file(path, format=fmt)
        assert path.read_bytes() == raw  # never written over
        return report


@SETTINGS
@given(st.lists(st.binary(max_size=80), max_size=8), st.sampled_from([None, *D.FORMATS]))
def test_the_validator_never_crashes_on_arbitrary_bytes(lines, fmt):
    report = validate_bytes(b"\n".join(lines), fmt)
    assert len(report.examples) + report.bad_lines + report.blank_lines == report.lines
    assert all(str(problem) for problem in report.problems)


@SETTINGS
@given(st.lists(json_values, max_size=6), st.sampled_from([None, *D.FORMATS]))
def test_the_validator_never_crashes_on_arbitrary_json(values, fmt):
    raw = "\n".join(json.dumps(v) for v in values).encode()
    report = validate_bytes(raw, fmt)
    assert len(report.examples) + report.bad_lines + report.blank_lines == report.lines
    for example in report.examples:  # whatever passed is usable: it converts and cleans without error
        D.clean_example(example, report.format)
        if report.format != "text":
            D.to_messages(example, report.format)


@SETTINGS
@given(st.data())
def test_no_valid_example_is_ever_dropped_by_the_validator(data):
    fmt = data.draw(st.sampled_from(D.FORMATS))
    examples = [e for e in data.draw(st.lists(valid_examples(), min_size=1, max_size=6)) if D.detect_format(e) == fmt]
    junk = data.draw(st.lists(st.sampled_from([b"{", b"[1, 2]", b"\xff\xfe", b"", b'{"messages": 5}', b"null"]),
                              max_size=4))
    lines = [json.dumps(e, ensure_ascii=data.draw(st.booleans())).encode() for e in examples] + junk
    order = data.draw(st.permutations(range(len(lines))))
    report = validate_bytes(b"\n".join(lines[i] for i in order), fmt)
    assert report.examples == [examples[i] for i in order if i < len(examples)]


@SETTINGS
@given(any_text)
def test_cleaning_never_crashes_and_is_idempotent(text):
    once = D.clean_text(text)
    assert D.clean_text(once) == once
    once.encode("utf-8")  # always writable
    assert not any(line != line.rstrip(" \t") for line in once.split("\n"))


@SETTINGS
@given(st.lists(st.sampled_from(["a", "é", "e\u0301", " ", "\t", "\n", "\r", "\r\n", "\x00", "\u200b", "\ufeff",
                                 "\ud800", "#", "{", "=", "क", "ि", "\u2028", "\x85"]), max_size=40).map("".join))
def test_cleaning_is_idempotent_on_tricky_characters(text):
    once = D.clean_text(text)
    assert D.clean_text(once) == once


@SETTINGS
@given(valid_examples())
def test_cleaning_a_valid_example_keeps_it_valid_and_is_idempotent(example):
    fmt = D.detect_format(example)
    cleaned = D.clean_example(example)
    assert D.example_problems(cleaned, fmt) == []
    assert D.clean_example(cleaned) == cleaned


@SETTINGS
@given(st.lists(valid_examples(), max_size=5))
def test_written_examples_read_back_unchanged(examples):
    with tempfile.TemporaryDirectory() as folder:
        path = D.write_jsonl(examples, Path(folder) / "out.jsonl")
        kept = []
        for number, line in enumerate(path.read_bytes().split(b"\n")[:-1], 1):
            kept.append(json.loads(line))
        assert kept == examples
