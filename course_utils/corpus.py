"""Reading the course's text corpora: the Gutenberg pre-training books and the Hemingway chapters.

The Hemingway texts are public domain in the United States only (Hemingway died in 1961, so in
life+70 countries they stay protected until 2032). See data/hemingway/PROVENANCE.md.
"""
from __future__ import annotations

import json
import lzma
import re
from dataclasses import dataclass

from .paths import GUTENBERG_DIR, HEMINGWAY_DIR

# Two whole books the tiny model never trains on: its held-out perplexity is measured on them.
HELD_OUT_BOOKS = ("irving_the_legend_of_sleepy_hollow", "wells_the_time_machine")


def gutenberg_books(split: str = "train") -> dict[str, str]:
    """The pre-training books as {name: text}; split is "train", "held_out" or "all"."""
    if split not in ("train", "held_out", "all"):
        raise ValueError(f"split must be 'train', 'held_out' or 'all', not {split!r}")
    books = {}
    for path in sorted(GUTENBERG_DIR.glob("*.txt.xz")):
        name = path.name.removesuffix(".txt.xz")
        held_out = name in HELD_OUT_BOOKS
        if split == "all" or (split == "held_out") == held_out:
            books[name] = lzma.decompress(path.read_bytes()).decode("utf-8")
    if not books:
        raise FileNotFoundError(f"no books found in {GUTENBERG_DIR}")
    return books


@dataclass(frozen=True)
class Chapter:
    book: str
    number: int  # 1-based position of the chapter (or story) in its book
    text: str

    @property
    def words(self) -> int:
        return len(self.text.split())


def unwrap(text: str) -> str:
    """Join hard-wrapped lines into one line per paragraph (paragraphs are separated by blank lines)."""
    paragraphs = re.split(r"\n\s*\n", text)
    joined = (" ".join(line.strip() for line in p.splitlines() if line.strip()) for p in paragraphs)
    return "\n\n".join(p for p in joined if p)


def _novel_chapters(book: str, text: str) -> list[Chapter]:
    # A chapter starts at a line that reads "CHAPTER" (optionally followed by its number);
    # headings such as "BOOK I" and the chapter numbers are dropped.
    parts = re.split(r"^\s*CHAPTER[ \t]*[IVXLC0-9]*[ \t]*$", text, flags=re.MULTILINE)[1:]
    chapters = []
    for i, part in enumerate(parts, start=1):
        body = re.sub(r"^\s*[0-9IVXLC]+\s*\n", "", part.lstrip("\n"), count=1)  # "1" under "CHAPTER"
        body = re.sub(r"^\s*BOOK [0-9IVX]+\s*$", "", body, flags=re.MULTILINE)
        body = re.sub(r"^\s*THE END\s*$", "", body, flags=re.MULTILINE)
        chapters.append(Chapter(book, i, unwrap(body)))
    return chapters


def _story_text(text: str) -> str:
    # Men Without Women keeps the printed lines of 1927 and marks no paragraphs:
    # start a new paragraph at each line that opens with a quotation mark, join the rest.
    paragraphs: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if not paragraphs or line.startswith(("“", '"')):
            paragraphs.append(line)
        else:
            paragraphs[-1] += " " + line
    return "\n\n".join(paragraphs)


def hemingway_chapters() -> list[Chapter]:
    """Every chapter of the two novels and every story of Men Without Women, as clean paragraphs."""
    chapters = []
    for name in ("the_sun_also_rises", "a_farewell_to_arms"):
        text = (HEMINGWAY_DIR / f"hemingway_{name}.txt").read_text(encoding="utf-8")
        chapters += _novel_chapters(name, text)
    with open(HEMINGWAY_DIR / "hemingway_men_without_women.jsonl", encoding="utf-8") as f:
        for line in f:
            story = json.loads(line)
            chapters.append(Chapter("men_without_women", story["order"], _story_text(story["text"])))
    return chapters


def split_by_chapter(chapters: list[Chapter], every: int = 5) -> tuple[list[Chapter], list[Chapter]]:
    """Train and validation chapters: every `every`-th chapter of each book is held out whole,
    so that no validation passage comes from a chapter the model trained on."""
    train = [c for c in chapters if c.number % every != 0]
    val = [c for c in chapters if c.number % every == 0]
    return train, val
