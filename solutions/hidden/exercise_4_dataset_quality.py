"""Hidden tests of the exercise exercise_4_dataset_quality, generated from its master by course_utils.exercises: do not edit."""

EXERCISE = 'exercise_4_dataset_quality'
POINTS = {'test_q1_counts_and_average_lengths': 1, 'test_q1_exact_duplicates': 1, 'test_q1_near_duplicates': 1, 'test_q1_quality_issues_and_short_answers': 1, 'test_q1_any_format': 1, 'test_q2_the_file_is_valid_and_clean': 2, 'test_q2_no_duplicate_left': 2, 'test_q2_flagged_examples_handled': 2, 'test_q2_nothing_good_lost_nothing_added': 2, 'test_q3_the_saved_losses_are_the_adapters_own': 2, 'test_q3_the_comparison_is_the_paired_difference': 2, 'test_q3_the_experiment_is_fair': 2, 'test_q3_both_adapters_learned': 2}


# hidden tests of q1, 1 point(s) each
GRADER_EIFFEL = ("The Eiffel Tower was built for the World's Fair of 1889 in Paris. It is about 330 metres tall "
                 "and was the tallest structure made by people for 41 years.")
GRADER_PLANET = {"instruction": "Name the largest planet in the solar system.",
                 "response": "Jupiter is the largest planet in the solar system."}
GRADER_DATASET = [  # the grader's own examples; the comments say what a correct analysis finds
    GRADER_PLANET,  # 0
    {"instruction": "NAME the largest planet in the  solar system!",  # 1: a copy of 0 (case, spacing, punctuation)
     "response": "jupiter is the largest planet in the solar system"},
    {"instruction": "Translate into German.", "input": "Good morning, my friend.",  # 2 and 3: one instruction,
     "response": "Guten Morgen, mein Freund."},  # two inputs: not duplicates
    {"instruction": "Translate into German.", "input": "Thank you very much for the lovely dinner.",
     "response": "Vielen Dank für das schöne Abendessen."},
    {"instruction": "In the novel Moby-Dick by Herman Melville, what is the name of the ship's captain?",  # 4, 5:
     "response": "The captain of the Pequod is called Ahab."},  # a long common opening, different questions
    {"instruction": "In the novel Moby-Dick by Herman Melville, what is the name of the narrator?",
     "response": "The narrator asks the reader to call him Ishmael."},
    {"instruction": "Tell me about the Eiffel Tower.", "response": GRADER_EIFFEL},  # 6, 7: near-duplicates
    {"instruction": "Tell me about the Eiffel Tower.",
     "response": GRADER_EIFFEL.replace("about 330 metres", "roughly 330 m")},
    {"instruction": "What should I take for a headache?",  # 8: refusal
     "response": "As an AI language model, I cannot give medical advice."},
    {"instruction": "Write a limerick about my neighbour.",  # 9: refusal
     "response": "I'm sorry, but I can't help with that request."},
    {"instruction": "Will it rain tomorrow?",  # 10: four '…'
     "response": "Hmm… well… maybe… I think… perhaps it will, or perhaps it will not."},
    {"instruction": "Is the plan good?",  # 11: two '...' and two '…'
     "response": "Well... it could work... or it could fail… nobody knows… really."},
    {"instruction": "What is 7 times 6?", "response": "42"},  # 12: short and right
    {"instruction": "Describe the water cycle.", "response": "N/A"},  # 13: a placeholder (and short)
    {"instruction": "How can I reach the organiser?",  # 14: an e-mail address
     "response": "Write to sam.organiser@example.org with your questions about the trip."},
    {"instruction": "According to the passage, when was the bridge opened?",  # 15: the passage is missing
     "response": "The bridge was opened to traffic in 1932, after six years of work."},
    {"instruction": "Can you do my homework?",  # 16: "I cannot" three times
     "response": "I cannot. I cannot. I cannot, and I will not do it for you."},
    dict(GRADER_PLANET),  # 17: a third copy of 0
]
GRADER_ISSUES = {"refusal": [8, 9], "excessive_ellipsis": [10, 11], "trivial_answer": [13], "email": [14],
                 "missing_context": [15], "excessive_refusal": [16], "repeats_prompt": [], "phone_number": []}
_q1_answers = {}


def _q1_analysis(submission, chats=False):
    """The student's analyze_dataset on the grader's dataset (as instructions, or as chats), called once."""
    key = (str(submission.code), chats)
    if key not in _q1_answers:
        dataset = GRADER_DATASET
        if chats:
            dataset = [{"messages": [
                {"role": "user", "content": ex["instruction"] + (f"\n\n{ex['input']}" if ex.get("input") else "")},
                {"role": "assistant", "content": ex["response"]}]} for ex in GRADER_DATASET]
        try:
            _q1_answers[key] = submission.call("q1", "analyze_dataset", dataset)
        except AssertionError as error:
            _q1_answers[key] = error
    if isinstance(_q1_answers[key], AssertionError):
        raise _q1_answers[key]
    assert isinstance(_q1_answers[key], dict), f"analyze_dataset returned {type(_q1_answers[key]).__name__}, not a dict"
    return _q1_answers[key]


def test_q1_counts_and_average_lengths(submission):
    """total_examples must count every example, and the two averages must be the mean numbers of characters of the
    prompts (instruction, a blank line and the input when there is one) and of the answers."""
    stats = _q1_analysis(submission)
    prompts = [ex["instruction"] + (f"\n\n{ex['input']}" if ex.get("input") else "") for ex in GRADER_DATASET]
    assert stats.get("total_examples") == len(GRADER_DATASET)
    for key, texts in [("avg_instruction_length", prompts),
                       ("avg_response_length", [ex["response"] for ex in GRADER_DATASET])]:
        expected = sum(map(len, texts)) / len(texts)
        assert isinstance(stats.get(key), (int, float)) and abs(stats[key] - expected) < 0.01, (
            f"{key} is {stats.get(key)!r}, expected {expected:.2f}")


def test_q1_exact_duplicates(submission):
    """Three copies of one example (one in other case, spacing and punctuation) are one group and two duplicates;
    two questions with a long common opening, and one instruction with two inputs, are not duplicates."""
    stats = _q1_analysis(submission)
    assert stats.get("duplicate_groups") == [[0, 1, 17]], f"duplicate_groups: {stats.get('duplicate_groups')!r}"
    assert stats.get("duplicates") == 2, f"duplicates: {stats.get('duplicates')!r}"


def test_q1_near_duplicates(submission):
    """An answer with two small edits is a near-duplicate of the original (one group, one example to drop), and
    nothing else in the grader's dataset is."""
    stats = _q1_analysis(submission)
    assert stats.get("near_duplicate_groups") == [[6, 7]], (
        f"near_duplicate_groups: {stats.get('near_duplicate_groups')!r}")
    assert stats.get("near_duplicates") == 1, f"near_duplicates: {stats.get('near_duplicates')!r}"


def test_q1_quality_issues_and_short_answers(submission):
    """Each quality issue lists the indices it flags: refusals said once, '…' counted as an ellipsis, a placeholder
    answer, an e-mail address, a missing passage, 'I cannot' three times; a short right answer ('42') is in
    short_answers and in no issue."""
    stats = _q1_analysis(submission)
    issues = stats.get("quality_issues")
    assert isinstance(issues, dict), f"quality_issues must be a dict {{flag: [indices]}}, got {issues!r}"[:300]
    for flag, expected in GRADER_ISSUES.items():
        assert issues.get(flag) == expected, f"quality_issues[{flag!r}] is {issues.get(flag)!r}, expected {expected}"
    assert stats.get("short_answers") == [12, 13], f"short_answers: {stats.get('short_answers')!r}"


def test_q1_any_format(submission):
    """The same examples as chats ({"messages": [...]}) must give the same analysis: the function cannot depend on
    the fields 'instruction' and 'response'."""
    assert _q1_analysis(submission, chats=True) == _q1_analysis(submission)


# hidden tests of q2, 2 point(s) each
from course_utils.paths import DATA_DIR as GRADER_DATA_DIR

GRADER_UNFIT = ("excessive_ellipsis", "excessive_refusal", "refusal", "trivial_answer", "repeats_prompt",
                "missing_context", "email", "phone_number")  # the per-example flags that drop by default
_q2_files = {}


def _q2_cleaned(submission):
    """The student's cleaned file, validated by the grader."""
    from course_utils import data

    key = str(submission.outputs)
    if key not in _q2_files:
        path = submission.outputs / "exercise_4_dataset_quality" / "dolly_cleaned.jsonl"
        assert path.exists(), "no dolly_cleaned.jsonl in the exercise's output folder: write it to CLEAN_PATH"
        _q2_files[key] = data.validate_file(path)
    return _q2_files[key]


def _q2_unfit(example):
    from course_utils import data, quality

    found = quality.example_flags(data.example_text(example, "prompt"), data.example_text(example, "response"))
    return set(found) & set(GRADER_UNFIT)


def _q2_key(example):
    from course_utils import data

    return data.dedup_normalise(data.example_text(data.clean_example(example)))


def test_q2_the_file_is_valid_and_clean(submission):
    """The cleaned file must pass data.validate_file without a problem and hold examples with a prompt and an
    answer, its text cleaned by data.clean_example."""
    from course_utils import data

    report = _q2_cleaned(submission)
    assert report.ok, report.summary(5)
    assert len(report.examples) >= 100, f"only {len(report.examples)} examples"
    assert report.format in ("messages", "instruction", "prompt_completion", "alpaca", "sharegpt"), report.format
    dirty = [n for n, ex in zip(report.line_numbers, report.examples) if data.clean_example(ex) != ex]
    assert not dirty, f"lines {dirty[:5]} change under data.clean_example: clean the text before writing"


def test_q2_no_duplicate_left(submission):
    """No two examples may be the same after normalisation, and no two may be near-duplicates at a Jaccard
    similarity of 0.8 or more (the grader's own MinHash, with another seed than the course's default)."""
    from course_utils import data

    texts = [data.example_text(ex) for ex in _q2_cleaned(submission).examples]
    exact = data.exact_duplicates(texts)
    assert not exact.clusters, f"{len(exact.dropped)} examples repeat an earlier one, e.g. {exact.clusters[:3]}"
    near = data.near_duplicates(texts, threshold=0.8, seed=11)
    assert not near.clusters, f"{len(near.dropped)} near-duplicates left, e.g. groups {near.clusters[:3]}"


def test_q2_flagged_examples_handled(submission):
    """At most 5 examples may keep a flag that drops an example by default (missing passages, refusals,
    placeholders, personal data, ...)."""
    unfit = [n for n, ex in zip(_q2_cleaned(submission).line_numbers, _q2_cleaned(submission).examples)
             if _q2_unfit(ex)]
    assert len(unfit) <= 5, f"{len(unfit)} examples still have a flag that drops them, e.g. lines {unfit[:5]}"


def test_q2_nothing_good_lost_nothing_added(submission):
    """At least 95 % of the sample's good examples (no flag that drops them, not a copy of an earlier one) must be
    kept, and at least 95 % of the file must come from the sample."""
    from course_utils import data

    raw = data.validate_file(GRADER_DATA_DIR / "instruct" / "dolly_sample" / "dolly_2k_chat.jsonl").examples
    good, seen = set(), set()
    for example in raw:
        key = _q2_key(example)
        if key not in seen and not _q2_unfit(example):
            good.add(key)
        seen.add(key)
    kept = [_q2_key(example) for example in _q2_cleaned(submission).examples]
    found = len(good & set(kept))
    assert found >= 0.95 * len(good), f"{found} of the sample's {len(good)} good examples kept"
    from_sample = sum(key in seen for key in kept)
    assert from_sample >= 0.95 * len(kept), f"only {from_sample} of the file's {len(kept)} examples are the sample's"


# hidden tests of q3, 2 point(s) each
_q3_cache = {}
Q3_FILES = ("train_raw.jsonl", "train_cleaned.jsonl", "held_out.jsonl", "held_out_losses.json", "comparison.json",
            "adapter_raw/adapter_config.json", "adapter_raw/adapter_model.safetensors",
            "adapter_cleaned/adapter_config.json", "adapter_cleaned/adapter_model.safetensors")


def _q3_folder(submission):
    folder = submission.outputs / "exercise_4_dataset_quality"
    missing = [name for name in Q3_FILES if not (folder / name).exists()]
    assert not missing, f"missing from the exercise's output folder: {', '.join(missing)}"
    return folder


def _q3_recomputed(submission):
    """The answer loss of every held-out example, recomputed by the grader for the base and both saved adapters."""
    key = str(submission.outputs)
    if key not in _q3_cache:
        try:
            _q3_cache[key] = _q3_losses(submission)
        except Exception as error:  # kept, so that the other tests fail at once with the same message
            _q3_cache[key] = error
    if isinstance(_q3_cache[key], Exception):
        raise _q3_cache[key]
    return _q3_cache[key]


def _q3_losses(submission):
    """Load the tiny base and both saved adapters; the answer loss of every held-out example under each."""
    import json

    import torch
    from peft import PeftModel

    from course_utils import data
    from course_utils.evaluation import answer_losses
    from course_utils.models import load_model
    from course_utils.profiles import get_profile

    torch.set_num_threads(1)  # a few small forward passes: threads gain nothing, and spin on a busy machine
    folder = _q3_folder(submission)
    for name in ("raw", "cleaned"):
        config = json.loads((folder / f"adapter_{name}" / "adapter_config.json").read_text())
        assert config.get("peft_type") == "LORA", f"adapter_{name} is not a LoRA adapter: {config.get('peft_type')}"
    profile = get_profile("tiny")
    base, tokenizer = load_model(profile, "lora", verbose=False)
    held_out = data.read_examples(folder / "held_out.jsonl")
    rows = [dict(zip(("input_ids", "labels"), data.completion_labels(ex, tokenizer, max_length=profile.max_seq_length)))
            for ex in held_out]
    losses = {"base": answer_losses(base, rows)}
    model = PeftModel.from_pretrained(base, str(folder / "adapter_raw"), adapter_name="raw")
    model.load_adapter(str(folder / "adapter_cleaned"), adapter_name="cleaned")
    for name in ("raw", "cleaned"):
        model.set_adapter(name)
        losses[name] = answer_losses(model, rows)
    return losses


def test_q3_the_saved_losses_are_the_adapters_own(submission):
    """held_out_losses.json must hold, for every held-out example in order, the answer loss of the base model and of
    each saved adapter: the grader reloads the adapters and recomputes every one."""
    import json

    saved = json.loads((_q3_folder(submission) / "held_out_losses.json").read_text())
    for name, recomputed in _q3_recomputed(submission).items():
        values = saved.get(name)
        assert isinstance(values, list) and len(values) == len(recomputed), (
            f"{name}: {len(values) if isinstance(values, list) else values!r} losses saved, "
            f"{len(recomputed)} held-out examples")
        worst = max(abs(a - b) for a, b in zip(values, recomputed))
        assert worst < 1e-3, f"{name}: a saved loss differs from the recomputed one by {worst:.4f}"


def test_q3_the_comparison_is_the_paired_difference(submission):
    """comparison.json must hold the paired difference raw minus cleaned of the held-out losses (mean, error bar of
    two standard errors, n), over at least 30 held-out examples."""
    import json
    import math

    found = json.loads((_q3_folder(submission) / "comparison.json").read_text())
    losses = _q3_recomputed(submission)
    differences = [a - b for a, b in zip(losses["raw"], losses["cleaned"])]
    n = len(differences)
    assert n >= 30, f"only {n} held-out examples: the error bar would mean little"
    mean = sum(differences) / n
    error_bar = 2 * math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1) / n)
    assert found.get("n") == n, f"n is {found.get('n')!r}, the held-out set has {n}"
    assert abs(found.get("mean", math.inf) - mean) < 1e-3, f"mean {found.get('mean')!r}, recomputed {mean:.4f}"
    assert abs(found.get("error_bar", math.inf) - error_bar) < 1e-3, (
        f"error_bar {found.get('error_bar')!r}, recomputed {error_bar:.4f}")


def test_q3_the_experiment_is_fair(submission):
    """Both runs train on as many examples; the raw run on the sample as it is (flagged examples included), the
    cleaned one on your cleaned file; the held-out examples come from your cleaned file, and no training example is
    one of them or a near-copy (Jaccard 0.8 or more)."""
    from course_utils import data

    folder = _q3_folder(submission)
    sets = {name: data.read_examples(folder / f"{name}.jsonl") for name in ("train_raw", "train_cleaned", "held_out")}
    assert len(sets["train_raw"]) == len(sets["train_cleaned"]) >= 100, {k: len(v) for k, v in sets.items()}

    def key(example):
        return data.dedup_normalise(data.example_text(data.clean_example(example)))

    raw = data.validate_file(GRADER_DATA_DIR / "instruct" / "dolly_sample" / "dolly_2k_chat.jsonl").examples
    raw_keys = {key(ex) for ex in raw}
    cleaned_keys = {key(ex) for ex in data.validate_file(folder / "dolly_cleaned.jsonl").examples}
    assert all(key(ex) in raw_keys for ex in sets["train_raw"]), "train_raw holds examples that are not the sample's"
    unfit = sum(1 for ex in sets["train_raw"] if _q2_unfit(ex))
    assert unfit >= 0.05 * len(sets["train_raw"]), f"train_raw has {unfit} flagged examples: it is not the raw sample"
    assert all(key(ex) in cleaned_keys for ex in sets["train_cleaned"]), "train_cleaned is not from the cleaned file"
    assert all(key(ex) in cleaned_keys for ex in sets["held_out"]), "the held-out examples must come from the cleaned file"
    held = [data.shingles(data.example_text(ex)) for ex in sets["held_out"]]
    for name in ("train_raw", "train_cleaned"):
        for ex in sets[name]:
            shingles = data.shingles(data.example_text(ex))
            close = max(data.jaccard(shingles, h) for h in held)
            assert close < 0.8, f"{name} trains on a copy of a held-out example (Jaccard {close:.2f})"


def test_q3_both_adapters_learned(submission):
    """Each saved adapter must lower the base model's held-out answer loss (recomputed), and the two must differ:
    two real runs on two datasets."""
    losses = _q3_recomputed(submission)
    mean = {name: sum(values) / len(values) for name, values in losses.items()}
    assert mean["raw"] < mean["base"] and mean["cleaned"] < mean["base"], f"mean held-out losses: {mean}"
    assert losses["raw"] != losses["cleaned"], "the two adapters give the same losses: they are one adapter"
