"""Training that survives a disconnect: the checkpoint folder choice, the completeness rule, atomic writes of files
and adapters, and a real kill-and-resume of a QLoRA run in a subprocess.

Run directly (`python tests/test_checkpoints.py RUN_DIR`), this file is the training script the kill test starts.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers.trainer_utils import get_last_checkpoint

from course_utils import checkpoints
from course_utils.paths import output_root
from course_utils.checkpoints import (MARKER, choose_checkpoint_root, find_adapter, is_complete,
                                      last_complete_checkpoint, mark_complete, restore_finished_run, resume_point,
                                      run_finished, save_adapter)

MAX_STEPS = 8
SAVE_STEPS = 2


EVENT = "EVENT "  # marks the training script's lines that the test reads


class Killed(BaseException):
    """Stands for the process dying in the middle of a write."""


# ------------------------------------------------------------------------------------------------ folder choice

def test_checkpoints_go_to_the_folder_asked_for_else_drive_on_colab_else_local():
    assert choose_checkpoint_root("/data/runs", on_colab=True, drive_mounted=True)[0] == Path("/data/runs")
    drive, why = choose_checkpoint_root(None, on_colab=True, drive_mounted=True)
    assert str(drive).startswith("/content/drive/MyDrive/") and "Drive" in why
    local, warning = choose_checkpoint_root(None, on_colab=True, drive_mounted=False)
    assert local == output_root() / "checkpoints" and "drive.mount" in warning
    assert choose_checkpoint_root(None, on_colab=False, drive_mounted=False)[0] == output_root() / "checkpoints"


def test_environment_variable_chooses_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(checkpoints.ENV_VAR, str(tmp_path / "runs"))
    assert checkpoints.checkpoint_root(verbose=False) == tmp_path / "runs"
    assert (tmp_path / "runs").is_dir()
    assert checkpoints.checkpoint_root(str(tmp_path / "mine"), verbose=False) == tmp_path / "mine"


def _fake_checkpoint(run_dir: Path, step: int, complete: bool) -> Path:
    folder = run_dir / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"w" * 100)
    (folder / "optimizer.pt").write_bytes(b"o" * 200)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if complete:
        mark_complete(folder)
    return folder


def test_completeness_needs_the_marker_and_the_sizes_it_lists(tmp_path):
    folder = _fake_checkpoint(tmp_path, 4, complete=True)
    assert is_complete(folder)
    (folder / "optimizer.pt").write_bytes(b"o" * 50)  # a file cut short after the marker was written
    assert not is_complete(folder)
    assert not is_complete(_fake_checkpoint(tmp_path, 6, complete=False))
    (folder / MARKER).write_text('{"files": {"adapter_model.safe')  # a marker cut short
    assert not is_complete(folder)


def test_resume_skips_a_half_written_checkpoint_that_trainer_would_pick(tmp_path):
    _fake_checkpoint(tmp_path, 2, complete=True)
    _fake_checkpoint(tmp_path, 4, complete=True)
    _fake_checkpoint(tmp_path, 6, complete=False)  # the run was killed while writing it
    assert get_last_checkpoint(str(tmp_path)).endswith("checkpoint-6")  # transformers goes by the name alone
    assert resume_point(tmp_path, verbose=False) == str(tmp_path / "checkpoint-4")
    assert get_last_checkpoint(str(tmp_path)).endswith("checkpoint-4")  # set aside, so Trainer cannot see it either
    assert [p.name.split("-2")[0] for p in (tmp_path / "incomplete").iterdir()] == ["checkpoint-6"]  # kept, not lost


def test_a_transient_read_error_of_a_marker_is_retried_and_moves_nothing(tmp_path, monkeypatch):
    """Google Drive reads fail now and then: a good checkpoint must survive a failed read of its marker."""
    _fake_checkpoint(tmp_path, 2, complete=True)
    good = _fake_checkpoint(tmp_path, 4, complete=True)
    real_read, failures = Path.read_text, []

    def flaky(path, *args, **kwargs):
        if path.name == MARKER and path.parent == good and len(failures) < 2:
            failures.append(path)
            raise OSError(5, "Input/output error")
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", flaky)
    monkeypatch.setattr(checkpoints.time, "sleep", lambda _: None)
    assert resume_point(tmp_path, verbose=False) == str(good)
    assert len(failures) == 2 and not (tmp_path / "incomplete").exists()


def test_a_marker_that_cannot_be_read_at_all_is_an_error_not_a_reason_to_move_the_checkpoint(tmp_path, monkeypatch):
    good = _fake_checkpoint(tmp_path, 4, complete=True)
    real_read = Path.read_text

    def broken(path, *args, **kwargs):
        if path.name == MARKER:
            raise OSError(5, "Input/output error")
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", broken)
    monkeypatch.setattr(checkpoints.time, "sleep", lambda _: None)
    with pytest.raises(OSError, match="nothing was moved"):
        resume_point(tmp_path, verbose=False)
    assert good.is_dir() and not (tmp_path / "incomplete").exists()


def test_a_marker_that_is_demonstrably_wrong_is_set_aside(tmp_path):
    wrong = _fake_checkpoint(tmp_path, 4, complete=True)
    (wrong / MARKER).write_text("not json")
    assert not is_complete(wrong)
    assert resume_point(tmp_path, verbose=False) is None and (tmp_path / "incomplete").is_dir()


def test_nothing_to_resume_from_means_start_at_step_zero(tmp_path):
    assert resume_point(tmp_path / "new-run", verbose=False) is None
    _fake_checkpoint(tmp_path, 2, complete=False)
    assert resume_point(tmp_path, verbose=False) is None and last_complete_checkpoint(tmp_path) is None


def test_a_run_that_reached_max_steps_is_finished():
    assert run_finished("runs/x/checkpoint-30", max_steps=30)
    assert not run_finished("runs/x/checkpoint-24", max_steps=30) and not run_finished(None, max_steps=30)


def test_a_run_set_by_epochs_is_finished_when_its_recorded_steps_are_done(tmp_path):
    for step, recorded in [(120, 120), (90, 120)]:
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "max_steps": recorded}))
    assert run_finished(tmp_path / "checkpoint-120") and run_finished(tmp_path / "checkpoint-120", max_steps=-1)
    assert not run_finished(tmp_path / "checkpoint-90")
    assert not run_finished(tmp_path / "no-such-checkpoint-5")  # nothing recorded: not known to be finished


# ------------------------------------------------------------------------------------------------ adapters

@pytest.fixture(scope="module")
def small_peft_model():
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2, vocab_size=64)
    return get_peft_model(LlamaForCausalLM(config), LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))


def _lora_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")


def test_adapter_save_replaces_the_old_one_and_cleans_up(tmp_path, small_peft_model):
    save_adapter(small_peft_model, tmp_path / "adapter")
    with torch.no_grad():
        for name, p in small_peft_model.named_parameters():
            if "lora_" in name:
                p.add_(1.0)
    save_adapter(small_peft_model, tmp_path / "adapter")
    assert find_adapter(tmp_path / "adapter") == tmp_path / "adapter"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no temporary or previous folder left
    saved = _lora_weights(tmp_path / "adapter")
    current = {n: p for n, p in small_peft_model.named_parameters() if "lora_" in n}
    assert len(saved) == len(current) == 2
    assert all(any(torch.equal(w, p) for p in current.values()) for w in saved.values())


def test_a_kill_while_saving_the_adapter_keeps_the_previous_one(tmp_path, small_peft_model, monkeypatch):
    save_adapter(small_peft_model, tmp_path / "adapter")
    before = _lora_weights(tmp_path / "adapter")

    def killed_halfway(folder, **kwargs):  # writes part of the files, then the process "dies"
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "adapter_model.safetensors").write_bytes(b"half")
        raise Killed

    monkeypatch.setattr(small_peft_model, "save_pretrained", killed_halfway)
    with pytest.raises(Killed):
        save_adapter(small_peft_model, tmp_path / "adapter")
    found = find_adapter(tmp_path / "adapter")
    assert found == tmp_path / "adapter"
    assert all(torch.equal(before[k], v) for k, v in _lora_weights(found).items())


def test_a_kill_between_the_two_renames_leaves_the_previous_adapter_findable(tmp_path, small_peft_model, monkeypatch):
    save_adapter(small_peft_model, tmp_path / "adapter")
    real_rename, calls = Path.rename, []

    def rename(self, target):
        calls.append(self)
        if len(calls) == 2:  # the old adapter moved to .previous; the process dies before the new one moves in
            raise Killed
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(Killed):
        save_adapter(small_peft_model, tmp_path / "adapter")
    monkeypatch.undo()
    assert not (tmp_path / "adapter").exists()
    assert find_adapter(tmp_path / "adapter") == tmp_path / "adapter.previous"
    with pytest.raises(FileNotFoundError, match="no complete adapter"):
        find_adapter(tmp_path / "other")


# ------------------------------------------------------------------------------------------------ kill and resume

def _events(output: str) -> list[dict]:
    return [json.loads(line.removeprefix(EVENT)) for line in output.splitlines() if line.startswith(EVENT)]


def test_training_killed_after_a_checkpoint_resumes_where_it_stopped(tmp_path):
    """Start a QLoRA run in a subprocess, SIGKILL it once a complete checkpoint exists, run it again: it must
    continue from that checkpoint's step with the optimizer state it saved, and finish with an adapter that loads."""
    run_dir = tmp_path / "run"
    command = [sys.executable, __file__, str(run_dir)]
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    try:
        while last_complete_checkpoint(run_dir) is None:
            assert first.poll() is None, f"first run ended early:\n{(tmp_path / 'first.log').read_text()[-3000:]}"
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)  # what a Colab disconnect does: no clean-up, no goodbye
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
        log.close()
    killed_at = checkpoints.step_of(last_complete_checkpoint(run_dir))
    assert 0 < killed_at < MAX_STEPS
    assert not (run_dir / "adapter").exists()

    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    events = _events(second.stdout)
    begin = next(e for e in events if e["event"] == "begin")
    resumed_at = begin["global_step"]
    assert resumed_at == killed_at
    assert begin["resumed_from"] == f"checkpoint-{resumed_at}"

    # the step count continues: the second run logs only steps after the checkpoint, up to the end
    logged = [e["step"] for e in events if e["event"] == "log"]
    assert logged and min(logged) == resumed_at + 1 and max(logged) == MAX_STEPS
    assert next(e for e in events if e["event"] == "done")["global_step"] == MAX_STEPS

    # the optimizer state is the one the checkpoint saved (Adam's moments and step counts, tensor for tensor)
    restored = torch.load(run_dir / f"optimizer-at-begin-{resumed_at}.pt", weights_only=True)["state"]
    saved = torch.load(run_dir / "resumed-from-optimizer.pt", weights_only=True)["state"]
    assert restored.keys() == saved.keys() and restored
    for index, state in saved.items():
        assert float(state["step"]) == resumed_at
        assert torch.equal(restored[index]["exp_avg"], state["exp_avg"])
        assert torch.equal(restored[index]["exp_avg_sq"], state["exp_avg_sq"])
        assert state["exp_avg_sq"].abs().sum() > 0

    # the final adapter exists, is complete, and loads onto the base model
    from peft import PeftModel

    from course_utils.models import load_model
    from course_utils.profiles import PROFILES

    adapter = find_adapter(run_dir / "adapter")
    base, _ = load_model(PROFILES["tiny"], "lora", verbose=False)
    model = PeftModel.from_pretrained(base, adapter)
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # trained: LoRA's B starts at zero

    # running the cell again once the run has finished restores it instead of training a step more
    final = last_complete_checkpoint(run_dir)
    assert run_finished(final, MAX_STEPS)
    fresh = _train(tmp_path / "rerun", train=False)
    restore_finished_run(fresh, final)
    assert fresh.state.global_step == MAX_STEPS
    assert [h["step"] for h in fresh.state.log_history if "loss" in h] == list(range(1, MAX_STEPS + 1))
    restored = {n: p for n, p in fresh.model.named_parameters() if "lora_" in n}
    assert all(any(torch.equal(w, p) for p in restored.values()) for w in _lora_weights(final).values())


# ------------------------------------------------------------------------------------------------ the training script

def _train(run_dir: Path, max_steps: int = MAX_STEPS, step_delay: float = 0.2, train: bool = True):
    """A short QLoRA run on the tiny model, as notebook 03 does it, with probes the kill test reads.
    Returns the trainer (trained, and its adapter saved, unless train=False)."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from course_utils.checkpoints import MarkCompleteCheckpoints
    from course_utils.corpus import hemingway_chapters
    from course_utils.profiles import PROFILES
    from course_utils.qlora import adapters_to_fp32, load_qlora_model, optimizer_for, precision_flags

    profile = PROFILES["tiny"]
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    model, tokenizer, backend = load_qlora_model(profile, lora, verbose=False)
    paragraphs = [p for c in hemingway_chapters()[:4] for p in c.text.split("\n\n") if len(p) > 200][:64]
    resume = resume_point(run_dir, verbose=False)

    class Probe(TrainerCallback):
        def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
            torch.save(optimizer.state_dict(), run_dir / f"optimizer-at-begin-{state.global_step}.pt")
            if resume:  # a copy: Trainer may delete the checkpoint (save_total_limit) before the test looks
                torch.save(torch.load(Path(resume) / "optimizer.pt", weights_only=True),
                           run_dir / "resumed-from-optimizer.pt")
            begin = {"event": "begin", "global_step": state.global_step, "resumed_from": resume and Path(resume).name}
            print(EVENT + json.dumps(begin), flush=True)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                print(EVENT + json.dumps({"event": "log", "step": state.global_step, "loss": logs["loss"]}), flush=True)

        def on_step_end(self, args, state, control, **kwargs):
            time.sleep(step_delay)  # leaves the kill test time to kill the run between checkpoints

    config = SFTConfig(output_dir=str(run_dir), max_steps=max_steps, per_device_train_batch_size=4,
                       learning_rate=1e-3, save_strategy="steps", save_steps=SAVE_STEPS, save_total_limit=2,
                       logging_steps=1, max_length=64, optim=optimizer_for(profile), report_to=[], seed=0,
                       disable_tqdm=True, dataset_text_field="text", **precision_flags(profile))
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_dict({"text": paragraphs}),
                         processing_class=tokenizer, callbacks=[MarkCompleteCheckpoints(), Probe()])
    adapters_to_fp32(trainer.model)
    if train:
        trainer.train(resume_from_checkpoint=resume)
        save_adapter(trainer.model, run_dir / "adapter", tokenizer)
        print(EVENT + json.dumps({"event": "done", "global_step": trainer.state.global_step}), flush=True)
    return trainer


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _train(Path(sys.argv[1]))


def test_outputs_go_to_drive_on_colab_when_it_is_mounted(tmp_path):
    """Notebook 07's OUTPUT_DIR = None on Colab: Google Drive when mounted (a run outlives the session)."""
    from course_utils.paths import DRIVE_COURSE_FOLDER, REPO_ROOT, choose_output_root

    assert choose_output_root(None, on_colab=True, drive_mounted=True) == DRIVE_COURSE_FOLDER / "outputs"
    assert choose_output_root(None, on_colab=True, drive_mounted=False) == REPO_ROOT / "outputs"
    assert choose_output_root(None, on_colab=False, drive_mounted=True) == REPO_ROOT / "outputs"
    assert choose_output_root(str(tmp_path), on_colab=True, drive_mounted=True) == tmp_path.resolve()
