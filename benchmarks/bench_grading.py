"""Benchmark of the batch grader: seconds per submission for every exercise, on prepared submissions.

    python benchmarks/bench_grading.py [--exercises exercise_1_first_lora ...] [--attacks]

For each exercise (each master in solutions/), three submissions are graded with `course_utils.grading.grade_folder`
exactly as an instructor would grade them (tiny profile, offline, the grader's default limits): the master (full
marks expected), the half-right one (q1's answer only) and the blank student version. With --attacks the whole
prepared set of tests/submissions.py is graded (a loop, a crash, a file vandal, a test-runner patch, ...), which adds
the time a loop takes to reach the per-cell limit. Each submission's seconds, status and points go to
benchmarks/results/grading.json with the CPU, its flags, the library versions and the commit; a markdown table is
printed. On a shared machine time is noisy: the load average is recorded with each exercise.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from course_utils import exercises, grading  # noqa: E402
from course_utils.manifest import write_results  # noqa: E402
from tests.submissions import prepare  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results" / "grading.json"
EVERYDAY = ("correct", "half", "blank")


def grade_exercise(master: Path, attacks: bool, folder: Path) -> dict:
    """Grade the prepared submissions of one exercise; its record."""
    made = exercises.generated(master)
    student = folder / "student.ipynb"
    student.write_text(made.student_text, encoding="utf-8")
    questions = sorted(exercises.question_points(made.hidden_text), key=lambda q: int(q[1:]))
    submissions = folder / "submissions"
    prepare(master, student, submissions, half=["q1"], attack_before=questions[-1])
    if not attacks:
        for path in submissions.iterdir():
            if path.stem in EVERYDAY:
                continue
            if path.is_dir():
                path.rmdir()
            else:
                path.unlink()
    load = os.getloadavg()[0]
    records = grading.grade_folder(submissions, made.hidden, folder / "graded")
    maximum = sum(exercises.question_points(made.hidden_text).values())
    rows = [{"student": r["student"], "status": r["status"], "seconds": r["seconds"],
             "points": sum(t["earned"] for t in r["tests"].values()), "of": maximum} for r in records]
    return {"exercise": master.stem, "load_average_at_start": round(load, 2), "submissions": rows,
            "median_seconds": statistics.median(r["seconds"] for r in rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exercises", nargs="+", default=[m.stem for m in exercises.masters()])
    parser.add_argument("--attacks", action="store_true", help="grade the whole prepared set, attacks included")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    runs = []
    for name in args.exercises:
        with tempfile.TemporaryDirectory(prefix=f"bench-grading-{name}-") as folder:
            runs.append(grade_exercise(exercises.SOLUTIONS_DIR / f"{name}.ipynb", args.attacks, Path(folder)))
        write_results(args.output, {"profile": grading.PROFILE, "attacks": args.attacks, "runs": runs})
    print("| exercise | submission | status | points | seconds |\n|---|---|---|---|---|")
    for run in runs:
        for row in run["submissions"]:
            print(f"| {run['exercise']} | {row['student']} | {row['status']} | {row['points']:g} / {row['of']:g} "
                  f"| {row['seconds']} |")
    print("\nmedian seconds per submission: " + ", ".join(f"{r['exercise']} {r['median_seconds']}" for r in runs))
    print(f"written: {args.output}")


if __name__ == "__main__":
    main()
