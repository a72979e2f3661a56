"""Notebook 08's methods (course_utils.peft_methods): every adapter saves, reloads on a freshly loaded base and gives
the same logits as the model that was trained, and, where it is mergeable, so does the merged model; PiSSA and OLoRA,
converted with path_initial_model_for_weight_conversion, load on the original base. The optimizers do what the
methods promise, the intervals and rate choice are right, and the committed benchmark results hold every method with
its intervals and where it was measured."""
import json
import math
import shutil

import pytest
import torch
from peft import PeftModel
from transformers import set_seed

from course_utils.corpus import HELD_OUT_BOOKS, gutenberg_books
from course_utils.memory import lora_parameter_count
from course_utils.paths import TINY_MODEL_DIR
from course_utils.peft_methods import (LORAPLUS_RATIO, METHODS, MODELLED_AS_LORA, RANK, RESULTS, SUMMARISED,
                                       add_adapter, best_rates, load_tiny_base, make_optimizer, pretraining_passages,
                                       rate_beyond_edge, save_initial_adapter, save_method_adapter, spread, summarise,
                                       t4_rows, t_interval, trainable_on)

needs_tiny_model = pytest.mark.skipif(not (TINY_MODEL_DIR / "model.safetensors").exists(),
                                      reason="the bundled tiny model (data/tiny_model) is missing")
TOKENS = torch.tensor([[5, 17, 230, 99, 1024, 7, 300, 41, 12, 808, 64, 3000]])


def _train_a_little(model, name: str, steps: int = 3) -> None:
    """A few optimizer steps on a fixed batch, with the method's own optimizer, so that every adapter differs from
    its start (LoRA's B starts at zero: an untrained adapter would compare equal to anything)."""
    method = METHODS[name]
    rate = method.learning_rates[-1]
    optimizer = make_optimizer(model, method, rate) or torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=rate)
    model.train()
    for _ in range(steps):
        model(input_ids=TOKENS, labels=TOKENS).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


@torch.no_grad()
def _logits(model) -> torch.Tensor:
    """The logits at the positions of TOKENS (soft prompts also return their virtual tokens' positions, first)."""
    return model(input_ids=TOKENS).logits[:, -TOKENS.shape[1]:]


@needs_tiny_model
@pytest.mark.parametrize("name", list(METHODS))
def test_every_adapter_saves_reloads_and_gives_the_same_logits(name, tmp_path):
    method = METHODS[name]
    set_seed(0)
    base_logits = _logits(load_tiny_base())
    model = add_adapter(load_tiny_base(), method)
    initial = save_initial_adapter(model, method, tmp_path)
    _train_a_little(model, name)
    trained = _logits(model)
    assert not torch.allclose(trained, base_logits, atol=1e-3), "training changed nothing: the test would prove nothing"
    folder = save_method_adapter(model, method, tmp_path, initial)

    reloaded = PeftModel.from_pretrained(load_tiny_base(), folder)  # a fresh, original base
    reloaded.eval()
    assert torch.allclose(_logits(reloaded), trained, atol=1e-4)
    if method.converts_initialisation:  # saved as a plain LoRA of rank 2r on the original base
        config = json.loads((folder / "adapter_config.json").read_text())
        assert config["r"] == 2 * RANK and config["init_lora_weights"] is True
    if method.mergeable:
        merged = reloaded.merge_and_unload()
        assert not any("lora_" in n or "vera_" in n or "ia3_" in n for n, _ in merged.named_parameters())
        assert torch.allclose(_logits(merged), trained, atol=1e-4)
    else:
        with pytest.raises(AttributeError):  # soft prompts stay extra tokens: there is nothing to merge
            reloaded.merge_and_unload()


def _as_plain_lora(folder, target):
    """The adapter folder as any plain-LoRA reader takes it (vLLM, merge tools): W + B A on the original weights."""
    shutil.copytree(folder, target)
    config = json.loads((target / "adapter_config.json").read_text())
    (target / "adapter_config.json").write_text(json.dumps({**config, "init_lora_weights": True}))
    return target


@needs_tiny_model
@pytest.mark.parametrize("name", ["pissa", "olora"])
def test_unconverted_pissa_and_olora_need_peft_to_redo_their_start_and_the_converted_ones_do_not(name, tmp_path):
    """Saved without conversion, the adapter assumes the residual base: peft rebuilds it on loading (it reruns the
    decomposition), but read as a plain LoRA on the original weights it is wrong. Converted, it is a plain LoRA."""
    method = METHODS[name]
    set_seed(0)
    model = add_adapter(load_tiny_base(), method)
    initial = save_initial_adapter(model, method, tmp_path)
    _train_a_little(model, name)
    trained = _logits(model)
    model.save_pretrained(tmp_path / "unconverted")
    converted = save_method_adapter(model, method, tmp_path, initial)

    def logits_of(folder):
        return _logits(PeftModel.from_pretrained(load_tiny_base(), folder).eval())

    assert torch.allclose(logits_of(tmp_path / "unconverted"), trained, atol=1e-4)  # peft redid the decomposition
    assert not torch.allclose(logits_of(_as_plain_lora(tmp_path / "unconverted", tmp_path / "plain")), trained,
                              atol=1e-2)
    assert torch.allclose(logits_of(_as_plain_lora(converted, tmp_path / "plain-converted")), trained, atol=1e-4)
    with pytest.raises(ValueError, match="initial adapter"):
        save_method_adapter(model, method, tmp_path / "again")


@needs_tiny_model
def test_loraplus_trains_b_faster_and_lorafa_freezes_a():
    model = add_adapter(load_tiny_base(), METHODS["loraplus"])
    groups = make_optimizer(model, METHODS["loraplus"], 1e-3).param_groups
    ids = {id(p): n for n, p in model.named_parameters()}
    rates = {("lora_B" in ids[id(p)]): g["lr"] for g in groups for p in g["params"] if "lora_" in ids[id(p)]}
    assert rates == {False: 1e-3, True: pytest.approx(1e-3 * LORAPLUS_RATIO)}

    model = add_adapter(load_tiny_base(), METHODS["lorafa"])
    make_optimizer(model, METHODS["lorafa"], 1e-3)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_B" in n for n in trainable)
    assert make_optimizer(model, METHODS["lora"], 1e-3) is None  # plain LoRA: the Trainer's own AdamW


def test_the_t_interval_matches_the_t_table():
    mean, half = t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.3027 / math.sqrt(3), rel=1e-4)  # t(0.975, 2 df) = 4.3027
    assert math.isnan(t_interval([5.0])[1])
    with pytest.raises(ValueError):
        t_interval([])


def test_the_best_rate_is_chosen_on_validation_and_an_edge_is_flagged():
    sweep = [{"method": "lora", "learning_rate": r, "validation_perplexity": v}
             for r, v in [(1e-3, 60.0), (3e-3, 55.0), (1e-2, 58.0)]]
    sweep += [{"method": "ia3", "learning_rate": r, "validation_perplexity": v}
              for r, v in [(1e-2, 70.0), (3e-2, 66.0), (1e-1, 64.0)]]
    best = best_rates(sweep)
    assert best["lora"]["learning_rate"] == 3e-3 and not best["lora"]["at_edge"]
    assert best["ia3"]["learning_rate"] == 1e-1 and best["ia3"]["at_edge"]


def test_the_sweep_widens_beyond_an_edge_and_stops():
    def runs(rates_and_perplexities):
        return [{"method": "lora", "learning_rate": r, "validation_perplexity": v} for r, v in rates_and_perplexities]

    assert METHODS["lora"].learning_rates == (3e-3, 1e-2, 3e-2)
    assert rate_beyond_edge(runs([(3e-3, 40.0), (1e-2, 45.0), (3e-2, 900.0)]), "lora") == 1e-3  # below the lowest
    assert rate_beyond_edge(runs([(3e-3, 50.0), (1e-2, 45.0), (3e-2, 44.0)]), "lora") == 1e-1  # above the highest
    assert rate_beyond_edge(runs([(3e-3, 50.0), (1e-2, 45.0), (3e-2, 46.0)]), "lora") is None  # an inner optimum
    widened = runs([(3e-4, 39.0), (1e-3, 39.5), (3e-3, 40.0), (1e-2, 45.0), (3e-2, 900.0)])
    assert rate_beyond_edge(widened, "lora") is None  # two rates added already: it stops, the edge stays flagged
    assert best_rates(widened)["lora"]["at_edge"]


def test_learned_and_forgot_are_relative_to_the_base():
    base = {"test_perplexity": 100.0, "seen_gutenberg_perplexity": 50.0}
    runs = [{"method": "lora", "seed": s, "learning_rate": 1e-2, "trainable_parameters": 1, "adapter_mb": 0.1,
             "test_perplexity": t, "seen_gutenberg_perplexity": g, "style_distance": 1.0,
             "unseen_gutenberg_perplexity": 80.0, "seconds_per_step": 0.5, "peak_mb": 100.0}
            for s, t, g in [(1, 80.0, 55.0), (2, 70.0, 55.0), (3, 75.0, 55.0)]]
    summary = summarise(runs, base)["lora"]
    assert summary["learned"]["mean"] == pytest.approx(0.25) and summary["forgot"]["mean"] == pytest.approx(0.1)
    assert summary["forgot"]["ci95"] == 0 and summary["learned"]["ci95"] > 0 and summary["seeds"] == [1, 2, 3]


def test_spread_takes_an_equal_share_from_the_middle_of_every_text():
    texts = ["a" * 100 + "MIDDLE" + "b" * 100, "x" * 50]
    shares = spread(texts, chars=20)
    assert [len(s) for s in shares] == [10, 10] and "MIDDLE"[:4] in shares[0]


def test_forgetting_is_measured_on_text_the_base_was_pre_trained_on_and_apart_on_text_it_never_saw():
    seen, unseen = pretraining_passages("train"), pretraining_passages("held_out")
    train_books, held_books = gutenberg_books("train"), gutenberg_books("held_out")
    assert len(seen) == len(train_books) and len(unseen) == len(HELD_OUT_BOOKS)
    assert all(any(p in book for book in train_books.values()) for p in seen)
    assert not any(p in book for p in seen for book in held_books.values())
    assert all(any(p in book for book in held_books.values()) for p in unseen)


def test_on_the_3b_model_lora_counts_match_the_estimator_and_the_rest_is_unmodelled():
    name = "meta-llama/Llama-3.2-3B-Instruct"
    assert trainable_on(name, METHODS["lora"]) == lora_parameter_count(name, RANK)
    assert trainable_on(name, METHODS["lorafa"]) < trainable_on(name, METHODS["lora"])  # only B trains
    rows = {r["method"]: r for r in t4_rows(name)}
    assert set(rows) == set(METHODS)
    assert all((r["memory_gb"] is not None) == (n in MODELLED_AS_LORA) for n, r in rows.items())
    assert all(r["seconds_per_step"] is None for r in rows.values())
    assert 1 < rows["lora"]["memory_gb"] < 15  # fits a T4's 15 GB, as notebook 03 measured QLoRA does


@pytest.mark.skipif(not RESULTS.exists(), reason="benchmarks/results/peft_methods.json not yet made")
def test_the_committed_benchmark_has_every_method_with_intervals_and_its_environment():
    bench = json.loads(RESULTS.read_text())
    assert bench["complete"]
    environment = bench["environment"]
    assert environment["machine"]["model"] and environment["commit"] not in ("", "unknown")
    assert {"torch", "transformers", "peft"} <= set(environment["libraries"])
    assert set(bench["load_average"]) == {"start", "end"}
    assert set(bench["summary"]) == set(METHODS) == set(bench["best_rates"])
    for name, summary in bench["summary"].items():
        assert len(summary["seeds"]) >= 3 and 0 not in summary["seeds"]  # the sweep's seed is not reused
        for figure in SUMMARISED:
            assert math.isfinite(summary[figure]["mean"]) and math.isfinite(summary[figure]["ci95"]), (name, figure)
        swept = [r["learning_rate"] for r in bench["sweep"] if r["method"] == name]
        assert set(METHODS[name].learning_rates) <= set(swept) and len(swept) == len(set(swept))
        assert rate_beyond_edge(bench["sweep"], name) is None  # the sweep was widened as far as it goes
        assert summary["learning_rate"] == bench["best_rates"][name]["learning_rate"]
