"""The style corpus: passages of the right length, a leak-free split by chapter, style.jsonl, the instruction form,
and one parameter to switch author or use a folder of the student's own text."""
import json

import pytest

from course_utils.corpus import (Chapter, author_chapters, author_names, folder_chapters, hemingway_chapters,
                                 split_by_chapter)
from course_utils.style_corpus import (INSTRUCTION, build_style_corpus, cut_passages, instruction_examples,
                                       read_style_jsonl, rights_notice, to_instruction, to_prompt_completion,
                                       write_style_jsonl)


@pytest.fixture(scope="module")
def corpus():
    return build_style_corpus("hemingway")


def test_passages_are_100_to_500_words_and_there_are_200_to_1000(corpus):
    passages = corpus.train + corpus.val
    assert 200 <= len(passages) <= 1000
    assert all(100 <= p.words <= 500 for p in passages)


def test_no_validation_passage_comes_from_a_training_chapter(corpus):
    train = {(p.book, p.chapter) for p in corpus.train}
    val = {(p.book, p.chapter) for p in corpus.val}
    assert train and val and not train & val
    assert val == {(c.book, c.number) for c in corpus.val_chapters}


def test_split_follows_the_course_wide_chapter_split(corpus):
    _, val_chapters = split_by_chapter(hemingway_chapters())
    assert [(c.book, c.number) for c in corpus.val_chapters] == [(c.book, c.number) for c in val_chapters]


def test_passages_keep_the_text_in_order_and_break_at_paragraphs():
    paragraphs = [" ".join(f"p{i}w{j}" for j in range(120)) for i in range(10)]
    chapter = Chapter("book", 1, "\n\n".join(paragraphs))
    passages = cut_passages(chapter)
    assert "\n\n".join(p.text for p in passages) == chapter.text
    assert all(p.text.split("\n\n")[0].startswith("p") for p in passages)


def test_a_paragraph_longer_than_500_words_is_cut_between_sentences():
    sentence = " ".join(["word"] * 19) + " end."
    chapter = Chapter("book", 1, " ".join([sentence] * 60))  # one paragraph of 1200 words
    passages = cut_passages(chapter)
    assert all(100 <= p.words <= 500 for p in passages)
    assert all(p.text.endswith("end.") for p in passages)
    assert sum(p.words for p in passages) == 1200


def test_instruction_form_has_50_words_of_input_and_about_200_of_output(corpus):
    example = to_instruction(corpus.train[0])
    assert example["instruction"] == INSTRUCTION == "Continue in the author's style:"
    assert len(example["input"].split()) == 50
    assert 100 <= len(example["output"].split()) <= 200
    assert corpus.train[0].text.startswith(example["input"])
    # the output continues the passage exactly where the input stops
    assert example["output"].split()[0] == corpus.train[0].text.split()[50]


def test_output_ends_at_a_sentence_where_possible():
    text = " ".join(f"w{i}" + ("." if i % 10 == 9 else "") for i in range(400))
    example = to_instruction(text)
    assert example["output"].endswith(".") and len(example["output"].split()) == 200


def test_short_passages_have_no_instruction_form():
    assert to_instruction(" ".join(["word"] * 120)) is None
    assert len(instruction_examples(build_style_corpus("hemingway").val)) > 50


def test_prompt_completion_pair_rebuilds_the_passage(corpus):
    example = to_instruction(corpus.train[5])
    pair = to_prompt_completion(example)
    assert pair["prompt"].startswith(INSTRUCTION + "\n\n")
    assert pair["completion"][0].isspace()
    joined = pair["prompt"][len(INSTRUCTION) + 2:] + pair["completion"]
    assert corpus.train[5].text.startswith(joined)


def test_style_jsonl_round_trip(tmp_path, corpus):
    path = write_style_jsonl(corpus, tmp_path / "style.jsonl")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(corpus.train) + len(corpus.val)
    first = json.loads(lines[0])
    assert set(first) == {"text", "book", "chapter", "split"} and first["text"] == corpus.train[0].text
    splits = read_style_jsonl(path)
    assert splits["train"] == corpus.train and splits["val"] == corpus.val


@pytest.mark.parametrize("content, error", [
    ('{"text": "fine"}\n{"txt": "typo"}\n', r"style.jsonl, line 2: field 'text'"),
    ('{"text": "fine", "split": "test"}\n', r"line 1: field 'split'"),
    ('{"text": "fine", "chapter": "two"}\n', r"line 1: field 'chapter'"),
    ('{"text": \n', r"line 1: not valid JSON"),
])
def test_style_jsonl_errors_name_the_file_line_and_field(tmp_path, content, error):
    path = tmp_path / "style.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=error):
        read_style_jsonl(path)


def test_a_minimal_style_jsonl_with_text_only_reads_as_training_passages(tmp_path):
    path = tmp_path / "style.jsonl"
    path.write_text('{"text": "One passage."}\n\n{"text": "Another."}\n', encoding="utf-8")
    assert [p.text for p in read_style_jsonl(path)["train"]] == ["One passage.", "Another."]


@pytest.mark.parametrize("author", ["austen", "poe", "twain", "lovecraft"])
def test_every_bundled_author_works_by_changing_one_parameter(author):
    corpus = build_style_corpus(author)
    assert len(corpus.train) > 100 and len(corpus.val) > 20
    assert not {(p.book, p.chapter) for p in corpus.train} & {(p.book, p.chapter) for p in corpus.val}
    assert "public domain" in rights_notice(author)


def test_bundled_authors_are_the_four_of_the_lab():
    assert set(author_names()) >= {"austen", "poe", "twain", "lovecraft"}


def test_table_of_contents_is_skipped_and_chapters_start_with_the_story():
    chapters = author_chapters("twain")
    huck = [c for c in chapters if c.book == "twain_adventures_of_huckleberry_finn"]
    assert huck[0].text.startswith("YOU don't know about me without you have read a book")
    assert all("CHAPTER" not in c.text[:200] for c in chapters)


def test_hemingway_rights_notice_says_us_only():
    notice = rights_notice("hemingway")
    assert "public domain in the United States only" in notice and "2032" in notice


def test_a_folder_of_the_students_own_text_becomes_a_corpus(tmp_path):
    folder = tmp_path / "my_blog"
    folder.mkdir()
    for i in range(10):  # ten short posts, no chapter headings
        body = "\n\n".join(" ".join(f"post{i} para{j} word{k}." for k in range(60)) for j in range(4))
        (folder / f"post_{i:02}.md").write_text(body, encoding="utf-8")
    chapters = folder_chapters(folder)
    assert [c.book for c in chapters] == ["my_blog"] * 10 and [c.number for c in chapters] == list(range(1, 11))
    corpus = build_style_corpus(str(folder))
    assert corpus.author == "my_blog" and len(corpus.val_chapters) == 2
    assert rights_notice(corpus.author).startswith("Your own folder")


def test_a_long_text_without_chapters_is_cut_into_sections(tmp_path):
    (tmp_path / "novel.txt").write_text("\n\n".join(" ".join(["word"] * 100) for _ in range(600)), encoding="utf-8")
    chapters = folder_chapters(tmp_path)  # 60,000 words: sections of about 3,000
    assert len(chapters) == 20 and all(2500 <= c.words <= 3500 for c in chapters)


def test_little_text_without_chapters_is_cut_finer_so_some_can_be_held_out(tmp_path):
    """A blog of three 3,200-word posts: 15 sections, three of them held out."""
    for i in range(3):
        paragraphs = [" ".join(f"Post {i} said thing {j} {k}." for k in range(20)) for j in range(27)]
        (tmp_path / f"post_{i}.md").write_text("\n\n".join(paragraphs), encoding="utf-8")
    chapters = folder_chapters(tmp_path)
    assert len(chapters) == 15 and all(500 <= c.words <= 800 for c in chapters)
    corpus = build_style_corpus(str(tmp_path))
    assert len(corpus.val_chapters) == 3 and len(instruction_examples(corpus.val)) >= 4


def test_too_little_text_says_how_much_there_is_and_how_much_the_lab_needs(tmp_path):
    paragraphs = [" ".join(f"A short note, line {j} {k}." for k in range(20)) for j in range(25)]
    (tmp_path / "note.txt").write_text("\n\n".join(paragraphs), encoding="utf-8")  # 3,000 words
    with pytest.raises(ValueError, match=r"too little text .* holds 3,000 words .* about 6,000 words"):
        build_style_corpus(str(tmp_path))


def test_missing_or_empty_folder_says_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="unknown author"):
        build_style_corpus(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"no \.txt or \.md files"):
        build_style_corpus(str(tmp_path))
