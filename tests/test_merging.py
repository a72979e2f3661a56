"""Model merging (course_utils.merging) checked against mergekit 0.1.5 (its Python API, on local folders of the tiny
model) and peft's merge_utils: the same inputs give the same tensors. Plus the properties a merge must have, and
recipes that fail before any tensor is touched.

The two "specialists" here are the tiny model with two different random task vectors added: merging is arithmetic
on tensors, and random task vectors exercise every case (signs that agree and disagree, large and small entries).
"""
import shutil

import pytest
import torch
from mergekit.config import MergeConfiguration
from mergekit.merge import MergeOptions, run_merge
from peft.utils import merge_utils
from safetensors.torch import load_file, save_file

from course_utils import merging
from course_utils.merging import Recipe, RecipeError, merge, mergekit_config
from course_utils.paths import TINY_MODEL_DIR

TOLERANCE = 1e-5  # float32 round-off between two orders of the same sums


def specialist(base: dict, seed: int, scale: float = 0.02) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {k: v + scale * v.std() * torch.randn(v.shape, generator=generator) if v.is_floating_point() else v
            for k, v in base.items()}


def save_folder(folder, state: dict):
    shutil.copytree(TINY_MODEL_DIR, folder, ignore=shutil.ignore_patterns("model.safetensors", "*.md", "eval.json"))
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("merge")
    base = load_file(TINY_MODEL_DIR / "model.safetensors")
    a, b = specialist(base, 1), specialist(base, 2)
    folders = {name: save_folder(root / name, state) for name, state in (("base", base), ("a", a), ("b", b))}
    return {"base": base, "a": a, "b": b, "folders": folders, "root": root}


def with_mergekit(models, recipe: Recipe) -> dict:
    folders = models["folders"]
    config = mergekit_config(recipe, [str(folders["a"]), str(folders["b"])], str(folders["base"]))
    out = models["root"] / f"mergekit-{recipe.label().replace(' ', '_')}"
    run_merge(MergeConfiguration.model_validate(config), str(out), MergeOptions(copy_tokenizer=True, quiet=True))
    return load_file(out / "model.safetensors")


def max_difference(x: dict, y: dict) -> float:
    assert set(x) == set(y)
    return max((x[k].float() - y[k].float()).abs().max().item() for k in x)


@pytest.mark.parametrize("recipe", [
    Recipe("linear", (0.3, 0.7)),
    Recipe("task_arithmetic", (0.6, 0.9)),
    Recipe("slerp", t=0.3),
    Recipe("slerp", t={"self_attn": 0.2, "mlp": 0.8, "": 0.5}),
    Recipe("ties", (0.5, 1.0), density=0.4),
    Recipe("ties", (1.0, 1.0), density=1.0),
    Recipe("dare_ties", (0.5, 1.0), density=1.0),  # DARE's sign election and sum, without the random drop
], ids=lambda r: r.label())
def test_each_method_gives_mergekits_tensors(models, recipe):
    ours = merge(recipe, [models["a"], models["b"]], models["base"])
    assert min(max_difference(ours, models[m]) for m in ("a", "b", "base")) > 100 * TOLERANCE  # a real merge
    assert max_difference(ours, with_mergekit(models, recipe)) < TOLERANCE


def test_dare_keeps_the_expected_task_vector_and_matches_mergekit_without_dropping(models):
    a, b, base = models["a"], models["b"], models["base"]
    name = "model.layers.0.mlp.up_proj.weight"
    full = merge(Recipe("dare_linear", (1.0, 1.0), density=1.0), [a, b], base)
    assert max_difference(full, with_mergekit(models, Recipe("dare_linear", (1.0, 1.0), density=1.0))) < TOLERANCE
    draws = torch.stack([merge(Recipe("dare_linear", (1.0, 1.0), density=0.5, seed=s), [a, b], base)[name]
                         for s in range(200)])
    expected = full[name] - base[name]
    error = (draws.mean(0) - base[name] - expected).abs().mean() / expected.abs().mean()
    assert error < 0.1  # the mean of 200 random drops, rescaled by 1/density, is the undropped task vector


def test_the_same_as_peft_merge_utils_on_task_vectors(models):
    a, b, base = models["a"], models["b"], models["base"]
    name = "model.layers.1.self_attn.q_proj.weight"
    vectors = [a[name] - base[name], b[name] - base[name]]
    weights = torch.tensor([1.0, 1.0])
    ours = merge(Recipe("task_arithmetic", (1.0, 1.0)), [a, b], base)[name] - base[name]
    assert (ours - merge_utils.task_arithmetic(vectors, weights)).abs().max() < TOLERANCE
    ours = merge(Recipe("ties", (1.0, 1.0), density=0.3), [a, b], base)[name] - base[name]
    assert (ours - merge_utils.ties(vectors, weights, density=0.3)).abs().max() < TOLERANCE
    torch.manual_seed(5)  # DARE with the same mask: peft draws it with the global generator, in the same order
    theirs = merge_utils.dare_linear(vectors, weights, density=0.5)
    generator = torch.Generator().manual_seed(5)
    masks = [merging.drop(v, 0.5, generator) for v in vectors]
    assert (masks[0] + masks[1] - theirs).abs().max() < TOLERANCE


def test_linear_with_weights_one_and_zero_returns_the_first_model(models):
    merged = merge(Recipe("linear", (1.0, 0.0)), [models["a"], models["b"]])
    assert max_difference(merged, models["a"]) == 0


def test_slerp_at_zero_and_one_returns_the_ends(models):
    for t, end in ((0.0, "a"), (1.0, "b")):
        assert max_difference(merge(Recipe("slerp", t=t), [models["a"], models["b"]]), models[end]) < TOLERANCE


def test_slerp_of_nearly_parallel_tensors_is_linear():
    a = torch.tensor([1.0, 2.0, 3.0])
    assert torch.allclose(merging.slerp(0.25, a, 1.0001 * a), 0.75 * a + 0.25 * 1.0001 * a)


def test_a_filter_is_a_substring_not_a_regex():
    t = {"self_attn": 0.2, "mlp.down": 0.9, "": 0.5}
    assert merging.value_for("model.layers.3.self_attn.q_proj.weight", t) == 0.2
    assert merging.value_for("model.layers.3.mlp.down_proj.weight", t) == 0.9
    assert merging.value_for("model.layers.3.mlp.up_proj.weight", t) == 0.5
    assert merging.value_for("model.layers.3.mlp.up_proj.weight", {"mlp.*up": 0.1, "": 0.5}) == 0.5


def test_a_merge_keeps_the_architecture_tied_embeddings_and_tokenizer(models, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged = merge(Recipe("ties", (1.0, 1.0), density=0.5), [models["a"], models["b"]], models["base"])
    assert {k: v.shape for k, v in merged.items()} == {k: v.shape for k, v in models["base"].items()}
    folder = save_folder(tmp_path / "merged", merged)
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # still tied
    assert AutoTokenizer.from_pretrained(folder).get_vocab() == AutoTokenizer.from_pretrained(TINY_MODEL_DIR).get_vocab()


class TouchNothing(dict):
    """A state dict whose tensors may not be read: validation must look at shapes only, before any arithmetic."""
    def __init__(self, state):
        super().__init__({k: torch.empty(v.shape, device="meta") for k, v in state.items()})


@pytest.mark.parametrize("recipe, field", [
    (Recipe("average"), "method"),
    (Recipe("linear", (0.7, 0.7)), "weights"),
    (Recipe("linear", (1.0,)), "weights"),
    (Recipe("ties", (1.0, 1.0), density=0.0), "density"),
    (Recipe("dare_ties", (1.0, 1.0), density=1.5), "density"),
    (Recipe("slerp", t=1.2), "t"),
    (Recipe("slerp", t={"mlp": 0.3}), "t"),
])
def test_a_bad_recipe_fails_before_any_tensor_is_touched(models, recipe, field):
    states = [TouchNothing(models["a"]), TouchNothing(models["b"])]
    with pytest.raises(RecipeError, match=rf"^{field}:"):
        merge(recipe, states, TouchNothing(models["base"]))


def test_mismatched_shapes_and_a_missing_base_are_named(models):
    wrong = dict(models["b"])
    wrong["model.layers.0.mlp.up_proj.weight"] = torch.zeros(3, 3)
    with pytest.raises(RecipeError, match="model.layers.0.mlp.up_proj.weight has shape"):
        merge(Recipe("linear"), [models["a"], wrong])
    with pytest.raises(RecipeError, match="^base:"):
        merge(Recipe("task_arithmetic", (1.0, 1.0)), [models["a"], models["b"]])


def test_a_filter_that_matches_no_tensor_is_named(models):
    with pytest.raises(RecipeError, match="^t: the filter 'self-attn' is a substring of no tensor"):
        merge(Recipe("slerp", t={"self-attn": 0.2, "": 0.5}), [models["a"], models["b"]])


def test_merged_copy_holds_the_merge_and_leaves_the_base_model_alone(models):
    from transformers import AutoModelForCausalLM

    base_model = AutoModelForCausalLM.from_pretrained(TINY_MODEL_DIR)
    before = {k: v.clone() for k, v in base_model.state_dict().items()}
    saved = {k: v for k, v in models["a"].items() if k != "lm_head.weight"}  # as save_pretrained writes a tied model
    recipe = Recipe("linear", (0.25, 0.75))
    merged = merging.merged_copy(base_model, recipe, [saved, models["b"]])
    expected = merge(recipe, [saved, models["b"]])
    assert max_difference({k: v for k, v in merged.state_dict().items() if k in expected}, expected) == 0
    assert merged.lm_head.weight.data_ptr() == merged.model.embed_tokens.weight.data_ptr()  # still tied
    assert max_difference(base_model.state_dict(), before) == 0


def test_both_tasks_score_is_one_for_a_model_as_good_as_each_specialist():
    own = {"a": 40.0, "b": 50.0}
    assert merging.both_tasks_score(own, own) == 1
    assert merging.both_tasks_score({"a": 44.0, "b": 60.0}, own) == pytest.approx((1.1 + 1.2) / 2)
    with pytest.raises(ValueError, match="same tasks"):
        merging.both_tasks_score({"a": 40.0}, own)


@pytest.mark.parametrize("recipe", [
    Recipe("linear", (0.3, 0.7)),
    Recipe("slerp", t={"self_attn": 0.2, "mlp": 0.8, "": 0.5}, name="per layer"),
    Recipe("ties", (0.5, 1.0), density=0.4),
    Recipe("dare_ties", (1.0, 1.0), density=0.5, seed=3),
], ids=lambda r: r.label())
def test_a_saved_recipe_reads_back_the_same_and_merges_the_same(models, tmp_path, recipe):
    path = merging.save_recipe(recipe, tmp_path / "merged" / "recipe.json")
    again = merging.load_recipe(path)
    assert again == recipe and again.label() == recipe.label()
    states = [models["a"], models["b"]]
    assert max_difference(merge(again, states, models["base"]), merge(recipe, states, models["base"])) == 0


@pytest.mark.parametrize("text, message", [
    ('{"weights": [0.5, 0.5]}', "method: missing"),
    ('{"method": "linear", "ratio": 0.5}', "ratio: not a field of a recipe"),
    ('{"method": "slerp", "t": "half"}', "t: cannot read 'half'"),
    ('{"method": "linear", "weights": 0.5}', "weights: cannot read 0.5"),
    ('[1, 2]', "method: missing"),
    ('{"method": ', "not JSON"),
])
def test_a_bad_recipe_file_is_named_with_its_field(tmp_path, text, message):
    path = tmp_path / "recipe.json"
    path.write_text(text)
    with pytest.raises(RecipeError, match=message) as error:
        merging.load_recipe(path)
    assert str(path) in str(error.value)


def test_a_missing_recipe_file_says_where_it_was_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError, match="no recipe here"):
        merging.load_recipe(tmp_path / "nothing.json")
