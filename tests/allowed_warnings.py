"""The messages a notebook may print to stderr, each with the reason it is expected and harmless. Anything else a
notebook prints there fails its cell's test (conftest.py): a warning is a finding, fixed or explained, never ignored.
(bitsandbytes' "autograd kernel was not registered" once hid QLoRA training with its gradient cut: see notebook 03.)
Each key is a regular expression searched in one stderr line; each notebook explains its messages where they appear.
"""
ALLOWED = {
    r"Failed to load CPU gemm_4bit_forward from kernels-community":
        "bitsandbytes, on a CPU with avx512_bf16, looks for an optional Hub kernel (the `kernels` package) for its "
        "bf16 4-bit inference path. The course switches that path off (models.keep_4bit_trainable: it cannot "
        "train) and never fetches code from the network, so the kernel is neither installed nor needed.",
    r"The tokenizer has new PAD/BOS/EOS tokens that differ from the model config":
        "the Trainer aligns the model's stop token with the tokenizer's end-of-text token when training starts; "
        "notebooks 03 and 07 stop generation at that token for base and tuned models alike.",
    r"Token indices sequence length is longer than the specified maximum sequence length":
        "SFTTrainer tokenizes each whole prompt + completion before truncating it to SFTConfig.max_length; a few "
        "style-lab examples are longer than the tiny model's 512-token context, and none reaches the model untruncated.",
    r"Merge lora module to 4-bit linear may get different generations due to rounding errors":
        "peft's own warning when an adapter is merged into 4-bit weights: notebook 05 measures exactly that rounding "
        "(section 9) and advises merging into the full-precision base instead.",
    r"^warnings\.warn\($":
        "the second line Python prints for every warning (the source line that raised it); the first line, with the "
        "message, is the one this list must explain.",
    r"`torch_dtype` is deprecated! Use `dtype` instead!":
        "mergekit 0.1.5 passes transformers the old argument name while it reads the models' configs (notebook 05, "
        "section 10); the course's own calls use `dtype=`. Nothing to change on our side.",
    r"mtime may not be reliable on this filesystem, falling back to numerical ordering":
        "Trainer deletes old checkpoints (save_total_limit) in order of modification time; when they were written "
        "within a second of each other, as the tiny model's are on a fast machine, it orders them by step number "
        "instead, the order the course's resume logic uses (notebook 03). It depends on timing, so not every run "
        "prints it.",
}
