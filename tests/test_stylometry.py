"""Stylometry: the features mean what their names say, and the distance tells Hemingway from other authors."""
import statistics

import pytest

from course_utils.style_corpus import build_style_corpus
from course_utils.stylometry import (FEATURES, FUNCTION_WORD_FEATURE, author_reference, comparison_rows,
                                     dialogue_share, distance, format_rows, lexicon_rate, load_lexicon,
                                     moving_type_token_ratio, sentences, style_profile, text_distance, words,
                                     z_scores)


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
        (profile.mean_sentence_length - mean_profile) / reference.spread("mean_sentence_length"))
    assert reference.spread("mean_sentence_length") == reference.sd["mean_sentence_length"]  # not floored


def test_comparison_rows_give_every_feature_delta_and_distance(hemingway):
    corpus, reference = hemingway
    profiles = {"base": style_profile(corpus.val[0].text), "tuned": style_profile(corpus.val[1].text)}
    rows = comparison_rows(reference, profiles)
    assert [r["feature"] for r in rows] == [*FEATURES, FUNCTION_WORD_FEATURE, "distance"]
    assert rows[-1]["base"] == pytest.approx(distance(profiles["base"], reference))


def test_reference_needs_at_least_two_passages():
    with pytest.raises(ValueError, match="at least 2 passages"):
        author_reference(["One passage only."])


# ------------------------------------------------------------------------------------------------ any writing
# A feature without spread in the author's passages (a play has no quotation marks: dialogue 0.000 +- 0.000) once
# turned the distance into millions. Properties over arbitrary texts and references:

from dataclasses import replace  # noqa: E402

from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from course_utils.stylometry import FEATURES as SCALAR  # noqa: E402

WORDS = ["the", "and", "of", "rain", "he", "said", "she", "walked", "long", "road", "it", "was", "cold", "a", "I"]
sentence = st.lists(st.sampled_from(WORDS), min_size=1, max_size=25).map(lambda w: " ".join(w) + ".")
quoted = sentence.map(lambda s: f"“{s}”")
text = st.lists(st.one_of(sentence, quoted), min_size=1, max_size=12).map(" ".join)
prose_without_dialogue = st.lists(sentence, min_size=1, max_size=12).map(" ".join)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])


def reference_or_none(passages):
    try:
        return author_reference(passages)
    except ValueError:  # passages that do not differ in any feature: an error, tested below
        return None


@SETTINGS
@given(st.lists(text, min_size=2, max_size=6), text)
def test_distance_is_finite_and_non_negative_for_any_text_and_reference(passages, candidate):
    reference = reference_or_none(passages)
    assume(reference is not None)
    value = text_distance(candidate, reference)
    assert value >= 0 and value == value and value != float("inf")


@SETTINGS
@given(st.lists(text, min_size=2, max_size=6))
def test_distance_is_zero_for_the_reference_mean(passages):
    reference = reference_or_none(passages)
    assume(reference is not None)
    profile = replace(style_profile(passages[0]), **{n: reference.mean[n] for n in SCALAR},
                      function_words={w: reference.mean[f"fw:{w}"] for w in style_profile(passages[0]).function_words})
    assert distance(profile, reference) == pytest.approx(0, abs=1e-9)


@SETTINGS
@given(st.lists(prose_without_dialogue, min_size=2, max_size=6), text, st.floats(0, 1))
def test_a_feature_the_reference_cannot_measure_is_left_out(passages, candidate, share):
    """Passages without quotation marks cannot measure dialogue: the candidate's dialogue share does not count."""
    reference = reference_or_none(passages)
    assume(reference is not None)
    assert not reference.measurable("dialogue_share") and "dialogue_share" in reference.treatment()["left_out"]
    profile = style_profile(candidate)
    assert distance(replace(profile, dialogue_share=share), reference) == pytest.approx(distance(profile, reference))
    assert "dialogue_share" not in z_scores(profile, reference)


@pytest.mark.parametrize("candidate", ["No dialogue here at all, only a long sentence that goes on and on.",
                                       "Yes. No. Go. Stop. Run.", "Rain. Cold. Road. Walked. Long."])
def test_texts_without_dialogue_long_sentences_or_function_words_give_a_number(hemingway, candidate):
    _, reference = hemingway
    value = text_distance(candidate, reference)
    assert 0 <= value < 100


def test_a_tiny_spread_is_floored_at_half_the_populations(hemingway):
    _, reference = hemingway
    assert all(not reference.floored(n) for n in SCALAR)  # Hemingway's own spreads are all above the floor
    narrow = author_reference(["He said yes. She said no.", "He said no at all. She said yes."])
    for name in ("mean_sentence_length", "sentence_length_sd"):
        assert narrow.sd[name] < narrow.floor[name] == narrow.spread(name)
        assert name in narrow.treatment()["floored"]
    assert "spread floored" in narrow.describe_treatment()


def test_passages_that_never_differ_cannot_be_a_reference():
    with pytest.raises(ValueError, match="do not differ in any style feature"):
        author_reference(["The same.", "The same."])


def test_comparison_rows_mark_left_out_features():
    reference = author_reference(["He walked. It was cold.", "The road was long and he said it was cold."])
    rows = comparison_rows(reference, {"base": style_profile("“Hello,” she said.")})
    dialogue = next(r for r in rows if r["feature"] == "dialogue_share")
    assert dialogue["treatment"] == "left out" and dialogue["base_z"] is None
    assert "left out" in format_rows(rows, ["base"])


def test_lexicon_rate_counts_the_lexicons_words_per_100_words_whatever_their_case():
    assert lexicon_rate("The Cops took the bribe. The rain fell.", {"cops", "bribe", "rain"}) == 100 * 3 / 8
    assert lexicon_rate("cop cops", {"cop"}) == 50  # inflections are words of their own
    assert lexicon_rate("Once. Once.", {"once"}) == lexicon_rate("Once.", {"once"})  # a rate, not a count
    assert lexicon_rate("... ?!", {"cop"}) == 0.0


def test_a_lexicon_file_skips_comments_and_names_the_line_of_a_bad_entry(tmp_path):
    path = tmp_path / "lexicon.txt"
    path.write_text("# the register\ncop\n\nrain\ndon't\n", encoding="utf-8")
    assert load_lexicon(path) == {"cop", "rain", "don't"}
    for bad in ("Cop", "stool pigeon", "rain,"):
        path.write_text(f"cop\n{bad}\n", encoding="utf-8")
        with pytest.raises(ValueError, match=r"lexicon.txt:2: .* is not one lower-case word"):
            load_lexicon(path)
