"""The GPU self-check: every notebook of the course executed on a CUDA machine, offline, with the bundled tiny model
on the GPU (profile `tiny-gpu`: the GPU's precision from its compute capability, 4-bit QLoRA, paged 8-bit AdamW,
unsloth where models.backend_for takes it), each notebook timed, with the GPU's peak memory.

    python -m course_utils.gpu_check [--results PATH]        (or: make gpu-check)

It needs no Hub: the Hugging Face libraries are set offline and their cache is an empty temporary folder. The
notebooks' outputs, checkpoints and executed copies go to a temporary folder too (printed at the end). The results
(GPU, compute capability, precision, per-notebook status, seconds and peak memory) go to
benchmarks/results/gpu_check.json, written whole. The check passes when every notebook runs and all of them take
less than BUDGET_SECONDS together; a notebook that fails is recorded and the others still run. Exit status: 0 passed,
1 failed, 2 refused (no CUDA GPU here).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import runpy
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

from .hardware import Hardware, detect_hardware
from .paths import OUTPUT_ENV_VAR, REPO_ROOT
from .profiles import ENV_VAR, GPU_CHECK, Profile, choose_profile

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
RESULTS = REPO_ROOT / "benchmarks" / "results" / "gpu_check.json"
BUDGET_SECONDS = 8 * 60  # all notebooks together
CELL_TIMEOUT_SECONDS = BUDGET_SECONDS  # nbclient's limit for one cell: a cell that alone outlasts the budget is stopped
SAMPLE_SECONDS = 0.2  # how often the GPU's memory is read while a notebook runs
ALLOWED_WARNINGS = REPO_ROOT / "tests" / "allowed_warnings.py"  # the stderr messages the notebooks explain
EXIT_PASSED, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2


def refusal(hardware: Hardware) -> str | None:
    """Why the check cannot run on this machine (None where it can: a CUDA GPU is there)."""
    if hardware.device == "cuda":
        return None
    return (f"The GPU check (make gpu-check) needs a CUDA GPU, and this machine has none ({hardware.describe()}). "
            "Nothing was run or written. On this machine, run the notebooks on the CPU with `make test` "
            "(profile tiny); run the GPU check on a machine with an NVIDIA GPU and a CUDA build of torch.")


def notebooks_to_run(folder: Path = NOTEBOOKS_DIR) -> list[Path]:
    """Every notebook of the course, in the course's order."""
    return sorted(folder.glob("*.ipynb"))


def check_environment(scratch: Path) -> dict[str, str]:
    """The environment the notebooks' kernels inherit: the tiny-gpu profile; the Hugging Face libraries offline,
    with an empty cache of their own (so nothing cached from the Hub can be used either); unsloth's usage
    statistics off; every output, checkpoint and cache under `scratch`, none in the repository or $HOME."""
    folders = {OUTPUT_ENV_VAR: "outputs", "COURSE_CHECKPOINT_DIR": "checkpoints", "HF_HOME": "hf",
               "MPLCONFIGDIR": "matplotlib", "IPYTHONDIR": "ipython", "JUPYTER_CONFIG_DIR": "jupyter-config",
               "JUPYTER_DATA_DIR": "jupyter-data", "JUPYTER_RUNTIME_DIR": "jupyter-runtime"}
    return {ENV_VAR: GPU_CHECK, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "UNSLOTH_DISABLE_STATISTICS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONDONTWRITEBYTECODE": "1",
            **{var: str(scratch / sub) for var, sub in folders.items()}}


# --------------------------------------------------------------------------------------------------
# GPU memory: the notebooks run in kernels, other processes, so torch.cuda's counters here cannot see them.
# nvidia-smi (installed with the NVIDIA driver) reports the memory used on the whole GPU, by every process.
# --------------------------------------------------------------------------------------------------

def nvidia_smi_command(visible_devices: str | None) -> list[str]:
    """The nvidia-smi query for the memory used on the GPU that torch calls cuda:0: the first entry of
    CUDA_VISIBLE_DEVICES (an index or a UUID) where that is set, else GPU 0."""
    first = (visible_devices or "").split(",")[0].strip() or "0"
    return ["nvidia-smi", f"--id={first}", "--query-gpu=memory.used", "--format=csv,noheader,nounits"]


def parse_memory_used(text: str) -> int:
    """Bytes from nvidia-smi's memory.used answer (MiB, one number per line; the first line is the GPU's)."""
    return int(float(text.strip().splitlines()[0])) * 2**20


def gpu_memory_reader() -> Callable[[], int] | None:
    """A function that reads the memory used on this machine's GPU in bytes, or None where nvidia-smi is missing."""
    if shutil.which("nvidia-smi") is None:
        return None
    command = nvidia_smi_command(os.environ.get("CUDA_VISIBLE_DEVICES"))

    def read() -> int:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=True)
        return parse_memory_used(done.stdout)

    return read


# --------------------------------------------------------------------------------------------------
# The record
# --------------------------------------------------------------------------------------------------

def decisions(profile: Profile, unsloth_installed: bool) -> dict:
    """What the notebooks will do with this profile, as the course's own pure functions decide it."""
    from .models import backend_for, load_dtype
    from .qlora import optimizer_for, precision_flags

    return {"precision": profile.dtype, "precision_flags": precision_flags(profile),
            "four_bit_jobs": list(profile.four_bit_jobs), "qlora_optimizer": optimizer_for(profile),
            "full_fine_tuning_weights": str(load_dtype(profile, "full")).removeprefix("torch."),
            "unsloth_installed": unsloth_installed,
            # a prediction: "unsloth" needs it to import in the kernel too (models.unsloth_importable decides there)
            "qlora_backend_where_unsloth_imports": backend_for(profile, "qlora", unsloth_installed),
            "needs_network": profile.needs_network}


def notebook_row(path: Path, seconds: float, error: str | None = None, peak_rss_mb: float | None = None,
                 gpu_baseline_mb: float | None = None, gpu_peak_mb: float | None = None,
                 stderr: list[str] | None = None) -> dict:
    """One notebook's line of the results."""
    return {"notebook": path.name, "status": "failed" if error else "passed", "seconds": seconds,
            "gpu_peak_mb": gpu_peak_mb, "gpu_baseline_mb": gpu_baseline_mb, "kernel_peak_rss_mb": peak_rss_mb,
            "unexplained_stderr": stderr or [], "error": error}


def check_results(hardware: Hardware, profile: Profile, planned: list[str], rows: list[dict], total_seconds: float,
                  *, unsloth_installed: bool, memory_measured: bool = True,
                  budget_seconds: int = BUDGET_SECONDS) -> dict:
    """The results file's content (run_environment is added when it is written): the `planned` notebooks (names),
    the rows of those that ran so far, and the verdict. It is written after every notebook, so that a check cut
    short (a disconnect, a crash) keeps what it measured, with the notebooks it did not reach."""
    major, minor = hardware.compute_capability or (0, 0)
    ran = {row["notebook"] for row in rows}
    left = [name for name in planned if name not in ran]
    all_ran = bool(rows) and not left and all(row["status"] == "passed" for row in rows)
    within = total_seconds < budget_seconds
    memory = ("nvidia-smi memory.used on the whole GPU, read every "
              f"{SAMPLE_SECONDS} s while the notebook ran, minus the reading just before it started (gpu_baseline_mb): "
              "run the check on an otherwise idle GPU; a peak shorter than the interval can be missed"
              if memory_measured else "not measured: nvidia-smi was not found")
    return {
        "check": "every notebook, offline, bundled tiny model on the GPU",
        "gpu": {"name": hardware.gpu_name, "compute_capability": f"{major}.{minor}",
                "memory_gb": round(hardware.gpu_memory_gb or 0, 1), "machine": hardware.describe()},
        "profile": profile.name,
        "decisions": decisions(profile, unsloth_installed),
        "gpu_memory_method": memory,
        "budget_seconds": budget_seconds,
        "total_seconds": round(total_seconds, 1),
        "within_budget": within,
        "all_notebooks_passed": all_ran,
        "passed": all_ran and within,
        "notebooks": rows,
        "notebooks_not_run": left,
    }


# --------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------

def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / 1e6)


def _error_text(error: BaseException, limit: int = 2000) -> str:
    """The error as text without terminal colours; its end (where a traceback names the exception) if it is long."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", f"{type(error).__name__}: {error}").strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def run_notebook(path: Path, executed_dir: Path, read_gpu: Callable[[], int] | None,
                 allowed: dict[str, str]) -> dict:
    """Execute one notebook with the tiny-gpu profile; its row of the results. A failure is recorded, not raised."""
    import nbformat

    from .execution import execute_notebook, notebook_stderr, unexplained
    from .memory import PeakSampler

    copy = executed_dir / path.name  # the executed notebook, written up to the failed cell when one failed
    baseline = read_gpu() if read_gpu else None
    sampler = PeakSampler(read_gpu, interval=SAMPLE_SECONDS) if read_gpu else nullcontext()
    start = time.perf_counter()
    run, error = None, None
    try:
        with sampler:
            run = execute_notebook(path, {"PROFILE": GPU_CHECK}, copy, timeout=CELL_TIMEOUT_SECONDS)
    except Exception as failure:  # noqa: BLE001 (a failed cell, a dead kernel, a timeout: recorded; the next one runs)
        error = _error_text(failure)
    seconds = run.seconds if run else round(time.perf_counter() - start, 1)
    executed = run.notebook if run else (nbformat.read(copy, as_version=4) if copy.exists() else None)
    stderr = unexplained([line for _, line in notebook_stderr(executed)], allowed) if executed else []
    peak = max(0, sampler.peak - baseline) if read_gpu else None
    return notebook_row(path, seconds, error, run.peak_rss_mb if run else None, _mb(baseline), _mb(peak), stderr[:20])


def _progress(index: int, count: int, row: dict) -> str:
    memory = "GPU memory not measured" if row["gpu_peak_mb"] is None else f"peak GPU {row['gpu_peak_mb']:,} MB"
    line = f"[{index}/{count}] {row['notebook']}: {row['status']} in {row['seconds']} s, {memory}"
    if row["unexplained_stderr"]:
        line += f", {len(row['unexplained_stderr'])} unexplained stderr lines"
    return line + (f"\n    {row['error'].splitlines()[-1][:300]}" if row["error"] else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_utils.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help=f"the results file (default: {RESULTS})")
    args = parser.parse_args(argv)

    hardware = detect_hardware()
    reason = refusal(hardware)
    if reason:
        print(reason, file=sys.stderr)
        return EXIT_REFUSED
    profile = choose_profile(hardware, GPU_CHECK)
    print(profile.summary(), flush=True)

    scratch = Path(tempfile.mkdtemp(prefix="course-gpu-check-"))
    os.environ.update(check_environment(scratch))  # before the Hugging Face libraries are imported, here or in a kernel
    from .manifest import run_environment, write_results

    environment = run_environment()  # the commit and the machine as the runs start
    allowed = runpy.run_path(str(ALLOWED_WARNINGS))["ALLOWED"] if ALLOWED_WARNINGS.exists() else {}
    read_gpu = gpu_memory_reader()
    notebooks = notebooks_to_run()
    if not notebooks:
        print(f"no notebooks found in {NOTEBOOKS_DIR}", file=sys.stderr)
        return EXIT_FAILED
    unsloth_installed = importlib.util.find_spec("unsloth") is not None
    planned = [path.name for path in notebooks]
    rows, start = [], time.perf_counter()
    for index, path in enumerate(notebooks, 1):
        print(f"[{index}/{len(notebooks)}] {path.name} ...", flush=True)
        rows.append(run_notebook(path, scratch / "executed", read_gpu, allowed))
        results = check_results(hardware, profile, planned, rows, time.perf_counter() - start,
                                unsloth_installed=unsloth_installed, memory_measured=read_gpu is not None)
        written = write_results(args.results, results, environment)  # after each notebook: nothing lost on a crash
        print(_progress(index, len(notebooks), rows[-1]), flush=True)
    print(f"\n{'PASSED' if results['passed'] else 'FAILED'}: {sum(r['status'] == 'passed' for r in rows)} of "
          f"{len(rows)} notebooks ran, in {results['total_seconds']} s (budget {BUDGET_SECONDS} s) on "
          f"{hardware.gpu_name}, {profile.dtype}.\nResults: {written}\nExecuted notebooks and outputs: {scratch}")
    return EXIT_PASSED if results["passed"] else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
