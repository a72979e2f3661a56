"""The batch grader on prepared submissions of the synthetic exercise of test_exercises (4 points: q1 2, q2 2):
a correct one, a half-right one, the blank student version, an infinite loop, a kernel crash, a file vandal, a
test-runner patch and a text file that is not a notebook. The whole batch is graded once (module fixture); the
grade table must hold exactly the expected points and statuses."""
import csv
import json
import subprocess
import sys
from html.parser import HTMLParser

import nbformat
import pytest
from test_exercises import make_master

from course_utils import exercises, grading
from tests.browser import chromium, run_chromium
from tests.submissions import CRASH, LOOP, PATCH, vandal

LIMITS = {"cell_timeout": 5, "total_timeout": 30, "memory_mb": 4096}

Q1_RIGHT = "def add(a, b):\n    return a + b"
Q2_RIGHT = 'import json\nwith open("answer.json", "w") as f:\n    json.dump({"total": 29}, f)'


def with_cells(student: nbformat.NotebookNode, **sources) -> nbformat.NotebookNode:
    """A copy of the student notebook with the cells of the given ids replaced (extra=... adds a cell before q2)."""
    nb = nbformat.from_dict(json.loads(json.dumps(student)))
    for cell in nb.cells:
        if cell.id in sources:
            cell.source = sources[cell.id]
    if "extra" in sources:
        index = [c.id for c in nb.cells].index("q2")
        nb.cells.insert(index, nbformat.v4.new_code_cell(sources["extra"]))
    return nb


EXPECTED = {  # student: (q1, q2, status)
    "a_folder": (0, 0, "not_a_notebook"),
    "blank": (0, 0, "ok"),
    "correct": (2, 2, "ok"),
    "crash": (2, 0, "crashed"),
    "file_vandal": (2, 2, "ok"),
    "half": (2, 0, "ok"),
    "loop": (2, 0, "timeout"),
    "not_a_notebook": (0, 0, "not_a_notebook"),
    "patcher": (0, 0, "ok"),
}


def prepare(folder, submissions):
    master = make_master(folder)
    made = exercises.generate(master, folder / "exercises", folder / "hidden")
    student = nbformat.reads(made.student_text, as_version=4)
    submissions.mkdir()
    patch = PATCH + """
with open("answer.json", "w") as f:
    json.dump({"total": 0}, f)"""
    notebooks = {
        "correct": nbformat.read(master, as_version=4),
        "half": with_cells(student, q1=Q1_RIGHT, q2='open("answer.json", "w").write(\'{"total": 28}\')'),
        "blank": student,
        "loop": with_cells(student, q1=Q1_RIGHT, q2=LOOP),
        "crash": with_cells(student, q1=Q1_RIGHT, q2=CRASH),
        "file_vandal": with_cells(student, q1=Q1_RIGHT, q2=Q2_RIGHT, extra=vandal(submissions, "half")),
        "patcher": with_cells(student, q1="import doctest\ndoctest.DocTestRunner.run = None\n"
                                          "def add(a, b):\n    return 0", extra=patch),
    }
    for name, nb in notebooks.items():
        nbformat.write(nb, submissions / f"{name}.ipynb")
    (submissions / "a_folder.ipynb").mkdir()  # not even a file
    (submissions / "not_a_notebook.ipynb").write_text("print('this is a script, not a notebook')\n")
    return made.hidden


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    folder = tmp_path_factory.mktemp("grading")
    submissions = folder / "submissions"
    tests = prepare(folder, submissions)
    out = folder / "graded"
    records = grading.grade_folder(submissions, tests, out, **LIMITS)
    return {"folder": folder, "submissions": submissions, "tests": tests, "out": out, "records": records}


def grade_rows(out):
    with open(out / "grades.csv", newline="") as stream:
        return {row["student"]: row for row in csv.DictReader(stream)}


def test_grade_table_holds_the_expected_points_and_statuses(batch):
    rows = grade_rows(batch["out"])
    assert list(rows) == sorted(EXPECTED)  # every submission graded: the bad ones did not stop the batch
    found = {s: (float(r["q1"]), float(r["q2"]), r["status"]) for s, r in rows.items()}
    assert found == EXPECTED
    assert all(float(r["total"]) == float(r["q1"]) + float(r["q2"]) and r["exercise"] == "adding"
               for r in rows.values())
    assert all(float(r["seconds"]) > 0 for s, r in rows.items() if r["status"] != "not_a_notebook")


def test_writes_outside_the_folder_are_reported_and_change_no_other_grade(batch):
    rows = grade_rows(batch["out"])
    notes = rows["file_vandal"]["notes"]
    assert "submissions folder: changed half.ipynb" in notes
    assert "outside its folder: new escaped.txt" in notes
    assert rows["half"]["q1"] == "2" and rows["half"]["status"] == "ok"  # graded from the copy made before the run
    assert [s for s, r in rows.items() if r["notes"]] == ["a_folder", "file_vandal"]
    assert rows["a_folder"]["notes"].startswith("NotNotebook: could not be copied: [Errno 21] Is a directory")


def test_summary_names_counts_median_and_most_failed_question(batch):
    summary = (batch["out"] / "summary.md").read_text()
    assert "- submissions: 9 (1 crashed, 2 not_a_notebook, 5 ok, 1 timeout)" in summary
    assert "- median: 2 of 4 points" in summary
    assert "- most failed question: q2 (not full marks in 5 of 7 graded)" in summary


class _Text(HTMLParser):
    def __init__(self):
        super().__init__()
        self.text = []

    def handle_data(self, data):
        self.text.append(data)


def test_feedback_pages_are_escaped_self_contained_and_say_why(batch):
    pages = sorted(p.stem for p in (batch["out"] / "feedback").glob("*.html"))
    assert pages == sorted(EXPECTED)
    page = (batch["out"] / "feedback" / "half.html").read_text()
    assert "default-src 'none'" in page and "<script" not in page
    assert "Total: <b>2</b> of 4 points" in page
    assert "answer.json must hold {&quot;total&quot;: the sum of NUMBERS}" in page


@pytest.mark.skipif(chromium() is None, reason="Chromium is not installed (Debian: apt-get install -y chromium); "
                                               "the browser rendering of the feedback page is not checked")
def test_feedback_page_renders_in_headless_chromium(batch, tmp_path):
    url = (batch["out"] / "feedback" / "loop.html").resolve().as_uri()
    dom = run_chromium(tmp_path, "--dump-dom", "--virtual-time-budget=2000", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    parsed = _Text()
    parsed.feed(dom.stdout)
    text = " ".join(" ".join(parsed.text).split())
    assert "adding: feedback for loop" in text and "Total: 2 of 4 points" in text
    assert "stopped: it ran past the time limit" in text
    assert "add must work for negative numbers" not in text  # passed tests show "passed", not their failure text


def test_a_rerun_resumes_and_skips_finished_submissions(batch):
    results = batch["out"] / "results"
    (results / "blank.json").unlink()  # as if the batch had been interrupted before blank finished
    stamps = {p.name: p.stat().st_mtime_ns for p in results.glob("*.json")}
    command = [sys.executable, "-m", "course_utils.grading", str(batch["submissions"]), "--tests", str(batch["tests"]),
               "--out", str(batch["out"]), "--cell-timeout", "5", "--total-timeout", "30"]
    run = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "grading adding: 100%" in run.stderr and "9/9" in run.stderr  # the progress bar over submissions
    records = [json.loads((results / f"{s}.json").read_text()) for s in sorted(EXPECTED)]
    assert {p.name: p.stat().st_mtime_ns for p in results.glob("*.json") if p.name in stamps} == stamps
    assert (results / "blank.json").exists()
    assert [r["student"] for r in records] == sorted(EXPECTED)
    assert {s: r["status"] for s, r in grade_rows(batch["out"]).items()} == {s: e[2] for s, e in EXPECTED.items()}


def test_an_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no \\*.ipynb"):
        grading.grade_folder(tmp_path, tmp_path / "t.py", tmp_path / "out")


def test_limits_stop_a_process_that_runs_too_long_or_takes_too_much_memory(tmp_path):
    code, _ = grading.run_limited([sys.executable, "-c", "import time; time.sleep(30)"], tmp_path, {}, 1, 512)
    assert code is None  # killed at the time limit
    hog = "b = bytearray(1024 ** 3)"  # 1 GiB, over the 512 MB limit
    code, output = grading.run_limited([sys.executable, "-c", hog], tmp_path, {}, 20, 512)
    assert code == 1 and "MemoryError" in output
    code, _ = grading.run_limited([sys.executable, "-c", hog], tmp_path, {}, 20, 4096)
    assert code == 0
