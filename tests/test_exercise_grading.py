"""The batch grader on the course's own exercises: prepared submissions (tests/submissions.py) built from each
master and its committed student version are graded as an instructor would grade them, and the grade table must
hold the points the rules below give. The suite grades the whole attack set on the fastest exercise (5) and the
correct submission of exercise 1, whose hidden tests recompute perplexities from the saved adapter; the benchmark
(benchmarks/bench_grading.py) grades every exercise's correct, half-right and blank submissions."""
import csv
import shutil

import pytest

from course_utils import exercises, grading
from tests.submissions import prepare

ATTACKS = ("correct", "half", "blank", "loop", "crash", "file_vandal", "patcher", "not_a_notebook", "a_folder")
GRADED = {  # exercise: (the submissions graded in the suite, the per-cell limit in seconds)
    "exercise_5_sovereignty_audit": (ATTACKS, 15),
    "exercise_1_first_lora": (("correct",), 60),
}


def expected_points(student: str, points: dict[str, float]) -> dict[str, float]:
    """What each prepared submission must score, question by question: the master full marks; half right only q1;
    a loop or a crash placed before the last question everything but the last question; the vandal (a master that
    also wrecks files) full marks; the blank, the patcher and the non-notebooks nothing."""
    questions = sorted(points, key=lambda q: int(q[1:]))
    full = {"correct": questions, "file_vandal": questions, "half": ["q1"], "loop": questions[:-1],
            "crash": questions[:-1]}.get(student, [])
    return {q: points[q] if q in full else 0 for q in questions}


STATUS = {"loop": "timeout", "crash": "crashed", "not_a_notebook": "not_a_notebook", "a_folder": "not_a_notebook"}


@pytest.fixture(scope="module", params=sorted(n for n in GRADED if (exercises.SOLUTIONS_DIR / f"{n}.ipynb").exists()))
def graded(request, tmp_path_factory):
    name = request.param
    students, cell_timeout = GRADED[name]
    folder = tmp_path_factory.mktemp(name)
    master = exercises.SOLUTIONS_DIR / f"{name}.ipynb"
    made = exercises.generated(master)
    points = exercises.question_points(made.hidden.read_text(encoding="utf-8"))
    submissions = folder / "submissions"
    prepare(master, made.student, submissions, half=["q1"], attack_before=max(points, key=lambda q: int(q[1:])))
    for path in submissions.iterdir():
        if path.stem in students:
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    grading.grade_folder(submissions, made.hidden, folder / "graded", cell_timeout=cell_timeout,
                         total_timeout=240)
    with open(folder / "graded" / "grades.csv", newline="") as stream:
        rows = {row["student"]: row for row in csv.DictReader(stream)}
    return {"name": name, "students": students, "points": points, "rows": rows, "out": folder / "graded"}


def test_every_prepared_submission_gets_the_points_and_status_it_must(graded):
    rows, points = graded["rows"], graded["points"]
    assert sorted(rows) == sorted(graded["students"])  # no submission stopped the batch
    for student, row in rows.items():
        found = {q: float(row[q]) for q in points}
        assert found == expected_points(student, points), f"{graded['name']}: {student} ({row['notes']})"
        assert row["status"] == STATUS.get(student, "ok"), f"{graded['name']}: {student}: {row['notes']}"
        assert float(row["total"]) == sum(found.values()) and row["exercise"] == graded["name"]


def test_the_vandal_is_reported_and_its_victim_graded_from_its_copy(graded):
    rows = graded["rows"]
    if "file_vandal" not in rows:
        pytest.skip(f"{graded['name']}: the suite grades the attacks on one exercise only (see GRADED)")
    assert "submissions folder: changed half.ipynb" in rows["file_vandal"]["notes"]
    assert "outside its folder: new escaped.txt" in rows["file_vandal"]["notes"]
    assert not rows["half"]["notes"] and rows["half"]["status"] == "ok"


def test_the_feedback_of_a_blank_submission_says_what_each_failed_test_means(graded):
    if "blank" not in graded["rows"]:
        pytest.skip(f"{graded['name']}: its blank submission is graded by the benchmark")
    page = (graded["out"] / "feedback" / "blank.html").read_text(encoding="utf-8")
    assert f"Total: <b>0</b> of {sum(graded['points'].values()):g} points" in page
    assert page.count('class="fail"') >= len(graded["points"])
