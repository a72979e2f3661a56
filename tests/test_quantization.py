"""Quantization made visible: the levels, the errors and the bytes the notebook shows are bitsandbytes' own."""
import pytest
import torch

from course_utils.models import load_model
from course_utils.paths import TINY_MODEL_DIR
from course_utils.profiles import PROFILES
from course_utils.memory import random_llama_config
from course_utils.quantization import (BLOCKSIZE, METHODS, bytes_per_param_formula, footprint_model_config,
                                       footprint_ratios, hidden_quantization_bytes, levels, measure_footprints,
                                       quantization_error, round_trip, save_random_model, scaled_by_block,
                                       storage_cost, true_footprint, weight_bytes, weight_matrix)


@pytest.fixture(scope="module")
def gaussian():
    torch.manual_seed(0)
    return torch.randn(256, 512) * 0.02


def test_nf4_has_sixteen_levels_from_minus_one_to_one_with_an_exact_zero():
    nf4 = levels("nf4")
    assert len(nf4) == 16 and nf4[0] == -1 and nf4[-1] == 1 and (nf4 == 0).any()
    assert (nf4 > 0).sum() == 8 and (nf4 < 0).sum() == 7  # asymmetric, so that zero is exact
    gaps = nf4.diff()
    assert gaps[7] < gaps[0] and gaps[7] < gaps[-1]  # dense near zero, where normal weights crowd
    assert len(levels("fp4")) == 16
    with pytest.raises(ValueError):
        levels("int4")


def test_nf4_is_nearest_level_times_block_absmax(gaussian):
    """The rule the notebook writes by hand is exactly what bitsandbytes does."""
    blocks = gaussian.reshape(-1, BLOCKSIZE)
    absmax = blocks.abs().amax(dim=1, keepdim=True)
    nf4 = levels("nf4")
    nearest = (blocks / absmax).unsqueeze(-1).sub(nf4).abs().argmin(-1)
    by_hand = (nf4[nearest] * absmax).reshape(gaussian.shape)
    assert torch.equal(by_hand, round_trip(gaussian, "nf4"))


def test_int8_beats_nf4_beats_fp4_on_normal_weights(gaussian):
    errors = {m: quantization_error(gaussian, m) for m in METHODS}
    assert errors["int8"].relative_error < errors["nf4"].relative_error < errors["fp4"].relative_error
    assert 0.05 < errors["nf4"].relative_error < 0.15
    assert errors["int8"].bits == 8 and errors["nf4"].bits == 4
    with pytest.raises(ValueError, match="unknown method"):
        round_trip(gaussian, "int3")


def test_scaled_weights_fill_minus_one_to_one_with_one_extreme_per_block(gaussian):
    scaled = scaled_by_block(gaussian)
    assert scaled.abs().max() == 1
    assert (scaled.view(-1, BLOCKSIZE).abs().amax(dim=1) == 1).all()
    with pytest.raises(ValueError):
        scaled_by_block(torch.zeros(10))


def test_double_quantization_saves_about_three_eighths_of_a_bit_per_weight(gaussian):
    plain, double = storage_cost(gaussian, double_quant=False), storage_cost(gaussian, double_quant=True)
    assert plain.packed_bytes == double.packed_bytes == gaussian.numel() // 2
    assert plain.scale_bytes == gaussian.numel() // BLOCKSIZE * 4  # one fp32 absmax per block
    assert bytes_per_param_formula(False) == 0.5625 and bytes_per_param_formula(True) == pytest.approx(0.515869, 1e-5)
    assert (plain.packed_bytes + plain.scale_bytes) / plain.parameters == bytes_per_param_formula(False)
    assert (double.packed_bytes + double.scale_bytes) / double.parameters == bytes_per_param_formula(True)
    saved_bits = (plain.scale_bytes - double.scale_bytes) * 8 / plain.parameters
    assert 0.37 < saved_bits < 0.38  # (32 - 8) / 64 bits, less the second-level scales
    assert double.table_bytes > plain.table_bytes  # the 8-bit code table: 1 KB per matrix, paid once


def test_weight_matrix_is_read_from_the_safetensors_file():
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(TINY_MODEL_DIR)
    weights = weight_matrix(TINY_MODEL_DIR)
    assert weights.shape == (config.hidden_size, config.intermediate_size) and weights.dtype == torch.float32
    with pytest.raises(KeyError):
        weight_matrix(TINY_MODEL_DIR, "no.such.weight")


def test_get_memory_footprint_misses_the_4bit_scales_and_true_footprint_adds_them():
    model, _ = load_model(PROFILES["tiny"], "qlora", verbose=False)
    hidden = hidden_quantization_bytes(model)
    assert hidden > 0 and true_footprint(model) == model.get_memory_footprint() + hidden


def test_the_footprint_model_has_50_to_100_million_parameters():
    from course_utils.memory import count_parameters

    assert 50e6 < count_parameters(footprint_model_config()) < 100e6


def test_footprints_shrink_from_fp32_to_nf4_with_double_quantization(tmp_path):
    config = random_llama_config(hidden=128, layers=2, vocab=512)
    folder = save_random_model(tmp_path / "llama", config)
    sizes = measure_footprints(folder)
    for variant, footprint in sizes.items():  # the arithmetic the notebook applies to real models is exact
        assert abs(weight_bytes(config, variant) - footprint.true_bytes) <= 1024, variant
    true = {k: f.true_bytes for k, f in sizes.items()}
    assert true["fp32"] / true["fp16"] == pytest.approx(2, rel=0.01)  # a few buffers stay in fp32
    assert true["fp16"] > true["int8"] > true["nf4"] > true["nf4+dq"]
    assert sizes["nf4"].reported_bytes == sizes["nf4+dq"].reported_bytes  # the blind spot the notebook shows
    ratios = footprint_ratios(sizes)
    assert set(ratios) == {"nf4 / fp32", "nf4+dq / nf4", "int8 / fp32"} and ratios["nf4+dq / nf4"] < 1
    modified = (folder / "model.safetensors").stat().st_mtime_ns
    assert save_random_model(folder) == folder and (folder / "model.safetensors").stat().st_mtime_ns == modified


def test_a_hub_weight_matrix_reads_only_its_own_bytes(monkeypatch):
    """On Colab, notebook 03 shows one layer of Llama-3.2-3B: only that tensor's bytes are fetched, never the 6.4 GB
    checkpoint. Checked with a stand-in for huggingface_hub's HfFileSystem that serves the tiny model's file."""
    import io

    import huggingface_hub
    from safetensors import safe_open

    from course_utils import quantization

    path = TINY_MODEL_DIR / "model.safetensors"
    data = path.read_bytes()
    served = []

    class CountingFile(io.BytesIO):
        def read(self, size=-1):
            chunk = super().read(size)
            served.append(len(chunk))
            return chunk

    class FakeFileSystem:
        def open(self, address, mode):
            assert address == "someone/model/model.safetensors" and mode == "rb"
            return CountingFile(data)

    monkeypatch.setattr(huggingface_hub, "HfFileSystem", FakeFileSystem)
    monkeypatch.setattr(quantization, "_hub_shard", lambda repo, name: "model.safetensors")
    name = "model.layers.1.self_attn.q_proj.weight"
    weights = weight_matrix("someone/model", name)
    with safe_open(str(path), framework="pt") as f:
        expected = f.get_tensor(name).float()
    assert torch.equal(weights, expected)
    header = 8 + int.from_bytes(data[:8], "little")
    assert sum(served) == header + expected.numel() * 4 < len(data) / 10  # the header and one fp32 tensor
