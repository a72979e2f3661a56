"""QLoRA's gradients after the base model has been measured: the 4-bit trap of bitsandbytes 0.50, closed for good.

On a CPU with avx512_bf16, bitsandbytes repacks a `Linear4bit` weight for an inference-only kernel the first time
the layer runs in eval mode without gradients; from then on no gradient flows through it, silently. Notebooks 03 and
07 measure the base model before training, so every 4-bit load in course_utils must prevent the repacking
(models.keep_4bit_trainable). These tests measure first, then train, as the notebooks do.
"""
import pytest
import torch
from bitsandbytes.functional import dequantize_4bit, has_avx512bf16
from bitsandbytes.nn import Linear4bit
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

from course_utils.models import bnb_config, keep_4bit_trainable, load_model
from course_utils.paths import TINY_MODEL_DIR
from course_utils.profiles import PROFILES

TINY = PROFILES["tiny"]
SEVEN = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def measure_once(model) -> None:
    """What the lab does before training: an eval-mode forward pass without gradients."""
    model.eval()
    with torch.no_grad():
        model(input_ids=torch.arange(64).view(1, 64))
    model.train()


def input_gradient_error(layer: Linear4bit) -> float:
    """Largest difference between the layer's input gradient and that of x @ dequantize_4bit(W).T (inf if none)."""
    weight = dequantize_4bit(layer.weight.data, layer.weight.quant_state).float()
    x = torch.randn(3, layer.in_features, requires_grad=True)
    layer(x).sum().backward()
    if x.grad is None:
        return float("inf")
    return (x.grad - torch.ones(3, layer.out_features) @ weight).abs().max().item()


def four_bit_layers(model) -> list[Linear4bit]:
    return [m for m in model.modules() if isinstance(m, Linear4bit)]


def test_every_4bit_layer_keeps_its_gradient_after_the_model_was_measured():
    model, _ = load_model(TINY, "qlora", verbose=False)
    layers = four_bit_layers(model)
    assert len(layers) == 7 * model.config.num_hidden_layers
    measure_once(model)
    errors = [input_gradient_error(layer) for layer in layers]
    assert max(errors) < 1e-4, f"{sum(e == float('inf') for e in errors)} of {len(layers)} layers cut the gradient"


def lora_losses(model, steps: int = 6) -> list[float]:
    """The loss of a few LoRA steps (the chapter's r=16 on the seven modules) on one fixed batch."""
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=SEVEN,
                                             task_type="CAUSAL_LM"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    batch = torch.randint(0, model.config.vocab_size, (4, 64), generator=torch.Generator().manual_seed(0))
    losses = []
    for _ in range(steps):
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def test_qlora_after_measuring_learns_like_lora_on_the_fp32_base():
    quantized, _ = load_model(TINY, "qlora", verbose=False)
    measure_once(quantized)
    reference, _ = load_model(TINY, "lora", verbose=False)
    measure_once(reference)
    q, r = lora_losses(quantized), lora_losses(reference)
    assert q[-1] < q[0] and r[-1] < r[0]
    assert (q[0] - q[-1]) > 0.8 * (r[0] - r[-1]), f"QLoRA loss fell {q[0] - q[-1]:.3f}, LoRA {r[0] - r[-1]:.3f}"


@pytest.mark.filterwarnings("ignore:.*an autograd kernel was not registered")  # the symptom itself
@pytest.mark.skipif(not has_avx512bf16(), reason="the trap needs a CPU with avx512_bf16; this one has none, so "
                                                  "bitsandbytes never switches to its inference-only kernel here")
def test_without_the_fix_this_cpu_cuts_the_gradient():
    """The premise of the tests above, on this machine: a plain 4-bit load, measured once, trains nothing."""
    model = AutoModelForCausalLM.from_pretrained(TINY_MODEL_DIR, quantization_config=bnb_config(TINY),
                                                 device_map="cpu", dtype=torch.float32)
    measure_once(model)
    assert input_gradient_error(four_bit_layers(model)[0]) == float("inf")
    fixed = AutoModelForCausalLM.from_pretrained(TINY_MODEL_DIR, quantization_config=BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32), device_map="cpu")
    assert keep_4bit_trainable(fixed) == len(four_bit_layers(fixed))
    measure_once(fixed)
    assert input_gradient_error(four_bit_layers(fixed)[0]) < 1e-4


def test_a_model_measured_before_the_fix_is_refused_with_a_clear_error():
    model = AutoModelForCausalLM.from_pretrained(TINY_MODEL_DIR, quantization_config=bnb_config(TINY),
                                                 device_map="cpu", dtype=torch.float32)
    measure_once(model)
    if not has_avx512bf16():
        pytest.skip("no repacking happens on a CPU without avx512_bf16")
    with pytest.raises(RuntimeError, match="right after loading"):
        keep_4bit_trainable(model)
