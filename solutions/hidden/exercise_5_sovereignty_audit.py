"""Hidden tests of the exercise exercise_5_sovereignty_audit, generated from its master by course_utils.exercises: do not edit."""

EXERCISE = 'exercise_5_sovereignty_audit'
POINTS = {'test_q1_a_setup_with_every_question_answered': 1, 'test_q1_what_the_team_trains': 1, 'test_q1_where_it_runs_and_what_it_needs': 1, 'test_q2_the_saved_report_is_the_audit_of_the_saved_setup': 2, 'test_q2_the_pages_show_that_audit': 2, 'test_q3_the_new_report_is_the_audit_of_the_improved_setup': 2, 'test_q3_every_claimed_fix_is_fixed': 2, 'test_q3_every_failing_finding_is_planned': 2, 'test_q3_the_score_rose_and_nothing_was_hidden': 2}


# hidden tests of q1, 1 point(s) each
import json
import os
from pathlib import Path

from course_utils.audit import DIMENSIONS, Setup, audit, local_paths, report_differences
from course_utils.paths import REPO_ROOT

FOLDER = "exercise_5_sovereignty_audit"  # the notebook's paths.output_folder
TEAM_MODEL, TEAM_DATA = "Qwen/Qwen2.5-7B-Instruct", "databricks/databricks-dolly-15k"
TEAM_PACKAGES = {"torch": "2.13.0", "transformers": "5.17.0", "peft": "0.21.2", "trl": "1.14.0",
                 "huggingface-hub": "1.33.0", "gradio": "6.31.0", "wandb": "0.31.0"}
MAX_FILES, MAX_BYTES, MAX_SAVED_BYTES = 2000, 100_000_000, 2_000_000  # what the grader reads of one submission
_CACHE = {}  # the answer of team_setup, and each setup's audit: computed once for all the tests


def _outputs(submission) -> Path:
    return submission.outputs / FOLDER


def _saved_text(submission, name: str) -> str:
    path = _outputs(submission) / name
    assert path.is_file() and not path.is_symlink(), \
        f"{name} is missing: the notebook must save it in output_folder({FOLDER!r})"
    assert path.stat().st_size <= MAX_SAVED_BYTES, f"{name} is over {MAX_SAVED_BYTES:,} bytes: not what was asked"
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise AssertionError(f"{name} is not text: {error}") from None


def _saved(submission, name: str):
    try:
        return json.loads(_saved_text(submission, name))
    except ValueError as error:
        raise AssertionError(f"{name} is not JSON: {error}") from None


def _setup(values, what: str) -> Setup:
    try:
        return Setup.from_dict(values)
    except ValueError as error:
        raise AssertionError(f"{what} is not a valid Setup: {error}") from None


def _check_readable(setup: Setup, submission, what: str) -> None:
    """The grader audits files in the repository or the notebook's own folder only: no link, nothing compressed of
    the student's, at most MAX_FILES files and MAX_BYTES bytes in all."""
    roots = (REPO_ROOT.resolve(), submission.work.resolve())
    files = size = 0
    try:
        paths = local_paths(setup)
    except (OSError, ValueError) as error:
        raise AssertionError(f"{what} names a path that cannot be read: {error}") from None
    for path in paths:
        real = path.resolve()
        assert any(real.is_relative_to(root) for root in roots), \
            f"{what} names {path}, outside the repository and the notebook's folder: the grader reads nothing else"
        walk = os.walk(real) if real.is_dir() else [(str(real.parent), [], [real.name])]
        for folder, subfolders, names in walk:
            for name in subfolders + names:
                item = Path(folder, name)
                assert not item.is_symlink(), f"{what}: {item} is a symbolic link, which the grader does not follow"
                assert not (item.suffix in (".xz", ".gz", ".bz2") and item.is_relative_to(roots[1])), \
                    f"{what}: {item} is compressed, and the grader decompresses nothing of a submission's"
            files += len(names)
            size += sum(Path(folder, name).stat().st_size for name in names)
            assert files <= MAX_FILES and size <= MAX_BYTES, \
                f"{what} names over {MAX_FILES} files or {MAX_BYTES // 10**6} MB: more than the grader reads"


def _audited(setup: Setup, submission, what: str):
    """The grader's own audit of the setup (offline, no probe)."""
    key = json.dumps(setup.to_dict(), sort_keys=True)
    if key not in _CACHE:
        _check_readable(setup, submission, what)
        try:
            _CACHE[key] = audit(setup, probe=None)
        except Exception as error:  # a setup the audit cannot read is the submission's failure, not the grader's
            raise AssertionError(f"the audit of {what} failed: {type(error).__name__}: {error}") from None
    return _CACHE[key]


def _team_setup(submission) -> Setup:
    """team_setup(the team's folder), called once in a fresh process."""
    if "q1" not in _CACHE:
        try:
            _CACHE["q1"] = submission.call("q1", "team_setup", str(_outputs(submission) / "team"))
        except AssertionError as error:
            _CACHE["q1"] = error
    if isinstance(_CACHE["q1"], AssertionError):
        raise _CACHE["q1"]
    value = _CACHE["q1"]
    assert isinstance(value, dict), f"team_setup returned {type(value).__name__}, not a dict of Setup's fields"
    return _setup(value, "team_setup's dict")


def _expect(report, expected: list[tuple[str, float, str]]) -> None:
    found = report.by_key()
    for key, score, why in expected:
        assert found[key].score == score, f"{key} scores {found[key].score}, not {score} ({why}): {found[key].finding}"


def test_q1_a_setup_with_every_question_answered(submission):
    """team_setup(team) must return a dict that Setup.from_dict accepts, with an answer to every question of
    QUESTIONS."""
    setup = _team_setup(submission)
    assert not setup.unanswered(), f"questions without an answer: {', '.join(setup.unanswered())}"


def test_q1_what_the_team_trains(submission):
    """The model, the data and the fine-tune must be the story's: the model by its Hub id at no pinned revision, the
    data by its Hub id, the fine-tune as the pickle in the team's folder."""
    setup = _team_setup(submission)
    team = _outputs(submission) / "team"
    assert setup.model == TEAM_MODEL, f"model is {setup.model!r}; the team loads {TEAM_MODEL!r} from the Hub"
    assert list(setup.data) == [TEAM_DATA], f"data is {list(setup.data)}; the team loads {TEAM_DATA!r} from the Hub"
    assert [Path(c).resolve() for c in setup.checkpoints] == [(team / "pytorch_model.bin").resolve()], \
        f"checkpoints are {list(setup.checkpoints)}; the team's fine-tune is {team / 'pytorch_model.bin'}"
    _expect(_audited(setup, submission, "team_setup's setup"), [
        ("model/source", 0.2, "a Hub id at a floating revision"), ("model/format", 0.0, "a pickle"),
        ("data/location", 0.0, "no local copy"), ("data/network", 0.0, "fetched from the Hub")])


def test_q1_where_it_runs_and_what_it_needs(submission):
    """Training and inference must run on other people's machines (a rented GPU, the API's address); the
    requirements must be the team's file, the packages those of its pip list, the environment its one variable."""
    setup = _team_setup(submission)
    team = _outputs(submission) / "team"
    assert setup.inference.startswith(("http://", "https://")), \
        f"inference is {setup.inference!r}: give the API's address"
    assert [Path(r).resolve() for r in setup.requirements] == [(team / "requirements.txt").resolve()], \
        f"requirements are {list(setup.requirements)}; the team's file is {team / 'requirements.txt'}"
    packages = {name.lower().replace("_", "-"): version for name, version in (setup.packages or {}).items()}
    assert packages == TEAM_PACKAGES, f"packages are {setup.packages}; team/pip-list.json lists {TEAM_PACKAGES}"
    environment = setup.environment or {}
    assert list(environment) == ["WANDB_DISABLED"] and environment["WANDB_DISABLED"].lower() == "true", \
        f"environment is {setup.environment}; the team's shell sets WANDB_DISABLED=true and nothing else"
    _expect(_audited(setup, submission, "team_setup's setup"), [
        ("compute/location", 0.0, "training and inference elsewhere"), ("compute/network", 0.5, "offline mode off"),
        ("output/control", 0.0, "the host decides"), ("dependency/pins", 0.0, "no version pinned"),
        ("dependency/telemetry", 0.0, "no package switched off")])


# hidden tests of q2, 2 point(s) each
def _saved_report(submission, setup_name: str, report_name: str):
    """The grader's audit of the saved setup, checked against the saved JSON report."""
    report = _audited(_setup(_saved(submission, setup_name), setup_name), submission, setup_name)
    differences = report_differences(_saved(submission, report_name), report)
    assert not differences, (f"{report_name} is not the report that audit() gives for {setup_name}:\n  "
                             + "\n  ".join(differences[:8]))
    return report


def test_q2_the_saved_report_is_the_audit_of_the_saved_setup(submission):
    """audit.json must be the report that audit() gives for setup.json: the grader runs the audit itself, so a report
    edited by hand, or the report of another setup, scores nothing."""
    _saved_report(submission, "setup.json", "audit.json")


def test_q2_the_pages_show_that_audit(submission):
    """audit.md and audit.html must show the scores of the audit of setup.json (report.write writes both)."""
    report = _audited(_setup(_saved(submission, "setup.json"), "setup.json"), submission, "setup.json")
    markdown, page = _saved_text(submission, "audit.md"), _saved_text(submission, "audit.html")
    scores = report.scores()
    assert f"Overall score: **{report.overall()}/100**" in markdown and all(
        f"| {d} | {scores[d]} |" in markdown for d in DIMENSIONS), f"audit.md does not show the scores {scores}"
    assert f'<b class="overall">{report.overall()}/100</b>' in page and all(
        f"<tr><td>{d}</td><td>{scores[d]}</td></tr>" in page for d in DIMENSIONS), \
        f"audit.html does not show the scores {scores}"


# hidden tests of q3, 2 point(s) each
def _plan(submission) -> dict:
    plan = _saved(submission, "plan.json")
    assert isinstance(plan, dict) and set(plan) <= {"fixes", "kept"} and all(
        isinstance(plan.get(part, {}), dict) for part in ("fixes", "kept")), \
        'plan.json must be {"fixes": {check: change}, "kept": {check: reason}}'
    return {"fixes": plan.get("fixes", {}), "kept": plan.get("kept", {})}


def _before_after(submission):
    """The grader's audits of setup.json and setup-after.json."""
    after = _audited(_setup(_saved(submission, "setup-after.json"), "setup-after.json"), submission, "setup-after.json")
    return _audited(_setup(_saved(submission, "setup.json"), "setup.json"), submission, "setup.json"), after


def test_q3_the_new_report_is_the_audit_of_the_improved_setup(submission):
    """audit-after.json must be the report that audit() gives for setup-after.json (the grader re-audits it)."""
    _saved_report(submission, "setup-after.json", "audit-after.json")


def test_q3_every_claimed_fix_is_fixed(submission):
    """Each finding the plan claims to fix ("fixes") must fail in the first audit and score one in the new one."""
    before, after = _before_after(submission)
    fixes, old, new = _plan(submission)["fixes"], before.by_key(), after.by_key()
    assert fixes, "the plan fixes nothing: put each change, and the finding it fixes, in its \"fixes\""
    unknown = [key for key in fixes if key not in old]
    assert not unknown, f"no such check: {', '.join(unknown)}; the checks are {', '.join(old)}"
    passing = [key for key in fixes if old[key].score == 1]
    assert not passing, f"these already scored one before the plan, so there was nothing to fix: {', '.join(passing)}"
    not_fixed = [f"{key} ({new[key].score:.2f}: {new[key].finding})" for key in fixes if new[key].score < 1]
    assert not not_fixed, "claimed fixed, not fixed in the new audit: " + "; ".join(not_fixed)


def test_q3_every_failing_finding_is_planned(submission):
    """Every finding below one in the first audit must be in the plan once: in "fixes" with the change that fixes
    it, or in "kept" with the reason it stays, each a sentence."""
    before, _ = _before_after(submission)
    plan = _plan(submission)
    both = sorted(set(plan["fixes"]) & set(plan["kept"]))
    assert not both, f"both fixed and kept: {', '.join(both)}"
    unknown = [key for key in plan["kept"] if key not in before.by_key()]
    assert not unknown, f"no such check: {', '.join(unknown)}"
    entries = {**plan["fixes"], **plan["kept"]}
    missing = [f.key for f in before.failing() if not (isinstance(entries.get(f.key), str) and entries[f.key].strip())]
    assert not missing, f"failing findings the plan says nothing about: {', '.join(missing)}"


def test_q3_the_score_rose_and_nothing_was_hidden(submission):
    """The new overall score must be higher and no dimension's lower; the improved setup must still list its
    fine-tune and its data (dropping them from the setup hides a finding, it does not fix it)."""
    before, after = _before_after(submission)
    assert after.overall() > before.overall(), f"overall {before.overall()} before the plan, {after.overall()} after"
    fell = [f"{d} {before.scores()[d]} -> {after.scores()[d]}" for d in DIMENSIONS
            if after.scores()[d] < before.scores()[d]]
    assert not fell, f"lower after the plan: {', '.join(fell)}"
    for part in ("checkpoints", "data"):
        assert not getattr(before.setup, part) or getattr(after.setup, part), \
            f"the improved setup lists no {part}: the first one did"
