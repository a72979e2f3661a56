"""Model merging from the arithmetic up: linear, task arithmetic, SLERP, TIES and DARE over state dicts.

Each method is a few lines of torch on one tensor at a time, written to be read (notebook 05), and checked against
mergekit 0.1.5 and peft's merge_utils in tests/test_merging.py. A `Recipe` says what to do; `validate` checks it
against the models before any tensor is touched (a bad recipe fails in a second, with the field named, not twenty
minutes into a merge); `merge` applies it; `mergekit_config` writes the same recipe for mergekit, so that the file
a student saves beside a merged tiny model also merges real models (`mergekit-yaml recipe.yml out/`).

Conventions (mergekit's): a *task vector* is a fine-tuned tensor minus the base's. Per-layer values are given as
{filter: value} where a filter is a **substring** of the tensor's name (not a regular expression; mergekit's `filter`
works the same way) and the entry "" is the default for every other tensor, e.g. {"self_attn": 0.3, "mlp": 0.7,
"": 0.5}. Tensors that are not floating point are copied from the first model.
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .atomic import write_json

METHODS = ("linear", "task_arithmetic", "slerp", "ties", "dare_ties", "dare_linear")
NEEDS_BASE = ("task_arithmetic", "ties", "dare_ties", "dare_linear")  # they merge task vectors
SPARSE = ("ties", "dare_ties", "dare_linear")  # they take a density
StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Recipe:
    """What to merge and how. `weights`: one per model (linear: a weighted average, summing to 1; the task-vector
    methods: each task vector's scale). `t`: SLERP's position from the first model (0) to the second (1), a number
    or {filter: t}. `density`: the share of each task vector TIES keeps (by magnitude) or DARE keeps (at random,
    rescaled by 1/density). `seed`: DARE's random drop."""
    method: str
    weights: tuple[float, ...] = (0.5, 0.5)
    t: float | dict[str, float] = 0.5
    density: float = 1.0
    seed: int = 0
    name: str = field(default="", compare=False)

    def label(self) -> str:
        if self.name:
            return self.name
        if self.method == "slerp":
            return f"slerp t={self.t}" if not isinstance(self.t, dict) else f"slerp t={_describe(self.t)}"
        detail = f" density {self.density:g}" if self.method in SPARSE else ""
        return f"{self.method} {tuple(round(w, 3) for w in self.weights)}{detail}"


def _describe(values: dict[str, float]) -> str:
    return ", ".join(f"{k or 'rest'}: {v:g}" for k, v in values.items())


class RecipeError(ValueError):
    """A recipe that cannot be applied to these models; the message names the field."""


def value_for(name: str, value: float | dict[str, float]) -> float:
    """A per-layer value for the tensor `name`: the first filter that is a substring of the name, else the ""
    default."""
    if not isinstance(value, dict):
        return float(value)
    for key, v in value.items():
        if key and key in name:
            return float(v)
    return float(value[""])


def _check_shapes(models: list[StateDict], base: StateDict | None) -> None:
    reference = models[0]
    for i, other in enumerate([*models[1:], *([base] if base is not None else [])], start=1):
        who = f"model {i}" if i < len(models) else "the base model"
        if set(other) != set(reference):
            missing = sorted(set(reference) ^ set(other))[:3]
            raise RecipeError(f"{who} does not have the same tensors as model 0 (e.g. {missing}): merging needs the "
                              "same architecture")
        for name, tensor in reference.items():
            if other[name].shape != tensor.shape:
                raise RecipeError(f"{who}: tensor {name} has shape {tuple(other[name].shape)}, model 0 has "
                                  f"{tuple(tensor.shape)}: merging needs the same architecture")


def validate(recipe: Recipe, models: list[StateDict], base: StateDict | None = None) -> None:
    """Raise RecipeError, naming the field, if the recipe cannot be applied to these models. Reads shapes only."""
    if recipe.method not in METHODS:
        raise RecipeError(f"method: unknown merge method {recipe.method!r}; choose one of {', '.join(METHODS)}")
    if len(models) < 2:
        raise RecipeError(f"models: merging needs at least 2 models, got {len(models)}")
    if recipe.method == "slerp":
        if len(models) != 2:
            raise RecipeError(f"models: SLERP interpolates between exactly 2 models, got {len(models)}")
        values = recipe.t.values() if isinstance(recipe.t, dict) else [recipe.t]
        if isinstance(recipe.t, dict) and "" not in recipe.t:
            raise RecipeError('t: a per-layer t needs a default entry "" for the tensors no filter matches')
        if not all(0 <= v <= 1 for v in values):
            raise RecipeError(f"t: every t must lie in [0, 1], got {recipe.t}")
        unmatched = [k for k in recipe.t if k and not any(k in name for name in models[0])] if isinstance(
            recipe.t, dict) else []
        if unmatched:
            raise RecipeError(f"t: the filter {unmatched[0]!r} is a substring of no tensor's name (e.g. "
                              f"{next(iter(models[0]))!r}): check its spelling")
    else:
        if len(recipe.weights) != len(models):
            raise RecipeError(f"weights: {len(recipe.weights)} weights for {len(models)} models; give one per model")
        if recipe.method == "linear" and not math.isclose(sum(recipe.weights), 1.0, abs_tol=1e-6):
            raise RecipeError(f"weights: a linear merge is a weighted average, so its weights must sum to 1; "
                              f"{recipe.weights} sum to {sum(recipe.weights):g}")
    if recipe.method in NEEDS_BASE and base is None:
        raise RecipeError(f"base: {recipe.method} merges task vectors (model - base) and needs the base model")
    if recipe.method in SPARSE and not 0 < recipe.density <= 1:
        raise RecipeError(f"density: the share of each task vector kept must lie in (0, 1], got {recipe.density}")
    _check_shapes(models, base if recipe.method in NEEDS_BASE else None)


# ------------------------------------------------------------------------------------------ the methods, per tensor

def linear(tensors: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """A weighted average: sum of w_i * x_i (the weights sum to 1)."""
    return sum(w * x for w, x in zip(weights, tensors))


def task_arithmetic(base: torch.Tensor, tensors: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """The base plus the weighted sum of the task vectors (x_i - base)."""
    return base + sum(w * (x - base) for w, x in zip(weights, tensors))


def slerp(t: float, a: torch.Tensor, b: torch.Tensor, dot_threshold: float = 0.9995) -> torch.Tensor:
    """Spherical interpolation from a (t=0) to b (t=1), the two tensors taken as single vectors. The angle comes from
    their directions; where they are nearly parallel (|cos| > dot_threshold) sin(angle) is ~0, and the plain linear
    interpolation (what SLERP tends to there) is used."""
    x, y = a.double().flatten(), b.double().flatten()
    cos = torch.dot(x / x.norm().clamp_min(1e-8), y / y.norm().clamp_min(1e-8)).clamp(-1, 1)
    if cos.abs() > dot_threshold:
        return ((1 - t) * a.double() + t * b.double()).to(a.dtype)
    angle = torch.acos(cos)
    mixed = (torch.sin((1 - t) * angle) * a.double() + torch.sin(t * angle) * b.double()) / torch.sin(angle)
    return mixed.to(a.dtype)


def trim(task_vector: torch.Tensor, density: float) -> torch.Tensor:
    """TIES's trim: keep the `density` share of entries with the largest magnitude, zero the rest."""
    if density >= 1:
        return task_vector
    k = max(1, int(density * task_vector.numel()))
    keep = torch.zeros(task_vector.numel(), dtype=torch.bool)
    keep[task_vector.abs().flatten().argsort(descending=True)[:k]] = True
    return task_vector * keep.view_as(task_vector)


def drop(task_vector: torch.Tensor, density: float, generator: torch.Generator) -> torch.Tensor:
    """DARE's drop: keep each entry with probability `density` and divide the kept ones by it, so the task vector
    keeps its expected value."""
    if density >= 1:
        return task_vector
    keep = torch.bernoulli(torch.full_like(task_vector, density), generator=generator)
    return task_vector * keep / density


def agreement(weighted: torch.Tensor) -> torch.Tensor:
    """TIES's sign election: entry by entry, the sign of the summed (weighted) task vectors wins; True where a
    model's entry has the winning sign."""
    elected = torch.where(weighted.sum(dim=0) >= 0, 1.0, -1.0).to(weighted.dtype)
    return weighted.sign() == elected


def disjoint_mean(weighted: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """TIES's merge: the entries that agree with the elected sign, averaged (divided by the sum of their models'
    weights); an entry no model moves stays 0."""
    agree = agreement(weighted)
    divisor = (weights.view((-1,) + (1,) * (weighted.dim() - 1)) * agree).sum(dim=0)
    return (weighted * agree).sum(dim=0) / torch.where(divisor == 0, torch.ones_like(divisor), divisor)


def sparse_task_arithmetic(base: torch.Tensor, tensors: list[torch.Tensor], weights: list[float], method: str,
                           density: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """TIES (trim, elect, disjoint mean), DARE-TIES (drop, elect, sum of the agreeing entries) or DARE-linear
    (drop, sum): the base plus the merged task vectors."""
    vectors = [trim(x - base, density) if method == "ties" else drop(x - base, density, generator) for x in tensors]
    weighted = torch.stack([w * v for w, v in zip(weights, vectors)])
    if method == "ties":
        return base + disjoint_mean(weighted, torch.tensor(weights, dtype=base.dtype))
    if method == "dare_ties":
        return base + (weighted * agreement(weighted)).sum(dim=0)
    return base + weighted.sum(dim=0)


def merge(recipe: Recipe, models: list[StateDict], base: StateDict | None = None) -> StateDict:
    """The merged state dict (validated first). Tensors that are not floating point come from the first model."""
    validate(recipe, models, base)
    generator = torch.Generator().manual_seed(recipe.seed)
    merged = {}
    for name in models[0]:
        tensors = [m[name] for m in models]
        if not tensors[0].is_floating_point():
            merged[name] = tensors[0].clone()
        elif recipe.method == "linear":
            merged[name] = linear(tensors, list(recipe.weights))
        elif recipe.method == "task_arithmetic":
            merged[name] = task_arithmetic(base[name], tensors, list(recipe.weights))
        elif recipe.method == "slerp":
            merged[name] = slerp(value_for(name, recipe.t), tensors[0], tensors[1])
        else:
            merged[name] = sparse_task_arithmetic(base[name], tensors, list(recipe.weights), recipe.method,
                                                  recipe.density, generator)
    return merged


def merged_copy(model: torch.nn.Module, recipe: Recipe, models: list[StateDict],
                base: StateDict | None = None) -> torch.nn.Module:
    """A copy of `model` (the base's architecture) holding the merged weights; `model` itself is left as it was.
    A state dict saved without the tied output layer (save_pretrained drops it) keeps it tied to the embeddings."""
    merged = copy.deepcopy(model)
    merged.load_state_dict(merge(recipe, models, base), strict=False)
    return merged


def both_tasks_score(perplexities: dict[str, float], own: dict[str, float]) -> float:
    """How well one model serves every task at once: the mean, over the tasks, of its perplexity divided by the
    perplexity of that task's own specialist (1 = as good as each specialist on its own task; lower is better)."""
    if set(perplexities) != set(own):
        raise ValueError(f"perplexities on {sorted(perplexities)} but specialists for {sorted(own)}: give both for "
                         "the same tasks")
    return sum(perplexities[task] / own[task] for task in own) / len(own)


# ------------------------------------------------------------------------------------------ the recipe as a file

def recipe_to_dict(recipe: Recipe) -> dict:
    """The recipe as plain JSON data (recipe_from_dict reads it back)."""
    data = asdict(recipe)
    data["weights"] = list(recipe.weights)
    return data


_READ = {"method": str, "weights": lambda v: tuple(float(w) for w in v), "density": float, "seed": int, "name": str,
         "t": lambda v: {str(k): float(x) for k, x in v.items()} if isinstance(v, dict) else float(v)}


def recipe_from_dict(data: dict, where: str = "recipe") -> Recipe:
    """A Recipe from recipe_to_dict's data; RecipeError names `where` and the field when the data is not one.
    (Whether the recipe suits the models is `validate`'s question.)"""
    if not isinstance(data, dict) or "method" not in data:
        raise RecipeError(f"{where}: method: missing (a recipe is a JSON object with at least a 'method')")
    values = {}
    for name, value in data.items():
        if name not in _READ:
            raise RecipeError(f"{where}: {name}: not a field of a recipe ({', '.join(_READ)})")
        try:
            values[name] = _READ[name](value)
        except (TypeError, ValueError, AttributeError) as error:
            raise RecipeError(f"{where}: {name}: cannot read {value!r} ({error})") from error
    return Recipe(**values)


def save_recipe(recipe: Recipe, path: str | Path) -> Path:
    """Write the recipe as JSON (atomically), e.g. beside the merged model it made."""
    return write_json(path, recipe_to_dict(recipe))


def load_recipe(path: str | Path) -> Recipe:
    """The recipe save_recipe wrote; a missing file or a bad field is an error that names the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no recipe here (merging.save_recipe writes one)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise RecipeError(f"{path}: not JSON ({error})") from error
    return recipe_from_dict(data, str(path))


# ------------------------------------------------------------------------------------------ the same in mergekit

def mergekit_config(recipe: Recipe, models: list[str], base: str | None = None, dtype: str = "float32") -> dict:
    """The recipe as a mergekit configuration (a dict: yaml.safe_dump writes the YAML file, and
    mergekit.config.MergeConfiguration.model_validate reads it). `models` and `base` are folders or Hub ids."""
    config: dict = {"merge_method": recipe.method, "dtype": dtype}
    if recipe.method == "slerp":
        t = ([{"filter": k, "value": v} for k, v in recipe.t.items() if k] + [{"value": recipe.t[""]}]
             if isinstance(recipe.t, dict) else recipe.t)
        config.update(base_model=models[0], models=[{"model": m} for m in models], parameters={"t": t})
        return config
    entries = []
    for model, weight in zip(models, recipe.weights):
        parameters = {"weight": weight}
        if recipe.method in SPARSE:
            parameters["density"] = recipe.density
        entries.append({"model": model, "parameters": parameters})
    config["models"] = entries
    if recipe.method in NEEDS_BASE:
        config["base_model"] = base
    if recipe.method == "linear":
        config["parameters"] = {"normalize": False}  # the weights already sum to 1 (validate checks it)
    return config
