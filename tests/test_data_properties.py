"""Property-based tests (hypothesis) of the validator and the cleaner: they never crash on arbitrary input, cleaning
is idempotent, no valid example is ever dropped (by validation, by cleaning, or by a write and a re-read), every valid
Alpaca or ShareGPT example becomes a valid chat, and NaN or Infinity is refused wherever it sits."""
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
        ["messages", "role", "content", "prompt", "completion", "instruction", "input", "response", "text", "x",
         "output", "conversations", "from", "value"]),
        children, max_size=4),
    max_leaves=12)


@st.composite
def valid_examples(draw, formats=D.ALL_FORMATS):
    fmt = draw(st.sampled_from(formats))
    if fmt == "sharegpt":
        turns = [{"from": "system", "value": draw(visible_text)}] if draw(st.booleans()) else []
        for _ in range(draw(st.integers(1, 3))):
            turns += [{"from": "human", "value": draw(visible_text)}, {"from": "gpt", "value": draw(visible_text)}]
        return {"conversations": turns}
    if fmt == "alpaca":
        return {"instruction": draw(visible_text), "input": draw(st.just("") | visible_text),
                "output": draw(visible_text)}
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


def validate_bytes(raw: bytes, fmt=None, suffix=".jsonl") -> D.ValidationReport:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"data{suffix}"
        path.write_bytes(raw)
        report = D.validate_file(path, format=fmt)
        assert path.read_bytes() == raw  # never written over
        return report


@SETTINGS
@given(st.lists(st.binary(max_size=80), max_size=8), st.sampled_from([None, *D.ALL_FORMATS]))
def test_the_validator_never_crashes_on_arbitrary_bytes(lines, fmt):
    report = validate_bytes(b"\n".join(lines), fmt)
    assert len(report.examples) + report.bad_lines + report.blank_lines == report.lines
    assert all(str(problem) for problem in report.problems)


@SETTINGS
@given(st.lists(json_values, max_size=6), st.sampled_from([None, *D.ALL_FORMATS]))
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
    fmt = data.draw(st.sampled_from(D.ALL_FORMATS))
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


@SETTINGS
@given(valid_examples(formats=("alpaca", "sharegpt")))
def test_every_valid_alpaca_or_sharegpt_example_converts_to_a_valid_chat(example):
    chat = D.to_messages(example)
    assert D.example_problems(chat, "messages") == []
    assert D.to_messages(D.to_prompt_completion(example)) == chat


# A JSON value with NaN or Infinity somewhere inside, and the field where it sits.
non_finite = st.sampled_from([float("nan"), float("inf"), float("-inf")])


@st.composite
def with_non_finite(draw):
    value = draw(valid_examples())
    where, parent = "", value
    while True:  # walk down to a random object or list of the example and put the number there
        children = list(parent.items()) if isinstance(parent, dict) else list(enumerate(parent))
        containers = [(k, v) for k, v in children if isinstance(v, (dict, list)) and v]
        if not containers or draw(st.booleans()):
            break
        key, parent = draw(st.sampled_from(containers))
        where = f"{where}[{key}]" if isinstance(key, int) else (f"{where}.{key}" if where else key)
    key = "score" if isinstance(parent, dict) else draw(st.integers(0, len(parent)))
    if isinstance(parent, dict):
        parent[key] = draw(non_finite)
        where = f"{where}.{key}" if where else key
    else:
        parent.insert(key, draw(non_finite))
        where = f"{where}[{key}]"
    return value, where


@SETTINGS
@given(with_non_finite())
def test_nan_or_infinity_anywhere_is_refused_at_its_field(case):
    value, where = case
    line = json.dumps(value)  # Python's json writes NaN, Infinity, -Infinity
    report = validate_bytes(line.encode())
    assert not report.examples and report.bad_lines == 1
    assert ("not_json_number", where) in [(p.kind, p.field) for p in report.problems]


@SETTINGS
@given(json_values)
def test_strict_parsing_agrees_with_json_on_standard_json(value):
    try:
        text = json.dumps(value, allow_nan=False)
    except ValueError:  # an infinity somewhere: not standard JSON, covered above
        return
    assert D.parse_json(text) == (json.loads(text), [])


@SETTINGS
@given(st.lists(valid_examples(), max_size=5), st.sampled_from([None, 0, 2]), st.booleans())
def test_a_json_array_of_valid_examples_reads_back_whole(examples, indent, bom):
    raw = json.dumps(examples, indent=indent).encode()
    report = validate_bytes(b"\xef\xbb\xbf" * bom + raw, suffix=".json")
    assert report.lines == len(examples)
    if len({D.detect_format(e) for e in examples}) <= 1:  # one format in the file
        assert report.examples == examples and report.ok
    assert all(1 <= n <= raw.count(b"\n") + 1 for n in report.line_numbers)


@SETTINGS
@given(st.binary(max_size=120))
def test_the_validator_never_crashes_on_a_json_file(raw):
    report = validate_bytes(b"[" + raw, suffix=".json")
    assert len(report.examples) + report.bad_lines + report.blank_lines == report.lines
