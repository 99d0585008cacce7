"""The course autograder: ``python -m course.grade [ex1 ex2 ...] [--solutions DIR] [--timeout S] [-j N] [-v]``.

Loads the exercise files from a folder (default ``course/exercises``; ``--solutions DIR`` or the
environment variable ``TEXTRLHF_COURSE_DIR`` point it elsewhere, e.g. ``course/solutions`` in CI), grades
each exercise in a child process of its own (see :mod:`course.grading`) and prints one score per exercise,
with the reason of every failed check, then the total. Exit status 0 only when every graded exercise has
full marks; this process decides it, whatever the graded files do.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from course.grading import DEFAULT_DIR, ENV_VAR, EXERCISES, TIMEOUTS, ExerciseResult, grade


def _normalise(name: str) -> str:
    key = name.lower().removesuffix(".py")
    key = "ex" + key if key.isdigit() else key
    for ex, (stem, _) in EXERCISES.items():
        if key in (ex, stem):
            return ex
    raise SystemExit(f"unknown exercise {name!r}; valid: {', '.join(EXERCISES)} (or 1-{len(EXERCISES)})")


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def _print_result(r: ExerciseResult) -> None:
    for line in r.output.splitlines():  # what the graded code printed, marked so it can't pass for a score
        print(f"     | {line}")
    mark = "ok  " if r.full_marks else "FAIL"
    print(f"{mark} {r.exercise}  {r.title:<52} {r.points:>2}/{r.total:<2}  ({r.seconds:.1f} s)", flush=True)
    for name, reason in r.failures:
        print(f"       {name}: {reason}", flush=True)


def main(argv=None) -> int:
    defaults = ", ".join(f"{ex} {s:g}" for ex, s in TIMEOUTS.items())
    parser = argparse.ArgumentParser(prog="python -m course.grade", description="Grade the course exercises.")
    parser.add_argument("exercises", nargs="*", help="ex1 ... ex6 (or 1 ... 6); default: all")
    parser.add_argument(
        "--solutions",
        metavar="DIR",
        default=None,
        help=f"folder of exercise files to grade (default ${ENV_VAR} or {DEFAULT_DIR})",
    )
    parser.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_positive(float),
        default=None,
        help=f"time limit of each exercise, imports included (default: {defaults})",
    )
    parser.add_argument(
        "-j", "--jobs", metavar="N", type=_positive(int), default=1, help="grade N exercises at once (default 1)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print tracebacks of failed checks")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    directory = Path(args.solutions or os.environ.get(ENV_VAR) or DEFAULT_DIR).resolve()
    if not directory.is_dir():
        raise SystemExit(f"--solutions {directory}: not a folder")
    exercises = [_normalise(e) for e in args.exercises] or list(EXERCISES)
    print(f"Grading {directory}", flush=True)
    try:
        results = grade(
            exercises, directory, args.verbose, timeout=args.timeout, jobs=args.jobs, on_result=_print_result
        )
    except KeyboardInterrupt:  # Ctrl-C: the children are already killed (see course.grading.grade)
        print("interrupted", file=sys.stderr)
        return 130
    print(f"TOTAL {sum(r.points for r in results)}/{sum(r.total for r in results)}", flush=True)
    return 0 if results and all(r.full_marks for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
