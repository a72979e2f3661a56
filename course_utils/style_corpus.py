"""The style corpus of the Hemingway lab: passages of an author, style.jsonl, and the instruction form.

1. Every chapter of the author is cut into passages of 100 to 500 words (about 300), at paragraph boundaries.
2. Chapters, not passages, are split into training and validation (every fifth chapter of each book is held out
   whole, course_utils.corpus.split_by_chapter), so no validation passage shares a chapter with a training one.
3. The passages are written to style.jsonl, one {"text", "book", "chapter", "split"} object per line.
4. Each passage becomes an instruction example: {"instruction": "Continue in the author's style:",
   "input": <its first 50 words>, "output": <the next ~200 words>}, and for trl's SFTTrainer a prompt/completion
   pair, so that the loss is computed on the completion (the author's words) only.

The author is one parameter: "hemingway", another bundled author ("austen", "poe", "twain", "lovecraft"), or the
path of a folder with the student's own text.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from .corpus import Chapter, author_chapters, author_names, split_by_chapter
from .atomic import write_text

INSTRUCTION = "Continue in the author's style:"
MIN_WORDS, TARGET_WORDS, MAX_WORDS = 100, 300, 500
INPUT_WORDS, OUTPUT_WORDS = 50, 200
# The least the lab can work with: training examples, and held-out examples to prompt with and measure on.
MIN_TRAIN_EXAMPLES, MIN_VAL_EXAMPLES = 12, 4

# Where the texts may be used. The lab prints this wherever it uses them.
RIGHTS = {
    "hemingway": "Hemingway's The Sun Also Rises (1926), Men Without Women (1927) and A Farewell to Arms (1929) are in "
                 "the public domain in the United States only. In the EU, the UK and other life+70 countries they stay "
                 "protected until 1 January 2032 (Hemingway died in 1961): check your local law before using them "
                 "outside the US. Sources and details: data/hemingway/PROVENANCE.md.",
    "austen": "Jane Austen's novels (1811-1817) are in the public domain worldwide. Details: "
              "data/authors/austen/PROVENANCE.md.",
    "poe": "Poe's tales (1833-1849, Raven Edition of 1903) are in the public domain worldwide. Details: "
           "data/authors/poe/PROVENANCE.md.",
    "twain": "Mark Twain's Tom Sawyer (1876) and Huckleberry Finn (1884) are in the public domain worldwide. Details: "
             "data/authors/twain/PROVENANCE.md.",
    "lovecraft": "These Lovecraft stories (first published 1923-1929) are in the public domain in the US and in "
                 "life+70 countries (he died in 1937). Details: data/authors/lovecraft/PROVENANCE.md.",
}
OWN_TEXT_RIGHTS = "Your own folder of text: train only on text you wrote or hold the rights to."


def rights_notice(author: str) -> str:
    """Where the author's texts may be used (printed by the lab wherever it uses them)."""
    return RIGHTS.get(author, OWN_TEXT_RIGHTS)


@dataclass(frozen=True)
class Passage:
    book: str
    chapter: int
    text: str

    @property
    def words(self) -> int:
        return len(self.text.split())


_SENTENCE_BREAK = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"”’]))\s+")


def _pieces(paragraph: str, max_words: int) -> list[str]:
    """A paragraph, or, if it is longer than max_words, its sentences grouped into pieces of at most max_words."""
    if len(paragraph.split()) <= max_words:
        return [paragraph]
    pieces, current = [], []
    for sentence in _SENTENCE_BREAK.split(paragraph):
        if current and len(" ".join(current + [sentence]).split()) > max_words:
            pieces.append(" ".join(current))
            current = []
        current.append(sentence)
    pieces.append(" ".join(current))
    # a single sentence over max_words (rare: lists, run-ons) is cut at max_words
    return [" ".join(p.split()[i:i + max_words]) for p in pieces for i in range(0, len(p.split()), max_words)]


def cut_passages(chapter: Chapter, min_words: int = MIN_WORDS, target_words: int = TARGET_WORDS,
                 max_words: int = MAX_WORDS) -> list[Passage]:
    """Cut one chapter into passages of min_words..max_words words (about target_words), at paragraph boundaries
    (a paragraph longer than max_words is cut between sentences). A short remainder joins the last passage if it
    fits, and is dropped otherwise."""
    passages: list[list[str]] = []
    current: list[str] = []
    count = 0
    for paragraph in chapter.text.split("\n\n"):
        for piece in _pieces(paragraph, max_words):
            n = len(piece.split())
            if current and count + n > max_words:
                passages.append(current)
                current, count = [], 0
            current.append(piece)
            count += n
            if count >= target_words:
                passages.append(current)
                current, count = [], 0
    if current:
        if passages and count + sum(len(p.split()) for p in passages[-1]) <= max_words:
            passages[-1] += current
        else:
            passages.append(current)
    texts = ["\n\n".join(p) for p in passages]
    return [Passage(chapter.book, chapter.number, t) for t in texts if min_words <= len(t.split()) <= max_words]


@dataclass(frozen=True)
class StyleCorpus:
    author: str
    train: list[Passage]
    val: list[Passage]
    train_chapters: list[Chapter]
    val_chapters: list[Chapter]

    def describe(self) -> str:
        words = [p.words for p in self.train + self.val]
        return (f"{self.author}: {len(self.train_chapters) + len(self.val_chapters)} chapters -> "
                f"{len(self.train)} training passages from {len(self.train_chapters)} chapters, "
                f"{len(self.val)} validation passages from {len(self.val_chapters)} held-out chapters; "
                f"{min(words)} to {max(words)} words per passage (mean {sum(words) / len(words):.0f})")


def build_style_corpus(author: str = "hemingway", every: int = 5) -> StyleCorpus:
    """The author's passages, split by chapter: every `every`-th chapter of each book goes to validation."""
    train_chapters, val_chapters = split_by_chapter(author_chapters(author), every=every)
    if not val_chapters or not train_chapters:
        raise ValueError(f"{author}: {len(train_chapters)} training and {len(val_chapters)} validation chapters; "
                         f"the lab needs both. Give more text (at least {every} chapters, files or sections "
                         f"of about 3000 words), or a smaller `every`.")
    train = [p for c in train_chapters for p in cut_passages(c)]
    val = [p for c in val_chapters for p in cut_passages(c)]
    n_train, n_val = len(instruction_examples(train)), len(instruction_examples(val))
    if n_train < MIN_TRAIN_EXAMPLES or n_val < MIN_VAL_EXAMPLES:
        words = sum(c.words for c in train_chapters + val_chapters)
        needed = (MIN_TRAIN_EXAMPLES + MIN_VAL_EXAMPLES) * TARGET_WORDS * every // (every - 1)
        raise ValueError(f"{author}: too little text for the lab. It holds {words:,} words in "
                         f"{len(train_chapters) + len(val_chapters)} chapters or sections, which give {n_train} "
                         f"training and {n_val} held-out examples of at least "
                         f"{INPUT_WORDS + OUTPUT_WORDS // 2} words; the lab needs {MIN_TRAIN_EXAMPLES} and "
                         f"{MIN_VAL_EXAMPLES}, that is about {needed:,} words of text in all. Add more text.")
    return StyleCorpus(author_label(author), train, val, train_chapters, val_chapters)


def author_label(author: str) -> str:
    """A short name for the author: itself for a bundled author, the folder's name for a folder of text."""
    if author == "hemingway" or author in author_names():
        return author
    return Path(author).expanduser().name


def write_style_jsonl(corpus: StyleCorpus, path: str | Path) -> Path:
    """Write every passage as {"text", "book", "chapter", "split"} to path (atomically: all or nothing)."""
    path = Path(path)
    lines = [json.dumps({**asdict(p), "split": split}, ensure_ascii=False)
             for split, passages in (("train", corpus.train), ("val", corpus.val)) for p in passages]
    write_text(path, "\n".join(lines) + "\n")
    return path


def read_style_jsonl(path: str | Path) -> dict[str, list[Passage]]:
    """Read style.jsonl back as {"train": [...], "val": [...]}. Bad lines raise a ValueError naming file, line and
    field. A line with only "text" (the chapter's minimal format) is a training passage from an unknown chapter."""
    path = Path(path)
    splits: dict[str, list[Passage]] = {"train": [], "val": []}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {number}: not valid JSON ({error.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str) or not record["text"].strip():
                raise ValueError(f"{path}, line {number}: field 'text' is missing or empty; each line must be "
                                 '{"text": "..."} (optionally with "book", "chapter" and "split")')
            split = record.get("split", "train")
            if split not in splits:
                raise ValueError(f"{path}, line {number}: field 'split' is {split!r}; use 'train' or 'val'")
            chapter = record.get("chapter", 0)
            if not isinstance(chapter, int) or isinstance(chapter, bool):
                raise ValueError(f"{path}, line {number}: field 'chapter' is {chapter!r}; it must be a whole number")
            splits[split].append(Passage(str(record.get("book", "")), chapter, record["text"]))
    return splits


_WORD_SPAN = re.compile(r"\S+")


def to_instruction(passage: Passage | str, input_words: int = INPUT_WORDS,
                   output_words: int = OUTPUT_WORDS) -> dict[str, str] | None:
    """The instruction form of a passage: its first `input_words` words as the input and the next words, up to
    `output_words` and ending at a sentence end where one falls in the second half, as the output. The text keeps
    its paragraph breaks. None if the passage is too short to give an output of half that length."""
    text = passage.text if isinstance(passage, Passage) else passage
    spans = [m.span() for m in _WORD_SPAN.finditer(text)]
    if len(spans) < input_words + output_words // 2:
        return None
    split_at = spans[input_words - 1][1]
    last = min(len(spans), input_words + output_words) - 1
    end = spans[last][1]
    for i in range(last, input_words + output_words // 2 - 1, -1):  # end on a sentence if possible
        if re.search(r"[.!?][\"”’)]*$", text[spans[i][0]:spans[i][1]]):
            end = spans[i][1]
            break
    return {"instruction": INSTRUCTION, "input": text[:split_at], "output": text[split_at:end].lstrip(" ")}


def prompt_text(input_text: str, instruction: str = INSTRUCTION) -> str:
    """The prompt the model sees, in training and at generation time alike."""
    return f"{instruction}\n\n{input_text}"


def to_prompt_completion(example: dict[str, str]) -> dict[str, str]:
    """An instruction example as a prompt/completion pair for trl's SFTTrainer (loss on the completion only).
    The completion starts with the whitespace that followed the input in the original text."""
    separator = "\n\n" if example["output"].startswith("\n") else " "
    return {"prompt": prompt_text(example["input"], example["instruction"]),
            "completion": separator + example["output"].lstrip()}


def instruction_examples(passages: list[Passage]) -> list[dict[str, str]]:
    """The instruction form of every passage long enough to have one."""
    return [e for e in (to_instruction(p) for p in passages) if e is not None]


def held_out_prompts(corpus: StyleCorpus, n: int) -> tuple[list[str], list[str]]:
    """n prompts from validation passages spread over the held-out chapters, and the author's own continuations
    (all of them where fewer than n are held out: a student's small folder). The prompt is the instruction form the
    model was trained on: instruction, blank line, the first 50 words."""
    examples = instruction_examples(corpus.val)
    if not examples:
        raise ValueError("no validation passage is long enough for a prompt: give more text")
    n = min(n, len(examples))
    picked = [examples[round(i * (len(examples) - 1) / max(n - 1, 1))] for i in range(n)]
    return [prompt_text(e["input"], e["instruction"]) for e in picked], [e["output"] for e in picked]
