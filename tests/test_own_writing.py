"""The lab on writing the course does not ship: whatever kind of text a student brings, the corpus builds (or fails
with a clear message), the style distance stays finite and in the range the shipped authors give, and the report
names any feature the distance had to leave out.

Each kind of writing is made here, from a public-domain book the tiny model never trained on (data/pretrain_gutenberg,
held out): prose with and without quoted dialogue, verse in short lines, a play with speakers' names, a blog of short
posts, and one very long file without chapter headings.
"""
import json
import re

import pytest

from course_utils.corpus import gutenberg_books, unwrap
from course_utils.execution import execute_notebook
from course_utils.lab import TINY_PLAN, measure
from course_utils.models import load_model
from course_utils.paths import REPO_ROOT
from course_utils.profiles import PROFILES
from course_utils.style_corpus import build_style_corpus, held_out_prompts
from course_utils.stylometry import author_reference

NOTEBOOK = REPO_ROOT / "notebooks" / "07_hemingway_style_lab.ipynb"


def paragraphs() -> list[str]:
    books = gutenberg_books("held_out")
    text = "\n\n".join(unwrap(books[name]) for name in sorted(books))
    return [p for p in text.split("\n\n") if len(p.split()) >= 8 and not p.isupper()]


def without_quotes(text: str) -> str:
    return re.sub(r"[“”\"]", "", text)


def verse(paragraph: str, width: int = 6) -> str:
    words = paragraph.split()
    lines = [" ".join(words[i:i + width]) for i in range(0, len(words), width)]
    return "\n\n".join("\n".join(lines[i:i + 4]) for i in range(0, len(lines), 4))  # stanzas of four short lines


def play(items: list[str]) -> list[str]:
    speakers = ["TRAVELLER", "FILBY", "THE DOCTOR", "WEENA"]
    return [f"{speakers[i % 4]}. {without_quotes(p)}" for i, p in enumerate(items)]


def in_files(items: list[str], files: int) -> list[str]:
    size = -(-len(items) // files)
    return ["\n\n".join(items[i:i + size]) for i in range(0, len(items), size)]


def kinds() -> dict[str, list[str]]:
    """{kind: the texts of its files}."""
    items = paragraphs()
    return {
        "prose with dialogue": in_files(items, 4),
        "prose without dialogue": in_files([without_quotes(p) for p in items], 4),
        "verse in short lines": in_files([verse(without_quotes(p)) for p in items[:400]], 3),
        "a play with speakers' names": in_files(play(items), 3),
        "a blog of short posts": [f"# Post {i}\n\n" + post for i, post in enumerate(in_files(items[:300], 12))],
        "one very long file": ["\n\n".join(items)],
    }


KINDS = kinds()


def write_folder(tmp_path, kind: str):
    folder = tmp_path / re.sub(r"\W+", "_", kind)
    folder.mkdir()
    for i, text in enumerate(KINDS[kind]):
        (folder / f"part_{i:02}.txt").write_text(text, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def base_model():
    return load_model(PROFILES["tiny"], "inference", verbose=False)


@pytest.mark.parametrize("kind", list(KINDS))
def test_any_kind_of_writing_gives_a_corpus_and_a_base_distance_in_the_usual_range(tmp_path, base_model, kind):
    corpus = build_style_corpus(str(write_folder(tmp_path, kind)))
    assert corpus.train and corpus.val_chapters
    reference = author_reference([p.text for p in corpus.train])
    prompts, _ = held_out_prompts(corpus, 8)
    model, tokenizer = base_model
    figures = measure(model, tokenizer, prompts, reference, [c.text for c in corpus.val_chapters], TINY_PLAN)
    assert 0.3 <= figures["distance"] <= 3.5, (kind, figures["distance"], reference.describe_treatment())
    if "dialogue" in kind and "without" in kind or "play" in kind or "verse" in kind:
        assert "dialogue_share" in reference.treatment()["left_out"]
        assert "share of words in dialogue" in reference.describe_treatment()


def test_a_play_runs_through_the_lab_and_its_report_names_what_was_left_out(tmp_path):
    folder = write_folder(tmp_path, "a play with speakers' names")
    output = tmp_path / "lab"
    execute_notebook(NOTEBOOK, {"AUTHOR": str(folder), "SEED": 1, "OUTPUT_DIR": str(output)})
    manifest = json.loads((output / f"{folder.name}-lora" / "manifest.json").read_text())
    results = manifest["results"]
    assert "dialogue_share" in results["style_features"]["left_out"]
    for figure in (results["style_distance"]["base"], results["style_distance"]["tuned"]):
        assert 0.3 <= figure <= 3.5
    page = (output / "compare.html").read_text(encoding="utf-8")
    assert "left out" in page and "share of words in dialogue" in page
