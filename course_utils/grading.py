"""The batch grader: a folder of submitted notebooks for one exercise -> grades.csv, a feedback page per student and
summary.md, resumable.

    python -m course_utils.grading SUBMISSIONS --exercise NAME [--out FOLDER] [--force]

How one submission is graded, and why it cannot fake its grade:
1. Before anything runs, every submission is copied into the batch's own folder, and the submissions folder is
   snapshotted; each is then executed from its copy in a fresh throwaway folder (its cwd, with HOME and TMPDIR
   inside it), so one submission cannot change another's input.
2. `run-one` executes it in its own process group, under a memory limit (RLIMIT_AS, inherited by the kernel), with
   a per-cell and a total time limit. Its status comes back only as an exit code, never as a file or text the
   student's kernel could forge. A loop, a kernel crash or a file that is not a notebook ends that run only.
3. The hidden tests run afterwards in another fresh process that imports nothing of the student's: they get the
   `Submission` (the folder of files the notebook wrote, and the question cells' code taken from the copy before it
   ran). A test calls a student's function with `Submission.call`, which runs that question's code in yet another
   process and brings back only the JSON value; every comparison happens in the clean process. Patching the test
   runner, `check` or assert helpers in the notebook therefore changes nothing.
4. Writes outside the throwaway folder (the submissions folder, the batch's output folder, the folder above) are
   detected by snapshots and reported in the `notes` column.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .atomic import write_json, write_text
from .paths import REPO_ROOT

HIDDEN_DIR = REPO_ROOT / "solutions" / "hidden"  # = exercises.HIDDEN_DIR; nbformat (2-3 s to import) is imported
# only where a notebook is read, so that the hidden-test process starts fast

CELL_TIMEOUT, TOTAL_TIMEOUT, MEMORY_MB, CALL_TIMEOUT = 60, 600, 4096, 30
PROFILE = "tiny"  # submissions are graded on the bundled model, offline, whatever machine the instructor has
EXIT_STATUS = {0: "ok", 3: "not_a_notebook", 4: "crashed", 5: "timeout"}  # run-one's exit codes
MARK = "\x00course-grading-value:"


# Sets the address-space limit, then becomes the command (an exec, not a preexec_fn: safe in a threaded parent).
_LIMITED = ("import os, resource, sys; limit = int(sys.argv[1]) * 1024 * 1024; "
            "resource.setrlimit(resource.RLIMIT_AS, (limit, limit)); os.execv(sys.argv[2], sys.argv[2:])")


def kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_limited(command: list[str], cwd: Path, env: dict, timeout: float, memory_mb: int) -> tuple[int | None, str]:
    """Run `command` in its own process group under the limits; (exit code or None on timeout, its output)."""
    limited = [sys.executable, "-c", _LIMITED, str(memory_mb), *command]
    process = subprocess.Popen(limited, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)  # its own group, to kill it all
    try:
        output, _ = process.communicate(timeout=timeout)
        code = process.returncode
    except subprocess.TimeoutExpired:
        kill_group(process)
        output, _ = process.communicate()
        code = None
    kill_group(process)  # whatever the kernel left running
    return code, output.decode("utf-8", "replace")


OFFLINE = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


def sandbox_env(root: Path, outputs: Path, profile: str = PROFILE) -> dict:
    """The environment of a submission's processes: HOME, TMPDIR, Jupyter's folders and the checkpoints inside its
    throwaway folder `root`; the course's outputs (paths.output_folder) in `outputs`; the course profile `profile`
    (the tiny one, offline, unless the instructor chose another)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER_", "IPYTHON"))}
    for var, sub in [("HOME", "home"), ("TMPDIR", "tmp"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                     ("JUPYTER_DATA_DIR", "jupyter-data"), ("JUPYTER_CONFIG_DIR", "jupyter-config"),
                     ("IPYTHONDIR", "ipython"), ("MPLCONFIGDIR", "matplotlib"), ("COURSE_CHECKPOINT_DIR", "checkpoints")]:
        (root / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(root / sub)
    env["COURSE_OUTPUT_DIR"], env["COURSE_PROFILE"] = str(outputs), profile
    if profile == PROFILE:
        env.update(dict.fromkeys(OFFLINE, "1"))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # OpenMP threads that spin while waiting slow a busy machine badly
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


# --- run-one: executes one notebook; runs in the limited process ---------------------------------------------------

def run_one(notebook_path: Path, cell_timeout: int) -> int:
    """Execute the notebook in a kernel with cwd = its folder; returns the exit code (see EXIT_STATUS)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    try:
        notebook = nbformat.read(notebook_path, as_version=4)
        nbformat.validate(notebook)
    except Exception:
        return 3
    client = NotebookClient(notebook, timeout=cell_timeout, kernel_name="python3", allow_errors=True,
                            shutdown_kernel="immediate", resources={"metadata": {"path": str(notebook_path.parent)}})
    try:
        client.execute()
    except CellTimeoutError:
        return 5
    except DeadKernelError:
        return 4
    except RuntimeError as error:  # nbclient reports a kernel that died while starting this way
        return 4 if "dead" in str(error).lower() or "died" in str(error).lower() else 6
    return 0


# --- hidden tests: run in a clean process --------------------------------------------------------------------------

@dataclass
class Submission:
    """What a hidden test grades: `work`, the folder the notebook ran in (its files), and `code`, a folder with the
    source of each question cell (q1.py, ...) taken from the submission before it ran."""
    work: Path
    code: Path
    timeout: float = CALL_TIMEOUT
    memory_mb: int = MEMORY_MB

    @property
    def outputs(self) -> Path:
        """Where the notebook's course outputs went (its paths.output_folder(...) folders)."""
        return self.work / "outputs"

    def call(self, question: str, function: str, *args):
        """The JSON value of function(*args), defined by the student's cell of `question`, computed in a fresh
        process (cwd = work). Raises AssertionError when the function is missing, raises, or times out."""
        source = self.code / f"{question}.py"
        if not source.exists():
            raise AssertionError(f"there is no cell for {question} in the submission")
        script = ("import json, sys\nnamespace = {'__name__': '__student__'}\n"
                  "exec(compile(open(sys.argv[1]).read(), sys.argv[1], 'exec'), namespace)\n"
                  "value = namespace[sys.argv[2]](*json.loads(sys.argv[3]))\n"
                  f"sys.stdout.write('\\n' + {MARK!r} + json.dumps(value) + '\\n')\n")
        command = [sys.executable, "-I", "-B", "-c", script, str(source), function, json.dumps(args)]  # -I: isolated
        # from the environment and the cwd; -B: no bytecode written into the installed course_utils
        code, output = run_limited(command, cwd=self.work, env=sandbox_env(self.code.parent / "call", self.outputs),
                                   timeout=self.timeout, memory_mb=self.memory_mb)
        if code is None:
            raise AssertionError(f"{function}{args!r} did not finish within {self.timeout} s")
        values = [line[len(MARK):] for line in output.splitlines() if line.startswith(MARK)]
        if code != 0 or not values:
            raise AssertionError(f"{function}{args!r} failed: {output.strip().splitlines()[-1:] or ['no output']}")
        return json.loads(values[-1])


def run_hidden_tests(tests_path: Path, submission: Submission) -> dict:
    """{test: {"points", "earned", "question", "meaning", "error"}} for every hidden test of the module."""
    namespace = {"__name__": "hidden_tests"}
    exec(compile(Path(tests_path).read_text(encoding="utf-8"), str(tests_path), "exec"), namespace)
    results = {}
    for name, points in namespace["POINTS"].items():
        test = namespace[name]
        error = ""
        try:
            test(submission)
        except Exception as failure:
            error = f"{type(failure).__name__}: {failure}"
        results[name] = {"question": name.split("_")[1], "points": points, "earned": 0 if error else points,
                         "meaning": (test.__doc__ or "").strip(), "error": error}
    return results


# --- the batch ------------------------------------------------------------------------------------------------------

def snapshot(folder: Path, skip: Path | None = None) -> dict[str, tuple[int, int]]:
    """{relative path: (size, mtime)} of every file under `folder` (`skip`'s subtree left out)."""
    files = {}
    if not folder.exists():
        return files
    for path in folder.rglob("*"):
        if skip and path.is_relative_to(skip):
            continue
        try:
            if path.is_file():
                stat = path.stat()
                files[path.relative_to(folder).as_posix()] = (stat.st_size, stat.st_mtime_ns)
        except OSError:
            continue
    return files


def changes(before: dict, after: dict) -> list[str]:
    return sorted([f"new {p}" for p in after.keys() - before.keys()]
                  + [f"deleted {p}" for p in before.keys() - after.keys()]
                  + [f"changed {p}" for p in after.keys() & before.keys() if after[p] != before[p]])


def question_code(notebook_path: Path, folder: Path) -> None:
    """Write each question cell's source (by its question:qN tag) to folder/qN.py; nothing for a non-notebook."""
    import nbformat

    from .exercises import tag_value

    folder.mkdir(parents=True, exist_ok=True)
    try:
        notebook = nbformat.read(notebook_path, as_version=4)
    except Exception:
        return
    sources: dict[str, list[str]] = {}
    for cell in notebook.cells:
        question = tag_value(cell, "question")
        if question and cell.cell_type == "code" and "/" not in question:
            sources.setdefault(question, []).append(cell.source)
    for question, parts in sources.items():
        (folder / f"{question}.py").write_text("\n\n".join(parts), encoding="utf-8")


def grade_one(student: str, original: Path, tests_path: Path, watched: dict[str, Path], limits: dict) -> dict:
    """Grade one submission from its copy `original`; returns its result record."""
    start = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix=f"grading-{student}-"))
    try:
        work = root / "work"
        work.mkdir()
        shutil.copy(original, work / "submission.ipynb")
        question_code(original, root / "code")
        before = {name: snapshot(path, skip=root) for name, path in watched.items()}
        above = snapshot(root, skip=work)
        code, output = run_limited(
            [sys.executable, "-m", "course_utils.grading", "run-one", str(work / "submission.ipynb"),
             "--cell-timeout", str(limits["cell_timeout"])],
            cwd=work, env=sandbox_env(root, work / "outputs", limits["profile"]), timeout=limits["total_timeout"], memory_mb=limits["memory_mb"])
        status = "timeout" if code is None else EXIT_STATUS.get(code, "crashed" if code < 0 else "error")
        notes = [f"{name}: {c}" for name, path in watched.items() for c in changes(before[name], snapshot(path, skip=root))]
        notes += [f"outside its folder: {c}" for c in changes(above, snapshot(root, skip=work))
                  if not c.split(" ", 1)[1].split("/")[0] in ("home", "tmp", "runtime", "jupyter-data",
                                                              "jupyter-config", "ipython", "matplotlib", "code",
                                                              "checkpoints", "checker")]
        if status == "error":
            notes.append(f"the run failed: {output.strip()[-300:]}")
        tests = {} if status == "not_a_notebook" else hidden_tests_in_clean_process(tests_path, work, root, limits)
        if "error" in tests:
            status, notes, tests = "error", notes + [tests["error"]], {}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"student": student, "status": status, "notes": notes, "tests": tests,
            "seconds": round(time.perf_counter() - start, 1)}


def hidden_tests_in_clean_process(tests_path: Path, work: Path, root: Path, limits: dict) -> dict:
    checker = root / "checker"
    checker.mkdir(exist_ok=True)
    code, output = run_limited(
        [sys.executable, "-m", "course_utils.grading", "hidden-tests", str(tests_path), str(work), str(root / "code")],
        cwd=checker, env=sandbox_env(checker, work / "outputs", limits["profile"]), timeout=limits["total_timeout"],
        memory_mb=limits["memory_mb"])
    lines = [line[len(MARK):] for line in output.splitlines() if line.startswith(MARK)]
    if code != 0 or not lines:
        return {"error": f"the hidden tests did not run (exit {code}): {output.strip()[-300:]}"}
    return json.loads(lines[-1])


def question_points(record: dict, questions: list[str]) -> dict[str, float]:
    return {q: sum(t["earned"] for t in record["tests"].values() if t["question"] == q) for q in questions}


def write_outputs(records: list[dict], exercise: str, points: dict, out: Path) -> None:
    """grades.csv, feedback/<student>.html and summary.md from the result records."""
    questions = sorted({name.split("_")[1] for name in points})
    stream = io.StringIO()
    writer = csv.writer(stream)
    writer.writerow(["student", "exercise", *questions, "total", "seconds", "status", "notes"])
    totals = []
    for record in records:
        per = question_points(record, questions)
        totals.append(sum(per.values()))
        writer.writerow([record["student"], exercise, *per.values(), totals[-1], record["seconds"],
                         record["status"], "; ".join(record["notes"])])
        write_text(out / "feedback" / f"{record['student']}.html", feedback_html(record, exercise, points))
    write_text(out / "grades.csv", stream.getvalue())
    write_text(out / "summary.md", summary_markdown(records, exercise, points, questions, totals))


def summary_markdown(records, exercise, points, questions, totals) -> str:
    maximum = sum(points.values())
    statuses = {s: sum(r["status"] == s for r in records) for s in sorted({r["status"] for r in records})}
    graded = [r for r in records if r["tests"]]
    missed = {q: sum(question_points(r, [q])[q] < sum(p for t, p in points.items() if t.split("_")[1] == q)
                     for r in graded) for q in questions}
    worst = max(missed, key=missed.get) if missed else None
    lines = [f"# Grades of {exercise}", "",
             f"- submissions: {len(records)} ({', '.join(f'{n} {s}' for s, n in statuses.items())})",
             f"- median: {statistics.median(totals) if totals else 0:g} of {maximum:g} points",
             f"- full marks: {sum(t == maximum for t in totals)}; zero: {sum(t == 0 for t in totals)}",
             f"- most failed question: {worst} (not full marks in {missed.get(worst, 0)} of {len(graded)} graded)"
             if worst else "- most failed question: none graded", "",
             "| question | points | submissions without full marks |", "|---|---|---|"]
    lines += [f"| {q} | {sum(p for t, p in points.items() if t.split('_')[1] == q)} | {missed[q]} |" for q in questions]
    flagged = [r for r in records if r["status"] != "ok" or r["notes"]]
    if flagged:
        lines += ["", "## To look at", ""] + [f"- {r['student']}: {r['status']}"
                                              + (f" ({'; '.join(r['notes'])})" if r["notes"] else "") for r in flagged]
    return "\n".join(lines) + "\n"


def feedback_html(record: dict, exercise: str, points: dict) -> str:
    from .report import escape, html_page

    rows = "".join(
        f'<tr class="{"pass" if t["earned"] else "fail"}"><td>{escape(t["question"])}</td><td>{escape(name)}</td>'
        f'<td>{t["earned"]} / {t["points"]}</td><td>{escape(t["meaning"]) if t["error"] else "passed"}'
        f'{"<br><small>" + escape(t["error"]) + "</small>" if t["error"] else ""}</td></tr>'
        for name, t in record["tests"].items())
    total = sum(t["earned"] for t in record["tests"].values())
    status_text = {"ok": "ran to the end", "timeout": "stopped: it ran past the time limit",
                   "crashed": "stopped: the kernel died", "not_a_notebook": "not graded: the file is not a notebook",
                   "error": "not graded: the grader could not run it"}.get(record["status"], record["status"])
    body = (f'<p class="total">Total: <b>{total}</b> of {sum(points.values())} points</p>'
            f'<p class="status">Your notebook {escape(status_text)}.</p>'
            + "".join(f'<p class="notice">{escape(n)}</p>' for n in record["notes"])
            + ('<table class="tests"><tr><th>question</th><th>test</th><th>points</th><th>result</th></tr>'
               f"{rows}</table>" if rows else "<p>No test could run.</p>"))
    return html_page(f"{exercise}: feedback for {record['student']}", body)


class NotNotebook(Exception):
    """A submission that is not a file the grader can read as a notebook."""


def grade_folder(submissions: Path, tests_path: Path, out: Path, force: bool = False,
                 cell_timeout: int = CELL_TIMEOUT, total_timeout: int = TOTAL_TIMEOUT,
                 memory_mb: int = MEMORY_MB, profile: str = PROFILE) -> list[dict]:
    """Grade every *.ipynb in `submissions` (see the module docstring); returns the records, writes the outputs."""
    from tqdm.auto import tqdm

    submissions, out, tests_path = Path(submissions).resolve(), Path(out).resolve(), Path(tests_path).resolve()
    paths = sorted(submissions.glob("*.ipynb"))
    if not paths:
        raise FileNotFoundError(f"no *.ipynb in {submissions}")
    namespace: dict = {}
    exec(compile(tests_path.read_text(encoding="utf-8"), str(tests_path), "exec"), namespace)
    exercise, points = namespace["EXERCISE"], namespace["POINTS"]
    copies = out / "submissions"
    copies.mkdir(parents=True, exist_ok=True)
    unreadable = {}
    for path in paths:  # every copy is made before any submission runs
        try:
            if force or not (copies / path.name).exists():
                shutil.copy(path, copies / path.name)
        except OSError as error:  # a folder named x.ipynb, a file that cannot be read
            unreadable[path.stem] = f"could not be copied: {error}"
    limits = {"cell_timeout": cell_timeout, "total_timeout": total_timeout, "memory_mb": memory_mb,
              "profile": profile}
    records = []
    for path in tqdm(paths, desc=f"grading {exercise}", unit="submission"):
        result = out / "results" / f"{path.stem}.json"
        if result.exists() and not force:
            records.append(json.loads(result.read_text(encoding="utf-8")))
            continue
        watched = {"submissions folder": submissions, "grading folder": out}
        try:
            if path.stem in unreadable:
                raise NotNotebook(unreadable[path.stem])
            record = grade_one(path.stem, copies / path.name, tests_path, watched, limits)
        except Exception as error:  # one bad submission never stops the batch
            status = "not_a_notebook" if isinstance(error, NotNotebook) else "error"
            record = {"student": path.stem, "status": status, "notes": [f"{type(error).__name__}: {error}"],
                      "tests": {}, "seconds": 0.0}
        write_json(result, record)
        records.append(record)
    write_outputs(records, exercise, points, out)
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_utils.grading", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command")
    one = commands.add_parser("run-one")
    one.add_argument("notebook", type=Path)
    one.add_argument("--cell-timeout", type=int, default=CELL_TIMEOUT)
    hidden = commands.add_parser("hidden-tests")
    hidden.add_argument("tests", type=Path)
    hidden.add_argument("work", type=Path)
    hidden.add_argument("code", type=Path)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run-one"] or argv[:1] == ["hidden-tests"]:
        args = parser.parse_args(argv)
        if args.command == "run-one":
            return run_one(args.notebook.resolve(), args.cell_timeout)
        results = run_hidden_tests(args.tests, Submission(args.work, args.code))
        sys.stdout.write("\n" + MARK + json.dumps(results) + "\n")
        return 0
    batch = argparse.ArgumentParser(prog="python -m course_utils.grading", description=__doc__.split("\n\n")[0])
    batch.add_argument("submissions", type=Path, help="the folder of submitted notebooks (*.ipynb)")
    batch.add_argument("--exercise", help=f"the exercise's name: its hidden tests are {HIDDEN_DIR}/NAME.py")
    batch.add_argument("--tests", type=Path, help="the hidden-test module (instead of --exercise)")
    batch.add_argument("--out", type=Path, help="where grades.csv, feedback/ and summary.md go "
                                                "(default: SUBMISSIONS/../graded-NAME)")
    batch.add_argument("--force", action="store_true", help="grade again the submissions a previous run finished")
    batch.add_argument("--cell-timeout", type=int, default=CELL_TIMEOUT)
    batch.add_argument("--total-timeout", type=int, default=TOTAL_TIMEOUT)
    batch.add_argument("--memory-mb", type=int, default=MEMORY_MB)
    batch.add_argument("--profile", default=PROFILE, help="the course profile submissions run with (default: the "
                                                          "bundled tiny model, offline)")
    args = batch.parse_args(argv)
    if not args.tests and not args.exercise:
        batch.error("give --exercise NAME or --tests FILE")
    tests = args.tests or HIDDEN_DIR / f"{args.exercise}.py"
    out = args.out or args.submissions.resolve().parent / f"graded-{Path(tests).stem}"
    grade_folder(args.submissions, tests, out, args.force, args.cell_timeout, args.total_timeout, args.memory_mb,
                 args.profile)
    print(f"grades: {out / 'grades.csv'}\nsummary: {out / 'summary.md'}\nfeedback: {out / 'feedback'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
