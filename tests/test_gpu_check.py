"""The GPU self-check (make gpu-check), tested on a CPU: the tiny-gpu profile's decisions from the compute capability,
the refusal on a machine without CUDA, and the check's bookkeeping with the notebook runs replaced by fakes.
Nothing here runs on a GPU: the check itself has to be run on one (python -m course_utils.gpu_check)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch

from course_utils import execution, gpu_check
from course_utils.execution import ExecutedNotebook
from course_utils.hardware import EXAMPLE_MACHINES, Hardware
from course_utils.lab import lab_plan
from course_utils.models import bnb_config, load_dtype, model_source
from course_utils.paths import REPO_ROOT, TINY_MODEL_DIR
from course_utils.profiles import GPU_CHECK, JOBS, PROFILES, TINY, choose_profile
from course_utils.qlora import optimizer_for, precision_flags
from course_utils.training import learning_rate


def cuda_machine(capability: tuple[int, int], name: str = "Fake GPU") -> Hardware:
    return Hardware("cuda", 64.0, 8, name, 24.0, capability)


T4 = cuda_machine((7, 5), "Tesla T4")
L4 = cuda_machine((8, 9), "NVIDIA L4")


@pytest.mark.parametrize("capability, dtype", [((7, 0), "float16"), ((7, 5), "float16"), ((8, 0), "bfloat16"),
                                               ((8, 9), "bfloat16"), ((9, 0), "bfloat16")])
def test_the_precision_comes_from_the_compute_capability(capability, dtype):
    profile = choose_profile(cuda_machine(capability), GPU_CHECK)
    assert profile.name == GPU_CHECK and profile.dtype == dtype
    assert precision_flags(profile) == {"fp16": dtype == "float16", "bf16": dtype == "bfloat16", "use_cpu": False}
    assert bnb_config(profile).bnb_4bit_compute_dtype == getattr(torch, dtype)


def test_it_is_the_bundled_model_on_cuda_offline_in_4bit_for_qlora():
    profile = choose_profile(T4, GPU_CHECK)
    assert profile.device == "cuda" and not profile.needs_network
    assert all(profile.model_for(job) == TINY and model_source(profile, job) == str(TINY_MODEL_DIR) for job in JOBS)
    assert [job for job in JOBS if profile.uses_4bit(job)] == ["qlora"]
    assert load_dtype(profile, "full") == torch.float32  # fp32 master weights under fp16/bf16 mixed precision
    assert load_dtype(profile, "lora") == torch.float16


def test_qlora_gets_the_paged_8bit_adamw_on_the_gpu_and_torch_adamw_on_the_cpu():
    assert optimizer_for(choose_profile(T4, GPU_CHECK)) == "paged_adamw_8bit"
    assert optimizer_for(choose_profile(L4, GPU_CHECK)) == "paged_adamw_8bit"
    assert optimizer_for(PROFILES["tiny"]) == "adamw_torch"


def test_the_runs_are_the_tiny_models_short_ones():
    gpu, cpu = choose_profile(L4, GPU_CHECK), PROFILES["tiny"]
    assert all(learning_rate(gpu, job) == learning_rate(cpu, job) for job in ("full", "lora", "qlora"))
    assert lab_plan(gpu) == lab_plan(cpu)
    assert (gpu.batch_size, gpu.max_seq_length, gpu.max_steps) == (cpu.batch_size, cpu.max_seq_length, cpu.max_steps)


@pytest.mark.parametrize("machine", ["CPU laptop", "Mac (Apple M2)"])
def test_it_is_refused_without_cuda_with_advice(machine):
    with pytest.raises(ValueError, match=r"needs a CUDA device.*COURSE_PROFILE=tiny"):
        choose_profile(EXAMPLE_MACHINES[machine], GPU_CHECK)


def test_it_is_never_chosen_automatically():
    machines = [*EXAMPLE_MACHINES.values(), T4, L4, cuda_machine((9, 0), "NVIDIA H100")]
    assert GPU_CHECK not in {choose_profile(machine).name for machine in machines}


def test_the_check_refuses_a_machine_without_cuda_and_says_why():
    assert gpu_check.refusal(L4) is None
    message = gpu_check.refusal(EXAMPLE_MACHINES["CPU laptop"])
    assert "needs a CUDA GPU" in message and "no GPU" in message and "make test" in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU: the check would run")
def test_the_command_exits_non_zero_on_this_cpu_machine_and_writes_nothing(tmp_path):
    results = gpu_check.RESULTS
    before = results.stat().st_mtime_ns if results.exists() else None
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TMPDIR": str(scratch)}
    done = subprocess.run([sys.executable, "-m", "course_utils.gpu_check"], cwd=REPO_ROOT, env=env, check=False,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == gpu_check.EXIT_REFUSED != 0
    assert "needs a CUDA GPU" in done.stderr and "Nothing was run or written" in done.stderr
    assert (results.stat().st_mtime_ns if results.exists() else None) == before
    assert list(scratch.iterdir()) == []  # not even a temporary folder


def test_it_runs_every_notebook_of_the_course_in_order():
    names = [path.name for path in gpu_check.notebooks_to_run()]
    assert names == sorted(name for name in os.listdir(REPO_ROOT / "notebooks") if name.endswith(".ipynb"))
    assert names[0] == "00_setup.ipynb" and "07_hemingway_style_lab.ipynb" in names


def test_the_kernels_run_offline_with_the_profile_and_write_only_under_the_scratch_folder(tmp_path):
    env = gpu_check.check_environment(tmp_path)
    assert env["HF_HUB_OFFLINE"] == env["TRANSFORMERS_OFFLINE"] == env["HF_DATASETS_OFFLINE"] == "1"
    assert env["COURSE_PROFILE"] == GPU_CHECK and env["UNSLOTH_DISABLE_STATISTICS"] == "1"
    for var in ("COURSE_OUTPUT_DIR", "COURSE_CHECKPOINT_DIR", "HF_HOME", "MPLCONFIGDIR", "IPYTHONDIR"):
        assert Path(env[var]).is_relative_to(tmp_path), var


def test_nvidia_smi_is_asked_about_the_gpu_torch_uses():
    assert "--id=0" in gpu_check.nvidia_smi_command(None)
    assert "--id=2" in gpu_check.nvidia_smi_command("2,3")
    assert "--id=GPU-8f2c" in gpu_check.nvidia_smi_command("GPU-8f2c,GPU-11aa")
    assert gpu_check.parse_memory_used("1536\n") == 1536 * 2**20


def rows(*statuses, seconds=10.0):
    return [gpu_check.notebook_row(Path(f"0{i}_x.ipynb"), seconds, None if ok else "CellExecutionError: boom",
                                   peak_rss_mb=900, gpu_baseline_mb=500, gpu_peak_mb=1200)
            for i, ok in enumerate(statuses)]


def record(machine, done, total_seconds=20.0, planned=None):
    """The results record of fake rows; `planned` defaults to exactly the notebooks that ran."""
    planned = [row["notebook"] for row in done] if planned is None else planned
    return gpu_check.check_results(machine, choose_profile(machine, GPU_CHECK), planned, done, total_seconds,
                                   unsloth_installed=False)


def test_the_record_names_the_gpu_its_capability_the_precision_and_each_notebook():
    result = record(L4, rows(True, True), 20.04)
    assert result["gpu"]["name"] == "NVIDIA L4" and result["gpu"]["compute_capability"] == "8.9"
    decided = result["decisions"]
    assert decided["precision"] == "bfloat16" and decided["qlora_optimizer"] == "paged_adamw_8bit"
    assert decided["four_bit_jobs"] == ["qlora"] and not decided["needs_network"]
    assert [row["notebook"] for row in result["notebooks"]] == ["00_x.ipynb", "01_x.ipynb"]
    assert result["notebooks"][0]["gpu_peak_mb"] == 1200 and result["notebooks"][0]["seconds"] == 10.0
    assert result["total_seconds"] == 20.0 and result["passed"] and result["within_budget"]
    assert result["notebooks_not_run"] == []


def test_a_failed_notebook_or_a_run_over_the_budget_fails_the_check():
    failed = record(T4, rows(True, False))
    assert not failed["passed"] and not failed["all_notebooks_passed"] and failed["within_budget"]
    assert failed["notebooks"][1]["status"] == "failed" and "boom" in failed["notebooks"][1]["error"]
    slow = record(T4, rows(True), gpu_check.BUDGET_SECONDS + 1)
    assert slow["all_notebooks_passed"] and not slow["within_budget"] and not slow["passed"]
    assert not record(T4, [], 0.0)["passed"]  # nothing ran


def test_a_check_cut_short_names_the_notebooks_it_did_not_reach():
    result = record(T4, rows(True, True), planned=["00_x.ipynb", "01_x.ipynb", "02_x.ipynb"])
    assert result["notebooks_not_run"] == ["02_x.ipynb"] and not result["passed"]


SEEN = ("HF_HUB_OFFLINE", "COURSE_PROFILE", "COURSE_OUTPUT_DIR")  # what the fake run records of the environment


def fake_run(calls, failing=(), interrupted=()):
    """A stand-in for execute_notebook that records what each run was given and the environment it saw."""
    def execute(path, parameters=None, output_path=None, timeout=0):
        calls.append({"notebook": Path(path).name, "parameters": parameters, "timeout": timeout,
                      **{var: os.environ.get(var) for var in SEEN}})
        if Path(path).name in interrupted:
            raise KeyboardInterrupt
        if Path(path).name in failing:
            raise RuntimeError("An error occurred while executing the following cell:\n...\nValueError: boom")
        notebook = nbformat.v4.new_notebook()
        cell = nbformat.v4.new_code_cell("")
        lines = "warnings.warn(\nUserWarning: new on GPU\n"  # the first is on the allow-list, the second is not
        cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text=lines)]
        notebook.cells.append(cell)
        return ExecutedNotebook(notebook, 2.5, 800)
    return execute


@pytest.fixture
def fake_gpu_machine(monkeypatch, tmp_path):
    """A CUDA machine made of fakes: the hardware, the GPU memory reading, the temporary folder."""
    for var in gpu_check.check_environment(tmp_path):  # main() sets these; monkeypatch puts them back afterwards
        monkeypatch.setenv(var, os.environ.get(var, ""))
    monkeypatch.setattr(gpu_check, "detect_hardware", lambda: L4)
    readings = iter(range(10**9, 2 * 10**9, 10**6))  # 1,000 MB, then 1 MB more at every reading
    monkeypatch.setattr(gpu_check, "gpu_memory_reader", lambda: lambda: next(readings))
    monkeypatch.setattr(gpu_check.tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_a_failing_notebook_is_recorded_and_the_others_still_run(fake_gpu_machine, monkeypatch, capsys):
    calls = []
    names = [path.name for path in gpu_check.notebooks_to_run()]
    monkeypatch.setattr(execution, "execute_notebook", fake_run(calls, failing={names[1]}))
    results = fake_gpu_machine / "gpu_check.json"
    assert gpu_check.main(["--results", str(results)]) == gpu_check.EXIT_FAILED
    assert [call["notebook"] for call in calls] == names
    assert all(call["parameters"] == {"PROFILE": GPU_CHECK} and call["COURSE_PROFILE"] == GPU_CHECK
               and call["HF_HUB_OFFLINE"] == "1" and Path(call["COURSE_OUTPUT_DIR"]).is_relative_to(fake_gpu_machine)
               for call in calls)
    record = json.loads(results.read_text())
    assert set(record["environment"]) == {"machine", "libraries", "commit"}
    assert [row["status"] for row in record["notebooks"]] == ["passed"] + ["failed"] + ["passed"] * (len(names) - 2)
    failed = record["notebooks"][1]
    assert "ValueError: boom" in failed["error"] and failed["kernel_peak_rss_mb"] is None
    passed = record["notebooks"][0]
    assert passed["seconds"] == 2.5 and passed["kernel_peak_rss_mb"] == 800
    assert passed["unexplained_stderr"] == ["UserWarning: new on GPU"]  # the allow-listed line is left out
    assert passed["gpu_baseline_mb"] >= 1000 and passed["gpu_peak_mb"] > 0
    assert not record["passed"] and record["gpu"]["compute_capability"] == "8.9"
    out = capsys.readouterr().out
    assert f"[2/{len(names)}] {names[1]}: failed" in out and "ValueError: boom" in out and "FAILED" in out


def test_the_check_passes_when_every_notebook_runs(fake_gpu_machine, monkeypatch):
    calls = []
    monkeypatch.setattr(execution, "execute_notebook", fake_run(calls))
    results = fake_gpu_machine / "gpu_check.json"
    assert gpu_check.main(["--results", str(results)]) == gpu_check.EXIT_PASSED
    record = json.loads(results.read_text())
    assert record["passed"] and record["decisions"]["precision"] == "bfloat16"
    assert all(call["timeout"] == gpu_check.CELL_TIMEOUT_SECONDS for call in calls)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU: the notebook would run")
def test_a_real_notebook_that_fails_is_recorded_with_its_own_error(tmp_path, monkeypatch):
    """On this CPU machine the tiny-gpu profile is refused inside the notebook's kernel: the real execution path
    (papermill's parameter, nbclient, the check's environment) records the notebook's own error and its copy."""
    for var, value in gpu_check.check_environment(tmp_path).items():
        monkeypatch.setenv(var, value)
    notebook = gpu_check.NOTEBOOKS_DIR / "00_setup.ipynb"
    row = gpu_check.run_notebook(notebook, tmp_path / "executed", None, {})
    assert row["status"] == "failed" and row["gpu_peak_mb"] is None
    assert row["error"].splitlines()[-1].startswith("ValueError: profile 'tiny-gpu' needs a CUDA device")
    assert (tmp_path / "executed" / notebook.name).exists()  # the executed copy, up to the failed cell


def test_a_check_interrupted_keeps_the_results_of_the_notebooks_that_ran(fake_gpu_machine, monkeypatch):
    names = [path.name for path in gpu_check.notebooks_to_run()]
    monkeypatch.setattr(execution, "execute_notebook", fake_run([], interrupted={names[2]}))
    results = fake_gpu_machine / "gpu_check.json"
    with pytest.raises(KeyboardInterrupt):
        gpu_check.main(["--results", str(results)])
    record = json.loads(results.read_text())
    assert [row["notebook"] for row in record["notebooks"]] == names[:2]
    assert record["notebooks_not_run"] == names[2:] and not record["passed"]
