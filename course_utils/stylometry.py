"""Stylometry: measuring how a text is written, so that "it writes like Hemingway now" becomes a number.

A text's *style profile* holds a few classic, easily explained features:

  - sentence length: mean and standard deviation of the words per sentence (short, even sentences are Hemingway's);
  - word length: mean letters per word;
  - vocabulary richness: the type-token ratio, averaged over moving windows of 50 words so that texts of different
    lengths compare fairly (a plain type-token ratio falls as a text grows);
  - dialogue share: the share of words spoken inside quotation marks;
  - "and" between clauses: how often per 100 words "and" joins two clauses ("and he said", ", and the rain fell");
  - function words: how often the 50 commonest small words ("the", "and", "of", "he", "was", ...) occur. Authors
    use them unconsciously and consistently, which is why they identify an author well (Burrows' Delta).

The *distance* from a text to an author compares the text's profile with the author's reference: the mean and the
spread of each feature over the author's own passages. Each feature's difference is counted in units of that spread
(a z-score), the function words together count as one feature (their mean absolute z-score, Burrows' Delta), and
the distance is the mean of the seven absolute z-scores. 0 is the author's average; a real passage of the author
typically scores below 1.

A spread of (almost) zero would turn every z-score on that feature into a division by (almost) zero, and the
distance into noise (a play without quotation marks has a dialogue share of 0.000 ± 0.000). Two rules keep the
distance finite and comparable for any writing:

  - *left out*: a feature with no spread at all over the author's passages (no quotation marks anywhere, a function
    word the author never uses) is one the reference cannot measure; it is left out of the distance, and said so.
  - *floored*: a spread below half of the same feature's spread over passages of the 48 Gutenberg books the tiny
    model was pre-trained on (a population of many authors, as Burrows' Delta standardises against) is raised to
    that floor. The shipped authors' spreads of the six scalar features are all above it; a few rare function words
    are floored.
"""
from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

# The 50 commonest function words of English fiction (articles, pronouns, prepositions, auxiliaries, conjunctions).
FUNCTION_WORDS = (
    "the", "and", "a", "of", "to", "in", "he", "she", "it", "i", "you", "was", "had", "that", "his", "her", "with",
    "for", "as", "at", "on", "but", "not", "they", "we", "is", "said", "there", "then", "would", "could", "be",
    "have", "were", "all", "so", "from", "this", "my", "me", "him", "them", "what", "which", "by", "one", "out",
    "up", "if", "no",
)

# The scalar features, in the order tables show them, with a label for people.
FEATURES = {
    "mean_sentence_length": "mean sentence length (words)",
    "sentence_length_sd": "spread of sentence length (words, s.d.)",
    "mean_word_length": "mean word length (letters)",
    "type_token_ratio": "type-token ratio (50-word windows)",
    "dialogue_share": "share of words in dialogue",
    "and_clause_rate": "'and' between clauses (per 100 words)",
}
FUNCTION_WORD_FEATURE = "function_words"  # name of the function-word profile's term in the distance
TTR_WINDOW = 50

_WORD = re.compile(r"[A-Za-z]+(?:['’][A-Za-z]+)*")
_ABBREVIATIONS = re.compile(r"\b(Mr|Mrs|Ms|Dr|St|Mt|Jr|Sr|Messrs|Capt|Col|Gen|Lt|Sgt|Rev|Prof)\.")
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"”’')\]]))\s+|\n\s*\n")
_QUOTED = re.compile(r"“[^”\n]*(?:”|$)|\"[^\"\n]*(?:\"|$)", re.MULTILINE)
# "and" that opens a clause: after a comma or semicolon, or followed by a subject (a pronoun, "then", "there").
_AND_CLAUSE = re.compile(r"[,;]\s+and\b|\band\s+(?:i|he|she|it|we|they|you|then|there)\b", re.IGNORECASE)


def words(text: str) -> list[str]:
    """The words of a text, lower-cased (letters and inner apostrophes: "didn't" is one word)."""
    return [w.lower().replace("’", "'") for w in _WORD.findall(text)]


def lexicon_rate(text: str, lexicon: set[str] | frozenset[str]) -> float:
    """How often the text uses the words of a lexicon (lower-case single words, inflections listed as words of their
    own), per 100 words: a register's vocabulary made a number (a persona's slang, a field's jargon). 0.0 for a text
    without words."""
    tokens = words(text)
    return 100 * sum(token in lexicon for token in tokens) / len(tokens) if tokens else 0.0


def load_lexicon(path) -> frozenset[str]:
    """A lexicon file: one lower-case word per line; blank lines and lines starting with # are skipped. Raises
    ValueError naming the line of an entry that `words` would not read back as that one word."""
    entries = set()
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if words(entry) != [entry]:
            raise ValueError(f"{Path(path).name}:{number}: {entry!r} is not one lower-case word; list each word "
                             "(and each inflection) on its own line")
        entries.add(entry)
    return frozenset(entries)


def sentences(text: str) -> list[str]:
    """The sentences of a text: split after . ! ? (and any closing quotes), and at paragraph breaks."""
    text = _ABBREVIATIONS.sub(r"\1", text)
    return [s.strip() for s in _SENTENCE_END.split(text) if _WORD.search(s)]


def moving_type_token_ratio(tokens: list[str], window: int = TTR_WINDOW) -> float:
    """Mean share of distinct words in every window of `window` consecutive words (the whole text if shorter)."""
    if not tokens:
        return 0.0
    if len(tokens) <= window:
        return len(set(tokens)) / len(tokens)
    counts: dict[str, int] = {}
    for w in tokens[:window]:
        counts[w] = counts.get(w, 0) + 1
    total = len(counts)
    for i in range(window, len(tokens)):
        new, old = tokens[i], tokens[i - window]
        counts[new] = counts.get(new, 0) + 1
        counts[old] -= 1
        if counts[old] == 0:
            del counts[old]
        total += len(counts)
    return total / (len(tokens) - window + 1) / window


def dialogue_share(text: str) -> float:
    """Share of the words inside quotation marks (“…” or "…"); a quotation left open ends with its paragraph."""
    n = len(_WORD.findall(text))
    return sum(len(_WORD.findall(q)) for q in _QUOTED.findall(text)) / n if n else 0.0


@dataclass(frozen=True)
class StyleProfile:
    """The stylometric features of one text (see the module's docstring)."""
    words: int
    sentence_lengths: tuple[int, ...]
    mean_sentence_length: float
    sentence_length_sd: float
    mean_word_length: float
    type_token_ratio: float
    dialogue_share: float
    and_clause_rate: float
    function_words: dict[str, float] = field(repr=False)  # occurrences per 1000 words

    def features(self) -> dict[str, float]:
        """The scalar features as {name: value}, in the order of FEATURES."""
        return {name: getattr(self, name) for name in FEATURES}


def style_profile(text: str) -> StyleProfile:
    """The style profile of a text. Raises ValueError for a text without words."""
    tokens = words(text)
    if not tokens:
        raise ValueError("cannot profile a text without words")
    lengths = tuple(len(words(s)) for s in sentences(text))
    counts = dict.fromkeys(FUNCTION_WORDS, 0)
    for w in tokens:
        if w in counts:
            counts[w] += 1
    return StyleProfile(
        words=len(tokens),
        sentence_lengths=lengths,
        mean_sentence_length=statistics.fmean(lengths),
        sentence_length_sd=statistics.pstdev(lengths),
        mean_word_length=statistics.fmean(len(w.replace("'", "")) for w in tokens),
        type_token_ratio=moving_type_token_ratio(tokens),
        dialogue_share=dialogue_share(text),
        and_clause_rate=100 * len(_AND_CLAUSE.findall(text)) / len(tokens),
        function_words={w: 1000 * c / len(tokens) for w, c in counts.items()},
    )


FLOOR_FRACTION = 0.5  # a spread is at least this share of the population's spread of the same feature
POPULATION_PASSAGES_PER_BOOK = 40


@dataclass(frozen=True)
class AuthorReference:
    """An author's style: the mean and standard deviation of every feature over the author's passages, and the
    floor under each standard deviation (FLOOR_FRACTION of the population's)."""
    mean: dict[str, float]
    sd: dict[str, float]
    passages: int
    floor: dict[str, float] = field(default_factory=dict)

    def profile_values(self) -> dict[str, float]:
        return {name: self.mean[name] for name in FEATURES}

    def measurable(self, name: str) -> bool:
        """False for a feature with no spread at all over the author's passages: it is left out of the distance."""
        return self.sd[name] > 0

    def spread(self, name: str) -> float:
        """The standard deviation z-scores divide by: the author's, raised to the floor where it is smaller."""
        return max(self.sd[name], self.floor.get(name, 0.0))

    def floored(self, name: str) -> bool:
        return self.measurable(name) and self.sd[name] < self.floor.get(name, 0.0)

    def treatment(self) -> dict[str, list[str]]:
        """Which features the distance leaves out and which spreads it floors (function words as "fw:word")."""
        names = [*FEATURES, *(n for n in self.sd if n.startswith("fw:"))]
        left_out = [n for n in names if not self.measurable(n)]
        if not any(self.measurable(n) for n in self.sd if n.startswith("fw:")):
            left_out.append(FUNCTION_WORD_FEATURE)
        return {"left_out": left_out, "floored": [n for n in names if self.floored(n)]}

    def describe_treatment(self) -> str:
        """One sentence a reader of the report needs: what the distance is made of."""
        treatment = self.treatment()
        parts = []
        for kind, scalar_text, word_text in (("left_out", "left out (no spread in the author's passages)",
                                               "function words the author never varies left out"),
                                              ("floored", "spread floored", "function-word spreads floored")):
            scalar = [FEATURES[n] for n in treatment[kind] if n in FEATURES]
            words = [n[3:] for n in treatment[kind] if n.startswith("fw:")]
            if scalar:
                parts.append(f"{scalar_text}: " + "; ".join(scalar))
            if words:
                parts.append(f"{len(words)} {word_text} ({', '.join(words)})")
        return ("Distance: " + "; ".join(parts) + ".") if parts else "Distance: every feature measured, none floored."


def _vector(profile: StyleProfile) -> dict[str, float]:
    return {**profile.features(), **{f"fw:{w}": v for w, v in profile.function_words.items()}}


def _mean_and_sd(passages: list[str]) -> tuple[dict[str, float], dict[str, float]]:
    vectors = [_vector(style_profile(p)) for p in passages]
    names = vectors[0].keys()
    return ({n: statistics.fmean(v[n] for v in vectors) for n in names},
            {n: statistics.stdev([v[n] for v in vectors]) for n in names})


@lru_cache(maxsize=1)
def population_sd() -> dict[str, float]:
    """Each feature's standard deviation over passages of many authors: every k-th passage of each Gutenberg
    pre-training book, k chosen for at least POPULATION_PASSAGES_PER_BOOK a book (computed once, in about 3 s)."""
    from .corpus import Chapter, gutenberg_books, unwrap
    from .style_corpus import cut_passages

    passages = []
    for name, text in gutenberg_books("train").items():
        cut = cut_passages(Chapter(name, 1, unwrap(text)))
        passages += [p.text for p in cut[::max(1, len(cut) // POPULATION_PASSAGES_PER_BOOK)]]
    return _mean_and_sd(passages)[1]


def author_reference(passages: list[str], floor_fraction: float = FLOOR_FRACTION) -> AuthorReference:
    """The reference an author's texts are measured against, from many passages of the author (at least 2)."""
    if len(passages) < 2:
        raise ValueError(f"need at least 2 passages of the author to measure their spread, got {len(passages)}")
    mean, sd = _mean_and_sd(passages)
    if not any(value > 0 for value in sd.values()):
        raise ValueError(f"the {len(passages)} passages do not differ in any style feature: the reference cannot "
                         "measure a style from them; give more, and more varied, text")
    floor = {n: floor_fraction * spread for n, spread in population_sd().items()} if floor_fraction else {}
    return AuthorReference(mean, sd, len(passages), floor)


def z_scores(profile: StyleProfile, reference: AuthorReference) -> dict[str, float]:
    """How far each measurable feature lies from the author's mean, in units of the author's passage-to-passage
    spread (floored). The function words give one term: Burrows' Delta, the mean absolute z-score over the function
    words the reference can measure. Features the reference cannot measure are absent."""
    vector = _vector(profile)

    def z(name: str) -> float:
        return (vector[name] - reference.mean[name]) / reference.spread(name)

    scores = {name: z(name) for name in FEATURES if reference.measurable(name)}
    fw = [n for n in vector if n.startswith("fw:") and reference.measurable(n)]
    if fw:
        scores[FUNCTION_WORD_FEATURE] = statistics.fmean(abs(z(n)) for n in fw)
    return scores


def distance(profile: StyleProfile, reference: AuthorReference) -> float:
    """The distance from a text's profile to the author: the mean absolute z-score of the measurable features."""
    return statistics.fmean(abs(v) for v in z_scores(profile, reference).values())


def text_distance(text: str, reference: AuthorReference) -> float:
    """distance(style_profile(text), reference)."""
    return distance(style_profile(text), reference)


def style_distance(completions: list[str], reference: AuthorReference) -> float:
    """Distance from a model's completions, taken together as one text, to the author's style."""
    return text_distance("\n\n".join(completions), reference)


def comparison_rows(reference: AuthorReference, profiles: dict[str, StyleProfile]) -> list[dict]:
    """Rows for a table: each feature with the author's mean and every named profile's value and z-score (None
    where the feature is left out), then the function-word Delta and the overall distance. Each row's "treatment"
    is "left out", "floored" or ""."""
    rows = []
    scores = {name: z_scores(p, reference) for name, p in profiles.items()}
    treatment = reference.treatment()

    def mark(feature: str) -> str:
        return "left out" if feature in treatment["left_out"] else "floored" if feature in treatment["floored"] else ""

    for feature, label in FEATURES.items():
        row = {"feature": feature, "label": label, "author": reference.mean[feature], "treatment": mark(feature)}
        for name, p in profiles.items():
            row[name] = getattr(p, feature)
            row[f"{name}_z"] = scores[name].get(feature)
        rows.append(row)
    words = sum(reference.measurable(n) for n in reference.sd if n.startswith("fw:"))
    row = {"feature": FUNCTION_WORD_FEATURE, "label": f"function-word Delta (mean |z| over {words} words)",
           "author": 0.0, "treatment": mark(FUNCTION_WORD_FEATURE)}
    for name in profiles:
        row[name] = row[f"{name}_z"] = scores[name].get(FUNCTION_WORD_FEATURE)
    rows.append(row)
    row = {"feature": "distance", "label": "distance to the author (mean |z|)", "author": 0.0, "treatment": ""}
    for name, p in profiles.items():
        row[name] = row[f"{name}_z"] = distance(p, reference)
    rows.append(row)
    return rows


def format_rows(rows: list[dict], names: list[str]) -> str:
    """A plain-text table of comparison_rows for printing in a notebook (left-out and floored features marked)."""
    header = f"{'feature':<46}{'author':>9}" + "".join(f"{n:>10}" for n in names) + "  note"
    lines = [header, "-" * len(header)]
    for row in rows:
        cells = "".join(f"{'-':>10}" if row[n] is None else f"{row[n]:>10.3f}" for n in names)
        note = {"left out": "  left out (no spread in the author's passages)",
                "floored": "  spread floored"}.get(row.get("treatment", ""), "")
        lines.append(f"{row['label']:<46}{row['author']:>9.3f}{cells}{note}")
    return "\n".join(lines)
