"""Time the build of llama-cpp-python (notebook 06's local runtime), as `make test` runs it on a fresh clone.

    python benchmarks/bench_llama_cpp_build.py

PyPI publishes llama-cpp-python as source only, so installing it compiles llama.cpp. This builds the pinned version
from PyPI's source archive into a temporary folder with the Makefile's CMake options (portable, no multimodal
library), without pip's cache, and records the wall time, the CPU time of the compilers and the wheel's size in
benchmarks/results/llama_cpp_build.json. Run it on an otherwise idle machine: the wall time is what CI waits.
"""
from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from course_utils.manifest import run_environment, write_results  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results" / "llama_cpp_build.json"


def makefile_cmake_args() -> str:
    """The CMake options the Makefile builds llama.cpp with (LLAMA_CMAKE_ARGS): one place for them."""
    return re.search(r"^LLAMA_CMAKE_ARGS := (.+)$", (REPO_ROOT / "Makefile").read_text(), re.MULTILINE).group(1)


def pinned_version() -> str:
    text = (REPO_ROOT / "requirements-local-runtime.txt").read_text()
    return re.search(r"^llama-cpp-python==(\S+)", text, re.MULTILINE).group(1)


def main() -> None:
    environment = run_environment()
    cmake_args, version = makefile_cmake_args(), pinned_version()
    with tempfile.TemporaryDirectory(prefix="llama-cpp-build-") as folder:
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "--quiet",
                   f"llama-cpp-python=={version}", "-w", folder]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(command, check=True, env={**os.environ, "CMAKE_ARGS": cmake_args})
        seconds = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        wheel = next(Path(folder).glob("*.whl"))
        result = {"llama_cpp_python": version, "cmake_args": cmake_args, "cpu_count": os.cpu_count(),
                  "wall_seconds": round(seconds, 1),
                  "cpu_seconds": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1),
                  "wheel": wheel.name, "wheel_mb": round(wheel.stat().st_size / 1e6, 1),
                  "load_average_after": [round(x, 2) for x in os.getloadavg()]}
    write_results(RESULTS, {"build": result}, environment)
    print(f"llama-cpp-python {version}: built in {result['wall_seconds'] / 60:.1f} min "
          f"({result['cpu_seconds'] / 60:.1f} CPU-minutes on {result['cpu_count']} cores), wheel {result['wheel_mb']} MB")


if __name__ == "__main__":
    main()
