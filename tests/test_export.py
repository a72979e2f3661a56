"""GGUF export and the llama.cpp runtime, really executed: the round trip of the bundled model (f16 token-identical to
transformers, tokenization identical, read back by transformers), q8_0 and the K-quants with their fallbacks, the
rotary reordering on its own, the chat template, the Ollama Modelfile, and a quiet llama.cpp."""
import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from course_utils import export as E
from course_utils.paths import HEMINGWAY_DIR, TINY_MODEL_DIR


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf")
    return {t: E.export_gguf(TINY_MODEL_DIR, folder / f"tiny.{t}.gguf", t) for t in ("f16", "q8_0")}


@pytest.fixture(scope="module")
def reference():
    return AutoModelForCausalLM.from_pretrained(TINY_MODEL_DIR).eval(), AutoTokenizer.from_pretrained(TINY_MODEL_DIR)


@pytest.fixture(scope="module")
def prompt_ids(reference):
    text = (HEMINGWAY_DIR / "hemingway_the_sun_also_rises.txt").read_text()[20_000:20_300]
    return reference[1](text, add_special_tokens=False)["input_ids"]


def test_f16_in_llama_cpp_is_token_identical_to_transformers(exported, reference, prompt_ids):
    llm = E.load_llama(exported["f16"])
    try:
        assert E.llama_greedy(llm, prompt_ids, 30) == E.transformers_greedy(reference[0], prompt_ids, 30)
    finally:
        llm.close()


def test_llama_cpp_tokenizes_20000_characters_like_transformers(exported, reference):
    text = (HEMINGWAY_DIR / "hemingway_a_farewell_to_arms.txt").read_text()[100_000:120_000]
    text += " “Quotes”, ünïcödé, 1,234.5 — tabs\tand\n\nnewlines <|im_end|>"
    llm = E.load_llama(exported["f16"])
    try:  # special=True: llama.cpp, like transformers, then reads "<|im_end|>" as the special token, not as text
        ours = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        as_text = llm.tokenize(b"<|im_end|>", add_bos=False, special=False)
    finally:
        llm.close()
    assert ours == reference[1](text, add_special_tokens=False, verbose=False)["input_ids"]
    assert len(as_text) > 1


def test_transformers_reads_the_f16_file_back(exported, reference, prompt_ids):
    folder, name = exported["f16"].parent, exported["f16"].name
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    assert tokenizer("It was late in the evening.")["input_ids"] == reference[1]("It was late in the evening.")["input_ids"]
    assert E.transformers_greedy(model, prompt_ids, 30) == E.transformers_greedy(reference[0], prompt_ids, 30)
    ids = torch.tensor([prompt_ids])
    with torch.no_grad():
        gap = (model(ids).logits - reference[0](ids).logits).abs().max().item()
    assert gap < 0.05  # f16 rounding of the weights, nothing more


def test_file_types_and_metadata(exported):
    f16, q8 = E.gguf_tensor_types(exported["f16"]), E.gguf_tensor_types(exported["q8_0"])
    norms = {n for n in f16 if "norm" in n}
    assert len(f16) == 38 and "output.weight" not in f16  # tied embeddings: llama.cpp reuses token_embd
    assert {f16[n] for n in norms} == {q8[n] for n in norms} == {"F32"}
    assert {t for n, t in f16.items() if n not in norms} == {"F16"}
    assert {t for n, t in q8.items() if n not in norms} == {"Q8_0"}
    assert exported["q8_0"].stat().st_size < 0.6 * exported["f16"].stat().st_size
    meta = E.gguf_metadata(exported["f16"], ("tokenizer.ggml.pre", "tokenizer.ggml.bos_token_id",
                                             "tokenizer.ggml.add_bos_token", "tokenizer.chat_template", "missing.key"))
    assert meta["tokenizer.ggml.pre"] == "gpt-2" and meta["tokenizer.ggml.bos_token_id"] == 0
    assert meta["tokenizer.ggml.add_bos_token"] is False and meta["missing.key"] is None
    assert "{% generation %}" not in meta["tokenizer.chat_template"]


def test_q8_0_runs_and_stays_close_to_f16_at_first(exported, prompt_ids):
    llm16, llm8 = E.load_llama(exported["f16"]), E.load_llama(exported["q8_0"])
    try:
        f16, q8 = E.llama_greedy(llm16, prompt_ids, 100), E.llama_greedy(llm8, prompt_ids, 100)
    finally:
        llm16.close()
        llm8.close()
    assert len(q8) == 100 and E.first_difference(f16, q8) != 0  # the first token agrees; rounding shows later


def test_k_quants_fall_back_where_rows_are_not_a_multiple_of_256(exported, tmp_path):
    rows = E.k_quant_rows(exported["f16"])
    assert set(rows.values()) == {192} and not any("ffn_down" in n for n in rows)  # down_proj rows are 512 long
    mark = E.log_position()
    path = E.quantize_gguf(exported["f16"], tmp_path / "tiny.Q4_K_M.gguf", "Q4_K_M")
    warnings = [line for line in E.llama_log(mark) if "not divisible by 256" in line]
    types = E.gguf_tensor_types(path)
    assert len(warnings) == len(rows) - 1  # the token embeddings are never quantized to Q4_K, so they do not warn
    assert all(not types[n].endswith("_K") for n in rows)
    assert {types[n] for n in types if "ffn_down" in n} <= {"Q4_K", "Q6_K"}
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.Q4_K_M.gguf"]  # no partial file left behind
    with pytest.raises(ValueError, match="no file type"):
        E.quantize_gguf(exported["f16"], tmp_path / "x.gguf", "Q9_Z")


def test_llama_cpp_prints_nothing(exported, capfd):
    llm = E.load_llama(exported["q8_0"])
    E.llama_greedy(llm, [327, 2849, 541], 5)
    llm.close()
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""
    assert any("llama" in line for line in E.llama_log())  # the log was kept, not lost


def _rotary_scores(q, k, positions, interleaved: bool):
    """Attention scores q·k after rotary embeddings in one of the two layouts (head dimension d, base 10000)."""
    d = q.shape[-1]
    freqs = 10000.0 ** (-np.arange(0, d, 2) / d)
    angles = positions[:, None] * freqs[None, :]
    cos, sin = np.cos(angles), np.sin(angles)

    def rotate(x):
        if interleaved:  # llama.cpp: pairs (2j, 2j + 1)
            a, b = x[..., 0::2], x[..., 1::2]
            out = np.empty_like(x)
            out[..., 0::2], out[..., 1::2] = a * cos - b * sin, a * sin + b * cos
            return out
        a, b = x[..., : d // 2], x[..., d // 2:]  # Hugging Face: pairs (j, j + d/2)
        return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)

    return rotate(q) @ rotate(k).T


def test_rope_permute_keeps_the_attention_scores():
    rng = np.random.default_rng(0)
    heads, d, hidden = 4, 48, 192
    wq, x = rng.normal(size=(heads * d, hidden)), rng.normal(size=(7, hidden))
    permuted = E.rope_permute(wq, heads)
    positions = np.arange(7, dtype=float)
    for h in range(heads):
        hf = (x @ wq.T)[:, h * d:(h + 1) * d]
        ours = (x @ permuted.T)[:, h * d:(h + 1) * d]
        np.testing.assert_allclose(_rotary_scores(ours, ours, positions, interleaved=True),
                                   _rotary_scores(hf, hf, positions, interleaved=False), rtol=1e-10, atol=1e-8)
    assert not np.allclose(permuted, wq)
    with pytest.raises(E.ExportError, match="heads"):
        E.rope_permute(np.zeros((10, 4)), 4)


def test_other_architectures_go_to_llama_cpps_converter(tmp_path):
    for name in ("tokenizer.json", "model.safetensors"):
        (tmp_path / name).write_bytes((TINY_MODEL_DIR / name).read_bytes())
    config = json.loads((TINY_MODEL_DIR / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "qwen2"}))
    assert "convert_hf_to_gguf.py" in E.why_not_course_exporter(tmp_path)
    with pytest.raises(E.ExportError, match="convert_hf_to_gguf.py"):
        E.export_gguf(tmp_path, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()
    (tmp_path / "config.json").write_text(json.dumps({**config, "rope_parameters": {"rope_type": "llama3",
                                                                                  "rope_theta": 5e5}}))
    assert "rotary embeddings of type 'llama3'" in E.why_not_course_exporter(tmp_path)
    assert E.why_not_course_exporter(TINY_MODEL_DIR) is None
    command = E.converter_command("merged", "out.gguf", "q8_0")
    assert command[1].endswith("convert_hf_to_gguf.py") and command[-2:] == ["--outtype", "q8_0"]


def test_the_runtime_chat_template_renders_as_transformers_does(exported, reference):
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    messages = [{"role": "system", "content": "Write like Hemingway."}, {"role": "user", "content": "The river?"},
                {"role": "assistant", "content": "It was cold."}, {"role": "user", "content": "And then?"}]
    template = E.gguf_metadata(exported["f16"], ("tokenizer.chat_template",))["tokenizer.chat_template"]
    formatter = Jinja2ChatFormatter(template=template, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    ours = formatter(messages=messages).prompt
    assert ours == reference[1].apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def test_modelfile(exported, tmp_path):
    template = (TINY_MODEL_DIR / "chat_template.jinja").read_text()
    text = E.modelfile(exported["q8_0"], template, stop=["<|im_end|>"], system="Be brief.",
                       parameters={"temperature": 0.8})
    lines = text.splitlines()
    assert lines[0] == "FROM ./tiny.q8_0.gguf" and 'PARAMETER stop "<|im_end|>"' in lines
    assert "PARAMETER temperature 0.8" in lines and 'SYSTEM """Be brief."""' in lines
    assert "{{ .Role }}" in text and "{{ .Content }}<|im_end|>" in text
    assert E.write_modelfile(tmp_path, text).read_text() == text
    with pytest.raises(E.ExportError, match="ChatML"):
        E.ollama_template("[INST] {{ messages }} [/INST]")


def test_the_local_runtime_requirements_are_pinned_to_the_tested_versions():
    from course_utils.paths import REPO_ROOT

    lines = [line.split("#")[0].strip() for line in (REPO_ROOT / "requirements-local-runtime.txt").read_text().splitlines()]
    pins = dict(line.split("==") for line in lines if line)
    assert pins["gguf"] == "0.19.0" and pins["llama-cpp-python"] == "0.3.36"
    import importlib.metadata

    assert {name: importlib.metadata.version(name) for name in pins} == pins
