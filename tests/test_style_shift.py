"""The point of the bundled model: a short LoRA on Hemingway moves its style measurably.

A correctness test, not a timing test: after 40 LoRA steps (8 x 128 tokens each, well under a minute on a CPU) on
the training chapters, the perplexity of held-out Hemingway chapters (whole chapters it never trained on) must drop
by at least 15 %.
"""
import torch
from peft import LoraConfig, get_peft_model

from course_utils.corpus import hemingway_chapters, split_by_chapter
from course_utils.evaluation import mean_loss, token_ids
from course_utils.models import load_model
from course_utils.profiles import PROFILES

SEVEN_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def test_short_lora_on_hemingway_lowers_held_out_perplexity_by_15_percent():
    torch.manual_seed(0)
    model, tokenizer = load_model(PROFILES["tiny"], "lora", verbose=False)
    train, val = split_by_chapter(hemingway_chapters())
    assert not {(c.book, c.number) for c in train} & {(c.book, c.number) for c in val}
    train_ids = token_ids(tokenizer, [c.text for c in train])
    val_ids = token_ids(tokenizer, [c.text for c in val])
    before = mean_loss(model, val_ids, block=128, max_blocks=96)

    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=SEVEN_MODULES,
                                             task_type="CAUSAL_LM"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(40):
        starts = torch.randint(0, len(train_ids) - 128, (8,), generator=generator)
        batch = torch.stack([train_ids[s : s + 128] for s in starts])
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = mean_loss(model, val_ids, block=128, max_blocks=96)

    drop = 1 - torch.exp(torch.tensor(after - before)).item()
    assert drop >= 0.15, f"held-out perplexity fell by only {drop:.1%} ({before:.3f} -> {after:.3f} loss)"
