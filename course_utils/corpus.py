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


# ---------------------------------------------------------------------------------------------------------------
# Other authors (data/authors/<name>/) and a folder of the student's own text, cut into chapters the same way.

AUTHORS_DIR = HEMINGWAY_DIR.parent / "authors"
SECTION_WORDS = 3000  # a chapter longer than twice this, or a text without chapters, is cut into ~3000-word sections
MIN_CHAPTER_WORDS = 100
# A folder of few long texts (a blog of three 3,000-word posts, one long file) is cut finer, into at least this many
# sections of at least MIN_SECTION_WORDS, so that holding out every fifth one still leaves some for validation.
MIN_SECTIONS, MIN_SECTION_WORDS = 15, 600

# "CHAPTER I.", "Chapter 12", "CHAPTER XL. Fishing.--The Vigilance Committee", "CHAPTER THE LAST."
_CONTENTS_GAP = 5  # lines: two headings this close are entries of a table of contents
_HEADING = re.compile(r"^[ \t]*(?:CHAPTER|Chapter)[ \t]+([IVXLC]+|[0-9]+|THE LAST)\b.*$", re.MULTILINE)


def author_names() -> list[str]:
    """The other authors bundled in data/authors/ (each a folder of .txt files with a PROVENANCE.md)."""
    return sorted(p.name for p in AUTHORS_DIR.iterdir() if p.is_dir()) if AUTHORS_DIR.is_dir() else []


def _sections(text: str, words: int = SECTION_WORDS) -> list[str]:
    """Cut unwrapped text into consecutive sections of about `words` words, at paragraph boundaries."""
    paragraphs = text.split("\n\n")
    total = sum(len(p.split()) for p in paragraphs)
    n = max(1, round(total / words))
    target = total / n
    sections, current, count = [], [], 0
    for paragraph in paragraphs:
        current.append(paragraph)
        count += len(paragraph.split())
        if count >= target * (len(sections) + 1) and len(sections) < n - 1:
            sections.append("\n\n".join(current))
            current = []
    if current:
        sections.append("\n\n".join(current))
    return sections


def _headed_chapters(text: str) -> list[str]:
    """The chapters of a text with chapter headings. Headings within a few lines of each other form a table of
    contents and are skipped; the text before the first chapter (title page, contents) is front matter."""
    headings = list(_HEADING.finditer(text))
    lines = [text.count("\n", 0, m.start()) for m in headings]
    starts = [m.end() for i, m in enumerate(headings)
              if not any(j != i and abs(lines[j] - lines[i]) <= _CONTENTS_GAP for j in (i - 1, i + 1)
                         if 0 <= j < len(headings))]
    heading_starts = [m.start() for m in headings] + [len(text)]
    ends = [min(h for h in heading_starts if h > s) for s in starts]
    return [unwrap(text[s:e]) for s, e in zip(starts, ends)]


def section_words(total_words: int) -> int:
    """The section length for texts without chapter headings that hold `total_words` words in all: SECTION_WORDS,
    or for little text shorter sections, so that it gives at least MIN_SECTIONS of them."""
    if total_words >= MIN_SECTIONS * SECTION_WORDS:
        return SECTION_WORDS
    return max(MIN_SECTION_WORDS, total_words // MIN_SECTIONS)


def text_chapters(text: str, section: int = SECTION_WORDS) -> list[str]:
    """The chapters of one text file: its own chapters where it has "CHAPTER" headings (at least three), else
    sections of about `section` words; a chapter over twice that is cut into sections too."""
    chapters = _headed_chapters(text)
    if len(chapters) < 3:
        chapters = [unwrap(text)]
    pieces = []
    for chapter in chapters:
        pieces += _sections(chapter, section) if len(chapter.split()) > 2 * section else [chapter]
    return [p for p in pieces if len(p.split()) >= MIN_CHAPTER_WORDS]


def folder_chapters(folder, collection: str | None = None) -> list[Chapter]:
    """Chapters from every .txt and .md file in a folder (sorted by name). A file with chapter headings is a book
    of its own; files without (stories, blog posts, essays) are chapters of one collection named after the folder,
    numbered in order, so that holding out every fifth chapter works for a folder of short texts too."""
    from pathlib import Path

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder: give a folder of .txt or .md files of one author's text")
    files = sorted(p for p in folder.iterdir() if p.suffix in (".txt", ".md") and p.name != "PROVENANCE.md")
    if not files:
        raise FileNotFoundError(f"no .txt or .md files in {folder}: put the author's text there, one file per "
                                "book, story or post (plain UTF-8 text, paragraphs separated by blank lines)")
    collection = collection or folder.name
    chapters: list[Chapter] = []
    loose: list[str] = []  # texts without chapter headings: stories, posts, essays, one long file
    for path in files:
        text = path.read_text(encoding="utf-8")
        if len(_headed_chapters(text)) >= 3:
            chapters += [Chapter(path.stem, i, t) for i, t in enumerate(text_chapters(text), start=1)]
        else:
            loose.append(text)
    section = section_words(sum(len(t.split()) for t in loose))
    pieces = [piece for text in loose for piece in text_chapters(text, section)]
    chapters += [Chapter(collection, i, t) for i, t in enumerate(pieces, start=1)]
    if not chapters:
        raise ValueError(f"the files in {folder} hold fewer than {MIN_CHAPTER_WORDS} words of text each")
    return chapters


def author_chapters(author: str) -> list[Chapter]:
    """The chapters of an author: "hemingway", one of author_names() (e.g. "austen"), or a folder of text."""
    if author == "hemingway":
        return hemingway_chapters()
    if author in author_names():
        return folder_chapters(AUTHORS_DIR / author, collection=f"{author}_stories")
    from pathlib import Path

    if Path(author).expanduser().is_dir():
        return folder_chapters(Path(author).expanduser())
    raise ValueError(f"unknown author {author!r}: use 'hemingway', one of {', '.join(author_names())}, "
                     "or the path of a folder of .txt files with your own text")
