"""The hidden tests of exercise 5 (the sovereignty audit) on prepared files, without running its notebook: the
master's team_setup and an honest audit and plan pass; a report edited by hand, a fix that is not one, a plan that
leaves a failing finding out, a setup that drops its data, a function that never returns, and setups that name files
outside the submission and the repository, links, compressed files or too many files all fail with a clear message.
(The grader runs of the master, the blank student version and a half-right one are the lead's to add to the suite.)"""
import dataclasses
import json
import os

import nbformat
import pytest
import torch

from course_utils.atomic import write_json, write_text
from course_utils.audit import QUESTIONS, Setup, audit
from course_utils.grading import Submission
from course_utils.paths import REPO_ROOT, TINY_MODEL_DIR

NAME = "exercise_5_sovereignty_audit"
HIDDEN = REPO_ROOT / "solutions" / "hidden" / f"{NAME}.py"
MASTER = REPO_ROOT / "solutions" / f"{NAME}.ipynb"


@pytest.fixture
def hidden() -> dict:
    """The hidden-test module, loaded fresh (its cache empty), as the grader loads it."""
    namespace = {"__name__": "hidden_tests"}
    exec(compile(HIDDEN.read_text(encoding="utf-8"), str(HIDDEN), "exec"), namespace)
    return namespace


def folder_of(submission: Submission):
    return submission.outputs / NAME


def prepared(tmp_path) -> tuple[Submission, Setup, Setup, dict]:
    """A submission whose q2 and q3 files are honest: a setup with local, unrecorded data and floating requirements
    in an environment with offline mode off; the same with offline mode on; a plan that claims what that fixes."""
    submission = Submission(tmp_path / "work", tmp_path / "code")
    files = folder_of(submission) / "files"
    data = write_text(files / "corpus.txt", "A text of unknown origin.\n")
    requirements = write_text(files / "requirements.txt", "trl\n")
    before = Setup(name="before", model=str(TINY_MODEL_DIR), data=(str(data),), requirements=(str(requirements),),
                   environment={}, packages={"trl": "1.14.0"}, answers=dict.fromkeys(QUESTIONS, "an answer"))
    after = dataclasses.replace(before, name="after", environment={"HF_HUB_OFFLINE": "1"})
    fixes = {"data/network": "offline mode", "compute/network": "offline mode", "dependency/telemetry": "offline mode"}
    plan = {"fixes": fixes, "kept": {f.key: "kept for now" for f in audit(before).failing() if f.key not in fixes}}
    save(submission, before, after, plan)
    return submission, before, after, plan


def save(submission: Submission, before: Setup, after: Setup, plan: dict) -> None:
    """What q2 and q3 save: the setups, their reports, the plan."""
    folder = folder_of(submission)
    write_json(folder / "setup.json", before.to_dict())
    audit(before).write(folder, "audit")
    write_json(folder / "setup-after.json", after.to_dict())
    audit(after).write(folder, "audit-after")
    write_json(folder / "plan.json", plan)


def results(hidden: dict, submission: Submission, question: str) -> dict[str, str]:
    """{test: "" if it passed, else its error} for the hidden tests of one question."""
    out = {}
    for name in hidden["POINTS"]:
        if name.startswith(f"test_{question}_"):
            try:
                hidden[name](submission)
                out[name] = ""
            except AssertionError as error:
                out[name] = str(error)
    return out


def test_an_honest_audit_and_plan_pass(tmp_path, hidden):
    submission, *_ = prepared(tmp_path)
    assert set(results(hidden, submission, "q2").values()) == {""}
    q3 = results(hidden, submission, "q3")
    assert set(q3.values()) == {""} and len(q3) == 4


def test_a_report_edited_by_hand_fails(tmp_path, hidden):
    submission, *_ = prepared(tmp_path)
    path = folder_of(submission) / "audit.json"
    saved = json.loads(path.read_text())
    saved["findings"][1]["score"] = 1.0  # data/provenance made to look fine
    write_json(path, saved)
    failed = results(hidden, submission, "q2")
    message = failed["test_q2_the_saved_report_is_the_audit_of_the_saved_setup"]
    assert "audit.json is not the report that audit() gives for setup.json" in message
    assert "data/provenance: saved 1.0" in message
    assert failed["test_q2_the_pages_show_that_audit"] == ""  # the pages were not edited


def test_the_plan_is_graded_without_the_new_report(tmp_path, hidden):
    submission, *_ = prepared(tmp_path)
    (folder_of(submission) / "audit-after.json").unlink()
    failed = {name for name, error in results(hidden, submission, "q3").items() if error}
    assert failed == {"test_q3_the_new_report_is_the_audit_of_the_improved_setup"}


def test_a_claimed_fix_that_is_not_one_fails(tmp_path, hidden):
    submission, before, after, plan = prepared(tmp_path)
    pins = plan["kept"].pop("dependency/pins")
    save(submission, before, after, {"fixes": {**plan["fixes"], "dependency/pins": pins}, "kept": plan["kept"]})
    message = results(hidden, submission, "q3")["test_q3_every_claimed_fix_is_fixed"]
    assert message.startswith("claimed fixed, not fixed in the new audit: dependency/pins (0.00")


def test_a_failing_finding_left_out_of_the_plan_fails(tmp_path, hidden):
    submission, before, after, plan = prepared(tmp_path)
    del plan["kept"]["data/provenance"]
    save(submission, before, after, plan)
    message = results(hidden, submission, "q3")["test_q3_every_failing_finding_is_planned"]
    assert message == "failing findings the plan says nothing about: data/provenance"


def test_dropping_the_data_from_the_setup_fails(tmp_path, hidden):
    submission, before, after, plan = prepared(tmp_path)
    save(submission, before, dataclasses.replace(after, data=()), plan)
    assert results(hidden, submission, "q3")["test_q3_the_score_rose_and_nothing_was_hidden"]


def test_missing_and_broken_files_fail_cleanly(tmp_path, hidden):
    submission = Submission(tmp_path / "work", tmp_path / "code")
    assert set(results(hidden, submission, "q2").values()) == {
        "setup.json is missing: the notebook must save it in output_folder('exercise_5_sovereignty_audit')"}
    write_text(folder_of(submission) / "setup.json", "{not json")
    assert "setup.json is not JSON" in results(hidden, submission, "q2")["test_q2_the_pages_show_that_audit"]
    write_json(folder_of(submission) / "setup.json", {"name": "x", "model": "y", "dataset": []})
    assert "setup.json is not a valid Setup: unknown field(s) 'dataset'" in \
        results(hidden, submission, "q2")["test_q2_the_pages_show_that_audit"]


def test_the_grader_reads_only_small_folders_of_the_submission_or_the_repository(tmp_path, hidden):
    submission, before, _, _ = prepared(tmp_path)
    files = folder_of(submission) / "files"
    os.symlink("/etc", files / "etc")
    write_text(files.parent / "packed" / "data.xz", "not really xz")
    many = files.parent / "many"
    many.mkdir()
    for i in range(hidden["MAX_FILES"] + 1):
        (many / f"{i}.txt").touch()
    cases = {"/": "outside the repository and the notebook's folder", str(files): "is a symbolic link",
             str(files.parent / "packed"): "is compressed", str(many): "files or 100 MB: more than the grader reads",
             str(REPO_ROOT): ""}
    for data, message in cases.items():
        write_json(folder_of(submission) / "setup.json", dataclasses.replace(before, data=(data,)).to_dict())
        hidden["_CACHE"].clear()
        error = results(hidden, submission, "q2")["test_q2_the_saved_report_is_the_audit_of_the_saved_setup"]
        assert error and message in error, (data, error)


def master_team_setup(tmp_path, hidden) -> Submission:
    """A submission whose q1 cell is the master's, with the team's folder as the notebook writes it."""
    master = nbformat.read(MASTER, as_version=4)
    write_text(tmp_path / "code" / "q1.py", next(c.source for c in master.cells if c.id == "q1"))
    submission = Submission(tmp_path / "work", tmp_path / "code")
    team = folder_of(submission) / "team"
    team.mkdir(parents=True)
    torch.save({"weight": torch.zeros(2)}, team / "pytorch_model.bin")
    write_text(team / "requirements.txt", "torch\ntransformers>=4.40\n")
    write_json(team / "pip-list.json", [{"name": n, "version": v} for n, v in hidden["TEAM_PACKAGES"].items()])
    return submission


def test_the_masters_team_setup_passes_q1(tmp_path, hidden):
    assert set(results(hidden, master_team_setup(tmp_path, hidden), "q1").values()) == {""}


def test_a_team_setup_that_never_returns_is_called_once_and_fails(tmp_path, hidden):
    submission = master_team_setup(tmp_path, hidden)
    write_text(submission.code / "q1.py", "def team_setup(team):\n    while True:\n        pass\n")
    submission.timeout = 2
    failed = results(hidden, submission, "q1")
    assert len(set(failed.values())) == 1 and "did not finish within 2 s" in next(iter(failed.values()))
    assert isinstance(hidden["_CACHE"]["q1"], AssertionError)  # one call for the three tests
