"""The corpora: Hemingway split into whole chapters, Gutenberg books split into training and held-out books."""
from course_utils.corpus import HELD_OUT_BOOKS, gutenberg_books, hemingway_chapters, split_by_chapter


def test_hemingway_has_every_chapter_and_story():
    chapters = hemingway_chapters()
    counts = {book: sum(c.book == book for c in chapters) for book in {c.book for c in chapters}}
    assert counts == {"the_sun_also_rises": 19, "a_farewell_to_arms": 41, "men_without_women": 14}
    assert all(c.words > 300 for c in chapters)
    assert chapters[0].text.startswith("Robert Cohn was once middleweight boxing champion of Princeton.")


def test_chapter_text_is_unwrapped_into_paragraphs():
    chapter = hemingway_chapters()[0]
    first = chapter.text.split("\n\n")[0]
    assert "\n" not in first and len(first.split()) > 50
    assert "CHAPTER" not in chapter.text


def test_split_keeps_whole_chapters_apart():
    train, val = split_by_chapter(hemingway_chapters())
    assert len(train) + len(val) == 74 and len(val) >= 10
    assert not {(c.book, c.number) for c in train} & {(c.book, c.number) for c in val}


def test_held_out_books_are_not_in_training():
    train, held = gutenberg_books("train"), gutenberg_books("held_out")
    assert set(held) == set(HELD_OUT_BOOKS)
    assert not set(train) & set(held)
    assert len(train) + len(held) == 50
