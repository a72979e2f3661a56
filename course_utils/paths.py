"""Where the course keeps its files (all paths are absolute, so notebooks can run from any folder)."""
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"
TINY_MODEL_DIR = DATA_DIR / "tiny_model"
GUTENBERG_DIR = DATA_DIR / "pretrain_gutenberg"
HEMINGWAY_DIR = DATA_DIR / "hemingway"
MODEL_CONFIGS_DIR = DATA_DIR / "model_configs"
PERSONA_DIR = DATA_DIR / "persona"

# Where notebooks write what they make (datasets, adapters, reports): $COURSE_OUTPUT_DIR when set (the tests point it
# at a temporary folder, so that a test run never leaves files in the repository), else outputs/ in the repository.
OUTPUT_ENV_VAR = "COURSE_OUTPUT_DIR"


DRIVE_MOUNT = Path("/content/drive")  # where Colab mounts Google Drive
DRIVE_COURSE_FOLDER = DRIVE_MOUNT / "MyDrive" / "fine-tuning-course"


def choose_output_root(env_value: str | None, on_colab: bool, drive_mounted: bool) -> Path:
    """The outputs' root (a pure function): $COURSE_OUTPUT_DIR when set, else Google Drive on Colab when it is
    mounted (so a run outlives the Colab session), else outputs/ in the repository."""
    if env_value:
        return Path(env_value).expanduser().resolve()
    if on_colab and drive_mounted:
        return DRIVE_COURSE_FOLDER / "outputs"
    return REPO_ROOT / "outputs"


def output_root() -> Path:
    """The folder all notebook outputs go under (see choose_output_root)."""
    from .hardware import on_colab

    return choose_output_root(os.environ.get(OUTPUT_ENV_VAR), on_colab(), (DRIVE_MOUNT / "MyDrive").is_dir())


def output_folder(name: str, requested: str | os.PathLike | None = None) -> Path:
    """A notebook's output folder, created: `requested` if given (absolute, or relative to the repository), else
    output_root() / name."""
    if requested:
        folder = Path(requested).expanduser()
        folder = folder if folder.is_absolute() else REPO_ROOT / folder
    else:
        folder = output_root() / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder
