"""Every benchmark result says where it was measured: the CPU and the flags that change what libraries compute
(bitsandbytes' avx512_bf16 trap), the library versions, and the course's commit."""
import subprocess

from course_utils.hardware import CPU_FLAGS, cpu_description
from course_utils.manifest import git_commit, run_environment, write_results


def test_the_environment_names_the_cpu_its_flags_the_libraries_and_the_commit(tmp_path):
    path = write_results(tmp_path / "bench.json", {"runs": [1]})
    record = __import__("json").loads(path.read_text())
    assert record["runs"] == [1]
    machine = record["environment"]["machine"]
    assert machine["model"] and machine["cores"] >= 1 and set(machine["flags"]) == set(CPU_FLAGS)
    assert {"torch", "transformers", "peft", "bitsandbytes"} <= set(record["environment"]["libraries"])
    assert record["environment"]["commit"] != ""
    assert run_environment()["machine"] == cpu_description()


def test_the_commit_is_marked_changed_only_for_changes_outside_the_results(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "lab.json").write_text("{}")
    (tmp_path / "code.py").write_text("x = 1")
    git("add", ".")
    git("-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "first")
    commit = git_commit(tmp_path)
    assert len(commit) == 40
    (tmp_path / "benchmarks" / "results" / "lab.json").write_text('{"new": "results"}')
    assert git_commit(tmp_path) == commit  # a benchmark writing its own results is not a change of the code
    (tmp_path / "code.py").write_text("x = 2")
    assert git_commit(tmp_path) == commit + "+changes"
    assert git_commit(tmp_path / "benchmarks") == commit + "+changes"  # asked from a subfolder: the same answer
    (tmp_path / "code.py").write_text("x = 1")
    assert git_commit(tmp_path / "benchmarks") == commit
