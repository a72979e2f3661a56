"""Exercises: the master notebooks in `solutions/`, the student versions in `exercises/` generated from them, and the
self-check a student runs inside a notebook.

How a master is marked (all by cell tags and comment lines, so it stays a plain notebook that runs end to end):
- a cell tagged `question:q1` holds the student's answer to q1; inside it the lines between `# BEGIN SOLUTION` and
  `# END SOLUTION` are the solution, and the block's `# HINT: ...` line is what the student sees instead. A question
  cell must be self-contained (its own imports): the grader runs it on its own.
- a cell tagged `public-tests:q1` defines tests the student sees and runs with `check("q1")`;
- a cell tagged `hidden-tests:q1` and `points:N` defines the grader's tests, each worth N points; they are removed
  from the student version. A hidden test takes one argument, the `grading.Submission` it grades.
Every test is a plain function named `test_<question>_...` that uses assert; its docstring says what a failure means.

    python -m course_utils.exercises     # regenerates exercises/*.ipynb and solutions/hidden/*.py from solutions/

and a test fails when a committed student notebook or hidden-test module has drifted from its master.
"""
from __future__ import annotations

import ast
import re
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .atomic import write_text
from .paths import REPO_ROOT

if TYPE_CHECKING:
    import nbformat

SOLUTIONS_DIR = REPO_ROOT / "solutions"
EXERCISES_DIR = REPO_ROOT / "exercises"
HIDDEN_DIR = SOLUTIONS_DIR / "hidden"

BEGIN, END, HINT = "# BEGIN SOLUTION", "# END SOLUTION", "# HINT:"


def tag_value(cell, key: str) -> str | None:
    """The value of the cell's `key:value` tag (e.g. tag_value(cell, "question") -> "q1"), or None."""
    for tag in cell.get("metadata", {}).get("tags", []):
        if tag.startswith(key + ":"):
            return tag.split(":", 1)[1]
    return None


def strip_solutions(source: str, where: str = "cell") -> str:
    """The source with every solution block replaced by its hint and `...` (at the block's indentation)."""
    out, block = [], None
    for line in source.splitlines():
        text = line.strip()
        if text.startswith(BEGIN):
            if block is not None:
                raise ValueError(f"{where}: '{BEGIN}' inside another solution block")
            block = {"indent": line[: len(line) - len(line.lstrip())], "hint": None}
        elif text.startswith(END):
            if block is None:
                raise ValueError(f"{where}: '{END}' without '{BEGIN}'")
            if not block["hint"]:
                raise ValueError(f"{where}: a solution block has no '{HINT} ...' line")
            out += [f"{block['indent']}{HINT} {block['hint']}", f"{block['indent']}..."]
            block = None
        elif block is not None:
            if text.startswith(HINT):
                block["hint"] = text[len(HINT):].strip()
        else:
            out.append(line)
    if block is not None:
        raise ValueError(f"{where}: '{BEGIN}' without '{END}'")
    return "\n".join(out)


def solution_lines(source: str) -> list[str]:
    """The non-empty lines inside the solution blocks (hints excluded): what must never reach a student."""
    lines, inside = [], False
    for line in source.splitlines():
        text = line.strip()
        if text.startswith(BEGIN):
            inside = True
        elif text.startswith(END):
            inside = False
        elif inside and text and not text.startswith(HINT):
            lines.append(text)
    return lines


def test_names(source: str, question: str, where: str) -> list[str]:
    """The test functions a tests cell defines; each must be named test_<question>_..."""
    names = [node.name for node in ast.parse(source).body if isinstance(node, ast.FunctionDef)
             and node.name.startswith("test_")]
    wrong = [n for n in names if not n.startswith(f"test_{question}_")]
    if wrong or not names:
        raise ValueError(f"{where}: tests of {question} must be functions named test_{question}_...: "
                         f"found {names or 'none'}")
    return names


def student_notebook(master: nbformat.NotebookNode, where: str = "master") -> nbformat.NotebookNode:
    """The student version: solutions replaced by hints, hidden tests removed, outputs and counts stripped."""
    import nbformat  # here, not at the top: a student's kernel imports check() from this module, and fast
    student = nbformat.v4.new_notebook(metadata=master.metadata)
    for i, cell in enumerate(master.cells):
        if tag_value(cell, "hidden-tests"):
            continue
        new = nbformat.from_dict(dict(cell))
        if cell.cell_type == "code":
            new.source = strip_solutions(cell.source, f"{where}, cell {i}")
            new.outputs, new.execution_count = [], None
        elif BEGIN in cell.source:
            new.source = strip_solutions(cell.source, f"{where}, cell {i}")
        student.cells.append(new)
    return student


def hidden_tests(master: nbformat.NotebookNode, name: str) -> str:
    """The grader's test module: every hidden-tests cell, and the points of each test."""
    points, sources = {}, []
    for i, cell in enumerate(master.cells):
        question = tag_value(cell, "hidden-tests")
        if not question:
            continue
        value = tag_value(cell, "points")
        if value is None or not re.fullmatch(r"\d+(\.\d+)?", value):
            raise ValueError(f"{name}, cell {i}: a hidden-tests cell needs a tag points:N (N points per test)")
        for test in test_names(cell.source, question, f"{name}, cell {i}"):
            points[test] = float(value) if "." in value else int(value)
        sources.append(f"# hidden tests of {question}, {value} point(s) each\n{cell.source}")
    if not points:
        raise ValueError(f"{name}: no hidden-tests cell: the grader would have nothing to grade")
    header = (f'"""Hidden tests of the exercise {name}, generated from its master by course_utils.exercises: '
              f'do not edit."""\n\nEXERCISE = {name!r}\nPOINTS = {points!r}\n')
    return header + "\n\n" + "\n\n\n".join(sources) + "\n"


def question_points(hidden_module: str) -> dict[str, float]:
    """{question: its points} from the text of a hidden-test module (the sum of its tests' points in POINTS)."""
    for node in ast.parse(hidden_module).body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["POINTS"]:
            totals: dict[str, float] = {}
            for test, points in ast.literal_eval(node.value).items():
                totals[test.split("_")[1]] = totals.get(test.split("_")[1], 0) + points
            return totals
    raise ValueError("the hidden-test module has no POINTS = {...}")


@dataclass
class Generated:
    student: Path
    hidden: Path
    student_text: str
    hidden_text: str


def generated(master_path: Path, exercises_dir: Path = EXERCISES_DIR, hidden_dir: Path = HIDDEN_DIR) -> Generated:
    """What generation makes of one master (nothing is written)."""
    import nbformat

    master_path = Path(master_path)
    master = nbformat.read(master_path, as_version=4)
    student_path = Path(exercises_dir) / master_path.name
    student = student_notebook(master, str(master_path))
    if student.cells and "colab-badge.svg" in student.cells[0].source and _inside_repo(student_path):
        from .colab import header_cells

        for cell, header in zip(student.cells[:2], header_cells(student_path)):
            cell.source = header.source  # the badge opens the student version, not the master
    return Generated(student_path, Path(hidden_dir) / f"{master_path.stem}.py",
                     nbformat.writes(student) + "\n", hidden_tests(master, master_path.stem))


def _inside_repo(path: Path) -> bool:
    return path.resolve().is_relative_to(REPO_ROOT)


def generate(master_path: Path, exercises_dir: Path = EXERCISES_DIR, hidden_dir: Path = HIDDEN_DIR) -> Generated:
    """Write the student notebook and the hidden-test module of one master (atomically)."""
    made = generated(master_path, exercises_dir, hidden_dir)
    write_text(made.student, made.student_text)
    write_text(made.hidden, made.hidden_text)
    return made


def drifted(master_path: Path, exercises_dir: Path = EXERCISES_DIR, hidden_dir: Path = HIDDEN_DIR) -> list[str]:
    """The generated files that are missing or differ from what the master generates now."""
    made = generated(master_path, exercises_dir, hidden_dir)
    return [str(path) for path, text in ((made.student, made.student_text), (made.hidden, made.hidden_text))
            if not path.exists() or path.read_text(encoding="utf-8") != text]


def masters(folder: Path = SOLUTIONS_DIR) -> list[Path]:
    return sorted(Path(folder).glob("*.ipynb"))


# --- the self-check, run by the student inside the notebook -------------------------------------------------------

@dataclass
class CheckResult:
    question: str
    passed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # test name -> what the failure means, and the error

    def __bool__(self) -> bool:
        return bool(self.passed) and not self.failed


def check(question: str, namespace: dict | None = None) -> CheckResult:
    """Run the public tests of `question` (the functions test_<question>_... defined in the notebook) and print
    which pass and, for each failure, what it means. Offline, in the notebook's own kernel: a self-check, not a grade."""
    namespace = namespace if namespace is not None else sys._getframe(1).f_globals
    tests = {name: f for name, f in namespace.items() if name.startswith(f"test_{question}_") and callable(f)}
    result = CheckResult(question)
    if not tests:
        print(f"No public tests for {question} found: run the cell with its tests first.")
        return result
    for name, test in tests.items():
        meaning = (test.__doc__ or "").strip() or "(this test has no explanation)"
        try:
            test()
        except Exception as error:  # a test that fails or crashes: both say the answer is not there yet
            detail = "".join(traceback.format_exception_only(type(error), error)).strip()
            result.failed[name] = f"{meaning} [{detail}]"
            print(f"FAIL {name}: {meaning}\n     {detail}")
        else:
            result.passed.append(name)
            print(f"pass {name}")
    print(f"{question}: {len(result.passed)} of {len(tests)} public tests pass"
          + ("" if result.failed else " - well done (the grader also runs hidden tests)"))
    return result


def main(argv: list[str] | None = None) -> None:
    paths = [Path(p) for p in (argv if argv is not None else sys.argv[1:])] or masters()
    for path in paths:
        made = generate(path)
        print(f"{path} -> {made.student}, {made.hidden}")
    if not paths:
        print(f"no masters in {SOLUTIONS_DIR}")


if __name__ == "__main__":
    main()
