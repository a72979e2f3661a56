"""The run manifest: everything needed to know how an adapter was made, saved beside it as manifest.json.

Library versions, the profile, the base model and its revision, the hash of the training data, the seed, the
hyperparameters, the time taken and the peak memory. A manifest never holds a secret: write_manifest refuses any
field that looks like an access token.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from .atomic import write_json
from .paths import REPO_ROOT

# hardware and memory (torch, transformers: seconds to import) are imported where a manifest is built, so that
# file_sha256 stays cheap to import (the audit and the exercises' graders use it)


LIBRARIES = ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "bitsandbytes", "huggingface_hub",
             "unsloth")
_SECRET_KEY = re.compile(r"(^|_)(token|hub_token|hf_token|password|secret|api_key)$", re.IGNORECASE)
_SECRET_VALUE = re.compile(r"\bhf_[A-Za-z0-9]{20,}")


def library_versions(packages: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    """{package: version} for the libraries the run used ("not installed" where absent), plus Python's."""
    versions = {"python": platform.python_version()}
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def git_commit(folder: str | Path = REPO_ROOT) -> str:
    """The course's commit (with "+changes" when a tracked file outside benchmarks/results differs from it), or
    "unknown" outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)",
                                ":(top,exclude)benchmarks/results"],  # a benchmark's own results do not count
                               cwd=folder, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+changes" if dirty else "")


def run_environment() -> dict:
    """Where a measurement ran: the CPU (model and the flags that change results), the library versions and the
    course's commit. Every benchmark's results file starts with it."""
    from .hardware import cpu_description

    return {"machine": cpu_description(), "libraries": library_versions(), "commit": git_commit()}


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file (the manifest's data hash: same hash, same training data)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_revision(model, source: str) -> str:
    """The base model's revision: the Hub commit it was downloaded at, or for a local folder the SHA-256 of its
    weights ("sha256:..."), so that the manifest names exactly the weights the adapter was trained on."""
    commit = getattr(model.config, "_commit_hash", None)
    if commit:
        return commit
    folder = Path(source)
    weights = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not weights:
        return "unknown"
    digest = hashlib.sha256()
    for path in weights:
        digest.update(path.read_bytes())
    return "sha256:" + digest.hexdigest()


def build_manifest(*, profile, base_model: str, revision: str, data_file: str | Path, data_sha256: str, seed: int,
                   hyperparameters: dict, seconds: float, results: dict | None = None, **extra) -> dict:
    """The manifest as a dict (JSON-ready)."""
    from .hardware import cpu_description
    from .memory import process_peak_memory_mb

    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "libraries": library_versions(),
        "profile": {"name": profile.name, "device": profile.device, "dtype": profile.dtype},
        "base_model": {"name": base_model, "revision": revision},
        "data": {"file": Path(data_file).name, "sha256": data_sha256},
        "seed": seed,
        "hyperparameters": hyperparameters,
        "seconds": round(seconds, 1),
        "peak_memory": process_peak_memory_mb(),
        "machine": cpu_description(),
        "results": results or {},
        **extra,
    }


def find_secrets(value, path: str = "") -> list[str]:
    """The places in a (nested) manifest where a token or password would be stored."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if _SECRET_KEY.search(str(key)) and item not in (None, "", False):
                found.append(where)
            found += find_secrets(item, where)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found += find_secrets(item, f"{path}[{i}]")
    elif isinstance(value, str) and _SECRET_VALUE.search(value):
        found.append(path or "(value)")
    return found


def write_manifest(manifest: dict, path: str | Path) -> Path:
    """Write the manifest as JSON, atomically. Refuses (ValueError) to write anything that looks like a token."""
    secrets = find_secrets(manifest)
    if secrets:
        raise ValueError(f"the manifest would contain a secret at {', '.join(secrets)}: remove it before saving "
                         "(tokens belong in the environment, never in an artifact)")
    return write_json(path, manifest)


def read_manifest(path: str | Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_results(path: str | Path, results: dict, environment: dict | None = None) -> Path:
    """Write a benchmark's results as JSON, atomically, with where they were measured first (run_environment, or
    the `environment` the benchmark read when it started): a figure that changes between machines can then be
    traced to the CPU, the libraries or the commit."""
    return write_json(path, {"environment": environment or run_environment(), **results})
