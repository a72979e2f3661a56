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


def test_the_lab_benchmark_report_names_each_miss_and_its_features():
    from course_utils.lab import benchmark_report

    features = {"mean_sentence_length": {"base_z": -0.2, "tuned_z": -0.9}, "dialogue_share": {"base_z": 0.5,
                                                                                               "tuned_z": -0.4}}
    features.update({f: {"base_z": 1.0, "tuned_z": 0.5} for f in ("sentence_length_sd", "mean_word_length",
                                                                  "type_token_ratio", "and_clause_rate")})
    run = {"author": "twain", "learning_rate": 2e-3, "distance_base": 0.5, "distance_tuned": 0.6,
           "perplexity_base": 190.0, "perplexity_tuned": 70.0, "perplexity_ratio": 0.37, "meets_goal": False,
           "features": features}
    bench = {"environment": run_environment(),
             "runs": [{**run, "seed": 0}, {**run, "seed": 1, "distance_base": 0.6},
                      {**run, "seed": 0, "learning_rate": 5e-4}]}
    report = benchmark_report(bench, rate=2e-3)
    assert "twain: perplexity ratio at most 0.370; distance fell in 0 of 2 seeds" in report
    assert "varies by 0.10 between seeds" in report
    assert "moved away from twain on average: mean sentence length (words)" in report
    assert "moved past twain's mean (the sign of z flipped) in every seed: share of words in dialogue" in report
    assert "at learning rate 0.0005 (0.25 of the plan's)" in report
