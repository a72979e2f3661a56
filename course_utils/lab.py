"""The style lab's own plumbing (notebook 07): the plan each profile gets, and the two style-shift measurements
taken before and after training.

The notebook itself shows the lesson (LoraConfig, SFTConfig, SFTTrainer, save_pretrained, merge_and_unload) and runs
the measure-train-measure loop; what a second notebook needs lives with its concern (generation and perplexity in
`evaluation`, the merge base in `models`, run ids in `checkpoints`, the Hub in `hub`, held-out prompts in
`style_corpus`, the distance of completions in `stylometry`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .evaluation import generate_completions, inference_mode, mean_loss, token_ids
from .profiles import TINY, Profile
from .stylometry import AuthorReference, distance, style_profile

# The seven projection matrices of every Llama block: attention (q, k, v, o) and the MLP (gate, up, down).
SEVEN_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SEED = 0


@dataclass(frozen=True)
class LabPlan:
    """How long and how hard the lab trains, and how it samples and measures, on one profile."""
    learning_rate: float
    epochs: float
    max_steps: int  # -1: train for `epochs` passes over the data
    gradient_checkpointing: bool
    logging_steps: int
    eval_steps: int  # validation loss every this many steps
    save_steps: int  # a checkpoint every this many steps (to resume after a disconnect)
    max_new_tokens: int
    temperature: float
    top_p: float
    measure_prompts: int  # held-out prompts whose completions the style distance is measured on (5 are shown)
    eval_block: int  # held-out perplexity: blocks of this many tokens ...
    eval_blocks: int  # ... this many of them
    eval_batch: int
    why: str

    def describe(self) -> str:
        length = f"{self.max_steps} steps" if self.max_steps > 0 else f"{self.epochs:g} epochs"
        return (f"learning rate {self.learning_rate:g}, {length}, gradient checkpointing "
                f"{'on' if self.gradient_checkpointing else 'off'}; sampling {self.max_new_tokens} new tokens at "
                f"temperature {self.temperature}, top-p {self.top_p}; style measured on {self.measure_prompts} "
                f"held-out prompts, perplexity on {self.eval_blocks} blocks of {self.eval_block} tokens\n"
                f"  why: {self.why}")


# The chapter's recipe (batch 2 x accumulation 4 comes from the t4 profile itself). Completions are sampled at
# temperature 1.0 (top-p 0.95) for measuring: the style of the model's own distribution. Lower temperatures make any
# model repeat its commonest words, which the type-token ratio and the function words would then count as style.
CHAPTER_PLAN = LabPlan(
    learning_rate=2e-4, epochs=2, max_steps=-1, gradient_checkpointing=True, logging_steps=5, eval_steps=30,
    save_steps=30, max_new_tokens=256, temperature=1.0, top_p=0.95, measure_prompts=20, eval_block=512,
    eval_blocks=40, eval_batch=2, why="the chapter's recipe: learning rate 2e-4 for 2 epochs")
# The tiny model: well under a minute of training on 2 CPU cores. A 2.4 M-parameter model needs a far higher
# learning rate than 2e-4 to move in 40 steps (benchmarks/bench_hemingway_lab.py measures both).
TINY_PLAN = LabPlan(
    learning_rate=2e-3, epochs=1, max_steps=40, gradient_checkpointing=False, logging_steps=2, eval_steps=20,
    save_steps=40, max_new_tokens=120, temperature=1.0, top_p=0.95, measure_prompts=32, eval_block=128,
    eval_blocks=96, eval_batch=16, why="bundled tiny model on the CPU: 40 steps at a learning rate ten times the "
    "chapter's, so that a 2.4 M-parameter model moves in so few steps")


def lab_plan(profile: Profile) -> LabPlan:
    """The tiny plan for the bundled model, the chapter's plan for every real model."""
    return TINY_PLAN if profile.model_for("qlora") == TINY else CHAPTER_PLAN


def held_out_perplexity(model, tokenizer, texts: list[str], plan: LabPlan) -> float:
    """Perplexity of the author's held-out chapters (the first plan.eval_blocks blocks of plan.eval_block tokens)."""
    ids = token_ids(tokenizer, texts)
    return math.exp(mean_loss(model, ids, block=plan.eval_block, batch=plan.eval_batch, max_blocks=plan.eval_blocks))


def measure(model, tokenizer, prompts: list[str], reference: AuthorReference, held_out: list[str], plan: LabPlan,
            seed: int = SEED, backend: str = "transformers") -> dict:
    """Completions of the prompts, their style profile and distance to the author, and held-out perplexity.
    `backend` is load_qlora_model's ("unsloth" or "transformers")."""
    with inference_mode(model, backend):
        completions = generate_completions(model, tokenizer, prompts, seed=seed, max_new_tokens=plan.max_new_tokens,
                                           temperature=plan.temperature, top_p=plan.top_p)
        perplexity = held_out_perplexity(model, tokenizer, held_out, plan)
    profile = style_profile("\n\n".join(completions))
    return {"completions": completions, "profile": profile, "distance": distance(profile, reference),
            "perplexity": perplexity}


def benchmark_report(bench: dict, rate: float) -> str:
    """The five-author benchmark (benchmarks/results/hemingway_lab.json) as text: every run at the plan's learning
    `rate`; per author, how often the distance fell, the seed-to-seed spread of the base's own distance (sampling
    noise) and, where it missed, the features the adapter pushed further from the author; then the lower-rate runs."""
    from collections import defaultdict

    from .stylometry import FEATURES

    machine = bench["environment"]["machine"]
    lines = [f"measured on {machine['model']} (avx512_bf16: {machine['flags']['avx512_bf16']}), commit "
             f"{bench['environment']['commit'][:12]}\n",
             f"{'author':<11}{'seed':>5}{'distance base -> tuned':>26}{'perplexity base -> tuned':>28}{'ratio':>8}  goal"]
    by_author = defaultdict(list)
    for r in (r for r in bench["runs"] if r["learning_rate"] == rate):
        by_author[r["author"]].append(r)
        lines.append(f"{r['author']:<11}{r['seed']:>5}{r['distance_base']:>14.3f} -> {r['distance_tuned']:<8.3f}"
                     f"{r['perplexity_base']:>16.2f} -> {r['perplexity_tuned']:<8.2f}{r['perplexity_ratio']:>8.3f}  "
                     f"{'met' if r['meets_goal'] else 'MISSED'}")
    lines.append("")
    for author, rs in by_author.items():
        falls = sum(r["distance_tuned"] < r["distance_base"] for r in rs)
        spread = max(r["distance_base"] for r in rs) - min(r["distance_base"] for r in rs)
        lines.append(f"{author}: perplexity ratio at most {max(r['perplexity_ratio'] for r in rs):.3f}; distance fell "
                     f"in {falls} of {len(rs)} seeds; the base's own distance varies by {spread:.2f} between seeds "
                     "(sampling)")
        if falls == len(rs) or not all(r.get("features") for r in rs):
            continue
        z = {f: [(r["features"][f]["base_z"], r["features"][f]["tuned_z"]) for r in rs] for f in FEATURES
             if all(r["features"][f]["base_z"] is not None for r in rs)}  # left-out features have no z
        away = [FEATURES[f] for f, pairs in z.items() if sum(abs(t) - abs(b) for b, t in pairs) > 0]
        past = [FEATURES[f] for f, pairs in z.items() if all(b * t < 0 for b, t in pairs)]
        lines.append(f"  moved away from {author} on average: {'; '.join(away) or 'none'}")
        if past:
            lines.append(f"  moved past {author}'s mean (the sign of z flipped) in every seed: {'; '.join(past)}")
    for r in (r for r in bench["runs"] if r["learning_rate"] < rate):
        lines.append(f"\nat learning rate {r['learning_rate']:g} ({r['learning_rate'] / rate:.2g} of the plan's), "
                     f"{r['author']} seed {r['seed']}: distance {r['distance_base']:.3f} -> {r['distance_tuned']:.3f}, "
                     f"perplexity {r['perplexity_base']:.2f} -> {r['perplexity_tuned']:.2f}")
    return "\n".join(lines)
