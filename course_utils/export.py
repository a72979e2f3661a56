"""Export to a local runtime: a merged model folder written as GGUF, run by llama.cpp, and served by Ollama.

GGUF is llama.cpp's single-file format: the architecture's hyperparameters, the tokenizer (vocabulary, merges,
special tokens, chat template) and every tensor, each in its own type (f32, f16, q8_0, the K-quants...).
`export_gguf` writes one from a saved Llama-architecture folder with the `gguf` package (pure Python, no torch),
for the course's tiny model and any Llama with a byte-level BPE tokenizer; for real models of every architecture,
`converter_command` gives the command of llama.cpp's own converter. `quantize_gguf` makes the smaller types with
llama.cpp's quantizer (the same code as its `llama-quantize` tool), `load_llama` opens a file in llama.cpp
(llama-cpp-python) with its log captured instead of printed, and `modelfile` writes Ollama's recipe for the file.
"""
from __future__ import annotations

import ctypes
import json
import re
from pathlib import Path

import numpy as np

from .atomic import write_text

# What each file type stores its 2-D weights in; norms (1-D) stay float32 in every type, as llama.cpp wants them.
WRITER_TYPES = ("f32", "f16", "q8_0")
# llama.cpp's quantizer types the notebook shows, by the names its llama-quantize tool uses.
QUANTIZER_TYPES = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0")
K_QUANT_BLOCK = 256  # a K-quant packs 256 weights of a row into one super-block: rows must be divisible by 256
_HF_TO_GGUF = {  # Hugging Face Llama names -> GGUF names ({i}: the block)
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "model.layers.{i}.input_layernorm.weight": "blk.{i}.attn_norm.weight",
    "model.layers.{i}.self_attn.q_proj.weight": "blk.{i}.attn_q.weight",
    "model.layers.{i}.self_attn.k_proj.weight": "blk.{i}.attn_k.weight",
    "model.layers.{i}.self_attn.v_proj.weight": "blk.{i}.attn_v.weight",
    "model.layers.{i}.self_attn.o_proj.weight": "blk.{i}.attn_output.weight",
    "model.layers.{i}.post_attention_layernorm.weight": "blk.{i}.ffn_norm.weight",
    "model.layers.{i}.mlp.gate_proj.weight": "blk.{i}.ffn_gate.weight",
    "model.layers.{i}.mlp.up_proj.weight": "blk.{i}.ffn_up.weight",
    "model.layers.{i}.mlp.down_proj.weight": "blk.{i}.ffn_down.weight",
}
# Hugging Face-only template tags: `{% generation %}` marks the assistant's tokens for assistant-only loss in
# training. Jinja engines outside transformers (llama-cpp-python's, llama.cpp's) do not know it.
_TRAINING_TAGS = re.compile(r"{%-?\s*(?:generation|endgeneration)\s*-?%}")


class ExportError(ValueError):
    """The folder cannot be written as GGUF by this exporter; the message says what to use instead."""


def gguf_name(hf_name: str) -> str:
    """The GGUF name of a Hugging Face Llama tensor ("model.layers.0.self_attn.q_proj.weight" -> "blk.0.attn_q.weight")."""
    match = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", hf_name)
    if match:
        template = _HF_TO_GGUF.get("model.layers.{i}." + match.group(2))
        if template:
            return template.format(i=match.group(1))
    elif hf_name in _HF_TO_GGUF:
        return _HF_TO_GGUF[hf_name]
    raise ExportError(f"no GGUF name for tensor {hf_name!r}: this exporter knows the Llama architecture only; "
                      "use llama.cpp's converter (converter_command) for other architectures")


def rope_permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """Reorder the rows of a query or key projection from Hugging Face's rotary layout to llama.cpp's.

    Rotary embeddings turn pairs of dimensions inside each head. Hugging Face's Llama pairs dimension j with
    j + d/2 (`rotate_half`); llama.cpp's Llama pairs 2j with 2j + 1. Within each head, row j goes to 2j and
    row j + d/2 to 2j + 1; the attention scores, and so the model, stay the same."""
    rows = weight.shape[0]
    if rows % (2 * heads):
        raise ExportError(f"a projection of {rows} rows cannot be split into {heads} heads of even size")
    return weight.reshape(heads, 2, rows // heads // 2, -1).swapaxes(1, 2).reshape(weight.shape)


def runtime_chat_template(template: str) -> str:
    """The chat template without the training-only `{% generation %}` tags (the text it renders is unchanged)."""
    return _TRAINING_TAGS.sub("", template)


def _read_folder(model_dir: Path) -> tuple[dict, dict, str | None]:
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") != "llama":
        raise ExportError(f"{model_dir}: model_type is {config.get('model_type')!r}, not 'llama'. Use llama.cpp's "
                          f"converter for it: {' '.join(converter_command(model_dir, 'model.gguf'))}")
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    pre = tokenizer.get("pre_tokenizer") or {}
    if tokenizer["model"]["type"] != "BPE" or pre.get("type") != "ByteLevel":
        raise ExportError(f"{model_dir}: this exporter writes byte-level BPE tokenizers only (GPT-2 style); "
                          "use llama.cpp's converter, which knows the others")
    template_file = model_dir / "chat_template.jinja"
    template = template_file.read_text(encoding="utf-8") if template_file.exists() else None
    if template is None and (model_dir / "tokenizer_config.json").exists():
        template = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8")).get("chat_template")
    return config, tokenizer, template


def why_not_course_exporter(model_dir: str | Path) -> str | None:
    """None if `export_gguf` writes this folder, else the reason it does not (then use llama.cpp's converter)."""
    model_dir = Path(model_dir)
    try:
        config, _, _ = _read_folder(model_dir)
        rope = (config.get("rope_parameters") or {}).get("rope_type", "default")
        if rope != "default":
            return f"{model_dir}: rotary embeddings of type {rope!r}, which this exporter does not write"
    except ExportError as error:
        return str(error)
    except OSError as error:
        return f"{model_dir}: {error}"
    return None


def _first(value):
    return value[0] if isinstance(value, list) else value


def _add_tokenizer(writer, tokenizer: dict, config: dict, template: str | None) -> None:
    import gguf

    vocab = tokenizer["model"]["vocab"]
    added = {t["id"]: t for t in tokenizer.get("added_tokens", [])}
    tokens = [None] * (max([*vocab.values(), *added]) + 1)
    for text, index in vocab.items():
        tokens[index] = text
    for index, token in added.items():
        tokens[index] = token["content"]
    if None in tokens:
        raise ExportError(f"the vocabulary has gaps (token {tokens.index(None)} is missing)")
    types = [gguf.TokenType.CONTROL if added.get(i, {}).get("special") else gguf.TokenType.NORMAL
             for i in range(len(tokens))]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")  # byte-level BPE, as GPT-2's
    writer.add_tokenizer_pre("gpt-2")  # and GPT-2's pre-tokenizer (the regex that splits words before BPE)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    eos = _first(config.get("eos_token_id"))
    if eos is None:
        raise ExportError("config.json names no eos_token_id: llama.cpp needs one to stop generating")
    writer.add_eos_token_id(eos)
    # llama.cpp prepends no BOS (add_bos_token False, as the Hugging Face tokenizer does), but transformers' GGUF
    # reader needs a BOS id to rebuild the tokenizer: the end-of-text token, which also opens a document here.
    bos = config.get("bos_token_id")
    writer.add_bos_token_id(eos if bos is None else _first(bos))
    writer.add_add_bos_token(False)
    if config.get("pad_token_id") is not None:
        writer.add_pad_token_id(config["pad_token_id"])
    if isinstance(config.get("eos_token_id"), list) and len(config["eos_token_id"]) > 1:
        writer.add_eot_token_id(config["eos_token_id"][1])  # the end of a chat turn (<|im_end|>)
    if template:
        writer.add_chat_template(runtime_chat_template(template))


def _add_hyperparameters(writer, config: dict, file_type: str, name: str) -> None:
    import gguf

    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    rope = config.get("rope_parameters") or {}
    if rope.get("rope_type", "default") != "default":
        raise ExportError(f"rope type {rope['rope_type']!r} is not written by this exporter: use llama.cpp's "
                          "converter, which writes rope scaling")
    writer.add_name(name)
    writer.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                          "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[file_type])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads", heads))
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(rope.get("rope_theta", config.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_vocab_size(config["vocab_size"])


def _tensor_data(array: np.ndarray, file_type: str):
    """(data, raw type or None) for one tensor in the file type: 1-D tensors float32, the rest as asked."""
    import gguf

    array = array.astype(np.float32)
    if array.ndim == 1 or file_type == "f32":
        return array, None
    if file_type == "f16":
        return array.astype(np.float16), None
    return gguf.quants.quantize(array, gguf.GGMLQuantizationType.Q8_0), gguf.GGMLQuantizationType.Q8_0


def export_gguf(model_dir: str | Path, path: str | Path, file_type: str = "f16", name: str | None = None) -> Path:
    """Write the saved Llama model in `model_dir` (config.json, *.safetensors, tokenizer.json and the chat template)
    as one GGUF file at `path`, its 2-D weights in `file_type` ("f32", "f16" or "q8_0"). Returns the path.
    The file is written beside the target and renamed into place, so a crash never leaves half a model."""
    import gguf
    from safetensors import safe_open

    if file_type not in WRITER_TYPES:
        raise ValueError(f"file_type {file_type!r}: choose one of {', '.join(WRITER_TYPES)} (the K-quants come from "
                         "llama.cpp's quantizer: quantize_gguf)")
    model_dir, path = Path(model_dir), Path(path)
    config, tokenizer, template = _read_folder(model_dir)
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads", config["num_attention_heads"])
    weights = sorted(model_dir.glob("*.safetensors"))
    if not weights:
        raise ExportError(f"{model_dir} holds no .safetensors weights (save the model with save_pretrained first)")
    partial = path.with_name(f".{path.name}.partial")
    writer = gguf.GGUFWriter(partial, arch="llama")
    _add_hyperparameters(writer, config, file_type, name or model_dir.name)
    _add_tokenizer(writer, tokenizer, config, template)
    for file in weights:
        with safe_open(file, framework="np") as tensors:
            for hf_name in tensors.keys():  # noqa: SIM118 (safe_open is not a dict)
                if hf_name == "lm_head.weight" and config.get("tie_word_embeddings"):
                    continue  # tied: llama.cpp reuses token_embd as the output layer when output.weight is absent
                array = tensors.get_tensor(hf_name)
                if hf_name.endswith("q_proj.weight"):
                    array = rope_permute(array, heads)
                elif hf_name.endswith("k_proj.weight"):
                    array = rope_permute(array, kv_heads)
                data, raw_type = _tensor_data(array, file_type)
                writer.add_tensor(gguf_name(hf_name), data, raw_dtype=raw_type)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


def gguf_tensor_types(path: str | Path) -> dict[str, str]:
    """{tensor name: its type} read from a GGUF file's header ("F32", "F16", "Q8_0", "Q4_K", ...)."""
    from gguf import GGUFReader

    return {t.name: t.tensor_type.name for t in GGUFReader(path).tensors}


def gguf_metadata(path: str | Path, keys: tuple[str, ...]) -> dict:
    """The values of some metadata keys of a GGUF file (strings and numbers; None where a key is absent)."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    values = {}
    for key in keys:
        field = reader.get_field(key)
        values[key] = None if field is None else field.contents()
    return values


def k_quant_rows(path: str | Path) -> dict[str, int]:
    """{tensor: row length} for the 2-D tensors of a GGUF file whose rows a K-quant cannot pack (not a multiple of
    256 weights): llama.cpp's quantizer gives those tensors a fallback type."""
    from gguf import GGUFReader

    return {t.name: int(t.shape[0]) for t in GGUFReader(path).tensors
            if len(t.shape) == 2 and int(t.shape[0]) % K_QUANT_BLOCK}


# llama.cpp reports through one process-wide log callback; the course keeps its lines instead of letting them
# reach stderr (a notebook cell must print no unexplained stderr), and shows the ones that matter.
_LOG: list[str] = []
_log_callback = None


def _capture_llama_log() -> None:
    global _log_callback
    if _log_callback is not None:
        return
    import llama_cpp

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        _LOG.append(text.decode("utf-8", errors="replace"))

    _log_callback = callback  # kept referenced: llama.cpp calls it for the life of the process
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))


def llama_log(since: int = 0) -> list[str]:
    """The lines llama.cpp logged since position `since` of its captured log (complete lines only)."""
    return [line for line in "".join(_LOG[since:]).splitlines() if line.strip()]


def log_position() -> int:
    return len(_LOG)


def quantize_gguf(source: str | Path, target: str | Path, file_type: str = "Q4_K_M", threads: int = 0) -> Path:
    """Quantize a GGUF file (f32 or f16) to `file_type` ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", ...) with
    llama.cpp's own quantizer, as its `llama-quantize` tool does. Tensors whose rows a K-quant cannot pack get
    llama.cpp's fallback type; `llama_log` shows its warnings and `gguf_tensor_types` the types it chose."""
    import llama_cpp

    _capture_llama_log()
    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{file_type.upper()}", None)
    if ftype is None:
        raise ValueError(f"llama.cpp has no file type {file_type!r} (e.g. {', '.join(QUANTIZER_TYPES)})")
    target = Path(target)
    partial = target.with_name(f".{target.name}.partial")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    try:
        status = llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(), ctypes.byref(params))
        if status != 0:
            raise RuntimeError(f"llama.cpp could not quantize {source} to {file_type} (status {status}):\n"
                               + "\n".join(llama_log()[-5:]))
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def load_llama(path: str | Path, n_ctx: int = 512, threads: int | None = None, seed: int = 0):
    """The GGUF file opened in llama.cpp (`llama_cpp.Llama`), quiet: `verbose=False`, and the library's log kept
    (`llama_log`) instead of printed."""
    from llama_cpp import Llama

    _capture_llama_log()
    return Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, seed=seed, verbose=False)


def llama_greedy(llm, prompt_ids: list[int], n_tokens: int) -> list[int]:
    """The next `n_tokens` token ids llama.cpp picks greedily (temperature 0: always the most likely token) after
    the prompt; an end-of-text token does not stop it, so the two runtimes are compared over the same length."""
    out = []
    for token in llm.generate(prompt_ids, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0, reset=True):
        out.append(int(token))
        if len(out) == n_tokens:
            break
    return out


def transformers_greedy(model, prompt_ids: list[int], n_tokens: int) -> list[int]:
    """The same for a transformers model: greedy decoding, `n_tokens` new ids whatever they are."""
    import torch

    with torch.no_grad():
        ids = torch.tensor([prompt_ids], device=model.device)
        output = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n_tokens,
                                min_new_tokens=n_tokens, pad_token_id=model.config.pad_token_id)
    return output[0, len(prompt_ids):].tolist()


def first_difference(a: list[int], b: list[int]) -> int | None:
    """The first position where two token sequences differ (None if they agree over the shorter one)."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)


def converter_command(model_dir: str | Path, outfile: str | Path, outtype: str = "f16",
                      script: str = "llama.cpp/convert_hf_to_gguf.py") -> list[str]:
    """llama.cpp's converter for any supported architecture, as a command: `python convert_hf_to_gguf.py MODEL_DIR
    --outfile OUT --outtype f16` (outtype: f32, f16, bf16, q8_0, tq1_0, tq2_0 or auto). The script ships in a
    clone of llama.cpp and in the llama-cpp-python source archive (vendor/llama.cpp/convert_hf_to_gguf.py)."""
    return ["python", str(script), str(model_dir), "--outfile", str(outfile), "--outtype", outtype]


def quantize_command(source: str | Path, target: str | Path, file_type: str = "Q4_K_M") -> list[str]:
    """llama.cpp's command-line quantizer (built with llama.cpp: `llama-quantize IN.gguf OUT.gguf Q4_K_M`)."""
    return ["llama-quantize", str(source), str(target), file_type]


def ollama_template(chat_template: str) -> str:
    """Ollama's Go template for a ChatML chat template (the tiny model's and many others': `<|im_start|>role`,
    the content, `<|im_end|>`). Ollama renders Go templates, not Jinja, so the recipe is rewritten, not copied."""
    if "<|im_start|>" not in chat_template or "<|im_end|>" not in chat_template:
        raise ExportError("only ChatML templates (<|im_start|> ... <|im_end|>) are translated here; write the "
                          "TEMPLATE of other models by hand (Ollama's documentation lists them)")
    return ("{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
            "<|im_start|>assistant\n")


def modelfile(gguf_file: str | Path, chat_template: str, stop: list[str], system: str | None = None,
              parameters: dict[str, float] | None = None) -> str:
    """An Ollama Modelfile: FROM the GGUF file (a path relative to the Modelfile), the chat TEMPLATE, the stop
    tokens, an optional SYSTEM prompt and sampling PARAMETERs. `ollama create NAME -f Modelfile` imports it."""
    lines = [f"FROM ./{Path(gguf_file).name}", f'TEMPLATE """{ollama_template(chat_template)}"""']
    lines += [f'PARAMETER stop "{s}"' for s in stop]
    lines += [f"PARAMETER {k} {v}" for k, v in (parameters or {}).items()]
    if system:
        lines.append(f'SYSTEM """{system}"""')
    return "\n".join(lines) + "\n"


def model_card(name: str, base: str, base_licence: str | None, adapter: str, data: str) -> str:
    """A model card (README.md) for a merged model: what it was made from, and the licence it inherits from its base
    model (a merge, a fine-tune or a GGUF copy of a model stays bound by the base model's licence)."""
    return (f"---\nbase_model: {base}\n---\n# {name}\n\nThe base model {base} with the LoRA adapter {adapter} "
            f"merged into its weights (merge_and_unload), tuned on {data}.\n\n## Licence\n\n"
            f"{base_licence or 'No licence of the base model was found on this machine: find it before sharing.'} "
            "(inherited from the base model)\n")


def write_modelfile(folder: str | Path, text: str) -> Path:
    """Write the Modelfile into the folder that holds the GGUF file (atomically)."""
    return write_text(Path(folder) / "Modelfile", text)
