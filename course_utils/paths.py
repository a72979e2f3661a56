"""Where the course keeps its files (all paths are absolute, so notebooks can run from any folder)."""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"
TINY_MODEL_DIR = DATA_DIR / "tiny_model"
GUTENBERG_DIR = DATA_DIR / "pretrain_gutenberg"
HEMINGWAY_DIR = DATA_DIR / "hemingway"
MODEL_CONFIGS_DIR = DATA_DIR / "model_configs"
