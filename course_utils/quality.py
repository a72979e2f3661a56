"""Quality flags and the dataset quality report: what to look at before training on a dataset.

Flags never delete anything: they mark examples, the report counts and shows them, and the student decides what
to drop (`QualityReport.keep`). The chapter's three rules are here as it states them, beside better ones. And the
splits of the experiment that judges a cleaning: the same LoRA trained on the raw and on the cleaned examples,
evaluated on the same clean held-out set (notebook 04, exercise 4).
"""
from __future__ import annotations

import base64
import html
import io
import math
import random
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import write_text
from .data import Duplicates, dedup_normalise, example_text, exact_duplicates, near_duplicates, to_messages

FLAGS = {  # name -> what it means; the order of the report's table
    "excessive_ellipsis": "the answer has more than 3 ellipses '...' (chapter's rule)",
    "too_short": "the answer has fewer than 20 characters (chapter's rule; 'Paris' is short and right)",
    "excessive_refusal": "the answer says 'I cannot' more than twice (chapter's rule)",
    "refusal": "the answer opens with a refusal (I cannot / I can't / I'm sorry / As an AI ...)",
    "trivial_answer": "the answer is empty, has no letter or digit, or is a placeholder (n/a, none, todo ...)",
    "repeats_prompt": "the answer mostly repeats the prompt's words",
    "missing_context": "the prompt refers to a text ('this paragraph', 'the passage') that is not in it",
    "email": "contains an email address (personal data)",
    "phone_number": "contains a phone number (personal data)",
    "length_outlier": "unusually short or long in tokens (outside the Tukey fences of log length)",
    "too_long_for_training": "longer than the training sequence length: its end would be cut off",
    "duplicate": "the same as an earlier example after normalisation (the first is kept)",
    "near_duplicate": "nearly the same as an earlier example (MinHash/LSH; the first is kept)",
}
# Flags that make an example unfit for training by default; the others ask for a look.
DROP = ("excessive_ellipsis", "excessive_refusal", "refusal", "trivial_answer", "repeats_prompt", "missing_context",
        "email", "phone_number", "duplicate", "near_duplicate")

_REFUSAL = re.compile(r"^\W*(as an ai\b|i('m| am) sorry,? but\b|i (cannot|can't|can not|won't|will not|am unable to|"
                      r"'m unable to|am not able to|'m not able to) (help|assist|provide|comply|do that|answer|share|"
                      r"give|fulfil|write|create))", re.IGNORECASE)
_PLACEHOLDERS = {"n a", "na", "none", "null", "nan", "todo", "tbd", "idk", "i don t know", "no answer", "unknown",
                 "same as above", "see above", "answer", "response", "output"}
_MISSING_CONTEXT = re.compile(
    r"\b(this|these|the|that|following|above|below|provided|given|attached|reference|from)\s+(\w+\s+)?"
    r"(paragraphs?|passages?|texts?|articles?|excerpts?|documents?|bio|biography)\b"
    r"|\b(this|the given|the provided|given|the above) (information|context)\b"
    r"|\breference te(xt|x)\b|\bblock of text\b|\baccording to (the )?text\b"
    r"|\bbased on the (following|above|provided)\b|\bgiven (this|these|the)\b",
    re.IGNORECASE)
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_PHONE = re.compile(r"(?<![\w+])(\+\d{1,3}[ .-]?\(?\d{1,4}\)?([ .-]?\d{2,4}){2,4}"  # international, +44 20 7946 0958
                    r"|(\b1[ .-])?(\(\d{3}\) ?|\b\d{3}[ .-])\d{3}[ .-]\d{4})(?![\w-])")  # North American
CONTEXT_WORDS = 50  # a prompt shorter than this cannot hold the passage it mentions


def example_flags(prompt: str, response: str) -> list[str]:
    """The per-example flags (those that need no other example and no tokenizer), in FLAGS order."""
    flags = []
    if response.count("...") + response.count("\u2026") > 3:
        flags.append("excessive_ellipsis")
    if len(response) < 20:
        flags.append("too_short")
    if response.lower().count("i cannot") > 2:
        flags.append("excessive_refusal")
    if _REFUSAL.match(response):
        flags.append("refusal")
    if is_trivial(response):
        flags.append("trivial_answer")
    if repeats_prompt(prompt, response):
        flags.append("repeats_prompt")
    if _MISSING_CONTEXT.search(prompt) and len(prompt.split()) < CONTEXT_WORDS:
        flags.append("missing_context")
    if _EMAIL.search(prompt + "\n" + response):
        flags.append("email")
    if has_phone_number(prompt + "\n" + response):
        flags.append("phone_number")
    return flags


def is_trivial(response: str) -> bool:
    """Empty, without a single letter or digit, or a placeholder such as 'N/A' or 'TODO'."""
    return not any(ch.isalnum() for ch in response) or dedup_normalise(response) in _PLACEHOLDERS


def repeats_prompt(prompt: str, response: str, share: float = 0.8) -> bool:
    """The answer is (mostly) a copy of the prompt: after normalisation one contains the other and the shorter is
    at least `share` of the longer. (Restating the question inside a real answer is fine, and not flagged.)"""
    p, r = dedup_normalise(prompt), dedup_normalise(response)
    if not p or not r:
        return False
    short, long = sorted((p, r), key=len)
    return short in long and len(short) >= share * len(long)


def has_phone_number(text: str) -> bool:
    return any(8 <= sum(ch.isdigit() for ch in m.group()) <= 15 for m in _PHONE.finditer(text))


def tukey_fences(values: list[int], k: float = 1.5) -> tuple[float, float]:
    """(low, high) outlier bounds on log(1 + value): lengths are skewed, so the fences are set in log space."""
    import numpy as np

    logs = np.log1p(np.asarray(values, dtype=float))
    q1, q3 = np.percentile(logs, [25, 75])
    return math.expm1(q1 - k * (q3 - q1)), math.expm1(q3 + k * (q3 - q1))


@dataclass
class QualityReport:
    """Flags, token lengths and duplicate groups of a dataset (examples in the messages format)."""

    examples: list[dict]
    flags: list[list[str]]
    prompt_tokens: list[int]
    response_tokens: list[int]
    total_tokens: list[int]
    fences: tuple[float, float]
    duplicates: Duplicates
    near: Duplicates
    max_length: int | None = None
    name: str = "dataset"
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.examples)

    def counts(self) -> dict[str, int]:
        counter = Counter(flag for flags in self.flags for flag in flags)
        return {flag: counter[flag] for flag in FLAGS}

    def with_flag(self, flag: str) -> list[int]:
        return [i for i, flags in enumerate(self.flags) if flag in flags]

    def keep(self, drop: tuple[str, ...] = DROP) -> list[int]:
        """Indices of the examples that have none of the `drop` flags."""
        return [i for i, flags in enumerate(self.flags) if not set(flags) & set(drop)]

    def worst(self, k: int = 10) -> list[int]:
        """The k examples with the most flags (ties: the longest first)."""
        order = sorted(range(len(self)), key=lambda i: (-len(self.flags[i]), -self.total_tokens[i], i))
        return [i for i in order[:k] if self.flags[i]]

    def rows(self) -> list[tuple[str, int, float, str, bool]]:
        """(flag, count, percent, meaning, dropped by default) for every flag."""
        n = max(1, len(self))
        return [(flag, count, 100 * count / n, FLAGS[flag], flag in DROP) for flag, count in self.counts().items()]

    def table(self) -> str:
        lines = [f"{self.name}: {len(self)} examples, {len(self.keep())} without a flag that drops them by default",
                 f"{'flag':<22}{'count':>7}{'%':>7}  drop  meaning"]
        lines += [f"{flag:<22}{count:>7}{pct:>6.1f}%  {'yes ' if drop else 'no  '}  {meaning}"
                  for flag, count, pct, meaning, drop in self.rows()]
        return "\n".join(lines)

    def excerpt(self, i: int, width: int = 160) -> tuple[str, str]:
        def cut(text: str) -> str:
            text = " ".join(text.split())
            return text if len(text) <= width else text[: width - 1] + "\u2026"

        return cut(example_text(self.examples[i], "prompt")), cut(example_text(self.examples[i], "response"))

    def figure(self):
        """Flag counts and token-length histograms, as one matplotlib figure."""
        import matplotlib.pyplot as plt
        import numpy as np

        fig, (bars, hist) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [1, 1.2]})
        counts = self.counts()
        names = list(counts)[::-1]
        drawn = bars.barh(names, [counts[n] for n in names],
                          color=["tab:red" if n in DROP else "tab:gray" for n in names])
        bars.bar_label(drawn, padding=2, fontsize=8)
        bars.set_xlabel("examples flagged (count)")
        bars.set_title(f"{self.name}: quality flags (red: dropped by default)")
        top = max(1, max(self.total_tokens + self.prompt_tokens + self.response_tokens))
        bins = np.logspace(0, math.log10(top + 1), 40)
        for values, label in [(self.prompt_tokens, "prompt (user turns)"), (self.response_tokens, "answer"),
                              (self.total_tokens, "whole example, as rendered")]:
            hist.hist(np.maximum(values, 1), bins=bins, histtype="step", linewidth=1.6, label=label)
        for bound in self.fences:
            hist.axvline(max(bound, 1), color="black", linestyle=":", linewidth=1)
        if self.max_length:
            hist.axvline(self.max_length, color="tab:red", linestyle="--",
                         label=f"training length ({self.max_length} tokens)")
        hist.set_xscale("log")
        hist.set_xlabel("length (tokens, log scale); dotted: outlier fences of the whole example")
        hist.set_ylabel("examples (count)")
        hist.set_title(f"{self.name}: lengths in tokens")
        hist.legend(fontsize=8)
        fig.tight_layout()
        return fig

    def to_html(self, title: str | None = None, worst: int = 15) -> str:
        """A standalone HTML page (the figure embedded as PNG): counts by problem, lengths, the worst examples."""
        import matplotlib.pyplot as plt

        title = title or f"Quality report: {self.name}"
        fig = self.figure()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110)
        plt.close(fig)
        png = base64.b64encode(buffer.getvalue()).decode("ascii")
        e = html.escape
        flag_rows = "".join(f"<tr><td><code>{e(flag)}</code></td><td class=n>{count}</td><td class=n>{pct:.1f}%</td>"
                            f"<td>{'drop' if drop else 'look'}</td><td>{e(meaning)}</td></tr>"
                            for flag, count, pct, meaning, drop in self.rows())
        worst_rows = "".join(f"<tr><td class=n>{i}</td><td>{e(', '.join(self.flags[i]))}</td>"
                             f"<td class=n>{self.total_tokens[i]}</td><td>{e(p)}</td><td>{e(r)}</td></tr>"
                             for i in self.worst(worst) for p, r in [self.excerpt(i)])
        groups = "".join(f"<li>{e(d.method)}: {len(d.clusters)} groups, {len(d.dropped)} to drop"
                         + "".join(f"<br><small>{e(' | '.join(self.excerpt(i, 70)[0] for i in c[:4]))}</small>"
                                   for c in d.clusters[:5]) + "</li>"
                         for d in (self.duplicates, self.near))
        notes = "".join(f"<li>{e(note)}</li>" for note in self.notes)
        lengths = (f"median {sorted(self.total_tokens)[len(self) // 2]} tokens per example, longest "
                   f"{max(self.total_tokens)}; outlier fences {self.fences[0]:.0f} and {self.fences[1]:.0f} tokens"
                   if self.examples else "no examples")
        return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top;
text-align:left}}th{{background:#f3f3f3}}td.n{{text-align:right}}img{{max-width:100%}}</style></head><body>
<h1>{e(title)}</h1>
<p>{len(self)} examples; {len(self.keep())} have none of the flags that drop an example by default.
Lengths: {e(lengths)}.</p>
<h2>Counts by problem</h2>
<table><tr><th>flag</th><th>count</th><th>share</th><th>default</th><th>meaning</th></tr>{flag_rows}</table>
<h2>Lengths and flags</h2><img alt="flag counts and token-length histograms" src="data:image/png;base64,{png}">
<h2>Duplicates</h2><ul>{groups}</ul>
<h2>The worst examples</h2>
<table><tr><th>#</th><th>flags</th><th>tokens</th><th>prompt</th><th>answer</th></tr>{worst_rows}</table>
{f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""}
</body></html>
"""

    def write_html(self, path: str | Path, title: str | None = None) -> Path:
        """Write the standalone HTML report (atomically)."""
        return write_text(path, self.to_html(title))


def quality_report(examples: list[dict], tokenizer, fmt: str | None = None, max_length: int | None = None,
                   near_threshold: float = 0.7, dedup_on: str = "all", name: str = "dataset") -> QualityReport:
    """Flag every example (chat or instruction format) and measure its lengths in the tokenizer's tokens.

    Duplicates are looked for on `dedup_on` ("all": prompt and answer together; "prompt"; "response"): exact after
    normalisation first, then near-duplicates among what is left.
    """
    chats = [to_messages(ex, fmt) for ex in examples]
    prompts = [example_text(ex, "prompt") for ex in chats]
    responses = [example_text(ex, "response") for ex in chats]
    flags = [example_flags(p, r) for p, r in zip(prompts, responses)]

    def lengths(texts: list[str]) -> list[int]:
        return ([len(ids) for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]]
                if texts else [])

    rendered = [tokenizer.apply_chat_template(ex["messages"], tokenize=False) for ex in chats]
    prompt_tokens, response_tokens, total_tokens = lengths(prompts), lengths(responses), lengths(rendered)
    fences = tukey_fences(total_tokens) if total_tokens else (0.0, 0.0)
    for i, n in enumerate(total_tokens):
        if not fences[0] <= n <= fences[1]:
            flags[i].append("length_outlier")
        if max_length and n > max_length:
            flags[i].append("too_long_for_training")

    keys = [example_text(ex, dedup_on) for ex in chats]
    duplicates = exact_duplicates(keys)
    exact_dropped = set(duplicates.dropped)
    remaining = [i for i in range(len(chats)) if i not in exact_dropped]
    near_local = near_duplicates([keys[i] for i in remaining], threshold=near_threshold)
    near = Duplicates(near_local.method, [[remaining[j] for j in c] for c in near_local.clusters])
    for i in duplicates.dropped:
        flags[i].append("duplicate")
    for i in near.dropped:
        flags[i].append("near_duplicate")
    order = list(FLAGS)
    flags = [sorted(f, key=order.index) for f in flags]
    return QualityReport(chats, flags, prompt_tokens, response_tokens, total_tokens, fences, duplicates, near,
                         max_length, name)


@dataclass(frozen=True)
class ExperimentSplits:
    """Indices into the raw dataset: the clean held-out set, and the two training sets of equal size."""

    held_out: list[int]
    raw: list[int]
    cleaned: list[int]


def raw_and_cleaned_splits(n: int, kept: Iterable[int], n_train: int, n_held_out: int, seed: int = 0,
                           groups: Iterable[Iterable[int]] = ()) -> ExperimentSplits:
    """The raw-against-cleaned experiment on a raw dataset of `n` examples of which the cleaning `kept` some.

    One seeded order of all n: the held-out set is the first `n_held_out` kept examples in it; no training set holds
    a held-out example, nor another member of its group in `groups` (duplicate or near-duplicate clusters, so that
    no copy of a test question is trained on); "raw" trains on the first `n_train` of the rest, "cleaned" on the
    first `n_train` of the rest that were kept. Walking the same order, the two training sets share most examples
    and differ where the cleaning dropped one."""
    kept = set(kept)
    if len(kept) < n_held_out:
        raise ValueError(f"the cleaning kept {len(kept)} examples, fewer than the {n_held_out} to hold out")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    held_out = [i for i in order if i in kept][:n_held_out]
    excluded = set(held_out)
    for group in groups:
        group = set(group)
        if group & excluded:
            excluded |= group
    pool = [i for i in order if i not in excluded]
    splits = ExperimentSplits(held_out, pool[:n_train], [i for i in pool if i in kept][:n_train])
    if len(splits.cleaned) < n_train:
        raise ValueError(f"only {len(splits.cleaned)} kept examples are left to train on, fewer than n_train = "
                         f"{n_train}: hold out fewer, or train on fewer, so that both runs see as many examples")
    return splits
