"""course_utils.data and course_utils.quality: formats, validation, cleaning, duplicates, flags, the quality report,
label masks and atomic writes. The tokenizer is a small one trained here with the tiny model's own recipe and chat
template, so these tests do not depend on the bundled checkpoint."""
import json
import os
import re
import stat
from collections import Counter
from contextlib import contextmanager

import pytest

from course_utils import data as D
from course_utils import quality as Q
from course_utils.paths import DATA_DIR

INSTRUCT = DATA_DIR / "instruct"
DOLLY_CHAT = INSTRUCT / "dolly_sample" / "dolly_2k_chat.jsonl"
DOLLY_ALPACA = INSTRUCT / "dolly_sample" / "dolly_sample_alpaca_format.jsonl"
GSM8K = INSTRUCT / "gsm8k" / "gsm8k_train_first200.jsonl"
SEED_TASKS = INSTRUCT / "self_instruct_human_written" / "self_instruct_seed_tasks.jsonl"
BROKEN = INSTRUCT / "broken" / "broken_chat.jsonl"
ALPACA = INSTRUCT / "formats" / "alpaca_sample.jsonl"
SHAREGPT = INSTRUCT / "formats" / "sharegpt_sample.jsonl"

CHAT = {"messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "What is the capital of France?"},
                     {"role": "assistant", "content": "Paris."}]}


@pytest.fixture(scope="module")
def tokenizer():
    from course_utils.tiny_model import train_tokenizer

    text = ("The quick brown fox jumps over the lazy dog. What is the capital of France? Paris is the capital. "
            "def square(x):\n    return x * x\n") * 20
    return train_tokenizer([text], vocab_size=400)


def write_lines(path, lines):
    path.write_bytes(b"\n".join(line if isinstance(line, bytes) else line.encode() for line in lines) + b"\n")
    return path


# ---------------------------------------------------------------------------------------------------- formats


def test_detect_format_recognises_each_format():
    assert D.detect_format(CHAT) == "messages"
    assert D.detect_format({"instruction": "a", "response": "b"}) == "instruction"
    assert D.detect_format({"prompt": "a", "completion": "b"}) == "prompt_completion"
    assert D.detect_format({"text": "a"}) == "text"
    assert D.detect_format({"question": "a"}) is None
    assert D.detect_format({"instruction": "a", "input": "", "output": "b"}) == "alpaca"
    assert D.detect_format({"conversations": []}) == "sharegpt"
    assert D.detect_format({"instruction": "a"}) == "instruction"  # a tie goes to the course's own format


def test_instruction_becomes_a_chat_and_back():
    example = {"instruction": "Summarise this.", "input": "A long text.", "response": "Short."}
    chat = D.to_messages(example, system="Be brief.")
    assert [m["role"] for m in chat["messages"]] == ["system", "user", "assistant"]
    assert chat["messages"][1]["content"] == "Summarise this.\n\nA long text."
    back = D.to_instruction(chat)
    assert back == {"instruction": "Summarise this.\n\nA long text.", "response": "Short.", "system": "Be brief."}


def test_multi_turn_chat_does_not_pretend_to_be_an_instruction():
    chat = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                         {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}
    with pytest.raises(D.DataError, match="single user/assistant"):
        D.to_instruction(chat)


def test_prompt_completion_takes_the_final_assistant_turn_as_completion():
    pc = D.to_prompt_completion(CHAT)
    assert pc["completion"] == [{"role": "assistant", "content": "Paris."}]
    assert [m["role"] for m in pc["prompt"]] == ["system", "user"]
    assert D.to_messages(pc) == CHAT
    assert D.to_messages({"prompt": "Hi", "completion": "Hello"})["messages"][1] == {"role": "assistant",
                                                                                       "content": "Hello"}


def test_plain_text_cannot_become_a_chat():
    with pytest.raises(D.DataError, match="no turns"):
        D.to_messages({"text": "Once upon a time"})


def test_chats_are_rendered_with_the_tokenizers_chat_template(tokenizer):
    text = D.render_chat(CHAT, tokenizer)
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is the capital of France?"
                    "<|im_end|>\n<|im_start|>assistant\nParis.<|im_end|>\n")
    assert D.convert([CHAT], "text", tokenizer) == [{"text": text}]
    assert D.convert([{"instruction": "Hi", "response": "Hello"}], "messages")[0]["messages"][0]["role"] == "user"


def test_converting_to_an_unknown_format_names_the_choices():
    with pytest.raises(ValueError, match="messages, instruction, prompt_completion, text"):
        D.convert([CHAT], "sharegpt")


def test_alpaca_template_and_eos_marker_are_removed_from_the_dolly_sample():
    rows = D.read_jsonl(DOLLY_ALPACA)
    examples = [D.from_alpaca_prompt(row) for row in rows]
    assert len(examples) == 151
    with_input = [ex for ex in examples if "input" in ex]
    assert with_input and all(ex["input"] for ex in with_input)
    assert not any(D.EOS_MARKER in ex["response"] or "### " in ex["instruction"] for ex in examples)
    andhra = next(ex for ex in examples if "Andhra Pradesh" in ex["instruction"])
    assert andhra["response"] == "November, December, January, February"


def test_gsm8k_calculator_annotations_are_removed_unless_asked_for():
    row = D.read_jsonl(GSM8K)[0]
    assert "<<" in row["answer"]
    assert D.from_gsm8k(row)["response"] == ("Natalia sold 48/2 = 24 clips in May.\n"
                                             "Natalia sold 48+24 = 72 clips altogether in April and May.\n#### 72")
    assert D.from_gsm8k(row, keep_calculator=True)["response"] == row["answer"]


def test_self_instruct_tasks_give_one_example_per_instance():
    task = {"instruction": "Sort these.", "instances": [{"input": "3 1 2", "output": "1 2 3"},
                                                         {"input": "b a", "output": "a b"}]}
    assert D.from_self_instruct(task) == [{"instruction": "Sort these.", "input": "3 1 2", "response": "1 2 3"},
                                          {"instruction": "Sort these.", "input": "b a", "response": "a b"}]
    assert len([ex for task in D.read_jsonl(SEED_TASKS) for ex in D.from_self_instruct(task)]) >= 175


def test_plain_text_files_read_as_blocks_separated_by_blank_lines(tmp_path):
    path = write_lines(tmp_path / "notes.txt", [b"First line", b"  second line", b"", b"", b"Next", b"caf\xe9"])
    report = D.validate_file(path)
    assert report.examples == [{"text": "First line\n  second line"}, {"text": "Next"}]
    assert report.line_numbers == [1, 5]
    assert [(p.line, p.kind) for p in report.problems] == [(6, "not_utf8")]


# ---------------------------------------------------------------------------------------------------- validation

# The deliberately broken file shipped with the course: line -> (field, kind). Lines 1, 2, 12 and 18 are valid.
BROKEN_EXPECTED = {
    3: ("", "malformed_json"),
    4: ("messages[1].content", "wrong_type"),
    5: ("messages[1].content", "missing_field"),
    6: ("messages[1].content", "empty_field"),
    7: ("messages[1].role", "unknown_role"),
    8: ("messages[1].role", "not_alternating"),
    9: ("messages[2].role", "no_final_assistant"),
    10: ("", "not_utf8"),
    13: ("", "too_long"),
    14: ("messages", "missing_field"),
    15: ("messages", "wrong_type"),
    16: ("messages[1].content", "invalid_unicode"),
    17: ("", "not_an_object"),
    19: ("messages[1].role", "misplaced_system"),
}


def test_broken_file_reports_every_problem_with_file_line_and_field(tokenizer):
    report = D.validate_file(BROKEN, tokenizer=tokenizer, max_tokens=512)
    assert {p.line: (p.field, p.kind) for p in report.problems} == BROKEN_EXPECTED
    assert report.line_numbers == [1, 2, 12, 18]
    assert report.blank_lines == 1 and report.bad_lines == len(BROKEN_EXPECTED) and not report.ok
    summary = report.summary()
    assert "broken_chat.jsonl:7: messages[1].role: unknown role 'bot'" in summary
    assert "broken_chat.jsonl:10: is not UTF-8 text: byte" in summary


def test_valid_lines_are_kept_as_they_are_in_file_order(tmp_path):
    good = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
            for i in range(3)]
    path = write_lines(tmp_path / "mixed.jsonl", [json.dumps(good[0]), b"{oops", json.dumps(good[1]), b"",
                                                  json.dumps(good[2])])
    report = D.validate_file(path)
    assert report.examples == good and report.line_numbers == [1, 3, 5]


def test_validation_never_writes_anything(tmp_path):
    path = write_lines(tmp_path / "data.jsonl", [b'{"messages": 1}', b"not json"])
    before = (path.read_bytes(), path.stat().st_mtime_ns, sorted(os.listdir(tmp_path)))
    D.validate_file(path)
    assert (path.read_bytes(), path.stat().st_mtime_ns, sorted(os.listdir(tmp_path))) == before


def test_all_problems_are_counted_but_only_the_first_ones_kept(tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", [b"{"] * 120)
    report = D.validate_file(path, max_problems=10)
    assert len(report.problems) == 10 and report.problem_count == 120 and report.bad_lines == 120
    assert "and 110 more" in report.summary()


def test_read_examples_refuses_a_file_with_problems_and_lists_them(tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", [json.dumps(CHAT), b'{"messages": []}', b'{"messages": 3}'])
    with pytest.raises(D.DataError) as error:
        D.read_examples(path)
    assert "bad.jsonl:2: messages: has no messages" in str(error.value)
    assert "bad.jsonl:3: messages: expected a list of messages, got a number" in str(error.value)
    assert D.read_examples(write_lines(tmp_path / "good.jsonl", [json.dumps(CHAT)])) == [CHAT]


def test_other_formats_are_validated_field_by_field(tmp_path):
    lines = [json.dumps({"instruction": "Add 2 and 2.", "response": "4"}),
             json.dumps({"instruction": "Add.", "input": 5, "response": "4"}),
             json.dumps({"instruction": "", "response": None})]
    report = D.validate_file(write_lines(tmp_path / "inst.jsonl", lines))
    assert report.format == "instruction" and report.line_numbers == [1]
    assert [(p.line, p.field, p.kind) for p in report.problems] == [
        (2, "input", "wrong_type"), (3, "instruction", "empty_field"), (3, "response", "wrong_type")]


def test_conversational_prompt_completion_is_validated(tmp_path):
    ok = {"prompt": [{"role": "user", "content": "Hi"}], "completion": [{"role": "assistant", "content": "Hello"}]}
    wrong = {"prompt": [{"role": "user", "content": "Hi"}], "completion": [{"role": "user", "content": "Hello"}]}
    report = D.validate_file(write_lines(tmp_path / "pc.jsonl", [json.dumps(ok), json.dumps(wrong)]))
    assert report.examples == [ok]
    assert [(p.field, p.kind) for p in report.problems] == [("completion[0].role", "bad_completion_role")]


def test_a_format_can_be_forced_and_unknown_lines_are_reported(tmp_path):
    path = write_lines(tmp_path / "q.jsonl", [json.dumps({"question": "a", "answer": "b"})])
    assert D.validate_file(path).problems[0].kind == "unknown_format"
    forced = D.validate_file(path, format="instruction")
    assert [p.field for p in forced.problems] == ["instruction", "response"]


def test_a_byte_order_mark_on_the_first_line_is_accepted(tmp_path):
    path = write_lines(tmp_path / "bom.jsonl", [b"\xef\xbb\xbf" + json.dumps(CHAT).encode()])
    assert D.validate_file(path).examples == [CHAT]


def test_length_is_checked_in_tokens_as_the_model_sees_the_example(tokenizer, tmp_path):
    n = D.count_tokens(CHAT, tokenizer)
    assert n == len(tokenizer(D.render_chat(CHAT, tokenizer), add_special_tokens=False)["input_ids"])
    path = write_lines(tmp_path / "one.jsonl", [json.dumps(CHAT)])
    assert D.validate_file(path, tokenizer=tokenizer, max_tokens=n).ok
    report = D.validate_file(path, tokenizer=tokenizer, max_tokens=n - 1)
    assert report.problems[0].kind == "too_long" and f"{n} tokens" in report.problems[0].message
    with pytest.raises(ValueError, match="needs the tokenizer"):
        D.validate_file(path, max_tokens=10)


def test_a_missing_file_is_named():
    with pytest.raises(FileNotFoundError, match="no_such.jsonl"):
        D.validate_file("no_such.jsonl")


def test_the_shipped_dolly_sample_is_valid_and_complete():
    report = D.validate_file(DOLLY_CHAT)
    assert report.ok and len(report.examples) == 2000 and report.format == "messages"


def test_context_length_prefers_the_model_config(tokenizer):
    assert D.context_length(tokenizer) == 512

    class Model:
        class config:  # noqa: N801 - mimics model.config
            max_position_embeddings = 2048

    assert D.context_length(tokenizer, Model()) == 2048


# ---------------------------------------------------------------------------------------- Alpaca and ShareGPT


def test_a_standard_alpaca_file_validates_and_converts_to_every_course_format(tokenizer, tmp_path):
    report = D.validate_file(ALPACA)
    assert report.ok and report.format == "alpaca" and len(report.examples) == 6, report.summary()
    assert "missing field 'response'" not in report.summary()  # what every Alpaca line used to get
    with_input = next(ex for ex in report.examples if ex["input"])
    chat = D.to_messages(with_input)["messages"]
    assert chat == [{"role": "user", "content": with_input["instruction"] + "\n\n" + with_input["input"]},
                    {"role": "assistant", "content": with_input["output"]}]
    without_input = next(ex for ex in report.examples if not ex["input"])
    assert D.to_messages(without_input)["messages"][0]["content"] == without_input["instruction"]
    assert D.to_instruction(with_input) == {"instruction": with_input["instruction"], "input": with_input["input"],
                                            "response": with_input["output"]}
    for target in D.FORMATS:  # each conversion is a valid file of the target format
        path = D.write_jsonl(D.convert(report.examples, target, tokenizer), tmp_path / f"{target}.jsonl")
        back = D.validate_file(path, format=target)
        assert back.ok and len(back.examples) == 6, back.summary()
    assert D.render_chat(with_input, tokenizer).startswith("<|im_start|>user\n" + with_input["instruction"])


def test_a_sharegpt_file_validates_and_converts_with_the_roles_renamed(tokenizer, tmp_path):
    report = D.validate_file(SHAREGPT)
    assert report.ok and report.format == "sharegpt" and len(report.examples) == 4, report.summary()
    chats = D.convert(report.examples, "messages")
    renamed = {"human": "user", "gpt": "assistant", "system": "system"}
    for example, chat in zip(report.examples, chats):
        assert chat["messages"] == [{"role": renamed[t["from"]], "content": t["value"]}
                                    for t in example["conversations"]]
    assert any(chat["messages"][0]["role"] == "system" for chat in chats)
    multi = next(ex for ex in report.examples if len(ex["conversations"]) > 3)
    assert D.to_prompt_completion(multi)["completion"] == [{"role": "assistant",
                                                            "content": multi["conversations"][-1]["value"]}]
    with pytest.raises(D.DataError, match="single user/assistant"):
        D.to_instruction(multi)
    back = D.validate_file(D.write_jsonl(chats, tmp_path / "chats.jsonl"))
    assert back.ok and back.format == "messages" and back.examples == chats
    assert D.count_tokens(multi, tokenizer) == D.count_tokens({"messages": D.to_messages(multi)["messages"]},
                                                              tokenizer)


GOOD_TURNS = [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]


@pytest.mark.parametrize("record, field, kind, words", [
    ({"instruction": "Add 2 and 2.", "input": ""}, "output", "missing_field", "missing field 'output'"),
    ({"instruction": "Add 2 and 2.", "input": "", "output": " \n"}, "output", "empty_field", "is empty"),
    ({"instruction": 4, "input": "", "output": "4"}, "instruction", "wrong_type", "got a number"),
    ({"instruction": "Add.", "input": [2, 2], "output": "4"}, "input", "wrong_type", "got a list"),
    ({"instruction": "Add 2 and 2.", "response": "4"}, "output", "missing_field", "fields of the instruction format"),
])
def test_each_bad_alpaca_record_is_named_by_line_and_field(tmp_path, record, field, kind, words):
    good = {"instruction": "Name a colour.", "input": "", "output": "Red."}
    path = write_lines(tmp_path / "alpaca.jsonl", [json.dumps(good), json.dumps(record)])
    report = D.validate_file(path)
    assert report.format == "alpaca" and report.line_numbers == [1]
    assert [(p.line, p.field, p.kind) for p in report.problems] == [(2, field, kind)]
    assert f"alpaca.jsonl:2: {field}: " in str(report.problems[0]) and words in report.problems[0].message


def test_the_format_comes_from_a_complete_line_when_the_first_is_incomplete(tmp_path):
    lines = [json.dumps({"instruction": "Name a colour."}), json.dumps({"instruction": "Name a fruit.",
                                                                        "input": "", "output": "A pear."})]
    report = D.validate_file(write_lines(tmp_path / "alpaca.jsonl", lines))
    assert report.format == "alpaca" and report.format_source == "detected from line 2"
    assert [(p.line, p.field, p.kind) for p in report.problems] == [(1, "output", "missing_field")]


@pytest.mark.parametrize("turns, field, kind, words", [
    ([{"from": "human", "value": "Hi"}, {"from": "bot", "value": "Hello"}],
     "conversations[1].from", "unknown_role", "unknown role 'bot': use one of system, human, gpt"),
    ([{"from": "user", "value": "Hi"}, {"from": "gpt", "value": "Hello"}],
     "conversations[0].from", "unknown_role", "ShareGPT names the user 'human' and the assistant 'gpt'"),
    ([{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "\u200b "}],
     "conversations[1].value", "empty_field", "is empty"),
    ([{"from": "human", "value": "Hi"}, {"from": "gpt"}], "conversations[1].value", "missing_field",
     "missing field 'value'"),
    ([{"from": "human", "value": "Hi"}, {"value": "Hello"}], "conversations[1].from", "missing_field",
     "missing field 'from'"),
    ([{"from": "human", "value": "Hi"}, {"from": "human", "value": "Anyone?"}, {"from": "gpt", "value": "Yes."}],
     "conversations[1].from", "not_alternating", "expected a gpt turn here, got human"),
    ([{"from": "gpt", "value": "Hello"}, {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yes?"}],
     "conversations[0].from", "not_alternating", "expected a human turn here, got gpt"),
    (GOOD_TURNS + [{"from": "human", "value": "Bye"}], "conversations[2].from", "no_final_assistant",
     "must end with the gpt's answer"),
    (GOOD_TURNS + [{"from": "system", "value": "Be brief."}, {"from": "gpt", "value": "Ok"}],
     "conversations[2].from", "misplaced_system", "only be the first message"),
    ([], "conversations", "empty_field", "has no turns"),
    ("Hi / Hello", "conversations", "wrong_type", "expected a list of turns, got a string"),
    (["Hi", "Hello"], "conversations[0]", "wrong_type", 'expected an object {"from": ..., "value": ...}'),
])
def test_each_bad_sharegpt_conversation_is_named_by_line_and_field(tmp_path, turns, field, kind, words):
    path = write_lines(tmp_path / "sharegpt.jsonl", [json.dumps({"conversations": GOOD_TURNS}),
                                                     json.dumps({"conversations": turns})])
    report = D.validate_file(path)
    assert report.format == "sharegpt" and report.line_numbers == [1]
    assert [(p.line, p.field, p.kind) for p in report.problems[:1]] == [(2, field, kind)]
    assert words in report.problems[0].message, report.problems[0].message


def test_alpaca_and_sharegpt_are_read_but_not_written():
    with pytest.raises(ValueError, match="alpaca and sharegpt are read, not written"):
        D.convert([CHAT], "alpaca")


def test_a_json_array_file_is_read_item_by_item_with_the_line_where_each_starts(tmp_path):
    records = D.read_jsonl(ALPACA)
    path = tmp_path / "alpaca_data.json"  # how Stanford Alpaca publishes its data: one array, indented
    path.write_text(json.dumps(records, indent=4, ensure_ascii=False))
    report = D.validate_file(path)
    assert report.ok and report.format == "alpaca" and report.examples == records, report.summary()
    starts = [i + 1 for i, line in enumerate(path.read_text().splitlines()) if line == "    {"]
    assert report.line_numbers == starts and report.lines == len(records)
    assert "6 array items" in report.summary()

    records[2]["output"] = ""
    path.write_text(json.dumps(records, indent=4))
    (problem,) = D.validate_file(path).problems
    assert (problem.line, problem.field, problem.kind) == (starts[2], "output", "empty_field")


def test_a_json_array_with_a_syntax_error_keeps_the_items_before_it(tmp_path):
    path = write_lines(tmp_path / "data.json", [b"[", b'  {"instruction": "a", "output": "b"},',
                                                b'  {"instruction": "c", "output": NaN},',
                                                b'  {"instruction": "d" "output": "e"},',  # a missing comma
                                                b'  {"instruction": "f"}', b"]"])
    report = D.validate_file(path)
    assert report.line_numbers == [2] and report.format == "alpaca"
    assert [(p.line, p.field, p.kind) for p in report.problems] == [(3, "output", "not_json_number"),
                                                                    (4, "", "malformed_json")]
    assert "the rest of the file was not read" in report.problems[1].message
    assert D.validate_file(write_lines(tmp_path / "empty.json", [b" [ ] "])).lines == 0
    jsonl_named_json = write_lines(tmp_path / "lines.json", [json.dumps(r) for r in D.read_jsonl(SHAREGPT)])
    assert D.validate_file(jsonl_named_json).ok and D.validate_file(jsonl_named_json).unit == "lines"


# -------------------------------------------------------------------- what Python's json accepts but JSON does not


@pytest.mark.parametrize("line, field, name", [
    ('{"instruction": "Rate it.", "input": "", "output": NaN}', "output", "NaN"),
    ('{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello", "weight": Infinity}]}',
     "conversations[1].weight", "Infinity"),
    ('{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}], '
     '"score": [1, -Infinity]}',
     "score[1]", "-Infinity"),
])
def test_nan_and_infinity_are_refused_with_their_field(tmp_path, line, field, name):
    path = write_lines(tmp_path / "data.jsonl", [line])
    (problem,) = D.validate_file(path).problems
    assert (problem.line, problem.field, problem.kind) == (1, field, "not_json_number")
    assert problem.message.startswith(f"{name} is not a JSON number")
    with pytest.raises(D.DataError, match=f"data.jsonl:1: {re.escape(field)}: {name} is not a JSON number"):
        D.read_jsonl(path)


def test_a_key_repeated_in_one_object_is_refused_with_its_field(tmp_path):
    lines = ['{"instruction": "Add 2 and 2.", "input": "", "output": "5", "output": "4"}',
             '{"conversations": [{"from": "human", "value": "Hi", "value": "Hey"}, {"from": "gpt", "value": "Yo"}]}',
             '{"instruction": "Name a colour.", "input": "", "output": "Red.", "note": {"a": 1, "b": 2}}']
    report = D.validate_file(write_lines(tmp_path / "dup.jsonl", lines), format="alpaca")
    assert [(p.line, p.field, p.kind) for p in report.problems] == [(1, "output", "duplicate_key"),
                                                                    (2, "conversations[0].value", "duplicate_key")]
    assert "the key 'output' appears more than once" in report.problems[0].message
    assert report.line_numbers == [3]  # keys repeated in different objects are fine
    with pytest.raises(D.DataError, match="dup.jsonl:1: output: the key 'output' appears more than once"):
        D.read_jsonl(tmp_path / "dup.jsonl")


def test_strict_parsing_gives_what_json_gives_for_standard_json():
    text = '{"a": [1, 2.5, -3e-7, "NaN", null, true], "b": {"c": "Infinity"}}'
    assert D.parse_json(text) == (json.loads(text), [])


# ---------------------------------------------------------------------------------------------------- cleaning


def test_the_chapters_cleaner_destroys_maths_code_and_scripts():
    gsm8k = D.read_jsonl(GSM8K)[0]["answer"]
    # "48/2 = <<48/2=24>>24" becomes "482  4822424": the numbers merge into wrong ones
    assert D.chapter_clean_text(gsm8k) == ("Natalia sold 482  4822424 clips in May. Natalia sold 4824  48247272 clips "
                                           "altogether in April and May.  72")
    assert D.lost_characters(gsm8k, D.chapter_clean_text(gsm8k)) >= Counter({"#": 4, "=": 4, "<": 4, ">": 4, "/": 2,
                                                                             "+": 2, "\n": 2})
    code = "def square(x):\n    return {'x': x ** 2}"
    assert D.chapter_clean_text(code) == "def square(x): return 'x': x  2"  # no newline, no indent, no {} or **
    nepali = "डोलेश्वर महादेव"  # from the Dolly sample: the vowel signs are combining marks, not \w
    assert D.chapter_clean_text(nepali) == "डलशवर महदव"
    assert D.chapter_clean_text("Beggar’s Chicken “叫化鸡”") == "Beggars Chicken 叫化鸡"


def test_clean_text_keeps_maths_code_and_scripts():
    gsm8k = D.read_jsonl(GSM8K)[0]["answer"]
    for text in [gsm8k, "def square(x):\n    return {'x': x ** 2}", "डोलेश्वर महादेव", "Beggar’s Chicken “叫化鸡”",
                 "E = mc² and ∑ᵢ xᵢ ≥ 0", "Αθήνα, Москва, 東京"]:
        assert D.clean_text(text) == text


def test_clean_text_normalises_what_should_be_normalised():
    assert D.clean_text("\n\n  \nline one  \r\nline two\t\r\n\n\n\n\n\nend\n\n") == "line one\nline two\n\n\nend"
    assert D.clean_text("zero\u200bwidth\x00 con\x07trol\ufeff") == "zerowidth control"
    assert D.clean_text("cafe\u0301") == "caf\u00e9"  # NFC: one code point for é
    assert D.clean_text("bad \ud800 surrogate") == "bad \ufffd surrogate"
    assert D.clean_text("    indented code") == "    indented code"


def test_cleaning_is_idempotent_on_the_real_samples():
    texts = [m["content"] for ex in D.validate_file(DOLLY_CHAT).examples for m in ex["messages"]]
    texts += [row["answer"] for row in D.read_jsonl(GSM8K)]
    once = [D.clean_text(t) for t in texts]
    assert [D.clean_text(t) for t in once] == once


def test_clean_example_cleans_every_text_field_and_leaves_the_input_alone():
    example = {"messages": [{"role": "user", "content": "hi  \r\n"}, {"role": "assistant", "content": "\x00yo"}],
               "id": 7}
    cleaned = D.clean_example(example)
    assert cleaned == {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
                       "id": 7}
    assert example["messages"][0]["content"] == "hi  \r\n"
    assert D.clean_example({"instruction": " a ", "input": "b\r\n", "response": "c"}) == {
        "instruction": " a", "input": "b", "response": "c"}


def test_blank_means_nothing_left_after_cleaning():
    assert D.is_blank(" \t\n\u200b\x00") and not D.is_blank(".")


# ---------------------------------------------------------------------------------------------------- duplicates

HOUSES = [f"In the series A Song of Ice and Fire, who is the founder of House {h}?"
          for h in ["Towers", "Martell", "Tyrell", "Corbray"]]


def test_the_chapters_prefix_key_calls_different_questions_duplicates():
    assert D.prefix_duplicates(HOUSES).dropped == [1, 2, 3]
    assert D.exact_duplicates(HOUSES).clusters == []


def test_exact_duplicates_are_found_after_normalisation_and_the_first_is_kept():
    texts = ["What is  the capital of France?", "Why is the sky blue?", "what is the capital of france",
             "WHAT IS THE CAPITAL OF FRANCE!"]
    found = D.exact_duplicates(texts)
    assert found.clusters == [[0, 2, 3]] and found.keep(4) == [0, 1]


def test_near_duplicates_are_found_with_minhash_lsh():
    base = ("The Eiffel Tower was built for the 1889 World's Fair in Paris. It is 330 metres tall and was the "
            "tallest man-made structure in the world for 41 years.")
    edited = base.replace("330 metres", "330 m").replace("41 years", "forty-one years")
    other = "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen inside the leaves of plants."
    found = D.near_duplicates([base, other, edited], threshold=0.7)
    assert found.clusters == [[0, 2]] and found.keep(3) == [0, 1]
    assert D.exact_duplicates([base, other, edited]).clusters == []
    assert D.jaccard(D.shingles(base), D.shingles(edited)) >= 0.7
    assert D.near_duplicates([base, other], threshold=0.3).clusters == []


def test_near_duplicates_of_empty_texts_do_not_crash():
    assert D.near_duplicates(["", "", "a"]).clusters == []


def test_the_dolly_sample_has_13_repeated_prompts_but_no_repeated_example():
    examples = D.validate_file(DOLLY_CHAT).examples
    prompts = [D.example_text(ex, "prompt") for ex in examples]
    assert len(D.exact_duplicates(prompts).dropped) == 13  # the 13 of its PROVENANCE.md
    assert D.exact_duplicates([D.example_text(ex) for ex in examples]).dropped == []
    assert len(D.prefix_duplicates(prompts).dropped) > 13  # the chapter's key over-counts


# ---------------------------------------------------------------------------------------------------- flags


@pytest.mark.parametrize("prompt, response, flag", [
    ("Tell a story.", "Well... then... and... so... the end...", "excessive_ellipsis"),
    ("Capital of France?", "Paris.", "too_short"),
    ("Do it.", "I cannot. I cannot. I cannot do this.", "excessive_refusal"),
    ("Tell me a joke.", "I'm sorry, but I can't help with that.", "refusal"),
    ("Explain gravity.", "N/A", "trivial_answer"),
    ("Explain gravity.", "???", "trivial_answer"),
    ("Write a haiku about rain.", "Write a haiku about rain", "repeats_prompt"),
    ("Given this paragraph about Rome, when was it founded?", "In 753 BC, according to legend.", "missing_context"),
    ("How do I reach you?", "Write to jane.doe@example.com any time.", "email"),
    ("Who do I call?", "Call +44 20 7946 0958 between nine and five.", "phone_number"),
    ("Who do I call?", "The office number is (555) 123-4567, ask for Sam.", "phone_number"),
])
def test_each_flag_catches_its_problem(prompt, response, flag):
    assert flag in Q.example_flags(prompt, response)


@pytest.mark.parametrize("prompt, response", [
    ("Which sub-Saharan colony was the first to gain independence?",
     "Ghana was the first sub-Saharan colony to gain independence."),
    ("When did the Second World War end?", "The war in Europe ended in 1945; the fighting of 1939-1945 cost millions."),
    ("What is a good book?", "I cannot recommend enough 'The Old Man and the Sea': short, clear and moving."),
    ("Who wrote Hamlet? " + "Here is a long passage about the play. " * 12, "William Shakespeare wrote Hamlet."),
    ("Name an ISBN format.", "ISBN-13, for example 978-3-16-148410-0, has thirteen digits."),
])
def test_ordinary_good_answers_get_no_flag(prompt, response):
    assert Q.example_flags(prompt, response) == []


def test_length_outliers_are_found_in_log_space():
    low, high = Q.tukey_fences([100] * 10 + [120] * 10 + [80] * 10)
    assert low < 80 and 120 < high < 1000


def test_the_quality_report_counts_flags_and_keeps_the_clean_examples(tokenizer, tmp_path):
    def chat(q, a):
        return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}

    examples = [chat(f"Question {i}: what is {i} plus {i}?", f"The answer is {2 * i}, because {i} + {i} = {2 * i}.")
                for i in range(20)]
    examples += [chat("Question 3: what is 3 plus 3?", "The answer is 6, because 3 + 3 = 6."),  # duplicate of 3
                 chat("Given this passage, who wins?", "The hero wins in the end, after a long fight."),
                 chat("Write a long list.", " ".join(["item"] * 400))]
    report = Q.quality_report(examples, tokenizer, max_length=60, name="toy")
    counts = report.counts()
    assert counts["duplicate"] == 1 and report.with_flag("duplicate") == [20]
    assert report.with_flag("missing_context") == [21]
    assert 22 in report.with_flag("length_outlier") and 22 in report.with_flag("too_long_for_training")
    assert report.keep() == list(range(20)) + [22]
    assert report.worst(1) == [22]
    assert len(report.total_tokens) == 23 and report.total_tokens[0] == D.count_tokens(examples[0], tokenizer)
    assert "duplicate" in report.table() and "missing_context" in report.table()
    page = report.write_html(tmp_path / "out" / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "data:image/png;base64," in page and "Counts by problem" in page
    assert not [p for p in os.listdir(tmp_path / "out") if p.endswith(".partial")]


def test_the_report_finds_near_duplicates_left_after_exact_ones(tokenizer):
    base = "The Eiffel Tower was built for the 1889 World's Fair in Paris and is 330 metres tall."

    def chat(a):
        return {"messages": [{"role": "user", "content": "Tell me about the Eiffel Tower."},
                             {"role": "assistant", "content": a}]}

    report = Q.quality_report([chat(base), chat(base.replace("330 metres", "330 m")), chat("It is in Paris.")],
                              tokenizer)
    assert report.with_flag("near_duplicate") == [1] and report.near.clusters == [[0, 1]]


# ---------------------------------------------------------------------------------------------------- the experiment


def test_the_experiment_holds_out_kept_examples_and_trains_both_runs_on_as_many():
    kept = [i for i in range(200) if i % 5]  # the cleaning dropped every fifth example
    split = Q.raw_and_cleaned_splits(200, kept, n_train=60, n_held_out=30, seed=3)
    assert len(split.held_out) == 30 and set(split.held_out) <= set(kept)
    assert len(split.raw) == len(split.cleaned) == 60 and set(split.cleaned) <= set(kept)
    assert not set(split.held_out) & (set(split.raw) | set(split.cleaned))
    assert {i for i in split.raw if i % 5 == 0}  # the raw run trains on dropped examples too
    assert {i for i in split.raw if i % 5} <= set(split.cleaned)  # one order: the runs differ where one was dropped
    assert Q.raw_and_cleaned_splits(200, kept, 60, 30, seed=3) == split
    assert Q.raw_and_cleaned_splits(200, kept, 60, 30, seed=4).held_out != split.held_out


def test_no_run_trains_on_a_copy_of_a_held_out_example():
    kept = list(range(0, 100, 2))  # the odd examples were dropped, each a copy of the even one before it
    copies = [[i, i + 1] for i in range(0, 100, 2)]
    split = Q.raw_and_cleaned_splits(100, kept, n_train=20, n_held_out=10, seed=1, groups=copies)
    trained = set(split.raw) | set(split.cleaned)
    assert not {i + 1 for i in split.held_out} & trained
    without = Q.raw_and_cleaned_splits(100, kept, n_train=20, n_held_out=10, seed=1)
    assert without.held_out == split.held_out and {i + 1 for i in split.held_out} & set(without.raw)


def test_the_experiment_refuses_splits_it_cannot_make_fair():
    with pytest.raises(ValueError, match="fewer than the 30 to hold out"):
        Q.raw_and_cleaned_splits(50, range(20), n_train=10, n_held_out=30)
    with pytest.raises(ValueError, match="only 10 kept examples are left to train on"):
        Q.raw_and_cleaned_splits(100, range(20), n_train=40, n_held_out=10)


# ---------------------------------------------------------------------------------------------------- label masks


def test_the_template_mask_trains_on_the_assistants_words_only(tokenizer):
    ids, labels = D.template_labels(CHAT, tokenizer)
    check = D.check_loss_mask(CHAT, ids, labels, tokenizer)
    assert check.ok, check.problems
    assert check.trained == "Paris.<|im_end|>"
    assert "What is the capital of France?" in check.untrained
    assert D.show_loss_mask(ids, labels, tokenizer).endswith("assistant\n[[Paris.<|im_end|>]]\n")


def test_the_check_catches_a_mask_that_trains_on_the_prompt(tokenizer):
    ids, _ = D.template_labels(CHAT, tokenizer)
    check = D.check_loss_mask(CHAT, ids, list(ids), tokenizer)
    assert not check.ok and any("(user) carries loss" in p for p in check.problems)
    nothing = D.check_loss_mask(CHAT, ids, [-100] * len(ids), tokenizer)
    assert any("no token carries loss" in p for p in nothing.problems)


@contextmanager
def chat_template(tokenizer, template: str | None):
    """The tokenizer with another chat template for the block's duration."""
    original, tokenizer.chat_template = tokenizer.chat_template, template
    try:
        yield tokenizer
    finally:
        tokenizer.chat_template = original


def without_generation_markers(tokenizer) -> str:
    return tokenizer.chat_template.replace("{% generation %}", "").replace("{% endgeneration %}", "")


def test_a_template_without_generation_markers_is_refused(tokenizer):
    with chat_template(tokenizer, without_generation_markers(tokenizer)):
        with pytest.raises(D.DataError, match="no {% generation %} block"):
            D.template_labels(CHAT, tokenizer)


def test_trl_trains_on_the_assistant_only_for_chats_and_prompt_completion(tokenizer, tmp_path):
    from datasets import Dataset
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    two_turns = {"messages": CHAT["messages"] + [{"role": "user", "content": "And of Spain?"},
                                                 {"role": "assistant", "content": "Madrid."}]}
    for example, options in [(two_turns, {"assistant_only_loss": True}), (D.to_prompt_completion(CHAT), {})]:
        args = SFTConfig(output_dir=str(tmp_path), max_length=128, use_cpu=True, bf16=False, fp16=False,
                         report_to="none", **options)
        trainer = SFTTrainer(model=LlamaForCausalLM(config), args=args, processing_class=tokenizer,
                             train_dataset=Dataset.from_list([example]))
        row = trainer.train_dataset[0]
        check = D.check_loss_mask(example, row["input_ids"], row["labels"], tokenizer)
        assert check.ok, (options, check.problems, D.show_loss_mask(row["input_ids"], row["labels"], tokenizer))
        assert "Paris." in check.trained and "capital" not in check.trained


def test_completion_labels_are_what_sft_trainer_trains_on(tokenizer, tmp_path):
    """The same token ids and labels as trl's SFTTrainer prepares for a prompt/completion example with
    completion_only_loss, truncation to max_length included."""
    from datasets import Dataset
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    long = {"instruction": "Tell me about the fox. " * 3, "response": "The quick brown fox jumps. " * 30}
    examples = [D.to_prompt_completion(CHAT), D.to_prompt_completion(long)]
    args = SFTConfig(output_dir=str(tmp_path), max_length=64, completion_only_loss=True, use_cpu=True, bf16=False,
                     fp16=False, report_to="none")
    trainer = SFTTrainer(model=LlamaForCausalLM(config), args=args, processing_class=tokenizer,
                         train_dataset=Dataset.from_list(examples))
    for example, row in zip([CHAT, long], trainer.train_dataset):
        assert D.completion_labels(example, tokenizer, max_length=64) == (row["input_ids"], row["labels"])
    ids, labels = D.completion_labels(long, tokenizer)
    assert len(ids) == len(labels) > 64 and labels[-1] != -100  # no max_length: the whole answer
    with chat_template(tokenizer, None):
        with pytest.raises(D.DataError, match="has no chat template"):
            D.completion_labels(CHAT, tokenizer)


def test_each_assistant_turn_becomes_a_prompt_completion_example_with_all_before_it():
    two_turns = {"messages": CHAT["messages"] + [{"role": "user", "content": "And of Spain?"},
                                                 {"role": "assistant", "content": "Madrid."}]}
    examples = D.per_turn_examples(two_turns)
    assert [e["completion"] for e in examples] == [[{"role": "assistant", "content": "Paris."}],
                                                   [{"role": "assistant", "content": "Madrid."}]]
    assert [e["prompt"] for e in examples] == [two_turns["messages"][:2], two_turns["messages"][:4]]
    assert D.per_turn_examples(CHAT) == [D.to_prompt_completion(CHAT)]
    with pytest.raises(D.DataError, match="no assistant turn"):
        D.per_turn_examples({"messages": [{"role": "user", "content": "Hello?"}]})


def test_trl_trains_on_every_reply_of_a_chat_with_a_template_without_generation_markers(tokenizer, tmp_path):
    """The route for Hub templates without {% generation %}: one prompt/completion example per reply."""
    from datasets import Dataset
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    two_turns = {"messages": CHAT["messages"] + [{"role": "user", "content": "And of Spain?"},
                                                 {"role": "assistant", "content": "Madrid."}]}
    with chat_template(tokenizer, without_generation_markers(tokenizer)):
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                             num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        args = SFTConfig(output_dir=str(tmp_path), max_length=128, use_cpu=True, bf16=False, fp16=False,
                         report_to="none")
        trainer = SFTTrainer(model=LlamaForCausalLM(config), args=args, processing_class=tokenizer,
                             train_dataset=Dataset.from_list(D.per_turn_examples(two_turns)))
        trained = [D.check_loss_mask(two_turns, row["input_ids"], row["labels"], tokenizer).trained
                   for row in trainer.train_dataset]
    assert [t.strip() for t in trained] == ["Paris.<|im_end|>", "Madrid.<|im_end|>"]


def test_the_end_of_turn_token_is_the_special_token_that_closes_a_reply(tokenizer):
    assert tokenizer.convert_ids_to_tokens(D.end_of_turn_ids(tokenizer)) == ["<|im_end|>"]
    with chat_template(tokenizer, tokenizer.chat_template.replace("'<|im_end|>'", "'\\n'")):  # turns end with text
        assert D.end_of_turn_ids(tokenizer) == []


# ---------------------------------------------------------------------------------------------------- writing


def test_written_jsonl_reads_back_the_same(tmp_path):
    examples = [CHAT, {"messages": [{"role": "user", "content": "Αθήνα?"}, {"role": "assistant", "content": "Ναι."}]}]
    path = D.write_jsonl(examples, tmp_path / "sub" / "clean.jsonl")
    assert D.read_examples(path) == examples
    assert "Αθήνα" in path.read_text(encoding="utf-8")  # readable UTF-8, not \u escapes
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_writing_refuses_to_replace_a_file_unless_asked(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("precious\n")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        D.write_jsonl([CHAT], path)
    assert path.read_text() == "precious\n"
    D.write_jsonl([CHAT], path, overwrite=True)
    assert D.read_examples(path) == [CHAT]


def test_a_crash_mid_write_leaves_the_old_file_intact(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("precious\n")

    def examples():
        yield CHAT
        raise KeyboardInterrupt  # the kernel interrupted half-way

    with pytest.raises(KeyboardInterrupt):
        D.write_jsonl(examples(), path, overwrite=True)
    assert path.read_text() == "precious\n" and os.listdir(tmp_path) == ["data.jsonl"]


def test_plain_text_round_trips_and_refuses_what_would_not(tmp_path):
    docs = [{"text": "First document,\n  two lines."}, {"text": "Second."}]
    path = D.write_plain_text(docs, tmp_path / "docs.txt")
    assert D.validate_file(path).examples == docs
    with pytest.raises(D.DataError, match="blank line"):
        D.write_plain_text([{"text": "one\n\ntwo"}], tmp_path / "other.txt")
    assert not (tmp_path / "other.txt").exists()


def test_text_that_is_not_unicode_is_refused_before_anything_is_written(tmp_path):
    bad = {"messages": [{"role": "user", "content": "x\ud800"}, {"role": "assistant", "content": "y"}]}
    with pytest.raises(D.DataError, match="example 1 .*clean_example"):
        D.write_jsonl([CHAT, bad], tmp_path / "out.jsonl")
    assert os.listdir(tmp_path) == []
    D.write_jsonl([D.clean_example(bad)], tmp_path / "out.jsonl")
    assert D.validate_file(tmp_path / "out.jsonl").ok
