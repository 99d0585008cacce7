"""The course autograder: ``python -m course.grade [ex1 ex2 ...] [--solutions DIR] [-v]``.

Loads the exercise files from a folder (default ``course/exercises``; ``--solutions DIR`` or the
environment variable ``TEXTRLHF_COURSE_DIR`` point it elsewhere, e.g. ``course/solutions`` in CI), runs
the checks of :mod:`course.checks` against them and prints one score per exercise, with the reason of
every failed check. Exit status 0 only when every graded exercise has full marks.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from course.grading import DEFAULT_DIR, ENV_VAR, EXERCISES, run_exercise


def _normalise(name: str) -> str:
    key = name.lower().removesuffix(".py")
    key = "ex" + key if key.isdigit() else key
    for ex, (stem, _) in EXERCISES.items():
        if key in (ex, stem):
            return ex
    raise SystemExit(f"unknown exercise {name!r}; valid: {', '.join(EXERCISES)} (or 1-{len(EXERCISES)})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course.grade", description="Grade the course exercises.")
    parser.add_argument("exercises", nargs="*", help="ex1 ... ex6 (or 1 ... 6); default: all")
    parser.add_argument("--solutions", metavar="DIR", default=None,
                        help=f"folder of exercise files to grade (default ${ENV_VAR} or {DEFAULT_DIR})")
    parser.add_argument("-v", "--verbose", action="store_true", help="print tracebacks of failed checks")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    directory = Path(args.solutions or os.environ.get(ENV_VAR) or DEFAULT_DIR).resolve()
    if not directory.is_dir():
        raise SystemExit(f"--solutions {directory}: not a folder")
    exercises = [_normalise(e) for e in args.exercises] or list(EXERCISES)
    print(f"Grading {directory}")
    got = total = 0
    results = []
    for ex in exercises:
        r = run_exercise(ex, directory, args.verbose)
        results.append(r)
        got, total = got + r.points, total + r.total
        mark = "ok  " if r.full_marks else "FAIL"
        print(f"{mark} {r.exercise}  {r.title:<52} {r.points:>2}/{r.total:<2}  ({r.seconds:.1f} s)", flush=True)
        for name, reason in r.failures:
            print(f"       {name}: {reason}", flush=True)
    print(f"TOTAL {got}/{total}")
    return 0 if all(r.full_marks for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
