"""Hidden tests of the exercise exercise_3_merge_lab, generated from its master by course_utils.exercises: do not edit."""

EXERCISE = 'exercise_3_merge_lab'
POINTS = {'test_q1_linear': 1, 'test_q1_slerp': 1, 'test_q1_ties': 1, 'test_q2_the_saved_model_is_the_merge_of_your_specialists': 2, 'test_q2_better_than_the_base_on_both_authors': 2, 'test_q2_serves_both_authors': 2, 'test_q3_a_flat_recipe': 2, 'test_q3_the_best_ratio': 2}


# hidden tests of q1, 1 point(s) each
import torch

from course_utils import merging


def _q1_models():
    """Three state dicts of the grader's own (not the public tests'): a base and two models around it."""
    generator = torch.Generator().manual_seed(2024)
    base = {"layer.weight": torch.randn(8, 6, generator=generator), "layer.bias": torch.randn(6, generator=generator)}
    first, second = ({k: v + torch.randn(v.shape, generator=generator) for k, v in base.items()} for _ in range(2))
    return first, second, base


_Q1_ASKED = (("linear", 0.3), ("slerp", 0.7), ("ties", 0.35))  # the grader's ratios, not the public tests'


_Q1_ANSWERS: dict = {}  # submission -> make_recipe's answers, from one run of its q1 cell for all three tests


def _q1_answers(submission) -> dict:
    key = str(submission.code)
    if key not in _Q1_ANSWERS:
        answers = submission.call("q1", "recipes_as_data", [list(asked) for asked in _Q1_ASKED])
        _Q1_ANSWERS[key] = dict(zip(_Q1_ASKED, answers))
    return _Q1_ANSWERS[key]


def _q1_recipe(submission, method: str, ratio: float) -> merging.Recipe:
    data = _q1_answers(submission)[(method, ratio)]
    assert "error" not in data, f"make_recipe({method!r}, {ratio}) raised {data.get('error')}"
    recipe = merging.recipe_from_dict(data, f"make_recipe({method!r}, {ratio})")
    assert recipe.method == method, f"make_recipe({method!r}, {ratio}) made a {recipe.method!r} recipe"
    return recipe


def _q1_same(merged: dict, expected: dict, what: str) -> None:
    worst = max((merged[k] - expected[k]).abs().max().item() for k in expected)
    assert worst < 1e-5, f"{what}: the merged tensors differ from the method's by up to {worst:.3g}"


def test_q1_linear(submission):
    """make_recipe("linear", r) must merge into the weighted average (1 - r) x first + r x second, at a ratio the
    grader picks."""
    first, second, _ = _q1_models()
    merged = merging.merge(_q1_recipe(submission, "linear", 0.3), [first, second])
    _q1_same(merged, {k: 0.7 * first[k] + 0.3 * second[k] for k in first}, "linear at ratio 0.3")


def test_q1_slerp(submission):
    """make_recipe("slerp", r) must interpolate along the arc between the two models, r of the way from the first
    (not along the straight line), at a ratio the grader picks."""
    first, second, _ = _q1_models()
    merged = merging.merge(_q1_recipe(submission, "slerp", 0.7), [first, second])
    _q1_same(merged, {k: merging.slerp(0.7, first[k], second[k]) for k in first}, "SLERP at ratio 0.7")


def test_q1_ties(submission):
    """make_recipe("ties", r) must be TIES with the task vectors weighted (1 - r, r) and a density that trims
    (between 0 and 1), at a ratio the grader picks."""
    first, second, base = _q1_models()
    recipe = _q1_recipe(submission, "ties", 0.35)
    assert 0 < recipe.density < 1, f"TIES at density {recipe.density} trims nothing: choose one between 0 and 1"
    expected = {k: merging.sparse_task_arithmetic(base[k], [first[k], second[k]], [0.65, 0.35], "ties", recipe.density)
                for k in first}
    _q1_same(merging.merge(recipe, [first, second], base), expected, "TIES at ratio 0.35")


# hidden tests of q2, 2 point(s) each
import copy
import json
from functools import cache
from pathlib import Path

from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from course_utils import merging
from course_utils.evaluation import perplexities, token_ids
from course_utils.paths import TINY_MODEL_DIR
from course_utils.profiles import get_profile
from course_utils.style_corpus import RIGHTS, build_style_corpus


def _with_weights(base, state: dict):
    """A copy of the bundled base holding `state` (whose tensors were checked to be the base's)."""
    model = copy.deepcopy(base)
    model.load_state_dict(state, strict=False)  # only the output layer, tied to the embeddings, is not in the file
    return model


def _weights(path: Path, base_state: dict, what: str) -> dict:
    assert path.is_file(), f"{what}: {path.relative_to(path.parents[2])} is missing"
    state = load_file(path)
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in base_state.items()}, (
        f"{what} does not hold the bundled base's tensors: it must be the base model's architecture")
    return state


@cache
def _lab(outputs: str) -> dict:
    """The grader's own view of a submission: the bundled base, the two saved specialists, and its own measure of
    any model on both authors (made once, shared by the tests)."""
    folder = Path(outputs) / "exercise_3_merge_lab"
    assert (folder / "setup.json").is_file(), "setup.json is missing: run the cell that trains the two specialists"
    authors = tuple(json.loads((folder / "setup.json").read_text())["authors"])
    assert len(set(authors)) == 2 and set(authors) <= set(RIGHTS), (
        f"setup.json names {authors}: the grader needs two different authors of the lab ({', '.join(RIGHTS)})")
    tokenizer = AutoTokenizer.from_pretrained(TINY_MODEL_DIR)
    base = AutoModelForCausalLM.from_pretrained(TINY_MODEL_DIR)  # the bundled base itself, not the submission's copy
    base_state = load_file(TINY_MODEL_DIR / "model.safetensors")
    held_out = {a: token_ids(tokenizer, [c.text for c in build_style_corpus(a).val_chapters]) for a in authors}
    block = get_profile("tiny").max_seq_length

    def measure(model) -> dict[str, float]:
        return perplexities(model, held_out, block=block)

    states = [_weights(folder / "specialists" / a / "model.safetensors", base_state, f"the {a} specialist")
              for a in authors]
    specialist = {a: measure(_with_weights(base, s)) for a, s in zip(authors, states)}
    return {"folder": folder, "authors": authors, "base": base, "base_state": base_state, "states": states,
            "measure": measure, "base_perplexity": measure(base), "specialist": specialist,
            "own": {a: specialist[a][a] for a in authors}}


@cache
def _shipped(outputs: str) -> dict:
    """The saved merge's recipe, its weights and the grader's measure of it."""
    lab = _lab(outputs)
    folder = lab["folder"] / "merged"
    assert (folder / "recipe.json").is_file(), "merged/recipe.json is missing: run the q2 cell to the end"
    state = _weights(folder / "model.safetensors", lab["base_state"], "merged/model.safetensors")
    return {"recipe": merging.load_recipe(folder / "recipe.json"), "state": state,
            "perplexity": lab["measure"](_with_weights(lab["base"], state))}


def test_q2_the_saved_model_is_the_merge_of_your_specialists(submission):
    """merged/ must hold the merge that its recipe.json describes, of the two specialists you saved: the grader runs
    the recipe again with course_utils.merging and compares every tensor."""
    lab, shipped = _lab(str(submission.outputs)), _shipped(str(submission.outputs))
    expected = merging.merge(shipped["recipe"], lab["states"], lab["base_state"])
    worst = max((shipped["state"][k] - expected[k]).abs().max().item() for k in expected)
    assert worst < 1e-5, (f"the saved weights differ by up to {worst:.3g} from {shipped['recipe'].label()} of your "
                          "specialists: save the model that this recipe makes")


def test_q2_better_than_the_base_on_both_authors(submission):
    """Your saved merge must have a lower held-out perplexity than the base on both authors (the grader measures
    both itself)."""
    lab, shipped = _lab(str(submission.outputs)), _shipped(str(submission.outputs))
    for a in lab["authors"]:
        mine, base = shipped["perplexity"][a], lab["base_perplexity"][a]
        assert mine < base, f"on {a}: your merge {mine:.2f}, the base {base:.2f}"


def test_q2_serves_both_authors(submission):
    """On each author your saved merge must beat the other author's specialist, and each specialist must beat the
    base on its own author: a merge that serves both, not one specialist under another name."""
    lab, shipped = _lab(str(submission.outputs)), _shipped(str(submission.outputs))
    for a, b in (lab["authors"], lab["authors"][::-1]):
        assert lab["own"][a] < lab["base_perplexity"][a], (
            f"your {a} specialist ({lab['own'][a]:.2f}) is no better than the base ({lab['base_perplexity'][a]:.2f}) "
            f"on {a}: train it as the notebook does")
        mine, other = shipped["perplexity"][a], lab["specialist"][b][a]
        assert mine < other, f"on {a}: your merge {mine:.2f}, the {b} specialist {other:.2f}"


# hidden tests of q3, 2 point(s) each
def _q3_flat(outputs: str) -> tuple[str, float]:
    """(method, ratio) of best/recipe.json, a flat linear or SLERP recipe."""
    lab = _lab(outputs)
    path = lab["folder"] / "best" / "recipe.json"
    assert path.is_file(), "best/recipe.json is missing: run the q3 cell to the end"
    recipe = merging.load_recipe(path)
    merging.validate(recipe, lab["states"], lab["base_state"])
    if recipe.method == "slerp" and not isinstance(recipe.t, dict):
        return "slerp", recipe.t
    if recipe.method == "linear" and len(recipe.weights) == 2:
        return "linear", recipe.weights[1]
    raise AssertionError(f"{recipe.label()} is not a flat linear or SLERP recipe (one ratio for every tensor)")


def _q3_score(lab: dict, method: str, ratio: float) -> float:
    recipe = merging.Recipe("slerp", t=ratio) if method == "slerp" else merging.Recipe("linear", (1 - ratio, ratio))
    merged = merging.merged_copy(lab["base"], recipe, lab["states"], lab["base_state"])
    return merging.both_tasks_score(lab["measure"](merged), lab["own"])


def test_q3_a_flat_recipe(submission):
    """best/recipe.json must be a linear recipe with weights (1 - r, r) or a SLERP with one t for every tensor, valid
    for your specialists."""
    _q3_flat(str(submission.outputs))


def test_q3_the_best_ratio(submission):
    """Measured by the grader on your saved specialists, your ratio must have a lower both-tasks score than the ratios
    a fiftieth on either side of it (so the best ratio lies within a hundredth of yours)."""
    lab = _lab(str(submission.outputs))
    method, ratio = _q3_flat(str(submission.outputs))
    mine = _q3_score(lab, method, ratio)
    for other in (ratio - 0.02, ratio + 0.02):
        if 0 <= other <= 1:
            theirs = _q3_score(lab, method, other)
            assert mine <= theirs, (f"{method} at ratio {other:.3f} scores {theirs:.5f}, better than your {ratio:.3f} "
                                    f"({mine:.5f}): search more finely")
