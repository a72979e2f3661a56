"""Every number in a notebook's prose is computed by the notebook, or it is a definition, a setting, a quotation, a
name or a date. The notebooks print their results in code cells; a digit typed into a markdown cell that is none
of the kinds in PROSE_NUMBERS_ALLOWED fails this test, naming the notebook, the cell and the line.

What is never checked: code spans, links, quotations of the chapters (in double quotes), section and list
numbers, references to notebooks, sections and chapters, years, and digits glued to letters (fp16, 7B, Llama-3.2,
4-bit, r=16: names of formats, models and settings)."""
import json
import re

import pytest

from course_utils.colab import all_notebooks

# (pattern, why a number there is not a result typed in by hand)
PROSE_NUMBERS_ALLOWED = [
    (r"\b(4|8|16|32) bits?\b|\b4 or 8 bits|\b16 (\w+ )?(possible values|levels|codes|\*\*levels\*\*)|Which 16 levels"
     r"|\[-1, 1\]",
     "the widths and level counts of number formats: definitions"),
    (r"blocks? of (64|256)( weights| scales)?|255 integers from −127 to 127|in steps of 64 tokens",
     "bitsandbytes' block sizes, the int8 range and the estimator's search step: definitions and settings"),
    (r"\b\d+ bytes\b|\b[248] of (fp32 )?(gradients|AdamW state|weights)|state to 2\b|(4|8|12|16) bytes",
     "bytes per parameter of a dtype or an optimizer: definitions the estimator uses"),
    (r"compute capability \d\.\d", "NVIDIA's compute capabilities: hardware facts"),
    (r"\b(24|48|80) GB\b|\*\*48 GB\*\*", "the memory sizes of common GPUs"),
    (r"~\d+( / ~\d+)* GB", "the chapters' memory table, quoted as printed (with its ~) and recomputed in the next cell"),
    (r"\b\d+(, \d+)*(\s+and\s+\d+)?\s+billion", "model sizes: names of models"),
    (r"\b(trl|bitsandbytes|mergekit|transformers|peft|torch) \d+(\.\d+)+", "library versions"),
    (r"Zen 4|Llama 3\.2", "product names"),
    (r"at least 100,000 elements|under 4,096 elements", "constants of bitsandbytes/optim/optimizer.py"),
    (r"trainable params: [\d,]+ \|\| all params: [\d,]+ \|\| trainable%: [\d.]+|exactly 33,554,432",
     "the line notebook 02 quotes from the chapter, then recomputes"),
    (r"70 years|CC BY-SA 3\.0", "copyright terms and licence names"),
    (r"(super-blocks of|multiple of) 256( weights)?", "llama.cpp's K-quant super-block size: a definition of the format"),
    (r"±25 %", "the goal the estimator is held to (notebook 03 prints each run's error against it)"),
    (r"rank \d+|alpha \d+|\(scale 2\)|scale factors|r = \d+( and r = \d+)?|= 1, 4, 16 and 64",
     "LoRA settings of the chapter and of the cells that follow"),
    (r"temperature 1(\.0)?|top-p 0\.95|\d+ and \d+ epochs|\(t = [01]\)|weights \(1, 1\)|at step 0",
     "generation, training and merge settings of the cells that follow"),
    (r"passages of 100 to 500 words|first 50 words|~?200 words|the 50 words|per 100 words|the 50 commonest",
     "the style corpus' and stylometry's settings (style_corpus.py, stylometry.py)"),
    (r"sequence of 512 tokens(, batch 1)?|of 512 tokens", "the setting of the chapters' recomputed tables"),
    (r"at most 0\.8 times the base's", "the benchmark's own criterion (tests/test_benchmark_records.py)"),
    (r"95 % intervals?|mean ± 95 %", "the confidence level the course reports intervals at: a setting"),
    (r"label -100", "PyTorch's ignore index for the loss: a definition"),
    (r"\(rank 256\)|\b16 (trained|virtual)\b|\(16 here, the paper's default\)",
     "settings of the peft configs notebook 08 shows in the next cells"),
    (r"8 to 32 is the usual range|0\.05 to 0\.1 is the usual guard",
     "hyperparameter advice (the ranges practitioners use), not a measured result"),
    (r"first 50 characters", "the chapter's duplicate rule, quoted (04)"),
    (r"\(\d+ points?\)", "the points of an exercise's question: tests/test_exercises.py checks them against the "
                         "points its hidden tests award"),
]


def prose_numbers(markdown: str) -> list[str]:
    """The lines of a markdown cell that still hold a digit once everything never checked and every allowed phrase
    is removed."""
    text = re.sub(r"```.*?```", " ", markdown, flags=re.S)
    text = re.sub(r"`[^`]*`", " ", text)
    text = re.sub(r"\]\([^)]*\)|https?://\S+|<[^>]+>", " ", text)
    text = re.sub(r'"[^"]*"|“[^”]*”', " ", text)  # quotations (they may run over a line break)
    text = re.sub(r"(?m)^#+ [\d.]+\s*·?", "#", text)  # section numbers
    text = re.sub(r"(?m)^\s*\d+\.\s", " ", text)  # numbered lists
    text = re.sub(r"\b(notebooks?|sections?|chapters?|exercises?)\s+\d+(\s*(and|or|,|–|-|to)\s*\d+)*", " ", text,
                  flags=re.I)
    text = re.sub(r"\b(1[89]|20)\d\d\b", " ", text)  # years
    for pattern, _ in PROSE_NUMBERS_ALLOWED:
        text = re.sub(pattern, " ", text)
    text = re.sub(r"[\w.\-+/]*[A-Za-z_][\w.\-+/]*", lambda m: " " if re.search(r"\d", m.group()) else m.group(),
                  text)  # digits glued to letters: fp16, 7B, Llama-3.2-3B, 4-bit
    return [line.strip() for line in text.splitlines() if re.search(r"\d", line)]


@pytest.mark.parametrize("notebook", all_notebooks(), ids=lambda p: p.name)
def test_every_number_in_the_prose_is_computed_or_explained(notebook):
    cells = json.loads(notebook.read_text())["cells"]
    found = [f"cell {cell.get('id', i)}: {line}" for i, cell in enumerate(cells) if cell["cell_type"] == "markdown"
             for line in prose_numbers("".join(cell["source"]))]
    assert not found, (f"{notebook.name}: numbers typed into markdown (print them from a code cell, or add the kind "
                       "of phrase to PROSE_NUMBERS_ALLOWED with its reason):\n  " + "\n  ".join(found))


def test_the_check_finds_a_typed_result_and_passes_a_setting():
    assert prose_numbers("Training took about 20 minutes and cut the loss by 37 %.")
    assert prose_numbers("The merged model is 12 % faster.")
    assert not prose_numbers("## 3. LoRA with rank 16 on fp16 weights of a 7B model (notebook 02, 2021)")
    assert not prose_numbers('The chapter says "watch the loss go from ~2.0 to ~1.4".')
