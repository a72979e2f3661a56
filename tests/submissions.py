"""Prepared submissions for the grader's tests and benchmark, built from an exercise's master and its student
version: the correct one, half right, the blank student version, and the ones that attack the grader (an infinite
loop, a kernel crash, a file vandal, a test-runner patch, a file that is not a notebook, a folder named like one)."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat

from course_utils.exercises import tag_value

LOOP = "while True:  # a submission that never ends\n    pass"
CRASH = "import os\nos._exit(1)  # the kernel dies"
PATCH = """import builtins, doctest, json, sys, unittest
doctest.DocTestRunner.run = lambda self, *a, **k: doctest.TestResults(0, 0)
unittest.TestCase.run = lambda self, result=None: None
def check(question):
    print("all tests pass")
builtins.AssertionError = type("Never", (Exception,), {})
for module in list(sys.modules):
    if module.startswith("course_utils"):
        sys.modules[module].__dict__.clear()"""


def vandal(submissions: Path, victim: str) -> str:
    """A cell that deletes the files of its own folder, writes outside it and overwrites another student's
    submission in the submissions folder."""
    return f"""import os, pathlib
for name in os.listdir("."):
    if os.path.isfile(name):
        os.remove(name)                       # its own copy of the notebook
pathlib.Path("../escaped.txt").write_text("outside")
pathlib.Path({str(Path(submissions) / f"{victim}.ipynb")!r}).write_text("overwritten by another student")"""


def copy(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    return nbformat.from_dict(json.loads(json.dumps(notebook)))


def question_index(notebook: nbformat.NotebookNode, question: str) -> int:
    """The index of the first answer cell of `question`."""
    return next(i for i, cell in enumerate(notebook.cells) if tag_value(cell, "question") == question)


def with_cell(notebook: nbformat.NotebookNode, source: str, before: str | None = None) -> nbformat.NotebookNode:
    """A copy with a code cell added before the answer cell of question `before` (None: after the header cells)."""
    new = copy(notebook)
    index = question_index(new, before) if before else 2
    new.cells.insert(index, nbformat.v4.new_code_cell(source))
    return new


def with_answers(student: nbformat.NotebookNode, master: nbformat.NotebookNode,
                 questions: list[str]) -> nbformat.NotebookNode:
    """The student version with the master's answer cells of `questions` put back (the others left blank)."""
    answers = {cell.id: cell.source for cell in master.cells if tag_value(cell, "question") in questions}
    new = copy(student)
    for cell in new.cells:
        if cell.id in answers:
            cell.source = answers[cell.id]
    return new


def prepare(master_path: Path, student_path: Path, submissions: Path, half: list[str],
            attack_before: str) -> None:
    """Write the prepared set into `submissions`: correct (the master), half (the answers of `half` only), blank,
    loop and crash (the master with the attack before the answer of `attack_before`), file_vandal (the master with
    a vandal cell first: it overwrites half.ipynb), patcher (the blank version with the test-runner patch),
    not_a_notebook (a script) and a_folder (a folder named a_folder.ipynb)."""
    master = nbformat.read(master_path, as_version=4)
    student = nbformat.read(student_path, as_version=4)
    submissions.mkdir(parents=True, exist_ok=True)
    notebooks = {
        "correct": master,
        "half": with_answers(student, master, half),
        "blank": student,
        "loop": with_cell(master, LOOP, before=attack_before),
        "crash": with_cell(master, CRASH, before=attack_before),
        "file_vandal": with_cell(master, vandal(submissions, "half")),
        "patcher": with_cell(student, PATCH),
    }
    for name, notebook in notebooks.items():
        nbformat.write(notebook, submissions / f"{name}.ipynb")
    (submissions / "a_folder.ipynb").mkdir(exist_ok=True)
    (submissions / "not_a_notebook.ipynb").write_text("print('this is a script, not a notebook')\n")
