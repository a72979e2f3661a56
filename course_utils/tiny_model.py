"""The course's bundled tiny model: how it is built, evaluated and described.

A small Llama-architecture model with its own byte-level BPE tokenizer, pre-trained from scratch on the
public-domain Gutenberg books in data/pretrain_gutenberg/ (no Hemingway among them). CI never rebuilds
it; it only loads the committed checkpoint. Rebuild it with

    python -m course_utils.tiny_model build     # tokenizer + pre-training + model card (about 25 min on 2 cores)
    python -m course_utils.tiny_model evaluate  # recompute the model card's figures from the checkpoint
"""
from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from .corpus import HELD_OUT_BOOKS, gutenberg_books
from .evaluation import mean_loss, token_ids
from .paths import TINY_MODEL_DIR

SEED = 0
VOCAB_SIZE = 4096
CONTEXT = 256
BATCH = 16
STEPS = 1400
PEAK_LR = 3e-3
WARMUP = 50
SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"]

# ChatML-style template. The {% generation %} block marks the assistant's words, so trl's
# assistant_only_loss (and return_assistant_tokens_mask) can train on them alone.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{%- else %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
)

SAMPLE_PROMPTS = ["The old man", "It was late in the evening when", "\u201cWhere are you going?\u201d she asked."]


def train_tokenizer(texts: list[str], vocab_size: int = VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (any UTF-8 text encodes, nothing is ever unknown) with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|endoftext|>",
        pad_token="<|pad|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        chat_template=CHAT_TEMPLATE,
        model_max_length=CONTEXT * 2,
    )


def model_config(tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    """The architecture: 4 Llama layers, hidden size 192, grouped-query attention (4 query, 2 key/value heads)."""
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=192,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=CONTEXT * 2,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")],
        pad_token_id=tokenizer.pad_token_id,
    )


def token_stream(tokenizer: PreTrainedTokenizerFast, books: dict[str, str]) -> torch.Tensor:
    """All books as one long row of token ids, each book followed by the end-of-text token."""
    return token_ids(tokenizer, list(books.values()))


def _lr_at(step: int, steps: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < WARMUP:
        return PEAK_LR * (step + 1) / WARMUP
    progress = (step - WARMUP) / max(1, steps - WARMUP)
    return PEAK_LR * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def build(out_dir: Path = TINY_MODEL_DIR, steps: int = STEPS, seed: int = SEED) -> None:
    """Train the tokenizer, pre-train the model and write checkpoint, log and model card to out_dir."""
    random.seed(seed)
    torch.manual_seed(seed)
    train_books = gutenberg_books("train")
    tokenizer = train_tokenizer(list(train_books.values()))
    train_ids = token_stream(tokenizer, train_books)
    held_ids = token_stream(tokenizer, gutenberg_books("held_out"))
    model = LlamaForCausalLM(model_config(tokenizer))
    optimizer = torch.optim.AdamW(model.parameters(), lr=PEAK_LR, betas=(0.9, 0.95), weight_decay=0.1)
    generator = torch.Generator().manual_seed(seed)
    log = []
    start = time.time()
    bar = tqdm(range(steps), desc="pre-training")
    for step in bar:
        model.train()
        offsets = torch.randint(0, len(train_ids) - CONTEXT, (BATCH,), generator=generator)
        batch = torch.stack([train_ids[o : o + CONTEXT] for o in offsets])
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, steps)
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % 100 == 99 or step == steps - 1:
            entry = {"step": step + 1, "train_loss": round(loss.item(), 4),
                     "held_out_loss": round(mean_loss(model, held_ids, CONTEXT, max_blocks=48), 4),
                     "seconds": round(time.time() - start, 1)}
            log.append(entry)
            tqdm.write(json.dumps(entry))
    out_dir.mkdir(parents=True, exist_ok=True)
    model.generation_config.eos_token_id = model.config.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    training = {
        "seed": seed, "steps": steps, "batch": BATCH, "context": CONTEXT, "peak_lr": PEAK_LR,
        "tokens_seen": steps * BATCH * CONTEXT, "train_tokens_available": len(train_ids),
        "train_books": len(train_books), "held_out_books": list(HELD_OUT_BOOKS),
        "wall_seconds": round(time.time() - start, 1), "torch_threads": torch.get_num_threads(), "log": log,
    }
    (out_dir / "training_log.json").write_text(json.dumps(training, indent=1) + "\n")
    write_model_card(out_dir)


def evaluate(model_dir: Path = TINY_MODEL_DIR) -> dict:
    """Recompute the model card's figures: parameters, held-out perplexity, samples (seeded)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    held_ids = token_stream(tokenizer, gutenberg_books("held_out"))
    loss = mean_loss(model, held_ids, CONTEXT)
    samples = []
    for i, prompt in enumerate(SAMPLE_PROMPTS):
        torch.manual_seed(SEED + i)
        inputs = tokenizer(prompt, return_tensors="pt")
        out = model.generate(**inputs, max_new_tokens=60, do_sample=True, temperature=0.8, top_p=0.95)
        samples.append(tokenizer.decode(out[0], skip_special_tokens=True))
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "held_out_tokens": len(held_ids) // CONTEXT * CONTEXT,
        "held_out_loss": round(loss, 4),
        "held_out_perplexity": round(math.exp(loss), 2),
        "samples": samples,
    }


def write_model_card(model_dir: Path = TINY_MODEL_DIR) -> dict:
    """Evaluate the checkpoint and write README.md (the model card) and eval.json beside it."""
    figures = evaluate(model_dir)
    training = json.loads((model_dir / "training_log.json").read_text())
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "eval.json").write_text(json.dumps(figures, indent=1, ensure_ascii=False) + "\n")
    samples = "\n\n".join(f"> {s}".replace("\n", "\n> ") for s in figures["samples"])
    size_mb = (model_dir / "model.safetensors").stat().st_size / 1e6
    card = f"""# course-tiny-llama

The bundled model of this course: a {figures['parameters']:,}-parameter Llama-architecture causal language model,
pre-trained from scratch by this repository on public-domain Gutenberg books. It exists so that every notebook
runs offline on a CPU in seconds. It writes English-looking prose, not sense; it is a teaching instrument.

| | |
|---|---|
| architecture | Llama: {config['num_hidden_layers']} layers, hidden {config['hidden_size']}, MLP {config['intermediate_size']}, {config['num_attention_heads']} query / {config['num_key_value_heads']} key-value heads, tied embeddings |
| parameters | {figures['parameters']:,} |
| checkpoint | model.safetensors, {size_mb:.1f} MB (float32) |
| tokenizer | byte-level BPE, {config['vocab_size']:,} tokens, trained on the same books; ChatML-style chat template with a `{{% generation %}}` block |
| context | {training['context']} tokens in training ({config['max_position_embeddings']} positions) |
| training data | {training['train_books']} books of data/pretrain_gutenberg/ ({training['train_tokens_available']:,} tokens); no Hemingway |
| tokens seen | {training['tokens_seen']:,} ({training['steps']} steps of {training['batch']} x {training['context']} tokens) |
| training time | {training['wall_seconds'] / 60:.1f} min on {training['torch_threads']} CPU threads |
| held-out perplexity | {figures['held_out_perplexity']} (loss {figures['held_out_loss']}) on {figures['held_out_tokens']:,} tokens of {', '.join(training['held_out_books'])}, books it never saw |
| seed | {training['seed']} |

## Samples (seeded; temperature 0.8, top-p 0.95)

{samples}

## Rebuild and re-evaluate

```bash
python -m course_utils.tiny_model build      # tokenizer, pre-training (seed {training['seed']}), this card
python -m course_utils.tiny_model evaluate   # recomputes the figures above from the checkpoint
```

Training on a CPU is deterministic for a fixed seed and thread count; another thread count or CPU can change the
last digits. The figures above are written by the evaluation, never by hand.

## Licence

The training texts are in the public domain (see data/pretrain_gutenberg/PROVENANCE.md). The weights and tokenizer
are released with the course under the same licence as its code.
"""
    (model_dir / "README.md").write_text(card)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["build", "evaluate"])
    parser.add_argument("--out", type=Path, default=TINY_MODEL_DIR)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    if args.command == "build":
        build(args.out, args.steps, args.seed)
    else:
        print(json.dumps(evaluate(args.out), indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
