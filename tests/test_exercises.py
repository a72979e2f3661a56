"""Authoring: a marked master -> the student notebook (no solution, no hidden test) and the hidden-test module;
drift of committed student versions; the self-check a student runs. The master is a tiny synthetic exercise built
here (q1: a function that adds; q2: a file answer.json with a sum), not a course exercise."""
import re

import nbformat
import pytest

from course_utils import exercises
from course_utils.execution import execute_notebook

Q1_SOLUTION = '''def add(a, b):
    """The sum of a and b."""
    # BEGIN SOLUTION
    # HINT: one operator does it
    return a + b
    # END SOLUTION'''
Q1_PUBLIC = '''def test_q1_small():
    """add(2, 3) should be 5: the sum of two small numbers."""
    assert add(2, 3) == 5'''
Q1_HIDDEN = '''def test_q1_large(submission):
    """add must work for large numbers too."""
    assert submission.call("q1", "add", 10**12, 1) == 10**12 + 1


def test_q1_negative(submission):
    """add must work for negative numbers."""
    assert submission.call("q1", "add", -4, -6) == -10'''
Q2_SOLUTION = '''import json
NUMBERS = [3, 5, 8, 13]
# BEGIN SOLUTION
# HINT: json.dump a dict {"total": ...} into the file answer.json
with open("answer.json", "w") as stream:
    json.dump({"total": sum(NUMBERS)}, stream)
# END SOLUTION'''
Q2_PUBLIC = '''import os


def test_q2_file_written():
    """answer.json must exist in the notebook's folder: write it with json.dump."""
    assert os.path.exists("answer.json")'''
Q2_HIDDEN = '''import json


def test_q2_total(submission):
    """answer.json must hold {"total": the sum of NUMBERS}; the grader recomputes the sum itself."""
    data = json.loads((submission.work / "answer.json").read_text())
    assert data["total"] == sum([3, 5, 8, 13])'''


def code(source: str, *tags: str, cell_id: str):
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": list(tags)} if tags else {})
    cell.id = cell_id
    return cell


def markdown(source: str, cell_id: str):
    cell = nbformat.v4.new_markdown_cell(source)
    cell.id = cell_id
    return cell


def make_master(folder) -> "Path":  # noqa: F821
    """The synthetic master, written to folder/adding.ipynb (4 points: 2 for q1, 2 for q2)."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        markdown("# Adding numbers", "title"),
        code("from course_utils.exercises import check", cell_id="setup"),
        markdown("**q1** Write `add(a, b)`.", "q1-text"),
        code(Q1_SOLUTION, "question:q1", cell_id="q1"),
        code(Q1_PUBLIC, "public-tests:q1", cell_id="q1-public"),
        code('check("q1")', cell_id="q1-check"),
        code(Q1_HIDDEN, "hidden-tests:q1", "points:1", cell_id="q1-hidden"),
        markdown("**q2** Write the sum of `NUMBERS` to `answer.json` as `{\"total\": ...}`.", "q2-text"),
        code(Q2_SOLUTION, "question:q2", cell_id="q2"),
        code(Q2_PUBLIC, "public-tests:q2", cell_id="q2-public"),
        code('check("q2")', cell_id="q2-check"),
        code(Q2_HIDDEN, "hidden-tests:q2", "points:2", cell_id="q2-hidden"),
    ]
    path = folder / "adding.ipynb"
    nbformat.write(nb, path)
    return path


def test_student_version_has_no_solution_and_no_hidden_test(tmp_path):
    master = make_master(tmp_path)
    made = exercises.generate(master, tmp_path / "exercises", tmp_path / "hidden")
    student = made.student.read_text()
    master_source = "\n".join(c.source for c in nbformat.read(master, as_version=4).cells)
    secrets = exercises.solution_lines(master_source)
    assert secrets == ["return a + b", 'with open("answer.json", "w") as stream:',
                       'json.dump({"total": sum(NUMBERS)}, stream)']
    assert not [line for line in secrets if line in student]
    for hidden in ("test_q1_large", "test_q1_negative", "test_q2_total", "submission.call", "hidden-tests"):
        assert hidden not in student
    assert "# HINT: one operator does it" in student and "test_q1_small" in student
    nb = nbformat.reads(student, as_version=4)
    nbformat.validate(nb)
    assert [c.id for c in nb.cells] == ["title", "setup", "q1-text", "q1", "q1-public", "q1-check", "q2-text", "q2",
                                        "q2-public", "q2-check"]
    assert all(c.outputs == [] and c.execution_count is None for c in nb.cells if c.cell_type == "code")
    hidden = made.hidden.read_text()
    assert "POINTS = {'test_q1_large': 1, 'test_q1_negative': 1, 'test_q2_total': 2}" in hidden
    assert exercises.question_points(hidden) == {"q1": 2, "q2": 2}
    assert "test_q1_small" not in hidden


def test_generation_is_stable_and_drift_is_detected(tmp_path):
    master = make_master(tmp_path)
    made = exercises.generate(master, tmp_path / "exercises", tmp_path / "hidden")
    first = made.student.read_text()
    assert exercises.drifted(master, tmp_path / "exercises", tmp_path / "hidden") == []
    assert exercises.generate(master, tmp_path / "exercises", tmp_path / "hidden").student_text == first
    made.student.write_text(first.replace("one operator does it", "a different hint"))
    assert exercises.drifted(master, tmp_path / "exercises", tmp_path / "hidden") == [str(made.student)]
    made.hidden.unlink()
    assert str(made.hidden) in exercises.drifted(master, tmp_path / "exercises", tmp_path / "hidden")


def test_committed_student_versions_match_their_masters():
    """Every master in solutions/ has its generated student notebook and hidden tests committed, unchanged.
    (No master is committed yet: then there is nothing to compare, and the test above checks the detection.)"""
    for master in exercises.masters():
        assert exercises.drifted(master) == [], f"run: python -m course_utils.exercises {master}"


@pytest.mark.parametrize("master", exercises.masters(), ids=lambda p: p.stem)
def test_no_solution_and_no_hidden_test_reaches_a_committed_student_notebook(master):
    """What a student downloads holds none of the master's solution lines (those that appear nowhere else in the
    master), none of its hidden tests, and a hint and public tests for every question."""
    notebook = nbformat.read(master, as_version=4)
    student = nbformat.read(exercises.EXERCISES_DIR / master.name, as_version=4)
    student_lines = {line.strip() for cell in student.cells for line in cell.source.splitlines()}
    hidden = [c for c in notebook.cells if exercises.tag_value(c, "hidden-tests")]
    shown = [c for c in notebook.cells if c not in hidden]
    solution = exercises.solution_lines("\n".join(c.source for c in shown))
    elsewhere = {line.strip() for c in shown for line in exercises.strip_solutions(c.source).splitlines()}
    secrets = [line for line in solution if line not in elsewhere]
    assert secrets, "a master without solution blocks"
    assert [line for line in secrets if line in student_lines] == []
    student_text = "\n".join(cell.source for cell in student.cells)
    student_tests = set(re.findall(r"^def (test_\w+)\(", student_text, re.MULTILINE))
    for cell in hidden:
        question = exercises.tag_value(cell, "hidden-tests")
        assert not set(exercises.test_names(cell.source, question, master.name)) & student_tests
        assert any(n.startswith(f"test_{question}_") for n in student_tests), f"{question} has no public tests"
    assert student_text.count(exercises.HINT) >= len({exercises.tag_value(c, "hidden-tests") for c in hidden})


QUESTION_HEADING = re.compile(r"^### (q\d+) · (Guided|Open|Stretch)\b.*\((\d+) points?\)\s*$", re.MULTILINE)


def stated_points(master: nbformat.NotebookNode) -> dict[str, tuple[str, int]]:
    """{question: (tier, points)} as the master's markdown headings state them."""
    return {q: (tier, int(points)) for cell in master.cells if cell.cell_type == "markdown"
            for q, tier, points in QUESTION_HEADING.findall(cell.source)}


@pytest.mark.parametrize("master", exercises.masters(), ids=lambda p: p.stem)
def test_every_exercise_has_three_tiers_and_states_the_points_its_hidden_tests_award(master):
    """A student reads "(N points)" in a question's heading: N must be what the grader awards, and every exercise
    has a guided, an open and a stretch task."""
    notebook = nbformat.read(master, as_version=4)
    graded = exercises.question_points(exercises.hidden_tests(notebook, master.stem))
    stated = stated_points(notebook)
    assert {q: p for q, (_, p) in stated.items()} == graded
    assert {tier for tier, _ in stated.values()} == {"Guided", "Open", "Stretch"}
    asked = {exercises.tag_value(c, "question") for c in notebook.cells} - {None}
    assert asked == set(graded), "every question has an answer cell and hidden tests, and no other"


def test_the_heading_parser_reads_tiers_and_points():
    nb = nbformat.v4.new_notebook()
    nb.cells = [markdown("### q1 · Guided: a LoRA config (3 points)\n\ntext", "a"),
                markdown("### q2 · Stretch: more (1 point)", "b"), markdown("### Not a question (2 points)", "c")]
    assert stated_points(nb) == {"q1": ("Guided", 3), "q2": ("Stretch", 1)}


@pytest.mark.parametrize("broken, message", [
    ("# BEGIN SOLUTION\nx = 1\n# END SOLUTION", "no '# HINT: ...' line"),
    ("# BEGIN SOLUTION\n# HINT: h\nx = 1", "without '# END SOLUTION'"),
    ("x = 1\n# END SOLUTION", "without '# BEGIN SOLUTION'"),
])
def test_a_broken_solution_block_is_an_error(broken, message):
    with pytest.raises(ValueError, match=message):
        exercises.strip_solutions(broken)


def test_hidden_tests_need_points_and_question_names(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [code("def test_q1_a(submission):\n    pass", "hidden-tests:q1", cell_id="a")]
    with pytest.raises(ValueError, match="points:N"):
        exercises.hidden_tests(nb, "x")
    nb.cells = [code("def test_other(submission):\n    pass", "hidden-tests:q1", "points:1", cell_id="a")]
    with pytest.raises(ValueError, match="test_q1_"):
        exercises.hidden_tests(nb, "x")


def test_check_reports_each_public_test_and_what_a_failure_means(capsys):
    namespace = {}
    exec(Q1_PUBLIC, namespace)
    namespace["add"] = lambda a, b: a - b
    result = exercises.check("q1", namespace)
    out = capsys.readouterr().out
    assert not result and list(result.failed) == ["test_q1_small"]
    assert "FAIL test_q1_small: add(2, 3) should be 5: the sum of two small numbers." in out
    assert "q1: 0 of 1 public tests pass" in out
    namespace["add"] = lambda a, b: a + b
    assert exercises.check("q1", namespace)
    assert "pass test_q1_small" in capsys.readouterr().out


def test_check_runs_inside_the_student_notebook(tmp_path):
    """The generated student version runs end to end in a kernel; its check cells report the failing public tests
    (the stubs are not answers yet)."""
    made = exercises.generate(make_master(tmp_path), tmp_path / "exercises", tmp_path / "hidden")
    executed = execute_notebook(made.student, timeout=60).notebook
    printed = {c.id: "".join(o.get("text", "") for o in c.outputs) for c in executed.cells if c.cell_type == "code"}
    assert "FAIL test_q1_small: add(2, 3) should be 5" in printed["q1-check"]
    assert "FAIL test_q2_file_written: answer.json must exist" in printed["q2-check"]
