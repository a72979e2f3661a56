"""Instruction data: read, convert, validate, clean, deduplicate, check label masks, write atomically.

The formats a student meets, one JSON object per line (JSONL; a .json file may instead hold one JSON array of them, the
way Alpaca's alpaca_data.json is published):

    messages           {"messages": [{"role": "system" | "user" | "assistant", "content": "..."}, ...]}
    instruction        {"instruction": "...", "input": "..." (optional), "response": "..."}
    prompt_completion  {"prompt": "...", "completion": "..."}, or conversational: both are lists of messages
    text               {"text": "..."}; a plain .txt file holds one document per block of non-blank lines

and the two most common formats in the wild, which are read, validated and converted but never written:

    alpaca             {"instruction": "...", "input": "..." (optional, may be ""), "output": "..."}
    sharegpt           {"conversations": [{"from": "system" | "human" | "gpt", "value": "..."}, ...]}

Lines must be strict JSON: NaN, Infinity and a key repeated in one object are problems (Python's json module accepts
all three, silently keeping the last value of a repeated key; other JSON readers refuse them).

Two promises: nothing is lost (validation keeps every valid line and never writes; writing is atomic and refuses to
replace a file unless asked) and nothing bad passes silently (every problem is reported with file, line and field).
Quality flags and the dataset report live in `course_utils.quality`.
"""
from __future__ import annotations

import copy
import json
import re
import unicodedata
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from .atomic import atomic_open, write_text

FORMATS = ("messages", "instruction", "prompt_completion", "text")  # the course's formats: what `convert` writes
READ_ONLY_FORMATS = ("alpaca", "sharegpt")  # the common formats of public datasets: read and converted, not written
ALL_FORMATS = FORMATS + READ_ONLY_FORMATS
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"system": "system", "human": "user", "gpt": "assistant"}  # ShareGPT's "from" -> the course's role
FIELDS = {  # the fields that identify a format; all of them are required
    "messages": ("messages",),
    "instruction": ("instruction", "response"),
    "prompt_completion": ("prompt", "completion"),
    "text": ("text",),
    "alpaca": ("instruction", "output"),
    "sharegpt": ("conversations",),
}


class DataError(ValueError):
    """Data that cannot be used as it is; the message says where (file, line, field) and what to do."""


# ----------------------------------------------------------------------------------------------------------------
# Formats and conversions


def detect_format(example: dict) -> str | None:
    """The format of which the example has the most identifying fields (at least one; on a tie the first in
    ALL_FORMATS: {"instruction": ...} alone is the instruction format), or None."""
    if not isinstance(example, dict):
        return None
    found = {fmt: sum(name in example for name in names) for fmt, names in FIELDS.items()}
    best = max(found.values())
    return next(fmt for fmt in ALL_FORMATS if found[fmt] == best) if best else None


def _has_all_fields(example, fmt: str | None) -> bool:
    return fmt is not None and isinstance(example, dict) and all(name in example for name in FIELDS[fmt])


def _format_list() -> str:
    return "; ".join(f"{f} ({', '.join(FIELDS[f])})" for f in ALL_FORMATS)


def _format_of(example: dict, fmt: str | None) -> str:
    fmt = fmt or detect_format(example)
    if fmt not in ALL_FORMATS:
        raise DataError(f"cannot tell the format of {_preview(example)}: expected the fields of one of "
                        + _format_list())
    return fmt


def _preview(value, width: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    return text if len(text) <= width else text[: width - 3] + "..."


def alpaca_to_instruction(example: dict) -> dict:
    """An Alpaca record -> the instruction format: "output" is renamed "response"; "input" is kept if not empty."""
    result = {"instruction": example["instruction"]}
    if example.get("input"):
        result["input"] = example["input"]
    result["response"] = example["output"]
    return result


def to_messages(example: dict, fmt: str | None = None, system: str | None = None) -> dict:
    """The example as a chat: {"messages": [...]}. `system` adds a system turn where there is none.

    Instruction and Alpaca records become one user turn (the instruction, then a blank line and the input if there
    is one) and one assistant turn; ShareGPT's "human", "gpt" and "system" become user, assistant and system."""
    fmt = _format_of(example, fmt)
    if fmt == "alpaca":
        example, fmt = alpaca_to_instruction(example), "instruction"
    if fmt == "messages":
        messages = [dict(m) for m in example["messages"]]
    elif fmt == "sharegpt":
        messages = [{"role": SHAREGPT_ROLES[turn["from"]], "content": turn["value"]}
                    for turn in example["conversations"]]
    elif fmt == "instruction":
        user = example["instruction"]
        if example.get("input"):
            user = f"{user}\n\n{example['input']}"
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": example["response"]}]
    elif fmt == "prompt_completion":
        prompt, completion = example["prompt"], example["completion"]
        prompt = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
        completion = ([{"role": "assistant", "content": completion}] if isinstance(completion, str)
                      else [dict(m) for m in completion])
        messages = prompt + completion
    else:
        raise DataError("plain text has no turns, so it cannot become a chat: keep it as {'text': ...} for "
                        "continued pre-training, or write it as instruction/response pairs")
    if system and not (messages and messages[0]["role"] == "system"):
        messages.insert(0, {"role": "system", "content": system})
    return {"messages": messages}


def to_instruction(example: dict, fmt: str | None = None) -> dict:
    """A single-turn example as {"instruction", "response"} (a system turn, if any, is kept as "system"; an Alpaca
    record keeps its "input")."""
    if _format_of(example, fmt) == "alpaca":
        return alpaca_to_instruction(example)
    messages = to_messages(example, fmt)["messages"]
    system = [m["content"] for m in messages if m["role"] == "system"]
    turns = [m for m in messages if m["role"] != "system"]
    if [m["role"] for m in turns] != ["user", "assistant"]:
        raise DataError(f"only a single user/assistant exchange converts to instruction/response; this one has the "
                        f"turns {[m['role'] for m in turns]}: keep it in the messages format")
    result = {"instruction": turns[0]["content"], "response": turns[1]["content"]}
    if system:
        result["system"] = system[0]
    return result


def to_prompt_completion(example: dict, fmt: str | None = None) -> dict:
    """Conversational prompt/completion (trl's format for completion-only loss): the final assistant turn is the
    completion, everything before it the prompt."""
    messages = to_messages(example, fmt)["messages"]
    if not messages or messages[-1]["role"] != "assistant":
        raise DataError("the conversation must end with an assistant turn to have a completion")
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def per_turn_examples(example: dict, fmt: str | None = None) -> list[dict]:
    """One conversational prompt/completion example per assistant turn: the conversation before the turn is the
    prompt, the turn the completion. With completion-only loss every reply of a multi-turn chat is then trained on,
    with any chat template (assistant_only_loss needs the template's {% generation %} block)."""
    messages = to_messages(example, fmt)["messages"]
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if not turns:
        raise DataError("the conversation has no assistant turn: there is nothing to train on")
    return [{"prompt": messages[:i], "completion": [messages[i]]} for i in turns]


def end_of_turn_ids(tokenizer) -> list[int]:
    """The special token the chat template closes an assistant turn with (ChatML's <|im_end|>, Llama 3's
    <|eot_id|>), as a list of one id; [] if the template ends a turn with ordinary text. A chat reply is generated
    until this token: a model tuned on chats learns to write it, and without it would go on with the next turn."""
    marker = "\u2063reply\u2063"  # text no template adds: what the template writes after it closes the turn
    chat = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": marker}]
    tail = tokenizer.apply_chat_template(chat, tokenize=False).rsplit(marker, 1)[-1]
    ids = tokenizer(tail, add_special_tokens=False)["input_ids"] if tail.strip() else []
    return ids[:1] if ids and ids[0] in tokenizer.all_special_ids else []


def render_chat(example: dict, tokenizer, fmt: str | None = None) -> str:
    """The example as one string, rendered by the tokenizer's chat template (what the model is trained on)."""
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(f"the tokenizer {type(tokenizer).__name__} has no chat template: use an instruct/chat "
                        "model's tokenizer, or set tokenizer.chat_template")
    return tokenizer.apply_chat_template(to_messages(example, fmt)["messages"], tokenize=False)


def to_text(example: dict, tokenizer=None, fmt: str | None = None) -> dict:
    """{"text": ...}: chats rendered with the tokenizer's chat template; plain text as it is."""
    fmt = _format_of(example, fmt)
    if fmt == "text":
        return {"text": example["text"]}
    if tokenizer is None:
        raise DataError("rendering a chat as text needs the model's tokenizer (its chat template)")
    return {"text": render_chat(example, tokenizer, fmt)}


def convert(examples: Iterable[dict], target: str, tokenizer=None, fmt: str | None = None) -> list[dict]:
    """Convert every example to `target` (one of FORMATS)."""
    converters = {
        "messages": lambda ex: to_messages(ex, fmt),
        "instruction": lambda ex: to_instruction(ex, fmt),
        "prompt_completion": lambda ex: to_prompt_completion(ex, fmt),
        "text": lambda ex: to_text(ex, tokenizer, fmt),
    }
    if target not in converters:
        raise ValueError(f"unknown target format {target!r}: choose one of {', '.join(FORMATS)} "
                         f"({' and '.join(READ_ONLY_FORMATS)} are read, not written)")
    return [converters[target](ex) for ex in examples]


def example_text(example: dict, part: str = "all", fmt: str | None = None) -> str:
    """The words of an example: "prompt" (user turns), "response" (assistant turns) or "all" (both; system turns,
    usually the same for every example, are left out)."""
    fmt = _format_of(example, fmt)
    if fmt == "text":
        return "" if part == "prompt" else example["text"]
    messages = to_messages(example, fmt)["messages"]
    roles = {"prompt": ("user",), "response": ("assistant",), "all": ("user", "assistant")}[part]
    return "\n".join(m["content"] for m in messages if m["role"] in roles)


# Adapters for the sources shipped in data/instruct/ -------------------------------------------------------------

_ALPACA = re.compile(r"### Instruction:\n(?P<instruction>.*?)(?:\n\n### Input:\n(?P<input>.*?))?\n\n### Response:\s*$",
                     re.DOTALL)
EOS_MARKER = "###eos_token###"


def from_alpaca_prompt(example: dict) -> dict:
    """{"prompt": <Alpaca template>, "answer": ...} (the Dolly sample) -> instruction format. The template's fixed
    preamble and the literal end marker "###eos_token###" are removed: a model would learn to write them."""
    match = _ALPACA.search(example["prompt"])
    if not match:
        raise DataError(f"not an Alpaca-template prompt (no '### Instruction:' ... '### Response:'): "
                        f"{_preview(example['prompt'])}")
    result = {"instruction": match["instruction"].strip()}
    if match["input"]:
        result["input"] = match["input"].strip()
    result["response"] = example["answer"].removesuffix(EOS_MARKER).strip()
    return result


def from_gsm8k(example: dict, keep_calculator: bool = False) -> dict:
    """A GSM8K problem -> instruction format. The calculator annotations "<<48/2=24>>" are removed unless asked
    for: they are tool calls of the original data-collection set-up, not words the model should write."""
    answer = example["answer"] if keep_calculator else re.sub(r"<<[^<>]*>>", "", example["answer"])
    return {"instruction": example["question"], "response": answer}


def from_self_instruct(task: dict) -> list[dict]:
    """A Self-Instruct task -> one instruction example per instance."""
    return [{"instruction": task["instruction"], "input": inst.get("input", ""), "response": inst["output"]}
            for inst in task["instances"]]


# ----------------------------------------------------------------------------------------------------------------
# Validation


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one line of a file."""

    file: str
    line: int
    field: str  # e.g. "messages[2].content"; "" for the whole line
    kind: str  # e.g. "malformed_json", "missing_field", "unknown_role"
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


@dataclass
class ValidationReport:
    """What a file holds: the valid examples (with their line numbers) and every problem found."""

    file: str
    format: str | None
    format_source: str  # how the format was chosen, for the summary
    examples: list[dict] = field(default_factory=list)
    line_numbers: list[int] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)  # the first `max_problems`
    kind_counts: Counter = field(default_factory=Counter)  # over all problems
    bad_lines: int = 0
    blank_lines: int = 0
    lines: int = 0
    max_problems: int = 50
    unit: str = "lines"  # what `lines` counts: lines of a JSONL file, or the items of a JSON array

    @property
    def ok(self) -> bool:
        return self.bad_lines == 0

    @property
    def problem_count(self) -> int:
        return sum(self.kind_counts.values())

    def summary(self, limit: int | None = None) -> str:
        """A report a person can act on: counts, then one line per problem."""
        limit = self.max_problems if limit is None else limit
        head = (f"{self.file}: {self.lines} {self.unit}, format {self.format!r} ({self.format_source}); "
                f"{len(self.examples)} valid examples kept")
        if self.ok:
            return head + ", no problems."
        lines = [head + f"; {self.bad_lines} {self.unit} with {self.problem_count} problems:"]
        lines += [f"  {p}" for p in self.problems[:limit]]
        hidden = self.problem_count - min(limit, len(self.problems))
        if hidden:
            lines.append(f"  ... and {hidden} more (by kind: {dict(self.kind_counts)}); "
                         "raise max_problems to see them all")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _type_name(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


_SURROGATE = re.compile("[\ud800-\udfff]")


def is_blank(text: str) -> bool:
    """True if nothing would be left after cleaning: only whitespace and invisible characters."""
    return not clean_text(text).strip()


def _check_string(value, where: str) -> list[tuple[str, str, str]]:
    if not isinstance(value, str):
        return [(where, "wrong_type", f"expected a string, got {_type_name(value)}")]
    if _SURROGATE.search(value):
        return [(where, "invalid_unicode", "contains a lone surrogate escape (\\ud800-\\udfff), which is not text and "
                                           "cannot be written as UTF-8: fix the producer, or run clean_text")]
    if is_blank(value):
        return [(where, "empty_field", "is empty (nothing but whitespace or invisible characters)")]
    return []


@dataclass(frozen=True)
class _Turns:
    """How a format writes the turns of a conversation: its keys and its names for the roles."""

    noun: str  # what the list holds, e.g. "messages"
    role: str  # the key that names who speaks
    content: str  # the key that holds the words
    names: dict[str, str]  # the course's role -> this format's name for it
    hint: str = ""  # added to an unknown-role message


_MESSAGES = _Turns("messages", "role", "content", {r: r for r in ROLES})
_SHAREGPT = _Turns("turns", "from", "value", {role: name for name, role in SHAREGPT_ROLES.items()},
                   hint=" (ShareGPT names the user 'human' and the assistant 'gpt')")


def _with_article(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


def _check_messages(messages, where: str, ends_with: str | None, order: bool = True,
                    turns: _Turns = _MESSAGES) -> list[tuple[str, str, str]]:
    if not isinstance(messages, list):
        return [(where, "wrong_type", f"expected a list of {turns.noun}, got {_type_name(messages)}")]
    if not messages:
        return [(where, "empty_field", f"has no {turns.noun}")]
    known = {name: role for role, name in turns.names.items()}  # this format's name -> the course's role
    problems, roles = [], []
    for i, message in enumerate(messages):
        at = f"{where}[{i}]"
        if not isinstance(message, dict):
            problems.append((at, "wrong_type", f'expected an object {{"{turns.role}": ..., "{turns.content}": ...}}, '
                                               f"got {_type_name(message)}"))
            roles.append(None)
            continue
        role = message.get(turns.role)
        if turns.role not in message:
            problems.append((f"{at}.{turns.role}", "missing_field", f"missing field {turns.role!r}"))
        elif not isinstance(role, str):
            problems.append((f"{at}.{turns.role}", "wrong_type", f"expected a string, got {_type_name(role)}"))
        elif role not in known:
            problems.append((f"{at}.{turns.role}", "unknown_role", f"unknown role {_preview(role, 30)!r}: "
                                                                   f"use one of {', '.join(known)}{turns.hint}"))
        if turns.content not in message:
            problems.append((f"{at}.{turns.content}", "missing_field", f"missing field {turns.content!r}"))
        else:
            problems += _check_string(message[turns.content], f"{at}.{turns.content}")
        roles.append(known.get(role) if isinstance(role, str) else None)
    if order and None not in roles:
        problems += _check_turn_order(roles, where, ends_with, turns)
    return problems


def _check_turn_order(roles: list[str], where: str, ends_with: str | None,
                      turns: _Turns = _MESSAGES) -> list[tuple[str, str, str]]:
    """`roles` are the course's roles; the messages use the format's own names."""
    name, field_of = turns.names, (lambda i: f"{where}[{i}].{turns.role}")
    first = 1 if roles[0] == "system" else 0
    for i in range(first, len(roles)):
        expected = "user" if (i - first) % 2 == 0 else "assistant"
        if roles[i] == "system":
            return [(field_of(i), "misplaced_system", "a system message may only be the first message")]
        if roles[i] != expected:
            return [(field_of(i), "not_alternating",
                     f"expected {_with_article(name[expected])} turn here, got {name[roles[i]]}: turns must alternate "
                     f"{name['user']}, {name['assistant']}, {name['user']}, ... (merge consecutive turns of the same "
                     "role)")]
    if ends_with and roles[-1] != ends_with:
        if ends_with == "assistant":
            return [(field_of(len(roles) - 1), "no_final_assistant",
                     f"the conversation ends with {_with_article(name[roles[-1]])} turn: it must end with the "
                     f"{name['assistant']}'s answer (that is what the model learns from)")]
        return [(field_of(len(roles) - 1), "bad_prompt_end",
                 f"a prompt must end with a {ends_with} turn, got {roles[-1]}")]
    return []


def example_problems(example, fmt: str) -> list[tuple[str, str, str]]:
    """(field, kind, message) for everything wrong with one parsed example in format `fmt`; [] if valid."""
    if not isinstance(example, dict):
        return [("", "not_an_object", f"expected a JSON object {{...}}, got {_type_name(example)}")]
    missing = [name for name in FIELDS[fmt] if name not in example]
    if missing:
        other = detect_format(example)
        hint = (f" (this line has the fields of the {other} format: does the file mix formats, or is it in that one?)"
                if other != fmt and _has_all_fields(example, other) else "")
        return [(name, "missing_field", f"missing field {name!r}: every line of a {fmt}-format file needs "
                                        f"{' and '.join(repr(n) for n in FIELDS[fmt])}{hint}") for name in missing]
    if fmt == "messages":
        return _check_messages(example["messages"], "messages", ends_with="assistant")
    if fmt == "sharegpt":
        return _check_messages(example["conversations"], "conversations", ends_with="assistant", turns=_SHAREGPT)
    if fmt in ("instruction", "alpaca"):
        answer = "response" if fmt == "instruction" else "output"
        problems = _check_string(example["instruction"], "instruction") + _check_string(example[answer], answer)
        if example.get("input") is not None and not isinstance(example["input"], str):
            problems.append(("input", "wrong_type", f"expected a string, got {_type_name(example['input'])}"))
        return problems
    if fmt == "prompt_completion":
        prompt, completion = example["prompt"], example["completion"]
        if isinstance(prompt, list) or isinstance(completion, list):
            problems = _check_messages(prompt, "prompt", ends_with="user")
            problems += _check_messages(completion, "completion", ends_with=None, order=False)
            if isinstance(completion, list):
                problems += [(f"completion[{i}].role", "bad_completion_role",
                              f"a completion holds assistant turns only, got {m.get('role')!r}")
                             for i, m in enumerate(completion)
                             if isinstance(m, dict) and m.get("role") in ROLES and m.get("role") != "assistant"]
            return problems
        return _check_string(prompt, "prompt") + _check_string(completion, "completion")
    return _check_string(example["text"], "text")


def count_tokens(example: dict, tokenizer, fmt: str | None = None) -> int:
    """Tokens of the example as the model sees it (chats rendered with the chat template)."""
    text = to_text(example, tokenizer, fmt)["text"]
    return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def context_length(tokenizer, model=None) -> int | None:
    """The longest sequence the model takes: its config's max_position_embeddings, else the tokenizer's
    model_max_length (None when the tokenizer only has the 'very large' placeholder)."""
    if model is not None and getattr(model.config, "max_position_embeddings", None):
        return int(model.config.max_position_embeddings)
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if limit and limit < 10**9 else None


def _split_lines(raw: bytes) -> list[bytes]:
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [line.removesuffix(b"\r") for line in lines]


def _decode(line: bytes, number: int) -> tuple[str | None, str | None]:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as error:
        bad = line[error.start : error.start + 1]
        return None, (f"is not UTF-8 text: byte {error.start + 1} is {bad!r}; re-save the file as UTF-8 "
                      "(e.g. `iconv -f latin1 -t utf-8 in.jsonl > out.jsonl`)")
    if number == 1:
        text = text.removeprefix("\ufeff")  # a byte-order mark, written by some editors
    return text, None


class _RepeatedKeys(dict):
    """A parsed JSON object in which some key appeared more than once (the dict holds the last value of each)."""

    repeated: tuple[str, ...] = ()


class _NotJsonNumber(str):
    """Where a line had NaN, Infinity or -Infinity: Python's json reads them, JSON does not allow them."""


def _strict_problems(value) -> list[tuple[str, str, str]]:
    """(field, kind, message) for every NaN/Infinity and every repeated key in a value parsed by parse_json."""
    problems, stack = [], [("", value)]
    while stack:  # depth first, without recursion (a deep but valid line must not crash the validator)
        where, item = stack.pop()
        if isinstance(item, _NotJsonNumber):
            problems.append((where, "not_json_number", f"{item} is not a JSON number (Python's json module reads it, "
                                                       "other JSON readers refuse it): write a number, null or a "
                                                       "string"))
        elif isinstance(item, dict):
            for key in getattr(item, "repeated", ()):
                problems.append((f"{where}.{key}" if where else key, "duplicate_key",
                                 f"the key {key!r} appears more than once in one object: JSON readers keep only the "
                                 "last value and drop the others silently; keep one"))
            stack += [(f"{where}.{key}" if where else str(key), child) for key, child in reversed(item.items())]
        elif isinstance(item, list):
            stack += [(f"{where}[{i}]", child) for i, child in reversed(list(enumerate(item)))]
    return problems


class _StrictDecoder(json.JSONDecoder):
    """Python's JSON decoder, which marks each NaN/Infinity and each object with a repeated key as it reads them
    (`flagged`); _strict_problems then finds them with their field."""

    def __init__(self):
        super().__init__(parse_constant=self._not_a_number, object_pairs_hook=self._object)
        self.flagged = False

    def _not_a_number(self, name: str) -> _NotJsonNumber:
        self.flagged = True
        return _NotJsonNumber(name)

    def _object(self, items: list[tuple[str, object]]) -> dict:
        result = dict(items)
        if len(result) == len(items):
            return result
        self.flagged = True
        marked = _RepeatedKeys(result)
        marked.repeated = tuple(key for key, n in Counter(key for key, _ in items).items() if n > 1)
        return marked

    def strict_decode(self, text: str, start: int = 0) -> tuple[object, int, list[tuple[str, str, str]]]:
        """(value, end, problems) of the JSON value that starts at `start` (json.JSONDecodeError if malformed)."""
        self.flagged = False
        value, end = self.raw_decode(text, start)
        return value, end, (_strict_problems(value) if self.flagged else [])


def parse_json(text: str) -> tuple[object, list[tuple[str, str, str]]]:
    """One JSON value, strictly: (value, problems), where problems lists (field, kind, message) for each NaN,
    Infinity or -Infinity and each key repeated within one object. Malformed JSON raises json.JSONDecodeError."""
    start = _WHITESPACE.match(text).end()
    value, end, problems = _StrictDecoder().strict_decode(text, start)
    if _WHITESPACE.match(text, end).end() != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return value, problems


_WHITESPACE = re.compile(r"[ \t\n\r]*")


def _json_array_items(raw: bytes) -> list[tuple[int, object, list[tuple[str, str, str]]]]:
    """(line where the item starts, value, problems) for each item of a file that holds one JSON array. A malformed
    item ends the reading: its problem says so (JSON cannot be re-synchronised after a syntax error)."""
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        return [(line, None, [("", "not_utf8", f"is not UTF-8 text (byte {raw[error.start:error.start + 1]!r}); "
                                               "re-save the file as UTF-8: nothing of it was read")])]
    decoder, items, line, seen = _StrictDecoder(), [], 1, 0

    def stop(at: int, message: str) -> list:
        failed = text.count("\n", 0, at) + 1
        column = at - text.rfind("\n", 0, at)
        return items + [(failed, None, [("", "malformed_json", f"malformed JSON at column {column}: {message}; "
                                                               "the rest of the file was not read")])]

    i = _WHITESPACE.match(text, text.index("[") + 1).end()
    if text.startswith("]", i):
        return items if _WHITESPACE.match(text, i + 1).end() == len(text) else stop(i + 1, "extra data after ']'")
    while True:
        line, seen = line + text.count("\n", seen, i), i
        try:
            value, i, problems = decoder.strict_decode(text, i)
        except json.JSONDecodeError as error:
            return stop(error.pos, error.msg)
        except RecursionError:
            return stop(i, "nested too deeply")
        items.append((line, value, problems))
        i = _WHITESPACE.match(text, i).end()
        if text.startswith(",", i):
            i = _WHITESPACE.match(text, i + 1).end()
        elif text.startswith("]", i):
            return items if _WHITESPACE.match(text, i + 1).end() == len(text) else stop(i + 1, "extra data after ']'")
        else:
            return stop(i, "expected ',' or ']' after an item of the array")


def validate_file(path: str | Path, format: str | None = None, tokenizer=None, max_tokens: int | None = None,
                  max_problems: int = 50) -> ValidationReport:
    """Check every line of a JSONL file (or every item of a .json file that holds one JSON array, or every block of a
    .txt file); never writes anything.

    Returns the valid examples with their line numbers and every problem, with file, line and field. The format
    is `format` (one of ALL_FORMATS) or, if None, detected: that of the first JSON object that has all the fields of
    its format, else of the first one with any of them. With a `tokenizer` and `max_tokens`, examples longer than
    that (as the model sees them) are problems too.
    """
    path = Path(path)
    if format is not None and format not in ALL_FORMATS:
        raise ValueError(f"unknown format {format!r}: choose one of {', '.join(ALL_FORMATS)}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (the working folder is {Path.cwd()})")
    if max_tokens is not None and tokenizer is None:
        raise ValueError("checking lengths in tokens (max_tokens) needs the tokenizer")
    raw = path.read_bytes()
    if path.suffix == ".txt":
        return _validate_text_file(path, raw, max_problems)
    report = ValidationReport(str(path), format, "given" if format else "detected", max_problems=max_problems)

    def add(number: int, problems: list[tuple[str, str, str]]) -> None:
        report.bad_lines += 1
        for where, kind, message in problems:
            report.kind_counts[kind] += 1
            if len(report.problems) < max_problems:
                report.problems.append(Problem(path.name, number, where, kind, message))

    if path.suffix == ".json" and raw.removeprefix(b"\xef\xbb\xbf").lstrip()[:1] == b"[":
        parsed = _json_array_items(raw)  # (line number, value, problems found while reading it)
        report.lines, report.unit = len(parsed), "array items"
    else:
        lines = _split_lines(raw)
        parsed, report.lines = [], len(lines)
        for number, line in enumerate(lines, 1):
            text, error = _decode(line, number)
            if error:
                parsed.append((number, None, [("", "not_utf8", error)]))
            elif not text.strip():
                report.blank_lines += 1
            else:
                parsed.append((number, *_parse_line(text)))
    if report.format is None:
        report.format, report.format_source = _choose_format([(n, v) for n, v, _ in parsed])

    for number, example, problems in parsed:
        if problems:
            add(number, problems)
        elif not isinstance(example, dict):
            add(number, [("", "not_an_object", f"expected a JSON object {{...}}, got {_type_name(example)}")])
        elif report.format is None:
            add(number, [("", "unknown_format", "no known fields: expected one of " + _format_list())])
        else:
            problems = (example_problems(example, report.format)
                        or _length_problems(example, report.format, tokenizer, max_tokens))
            if problems:
                add(number, problems)
            else:
                report.examples.append(example)
                report.line_numbers.append(number)
    return report


def _parse_line(text: str) -> tuple[object, list[tuple[str, str, str]]]:
    """(value, problems) of one line: parse_json's, or a malformed_json problem."""
    try:
        return parse_json(text)
    except json.JSONDecodeError as error:
        return None, [("", "malformed_json", f"malformed JSON at column {error.colno}: {error.msg}")]
    except RecursionError:
        return None, [("", "malformed_json", "malformed JSON: nested too deeply")]


def _choose_format(values: list[tuple[int, object]]) -> tuple[str | None, str]:
    """(format, how it was chosen): that of the first object with all its format's fields, else of the first object
    with any identifying field (so one incomplete first line does not decide the format of the whole file)."""
    detected = [(number, detect_format(value)) for number, value in values]
    complete = [(n, fmt) for (n, fmt), (_, value) in zip(detected, values) if _has_all_fields(value, fmt)]
    candidates = complete or [(n, fmt) for n, fmt in detected if fmt]
    if not candidates:
        return None, "detected"
    number, fmt = candidates[0]
    return fmt, f"detected from line {number}"


def _length_problems(example: dict, fmt: str, tokenizer, max_tokens: int | None) -> list[tuple[str, str, str]]:
    if max_tokens is None:
        return []
    n = count_tokens(example, tokenizer, fmt)
    if n <= max_tokens:
        return []
    return [("", "too_long", f"{n} tokens, more than the {max_tokens} the model takes: shorten or split it "
                             "(trained as it is, its end would be cut off)")]


def _validate_text_file(path: Path, raw: bytes, max_problems: int) -> ValidationReport:
    """A plain text file: one {"text": ...} per block of non-blank lines; lines that are not UTF-8 are problems."""
    report = ValidationReport(str(path), "text", "a .txt file", max_problems=max_problems)
    lines = _split_lines(raw)
    report.lines = len(lines)
    block, start = [], 0
    for number, line in enumerate([*lines, b""], 1):
        text, error = _decode(line, number)
        if error:
            report.bad_lines += 1
            report.kind_counts["not_utf8"] += 1
            if len(report.problems) < max_problems:
                report.problems.append(Problem(path.name, number, "", "not_utf8", error))
            continue
        if text.strip():
            block, start = block + [text], start or number
        elif block:
            report.examples.append({"text": "\n".join(block)})
            report.line_numbers.append(start)
            block, start = [], 0
    return report


def read_jsonl(path: str | Path) -> list:
    """Every line of a JSONL file parsed, for a trusted source file in its own layout (e.g. {"prompt", "answer"});
    raises DataError naming the first line that is not JSON. Blank lines are skipped."""
    path = Path(path)
    values = []
    for number, line in enumerate(_split_lines(path.read_bytes()), 1):
        text, error = _decode(line, number)
        if error:
            raise DataError(f"{path.name}:{number}: {error}")
        if text.strip():
            value, problems = _parse_line(text)
            if problems:
                where, _, message = problems[0]
                raise DataError(f"{path.name}:{number}: {where + ': ' if where else ''}{message}; use validate_file "
                                "to see every problem of the file")
            values.append(value)
    return values


def read_examples(path: str | Path, format: str | None = None, tokenizer=None,
                  max_tokens: int | None = None) -> list[dict]:
    """The examples of a file that must be clean: raises DataError listing every problem if it is not.
    (Use validate_file to keep the valid lines of a file that has problems.)"""
    report = validate_file(path, format, tokenizer, max_tokens)
    if not report.ok:
        raise DataError(report.summary() + "\nFix these lines, or use validate_file(...).examples to keep the valid "
                                           "ones.")
    return report.examples


# ----------------------------------------------------------------------------------------------------------------
# Cleaning


def chapter_clean_text(text: str) -> str:
    """The chapter's cleaner, kept to show what it does: it collapses ALL whitespace (newlines and indentation
    too) and deletes every character that is not a word character, whitespace or one of . , ? ! - ' " : ; ( ) [ ]
    (so # { } = + * / < > $ % & @ and curly quotes go, and the vowel signs of Indic scripts with them)."""
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"[^\w\s\.\,\?\!\-\'\"\:\;\(\)\[\]]", "", text)
    return text.strip()


# Characters with no visible meaning that only get in the way: C0/C1 control characters other than tab and
# newline, the zero-width space and the byte-order mark. (Zero-width joiners are kept: scripts and emoji need them.)
_INVISIBLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\ufeff]")


def clean_text(text: str) -> str:
    """Normalise text without destroying it (idempotent: cleaning twice changes nothing more).

    - line endings become "\\n"; trailing spaces and tabs at line ends go; blank lines at the start and end go;
      runs of more than two blank lines shrink to two;
    - control characters, zero-width spaces and byte-order marks go; lone surrogates become U+FFFD;
    - Unicode NFC: one encoding for each accented letter (é as one code point, not e + a combining accent).

    Indentation, newlines, punctuation, maths and code symbols and every script are kept.
    """
    text = _SURROGATE.sub("\ufffd", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _INVISIBLE.sub("", text)
    text = unicodedata.normalize("NFC", text)
    lines = [line.rstrip(" \t") for line in text.split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return re.sub(r"\n{4,}", "\n\n\n", "\n".join(lines))


def clean_example(example: dict, fmt: str | None = None) -> dict:
    """A copy of the example with clean_text applied to every text field (roles and other fields untouched)."""
    fmt = _format_of(example, fmt)
    result = copy.deepcopy(example)

    def clean_turns(turns, content: str):
        if isinstance(turns, list):
            for turn in turns:
                if isinstance(turn, dict) and isinstance(turn.get(content), str):
                    turn[content] = clean_text(turn[content])

    for name in ("messages", "prompt", "completion", "instruction", "input", "response", "output", "text"):
        value = result.get(name)
        if isinstance(value, str):
            result[name] = clean_text(value)
        elif name in ("messages", "prompt", "completion"):
            clean_turns(value, "content")
    clean_turns(result.get("conversations"), "value")  # ShareGPT
    return result


def lost_characters(before: str, after: str) -> Counter:
    """Characters that a cleaner removed (counted with multiplicity), to see what it destroys."""
    return Counter(before) - Counter(after)


# ----------------------------------------------------------------------------------------------------------------
# Duplicates


def dedup_normalise(text: str) -> str:
    """The key for exact duplicates: compatibility-normalised, case-folded, punctuation removed, whitespace
    collapsed. "What is  the capital of France?" and "what is the capital of france" get the same key."""
    text = unicodedata.normalize("NFKC", text).casefold().translate(_punctuation_table())
    return " ".join(text.split())


@lru_cache(maxsize=1)
def _punctuation_table() -> dict[int, str]:
    """Every punctuation character of the Basic Multilingual Plane -> a space (for str.translate)."""
    return {cp: " " for cp in range(0x10000) if unicodedata.category(chr(cp)).startswith("P")}


@dataclass(frozen=True)
class Duplicates:
    """Groups of examples that are the same under one method; the first of each group is kept."""

    method: str
    clusters: list[list[int]]  # indices in ascending order, only groups of two or more

    @property
    def dropped(self) -> list[int]:
        return sorted(i for cluster in self.clusters for i in cluster[1:])

    def keep(self, n: int) -> list[int]:
        """The indices to keep out of range(n): all but the later members of each group."""
        dropped = set(self.dropped)
        return [i for i in range(n) if i not in dropped]

    def __str__(self) -> str:
        return f"{self.method}: {len(self.clusters)} groups, {len(self.dropped)} examples to drop"


def _group(keys: list) -> list[list[int]]:
    groups: dict = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def prefix_duplicates(texts: list[str], n: int = 50) -> Duplicates:
    """The chapter's rule: two examples are duplicates when their first `n` characters are identical."""
    return Duplicates(f"first {n} characters", _group([t[:n] for t in texts]))


def exact_duplicates(texts: list[str]) -> Duplicates:
    """Examples that are identical after dedup_normalise."""
    return Duplicates("exact after normalisation", _group([dedup_normalise(t) for t in texts]))


def shingles(text: str, n: int = 5) -> set[str]:
    """The character n-grams of the normalised text (the whole text if it is shorter than n)."""
    text = dedup_normalise(text)
    if len(text) <= n:
        return {text} if text else set()
    return {text[i : i + n] for i in range(len(text) - n + 1)}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def near_duplicates(texts: list[str], threshold: float = 0.7, num_perm: int = 128, ngram: int = 5,
                    seed: int = 1) -> Duplicates:
    """Near-duplicates: MinHash signatures of character n-grams, candidate pairs from datasketch's LSH index, each
    pair then confirmed by its exact Jaccard similarity (>= threshold). Groups are the connected pairs."""
    try:
        from datasketch import MinHash, MinHashLSH
    except ImportError as error:
        raise ImportError("near-duplicate detection needs datasketch: pip install datasketch==2.0.0") from error

    sets = [shingles(t, ngram) for t in texts]
    hashes = MinHash.bulk([[s.encode("utf-8") for s in shingle_set] for shingle_set in sets],
                          num_perm=num_perm, seed=seed, hashfunc=zlib.crc32)  # crc32: fast and deterministic
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    parent = list(range(len(texts)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, (shingle_set, minhash) in enumerate(zip(sets, hashes)):
        if not shingle_set:
            continue
        for j in lsh.query(minhash):
            if jaccard(shingle_set, sets[j]) >= threshold:
                parent[root(i)] = root(j)
        lsh.insert(i, minhash)
    groups = _group([root(i) for i in range(len(texts))])
    return Duplicates(f"near (MinHash/LSH, Jaccard >= {threshold})", [sorted(g) for g in groups])


# ----------------------------------------------------------------------------------------------------------------
# Label masks: which tokens carry the loss


def loss_spans(input_ids: list[int], labels: list[int], tokenizer) -> list[tuple[str, bool]]:
    """The sequence cut into runs of trained (label != -100) and untrained tokens, each decoded."""
    if len(input_ids) != len(labels):
        raise ValueError(f"input_ids has {len(input_ids)} tokens but labels has {len(labels)}")
    spans: list[tuple[list[int], bool]] = []
    for token, label in zip(input_ids, labels):
        trained = label != -100
        if spans and spans[-1][1] == trained:
            spans[-1][0].append(token)
        else:
            spans.append(([token], trained))
    return [(tokenizer.decode(ids), trained) for ids, trained in spans]


def show_loss_mask(input_ids: list[int], labels: list[int], tokenizer, marks: tuple[str, str] = ("[[", "]]")) -> str:
    """The decoded sequence with the trained parts between marks: what the model is graded on."""
    return "".join(f"{marks[0]}{text}{marks[1]}" if trained else text
                   for text, trained in loss_spans(input_ids, labels, tokenizer))


def has_generation_block(tokenizer) -> bool:
    """True if the chat template marks the assistant's words with {% generation %} (needed by
    return_assistant_tokens_mask and so by trl's assistant_only_loss without a swapped-in template)."""
    return bool(re.search(r"{%-?\s*generation\s*-?%}", getattr(tokenizer, "chat_template", None) or ""))


def template_labels(example: dict, tokenizer, fmt: str | None = None) -> tuple[list[int], list[int]]:
    """(input_ids, labels) from the chat template's {% generation %} markers: labels are -100 outside the
    assistant's turns. This is the mask trl's assistant_only_loss uses."""
    if not has_generation_block(tokenizer):
        raise DataError("this tokenizer's chat template has no {% generation %} block, so it cannot mark the "
                        "assistant's tokens: use trl's assistant_only_loss (which swaps in a training template for "
                        "known models) or a prompt/completion dataset with completion-only loss")
    encoded = tokenizer.apply_chat_template(to_messages(example, fmt)["messages"], tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
    ids = list(encoded["input_ids"])
    return ids, [t if keep else -100 for t, keep in zip(ids, encoded["assistant_masks"])]


def completion_labels(example: dict, tokenizer, fmt: str | None = None,
                      max_length: int | None = None) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of the example as trl's SFTTrainer prepares a conversational prompt/completion example
    with completion_only_loss: the prompt rendered with the generation prompt, then the whole chat rendered; labels
    are -100 on the prompt's tokens; both cut to the first `max_length` tokens (SFTConfig's max_length). This lets
    anyone recompute a trained model's answer loss on an example without building a trainer."""
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(f"the tokenizer {type(tokenizer).__name__} has no chat template: use an instruct/chat "
                        "model's tokenizer, or set tokenizer.chat_template")
    pair = to_prompt_completion(example, fmt)

    def ids(messages: list[dict], generation_prompt: bool) -> list[int]:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
        return tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]  # a long chat is cut below

    prompt, full = ids(pair["prompt"], True), ids(pair["prompt"] + pair["completion"], False)
    if full[: len(prompt)] != prompt:
        raise DataError("the chat template renders the prompt differently inside the whole chat, so the answer's "
                        "tokens cannot be told apart from the prompt's")
    labels = [-100] * len(prompt) + full[len(prompt):]
    return full[:max_length], labels[:max_length]


@dataclass
class LossMaskCheck:
    trained: str  # the text of the tokens that carry loss
    untrained: str  # the rest
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def check_loss_mask(example: dict, input_ids: list[int], labels: list[int], tokenizer,
                    fmt: str | None = None) -> LossMaskCheck:
    """Check that exactly the assistant's words carry loss: every assistant turn is trained on (unless truncation
    cut it off) and no user or system turn is."""
    spans = loss_spans(input_ids, labels, tokenizer)
    trained = "".join(text for text, keep in spans if keep)
    untrained = "".join(text for text, keep in spans if not keep)
    full = "".join(text for text, _ in spans)
    problems = []
    messages = to_messages(example, fmt)["messages"]
    answers = [m["content"].strip() for m in messages if m["role"] == "assistant"]
    for i, message in enumerate(messages):
        content = message["content"].strip()
        if not content:
            continue
        if message["role"] == "assistant" and content not in trained:
            if content in full:
                problems.append(f"message {i} (assistant) is not trained on: {_preview(content, 60)!r}")
            elif content[:20] in full and content[:20] not in trained:
                problems.append(f"message {i} (assistant, cut off by truncation) is not trained on")
        if message["role"] != "assistant" and content in trained and not any(content in a for a in answers):
            problems.append(f"message {i} ({message['role']}) carries loss: {_preview(content, 60)!r}")
    if not trained:
        problems.append("no token carries loss: the example teaches nothing (all masked, or truncated away)")
    return LossMaskCheck(trained, untrained, problems)


# ----------------------------------------------------------------------------------------------------------------
# Writing, atomically (course_utils.atomic)


def write_jsonl(examples: Iterable[dict], path: str | Path, overwrite: bool = False) -> Path:
    """Write one JSON object per line, atomically. Refuses to replace an existing file unless overwrite=True."""
    path = Path(path)
    with atomic_open(path, overwrite=overwrite) as stream:
        for i, example in enumerate(examples):
            line = json.dumps(example, ensure_ascii=False)
            try:
                stream.write(line.encode("utf-8") + b"\n")
            except UnicodeEncodeError as error:
                raise DataError(f"{path}: example {i} holds text that cannot be written as UTF-8 ({error.reason}); "
                                "run clean_example on it first. Nothing was written.") from error
    return path


def write_plain_text(examples: Iterable[dict], path: str | Path, overwrite: bool = False) -> Path:
    """Write {"text": ...} examples as a plain .txt file, one document per block, blocks separated by a blank line
    (what validate_file reads back). A document that contains a blank line itself would come back as two, so it is
    refused: keep such data in JSONL."""
    documents = []
    for i, example in enumerate(examples):
        text = clean_text(example["text"])
        if re.search(r"\n[ \t]*\n", text) or not text.strip():
            raise DataError(f"{Path(path).name}: example {i} is empty or contains a blank line, so it would not read "
                            "back as one document: write it with write_jsonl instead. Nothing was written.")
        documents.append(text)
    return write_text(path, "".join(f"{doc}\n\n" for doc in documents), overwrite=overwrite)


