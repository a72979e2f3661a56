"""The memory arithmetic: exact parameter counts, the estimator's bookkeeping, its choice of a model for a T4,
and its agreement with the measured peak memory of real training steps on the CPU."""
import pytest
import torch
from peft import LoraConfig, get_peft_model

from course_utils.hardware import EXAMPLE_MACHINES
from course_utils.memory import (ESTIMATE_TOLERANCE, NF4_DOUBLE_QUANT_BYTES, choose_full_finetune_model, count_parameters,
                                 estimate_memory, lora_parameter_count, measure_peak, measure_training_runs,
                                 meta_model, random_llama_config, training_run)
from course_utils.profiles import PROFILES

LLAMA_2_7B = "meta-llama/Llama-2-7b-hf"


@pytest.mark.parametrize("name, parameters", [
    (LLAMA_2_7B, 6_738_415_616),
    ("meta-llama/Llama-2-13b-hf", 13_015_864_320),
    ("meta-llama/Llama-2-70b-hf", 68_976_648_192),
    ("TinyLlama/TinyLlama-1.1B-Chat-v1.0", 1_100_048_384),
    ("meta-llama/Llama-3.2-3B", 3_212_749_824),
])
def test_parameter_counts_of_real_models_are_exact(name, parameters):
    assert count_parameters(name) == parameters
    assert estimate_memory(name).parameters == parameters


def test_lora_parameter_count_is_r_times_d_plus_k_per_layer():
    # Llama-2-7B, r=16 on the seven projections of each of its 32 layers
    per_layer = 16 * (4 * (4096 + 4096) + 2 * (4096 + 11008) + (11008 + 4096))
    assert lora_parameter_count(LLAMA_2_7B, r=16) == 32 * per_layer == 39_976_960


def test_lora_parameter_count_agrees_with_peft_on_the_meta_device():
    model = get_peft_model(meta_model(LLAMA_2_7B), LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
    trainable, total = model.get_nb_trainable_parameters()
    assert trainable == lora_parameter_count(LLAMA_2_7B, r=8, modules=("q_proj", "v_proj"))


def test_the_chapters_trainable_count_is_r32_on_the_four_attention_projections():
    attention = ("q_proj", "k_proj", "v_proj", "o_proj")
    trainable = lora_parameter_count(LLAMA_2_7B, r=32, modules=attention)
    assert trainable == 33_554_432
    assert trainable + count_parameters(LLAMA_2_7B) == 6_771_970_048


def test_full_fine_tuning_in_fp32_with_adamw_costs_16_bytes_per_parameter_before_activations():
    e = estimate_memory(LLAMA_2_7B, "full", "float32", "adamw")
    n = e.parameters
    assert (e.weights, e.gradients, e.optimizer_states, e.weight_copies) == (4 * n, 4 * n, 8 * n, 0)
    assert e.total == sum(e.components.values())
    assert e.as_gb()["total"] == pytest.approx(e.total / 1e9)


def test_mixed_precision_keeps_fp32_master_weights_and_adds_16_bit_copies():
    e = estimate_memory(LLAMA_2_7B, "full", "float16", "adamw")
    assert e.weights == 4 * e.parameters and e.gradients == 4 * e.parameters
    assert 1.9 * e.parameters < e.weight_copies <= 2 * e.parameters


@pytest.mark.parametrize("optimizer, bytes_per_param", [("adamw", 8), ("adamw_8bit", 2), ("paged_adamw_8bit", 2),
                                                        ("sgd", 0)])
def test_optimizer_states_per_trainable_parameter(optimizer, bytes_per_param):
    e = estimate_memory(LLAMA_2_7B, "full", "float16", optimizer)
    assert e.optimizer_states == bytes_per_param * e.trainable_parameters


def test_lora_trains_only_the_adapters_and_qlora_stores_the_base_in_4_bit():
    lora = estimate_memory(LLAMA_2_7B, "lora", "float16", "adamw")
    qlora = estimate_memory(LLAMA_2_7B, "qlora", "float16", "adamw")
    assert lora.trainable_parameters == qlora.trainable_parameters == 39_976_960
    assert lora.gradients == 4 * lora.trainable_parameters and lora.optimizer_states == 8 * lora.trainable_parameters
    assert lora.weights == 2 * lora.parameters + 4 * lora.trainable_parameters
    # NF4 with double quantization: 4 bits + an 8-bit scale per 64 weights + an fp32 scale per 256 scales
    assert NF4_DOUBLE_QUANT_BYTES == pytest.approx(0.5 + 1 / 64 + 4 / 16384)
    assert 3.4e9 < qlora.weights < 4.7e9 < 13e9 < lora.weights


def test_gradient_checkpointing_and_smaller_batches_shrink_only_the_activations():
    plain = estimate_memory(LLAMA_2_7B, "lora", "float16", batch_size=4, seq_len=1024)
    checkpointed = estimate_memory(LLAMA_2_7B, "lora", "float16", batch_size=4, seq_len=1024,
                                   gradient_checkpointing=True)
    assert checkpointed.activations < plain.activations / 5
    assert checkpointed.weights == plain.weights
    smaller = estimate_memory(LLAMA_2_7B, "lora", "float16", batch_size=1, seq_len=1024)
    assert smaller.activations == pytest.approx(plain.activations / 4, rel=0.01)


@pytest.mark.parametrize("argument, value", [("method", "prefix"), ("dtype", "int8"), ("optimizer", "adam")])
def test_unknown_choices_are_refused_with_the_valid_ones(argument, value):
    with pytest.raises(ValueError, match="choose one of"):
        estimate_memory(LLAMA_2_7B, **{argument: value})


def test_breakdown_names_every_component_and_the_total():
    text = estimate_memory(LLAMA_2_7B, "qlora", "float16", "paged_adamw_8bit").breakdown()
    for name in ["weights", "gradients", "optimizer states", "activations", "logits buffers", "total", "NF4"]:
        assert name in text


def test_the_t4_full_fine_tuning_model_is_the_estimators_choice():
    t4 = EXAMPLE_MACHINES["Colab free T4"]
    profile = PROFILES["t4"]
    chosen, estimates = choose_full_finetune_model(t4.gpu_memory_gb, dtype=profile.dtype,
                                                   batch_size=profile.batch_size, seq_len=profile.max_seq_length)
    assert chosen == profile.model_for("full") == "HuggingFaceTB/SmolLM2-360M-Instruct"
    assert estimates[chosen].total <= 0.9 * 15e9
    bigger = [e for e in estimates.values() if e.parameters > estimates[chosen].parameters]
    assert bigger and all(e.total > 0.9 * 15e9 for e in bigger)


def test_a_bigger_gpu_gets_a_bigger_model_and_a_tiny_one_gets_none():
    small, _ = choose_full_finetune_model(15.0)
    large, estimates = choose_full_finetune_model(80.0)
    assert estimates[large].parameters > estimates[small].parameters
    assert choose_full_finetune_model(1.0)[0] is None


def test_measure_peak_sees_a_200_mb_allocation():
    with measure_peak("cpu") as peak:
        block = torch.ones(50_000_000)  # 200 MB, written, so really resident
        del block
    assert 190e6 < peak.above_baseline < 260e6


# The estimator against measurement: a few fp32 training steps on the CPU, each run in one fresh process.
RUNS = {
    "tiny full": (training_run("tiny", "full", batch_size=4, seq_len=128, steps=2), "tiny"),
    "tiny lora": (training_run("tiny", "lora", batch_size=4, seq_len=128, steps=2), "tiny"),
    "58M llama full": (training_run(random_llama_config(), "full", batch_size=1, seq_len=64, steps=2), None),
    "58M llama lora": (training_run(random_llama_config(), "lora", batch_size=1, seq_len=64, steps=2), None),
}


@pytest.fixture(scope="module")
def measured():
    return dict(zip(RUNS, measure_training_runs([run for run, _ in RUNS.values()])))


@pytest.mark.parametrize("label", list(RUNS))
def test_estimate_is_within_25_percent_of_the_measured_peak(measured, label):
    run, config = RUNS[label]
    estimate = estimate_memory(config or random_llama_config(), run["method"], "float32", "adamw",
                               run["batch_size"], run["seq_len"])
    measurement = measured[label]
    assert measurement.trainable_parameters == estimate.trainable_parameters
    assert measurement.parameters == estimate.parameters
    assert estimate.total == pytest.approx(measurement.peak_bytes, rel=ESTIMATE_TOLERANCE), (
        f"{label}: estimated {estimate.total / 1e6:.1f} MB, measured {measurement.peak_bytes / 1e6:.1f} MB")


def test_random_llama_is_a_50_to_100_million_parameter_model():
    assert 50e6 < count_parameters(random_llama_config()) < 100e6


def test_pure_16_bit_full_fine_tuning_keeps_eight_bytes_per_parameter():
    """Benchmarks such as PEFT's method comparison train 3B models entirely in bf16: 2 + 2 + 4 bytes per parameter
    (weights, gradients, AdamW's two moments), where the course's mixed precision keeps 16 plus 16-bit copies."""
    from course_utils.memory import architecture, estimate_memory

    name = "meta-llama/Llama-3.2-3B"
    params = architecture(name).parameters
    pure = estimate_memory(name, "full", dtype="bfloat16", mixed_precision=False)
    mixed = estimate_memory(name, "full", dtype="bfloat16")
    assert (pure.weights, pure.gradients, pure.optimizer_states, pure.weight_copies) == (
        2 * params, 2 * params, 4 * params, 0)
    assert mixed.weights + mixed.gradients + mixed.optimizer_states == 16 * params and mixed.weight_copies > 0
    assert pure.activations == mixed.activations
    # LoRA and QLoRA adapters stay fp32 whatever the flag says
    assert estimate_memory(name, "lora", dtype="bfloat16", mixed_precision=False) == estimate_memory(
        name, "lora", dtype="bfloat16")


def test_longest_sequence_is_the_last_length_that_fits():
    from course_utils.memory import estimate_memory, longest_sequence

    settings = dict(dtype="float16", optimizer="paged_adamw_8bit", batch_size=2, gradient_checkpointing=True)
    name = "meta-llama/Llama-3.2-3B-Instruct"
    tokens = longest_sequence(name, "qlora", 15.0, **settings)
    assert tokens > 0 and tokens % 64 == 0
    assert estimate_memory(name, "qlora", seq_len=tokens, **settings).total <= 15e9
    assert estimate_memory(name, "qlora", seq_len=tokens + 64, **settings).total > 15e9
    assert longest_sequence(name, "lora", 15.0, **settings) < tokens  # the fp16 base leaves less room
    assert longest_sequence("meta-llama/Llama-3.1-70B", "qlora", 15.0, **settings) == 0


def test_lora_tensor_sizes_are_each_a_and_b_of_every_targeted_layer():
    from course_utils.memory import architecture, lora_tensor_sizes

    name = "meta-llama/Llama-3.2-3B-Instruct"
    sizes = lora_tensor_sizes(name, 16)
    arch = architecture(name)
    assert len(sizes) == 2 * 7 * arch.layers and sum(sizes) == lora_parameter_count(name, 16)
    assert lora_tensor_sizes(name, 16, ("q_proj",)) == [16 * arch.hidden, arch.hidden * 16] * arch.layers
    assert arch.quantized_parameters == sum(a * b for n, a, b in arch.linears if n != "lm_head")
