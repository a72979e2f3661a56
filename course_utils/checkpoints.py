"""Training that survives a disconnect: where checkpoints go, which one to resume from, and writes that are atomic.

Colab's free sessions end without warning. The recipe the course follows:

1. Checkpoints go to a folder the user chooses; on Colab with Google Drive mounted, to Drive, which outlives the
   session (`checkpoint_root`).
2. Trainer writes a checkpoint folder file by file, and `get_last_checkpoint` picks the highest step number, even
   a folder that a kill left half-written. So the callback `MarkCompleteCheckpoints` adds a small marker file,
   written atomically, once Trainer has finished a checkpoint; only folders whose marker is there and whose files
   still have the sizes it lists count (`is_complete`).
3. Running the training cell again calls `trainer.train(resume_from_checkpoint=resume_point(run_dir))`: the last
   complete checkpoint restores the adapter, the optimizer, the scheduler, the random state and the step count.
   Incomplete folders are moved aside (never deleted) so that Trainer's own bookkeeping cannot trip over them.
4. The final adapter is written to a temporary folder and renamed into place (`save_adapter`): a kill leaves the
   previous adapter or the new one, never half of one (`find_adapter` knows where to look).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path

from transformers import TrainerCallback

from .atomic import write_json
from .hardware import on_colab
from .paths import DRIVE_COURSE_FOLDER, DRIVE_MOUNT, output_root

MARKER = "checkpoint_complete.json"
ENV_VAR = "COURSE_CHECKPOINT_DIR"
DRIVE_FOLDER = DRIVE_COURSE_FOLDER / "checkpoints"
INCOMPLETE = "incomplete"  # where resume_point moves checkpoint folders that were never finished
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


# ------------------------------------------------------------------------------------------------ where to write

def choose_checkpoint_root(requested: str | None, on_colab: bool, drive_mounted: bool) -> tuple[Path, str]:
    """(folder, reason): the folder asked for, else Google Drive on Colab when mounted, else a local folder."""
    if requested:
        return Path(requested).expanduser(), "the folder you chose"
    if on_colab and drive_mounted:
        return DRIVE_FOLDER, "Google Drive is mounted: checkpoints outlive this Colab session"
    local = output_root() / "checkpoints"
    if on_colab:
        return local, ("WARNING: Google Drive is not mounted, so checkpoints live on this Colab machine and die with "
                       "it. To keep them, run `from google.colab import drive; drive.mount('/content/drive')` and "
                       "then this cell again")
    return local, "a folder on this machine (outputs/ in the course repository)"


def checkpoint_root(requested: str | None = None, verbose: bool = True) -> Path:
    """Where this machine keeps checkpoints: `requested` (a notebook parameter), else $COURSE_CHECKPOINT_DIR,
    else Google Drive when mounted on Colab, else checkpoints/ under paths.output_root() (outputs/ in the repository)."""
    folder, reason = choose_checkpoint_root(requested or os.environ.get(ENV_VAR) or None, on_colab(),
                                            (DRIVE_MOUNT / "MyDrive").is_dir())
    folder.mkdir(parents=True, exist_ok=True)
    if verbose:
        print(f"Checkpoints go to {folder}\n  ({reason})")
    return folder


# ------------------------------------------------------------------------------------------------ completion markers

def _file_sizes(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_size
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MARKER}


def mark_complete(folder: str | Path, **extra) -> None:
    """Write the completion marker: the list of the folder's files with their sizes, and when."""
    folder = Path(folder)
    _sync_folder(folder)
    write_json(folder / MARKER, {"files": _file_sizes(folder), "written": time.strftime("%Y-%m-%d %H:%M:%S"),
                                 **extra})


def _sync_folder(folder: Path) -> None:
    """Ask the operating system to put the folder's files on disk before the marker says they are there."""
    for path in folder.rglob("*"):
        if path.is_file():
            try:
                with open(path, "rb") as f:
                    os.fsync(f.fileno())
            except OSError:  # some network file systems refuse fsync; the size check still guards them
                pass


READ_ATTEMPTS = 4  # a marker read that fails (not "no such file") is tried this often before the error is raised


def _check_marker(folder: Path) -> bool:
    """One look at the marker: False when it or a file it lists is missing, does not parse, or a size differs."""
    try:
        listed = json.loads((folder / MARKER).read_text())["files"]
        return bool(listed) and all((folder / name).stat().st_size == size for name, size in listed.items())
    except (FileNotFoundError, ValueError, KeyError, TypeError, AttributeError):  # missing, or not the marker's format
        return False


def is_complete(folder: str | Path, attempts: int = READ_ATTEMPTS, wait: float = 0.5) -> bool:
    """True when the folder's marker exists, parses, and every file it lists is there with the size it lists.

    False only when that is demonstrably not so. Any other read error (Google Drive and other network file
    systems fail transiently) is retried, waiting a little longer each time, and finally raised: a good checkpoint
    must never be moved aside, or passed over, because one read of its marker failed."""
    folder = Path(folder)
    for attempt in range(1, attempts + 1):
        try:
            return _check_marker(folder)
        except OSError as error:
            if attempt == attempts:
                raise OSError(f"could not read the checkpoint marker in {folder} ({attempts} tries: {error}); "
                              "nothing was moved. Check that the folder (Google Drive?) is reachable, then run "
                              "the cell again") from error
            time.sleep(wait * attempt)
    return False


class MarkCompleteCheckpoints(TrainerCallback):
    """Marks each checkpoint folder complete once Trainer has written all of it (model or adapter, optimizer,
    scheduler, random state, trainer state). Trainer calls on_save only after it finished the checkpoint."""

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                mark_complete(folder, global_step=state.global_step)
        return control


# ------------------------------------------------------------------------------------------------ resuming

def run_id(**settings) -> str:
    """A short fingerprint of what defines a training run (data hash, model, plan, seed...): checkpoints are kept
    under it, so a rerun resumes its own checkpoint and never one of a different run."""
    def plain(value):  # sets (e.g. LoraConfig.target_modules) in sorted order: the same in every process
        return sorted(value) if isinstance(value, (set, frozenset)) else str(value)

    text = json.dumps(settings, sort_keys=True, default=plain)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def step_of(folder: str | Path) -> int | None:
    match = _CHECKPOINT.match(Path(folder).name)
    return int(match.group(1)) if match else None


def checkpoint_folders(run_dir: str | Path) -> list[Path]:
    """The run's checkpoint-N folders, oldest step first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    return sorted((p for p in run_dir.iterdir() if p.is_dir() and step_of(p) is not None), key=step_of)


def last_complete_checkpoint(run_dir: str | Path) -> Path | None:
    """The complete checkpoint with the highest step, or None."""
    complete = [p for p in checkpoint_folders(run_dir) if is_complete(p)]
    return complete[-1] if complete else None


def set_aside_incomplete(run_dir: str | Path) -> list[Path]:
    """Move checkpoint folders without a valid marker into run_dir/incomplete/ (kept, in case you want them)."""
    moved = []
    for folder in checkpoint_folders(run_dir):
        if not is_complete(folder):
            target = Path(run_dir) / INCOMPLETE / f"{folder.name}-{time.strftime('%Y%m%d-%H%M%S')}"
            target.parent.mkdir(exist_ok=True)
            folder.rename(target)
            moved.append(target)
    return moved


def resume_point(run_dir: str | Path, verbose: bool = True) -> str | None:
    """What to pass to trainer.train(resume_from_checkpoint=...): the last complete checkpoint, or None to start.
    Checkpoints that a kill left unfinished are moved aside first, so that Trainer never sees them."""
    moved = set_aside_incomplete(run_dir)
    last = last_complete_checkpoint(run_dir)
    if verbose:
        for folder in moved:
            print(f"Set aside an unfinished checkpoint (a run was stopped while writing it): {folder}")
        if last is None:
            print(f"No complete checkpoint in {run_dir}: training starts at step 0.")
        else:
            print(f"Found {last.name}, the last complete checkpoint of this run (step {step_of(last)}).")
    return None if last is None else str(last)


def run_finished(checkpoint: str | Path | None, max_steps: int = -1) -> bool:
    """True when the checkpoint to resume from already reached the run's last step: `max_steps` when it is set
    (> 0), else the step count Trainer recorded in the checkpoint (a run set by epochs). Trainer, asked to resume
    such a run, trains one step more before it checks (transformers 5.17), so a finished run is restored instead."""
    if checkpoint is None:
        return False
    if max_steps <= 0:
        try:
            max_steps = json.loads((Path(checkpoint) / "trainer_state.json").read_text())["max_steps"]
        except (OSError, ValueError, KeyError):
            return False
    return max_steps > 0 and step_of(checkpoint) >= max_steps


def restore_finished_run(trainer, checkpoint: str | Path) -> None:
    """Load a finished run's last checkpoint into the trainer without training: the adapter's weights into
    trainer.model (a peft model) and the step count and log history into trainer.state."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import TrainerState

    checkpoint = Path(checkpoint)
    weights = checkpoint / "adapter_model.safetensors"
    if not weights.exists():
        raise FileNotFoundError(f"{weights} is missing: restore_finished_run restores LoRA runs (peft adapters)")
    set_peft_model_state_dict(trainer.model, load_file(str(weights)))
    trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))


# ------------------------------------------------------------------------------------------------ adapters

def _previous(folder: Path) -> Path:
    return folder.with_name(folder.name + ".previous")


def save_adapter(model, folder: str | Path, tokenizer=None) -> Path:
    """Save a (LoRA) model's adapter so that a kill at any moment never leaves a half-written one as the latest.

    The adapter is written into a temporary folder beside the target and marked complete; then the old adapter (if
    any) is renamed to NAME.previous and the new one renamed into place, and the old one removed. A kill between the
    two renames leaves NAME.previous complete, and `find_adapter` returns it."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    if tokenizer is not None:
        tokenizer.save_pretrained(partial)
    mark_complete(partial)
    previous = _previous(folder)
    if folder.exists():
        shutil.rmtree(previous, ignore_errors=True)
        folder.rename(previous)
    partial.rename(folder)
    shutil.rmtree(previous, ignore_errors=True)
    return folder


def find_adapter(folder: str | Path) -> Path:
    """The complete adapter saved at `folder` (or, if a save was cut short, the one before it)."""
    folder = Path(folder)
    for candidate in (folder, _previous(folder)):
        if is_complete(candidate):
            return candidate
    raise FileNotFoundError(f"no complete adapter at {folder}: train first (the training cell saves it there), "
                            "or check the folder name")
