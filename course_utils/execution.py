"""Running a notebook headless, as `make run`, the tests and the benchmarks do: papermill's parameters injected, every
cell executed by nbclient, the wall time and the kernel's peak memory recorded, and what the cells printed to
stderr kept (every warning a notebook prints is a finding: see `unexplained`)."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
import psutil

from .memory import PeakSampler


def kernel_rss() -> int:
    """Resident memory of this process's children (bytes): the notebook's kernel and whatever it started."""
    total = 0
    for child in psutil.Process().children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


@dataclass
class ExecutedNotebook:
    notebook: nbformat.NotebookNode  # with every cell's outputs
    seconds: float
    peak_rss_mb: float  # the kernel's peak resident memory, sampled every 50 ms


def execute_notebook(path: str | Path, parameters: dict | None = None, output_path: str | Path | None = None,
                     timeout: int = 1800) -> ExecutedNotebook:
    """Execute the notebook at `path` in a fresh kernel, in the notebook's own folder, with papermill's
    `parameters` injected after its parameters cell; write the executed copy to `output_path` if given. A cell
    that raises stops the run with nbclient's CellExecutionError (the copy is still written, up to that cell)."""
    from nbclient import NotebookClient
    from papermill.iorw import load_notebook_node  # papermill's reader: every cell gets its tags list
    from papermill.parameterize import parameterize_notebook

    path = Path(path).resolve()
    notebook = load_notebook_node(str(path))
    if parameters:
        notebook = parameterize_notebook(notebook, parameters)
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    try:
        with PeakSampler(kernel_rss, interval=0.05) as sampler:
            client.execute()
    finally:
        if output_path:
            Path(output_path).parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(notebook, str(output_path))
    return ExecutedNotebook(notebook, round(time.perf_counter() - start, 1), round(sampler.peak / 1e6))


# A progress bar (tqdm's "  40%|████      | 16/40 [00:02<00:03, 7.9it/s]") is not a message.
_PROGRESS = re.compile(r"\d+%\|.*\|\s*\d+/\d+|^\s*[\d.]+(?:it|s)/(?:s|it)\]?$")


def stderr_lines(outputs: list) -> list[str]:
    """Every line a cell's outputs wrote to stderr, progress bars left out. Python warnings, the logging warnings of
    transformers, peft and bitsandbytes, and tracebacks all arrive there."""
    found = []
    for output in outputs:
        if output.get("output_type") == "stream" and output.get("name") == "stderr":
            found += [part.strip() for part in re.split(r"[\r\n]+", output.get("text", ""))
                      if part.strip() and not _PROGRESS.search(part)]
    return found


def notebook_stderr(notebook: nbformat.NotebookNode) -> list[tuple[int, str]]:
    """(cell index, line) for every stderr line of an executed notebook."""
    return [(i, line) for i, cell in enumerate(notebook.cells) for line in stderr_lines(cell.get("outputs", []))]


def unexplained(lines: list[str], allowed: dict[str, str]) -> list[str]:
    """The lines that no entry of `allowed` explains. `allowed` maps a regular expression (searched in the line)
    to the reason the message is expected and harmless; the notebooks explain each one where it appears."""
    return [line for line in lines if not any(re.search(pattern, line) for pattern in allowed)]
