"""Stylometry: the features mean what their names say, and the distance tells Hemingway from other authors."""
import statistics

import pytest

from course_utils.style_corpus import build_style_corpus
from course_utils.stylometry import (FEATURES, FUNCTION_WORD_FEATURE, author_reference, comparison_rows,
                                     dialogue_share, distance, moving_type_token_ratio, sentences, style_profile,
                                     text_distance, words, z_scores)


def test_words_keep_contractions_and_ignore_punctuation():
    assert words("“I don’t know,” she said. It's late!") == ["i", "don't", "know", "she", "said", "it's", "late"]


def test_sentences_split_after_end_marks_and_closing_quotes_but_not_after_mr():
    text = "“Yes.” He nodded. Mr. Campbell was drunk! Was he?\n\nA new paragraph without a full stop"
    assert sentences(text) == ["“Yes.”", "He nodded.", "Mr Campbell was drunk!", "Was he?",
                               "A new paragraph without a full stop"]


def test_sentence_length_features():
    profile = style_profile("The sun rose. It was hot and the road was long and dusty.")
    assert profile.sentence_lengths == (3, 10)
    assert profile.mean_sentence_length == 6.5
    assert profile.sentence_length_sd == 3.5


def test_mean_word_length_counts_letters():
    assert style_profile("cat dog").mean_word_length == 3
    assert style_profile("don't").mean_word_length == 4  # the apostrophe is not a letter


def test_type_token_ratio_is_one_for_distinct_words_and_falls_with_repetition():
    assert moving_type_token_ratio(["a", "b", "c"]) == 1.0
    assert moving_type_token_ratio(["the"] * 10) == 0.1
    varied = [f"w{i}" for i in range(200)]
    assert moving_type_token_ratio(varied) == 1.0
    # windowed: repeating a 25-word cycle gives 25 types in every 50-word window, whatever the length
    cycle = [f"w{i % 25}" for i in range(500)]
    assert moving_type_token_ratio(cycle) == pytest.approx(0.5)
    assert moving_type_token_ratio(cycle[:100]) == pytest.approx(0.5)


def test_dialogue_share_counts_words_inside_curly_and_straight_quotes():
    assert dialogue_share("“Good night,” I said.") == pytest.approx(2 / 4)
    assert dialogue_share('"Good night," I said.') == pytest.approx(2 / 4)
    assert dialogue_share("No one spoke at all.") == 0
    # a quotation left open (speech running on to the next paragraph) ends with its paragraph
    assert dialogue_share("“It is late\n\nhe thought") == pytest.approx(3 / 5)


def test_and_between_clauses_is_counted_but_and_between_nouns_is_not():
    clauses = style_profile("We drank the wine, and the rain fell. We ate and then we slept and he left.")
    nouns = style_profile("We had bread and wine and cheese in the cold and dark room there today.")
    assert clauses.and_clause_rate == pytest.approx(100 * 3 / 17)
    assert nouns.and_clause_rate == 0


def test_function_words_are_counted_per_thousand_words():
    profile = style_profile("the cat and the dog")
    assert profile.function_words["the"] == 400
    assert profile.function_words["and"] == 200
    assert profile.function_words["of"] == 0


def test_profile_of_empty_text_is_a_clear_error():
    with pytest.raises(ValueError, match="without words"):
        style_profile("  ... !!")


@pytest.fixture(scope="module")
def hemingway():
    corpus = build_style_corpus("hemingway")
    return corpus, author_reference([p.text for p in corpus.train])


def test_hemingway_reference_has_short_sentences_and_much_dialogue(hemingway):
    _, reference = hemingway
    assert 7 < reference.mean["mean_sentence_length"] < 14
    assert reference.mean["dialogue_share"] > 0.25
    assert reference.passages > 300


def test_held_out_hemingway_is_closer_to_hemingway_than_any_other_author(hemingway):
    corpus, reference = hemingway
    own = statistics.fmean(text_distance(p.text, reference) for p in corpus.val)
    assert own < 1.0
    for author in ("austen", "poe", "twain", "lovecraft"):
        other = build_style_corpus(author)
        theirs = statistics.fmean(text_distance(p.text, reference) for p in other.val)
        assert theirs > own + 0.3, f"{author}: {theirs:.2f} is not clearly farther than Hemingway's {own:.2f}"


def test_distance_is_the_mean_absolute_z_score_of_seven_features(hemingway):
    corpus, reference = hemingway
    profile = style_profile(corpus.val[0].text)
    scores = z_scores(profile, reference)
    assert set(scores) == {*FEATURES, FUNCTION_WORD_FEATURE}
    assert distance(profile, reference) == pytest.approx(statistics.fmean(abs(v) for v in scores.values()))
    mean_profile = reference.mean["mean_sentence_length"]
    assert scores["mean_sentence_length"] == pytest.approx(
        (profile.mean_sentence_length - mean_profile) / reference.sd["mean_sentence_length"])


def test_comparison_rows_give_every_feature_delta_and_distance(hemingway):
    corpus, reference = hemingway
    profiles = {"base": style_profile(corpus.val[0].text), "tuned": style_profile(corpus.val[1].text)}
    rows = comparison_rows(reference, profiles)
    assert [r["feature"] for r in rows] == [*FEATURES, FUNCTION_WORD_FEATURE, "distance"]
    assert rows[-1]["base"] == pytest.approx(distance(profiles["base"], reference))


def test_reference_needs_at_least_two_passages():
    with pytest.raises(ValueError, match="at least 2 passages"):
        author_reference(["One passage only."])
