"""The autograder's machinery (the command line is :mod:`course.grade`).

Loads the exercise files from a folder (default ``course/exercises``; ``--solutions DIR`` or the
environment variable ``TEXTRLHF_COURSE_DIR`` point it elsewhere, e.g. ``course/solutions`` in CI), runs
the checks of :mod:`course.checks` against them and reports one score per exercise, with the reason of
every failed check. The folder is imported as a package of its own, so exercise files may import each
other relatively (``from .ex5_rloo import train``).

Why a student's file cannot fool it
-----------------------------------
A check (see :func:`check`) has three parts: a *probe* that calls the student's functions on seeded inputs
and returns their raw outputs, never a verdict; the *expected* outputs (the same probe run on the project's
own implementation, or closed forms); and a *judge* that compares the two. Grading one exercise:

1. The grader (this process, which never imports a student's file) computes the expected outputs of every
   check of every exercise it is asked to grade, before any student code runs.
2. A fresh child process (:mod:`course._child`, in a session of its own, stdin closed; forked from a
   server that pre-imported torch and never runs student code, see :mod:`course._spawn`) imports the
   student's file and runs only the probes. It writes their outputs to a file as JSON, with arrays as raw
   bytes of a whitelisted dtype (:mod:`course._wire`); never pickle. The grader kills the child's whole
   process group after the exercise's time limit (:data:`TIMEOUTS`, or ``timeout=``).
3. The grader reads that report back strictly and judges every check itself.

So whatever the file does inside its own process (patch ``course.checks.assert_close``,
``CheckFailed``, ``CHECKS`` or ``agents.losses.gae``; call ``sys.exit`` or ``os._exit``; raise
``KeyboardInterrupt``; loop forever) only changes the outputs it reports, which returning them would do
anyway. A child that hangs, dies or reports nothing costs its exercise (every check fails with the
reason); the grader goes on with the next one, and the caller prints the total and picks the exit status.
This is not a sandbox: the child runs with the user's rights (it can read and write the user's files).
"""

from __future__ import annotations

import hashlib
import importlib
import math
import os
import sys
import types
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from course.judging import CheckFailed, assert_close, compare_all, func, require

__all__ = [
    "CHECKS",
    "DEFAULT_DIR",
    "ENV_VAR",
    "EXERCISES",
    "SOLUTIONS_DIR",
    "TIMEOUTS",
    "Check",
    "CheckFailed",
    "ExerciseResult",
    "assert_close",
    "check",
    "expectations",
    "func",
    "grade",
    "load_exercise",
    "require",
    "run_exercise",
]

COURSE_DIR = Path(__file__).resolve().parent
DEFAULT_DIR = COURSE_DIR / "exercises"
SOLUTIONS_DIR = COURSE_DIR / "solutions"
ENV_VAR = "TEXTRLHF_COURSE_DIR"

EXERCISES = {
    "ex1": ("ex1_kl", "KL estimators and the KL-penalised reward"),
    "ex2": ("ex2_gae", "returns and GAE"),
    "ex3": ("ex3_ppo", "PPO clipped surrogate and value losses"),
    "ex4": ("ex4_reward_model", "Bradley-Terry loss and reward-model accuracy"),
    "ex5": ("ex5_rloo", "a hand-written RLOO agent on TextRLHF-v0"),
    "ex6": ("ex6_compare", "open: compare algorithms (curves.csv + curves.png)"),
}

# Seconds the grading child of an exercise may take, imports included: 10x or more what the reference
# solution needs on a busy 2-core CPU (ex1-ex4: 1-10 s, ex5: ~60 s, ex6: 30-90 s), so slow laptops pass.
TIMEOUTS = {"ex1": 120.0, "ex2": 120.0, "ex3": 120.0, "ex4": 180.0, "ex5": 600.0, "ex6": 600.0}


@dataclass
class Check:
    """One graded property of an exercise; see :func:`check` for what ``probe``, ``expect`` and ``judge`` do."""

    exercise: str
    name: str  # e.g. "ex2.gae[lambda=1: advantage = return - value]"
    probe: Callable[[Any, dict], Any]
    points: int = 1
    expect: Callable[[], Any] | None = None
    judge: Callable[[Any, Any], None] = compare_all


@dataclass
class ExerciseResult:
    """The grade of one exercise: ``points`` of ``total``, with ``(check name, reason)`` for every failure."""

    exercise: str
    title: str
    points: int = 0
    total: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    output: str = field(default="", repr=False)  # what the grading child printed (the student's prints too)

    @property
    def full_marks(self) -> bool:
        return self.points == self.total and self.total > 0


CHECKS: dict[str, list[Check]] = {ex: [] for ex in EXERCISES}


def check(
    exercise: str,
    name: str,
    points: int = 1,
    *,
    reference: Callable[[], Any] | None = None,
    expect: Callable[[], Any] | None = None,
    judge: Callable[[Any, Any], None] | None = None,
):
    """Register ``probe(module, ctx)`` as a check of ``exercise`` worth ``points``.

    The probe runs in the student's process: it calls the student's functions (``func(module, name)``) on
    seeded inputs and returns their raw outputs (tensors, numbers, strings, dicts and lists of them). It may
    fail early with a readable reason (:class:`CheckFailed`, e.g. a missing function), never pass: only the
    grader passes a check.

    Args:
        reference: returns a stand-in for the student's module made of the project's implementation
            (a module or a ``SimpleNamespace``); the expected outputs are the probe's outputs on it.
        expect: returns the expected outputs directly (closed forms, held-out data); not with ``reference``.
        judge: ``judge(got, expected)`` raises :class:`CheckFailed` unless the student's outputs ``got`` are
            right; default :func:`course.judging.compare_all` (every entry of the dict ``expected`` close to
            the same entry of ``got``). Runs in the grader.
    """
    if reference is not None and expect is not None:
        raise ValueError(f"check {exercise}.{name}: give reference= or expect=, not both")

    def register(probe):
        expected = expect
        if reference is not None:

            def expected():
                return probe(reference(), {})

        CHECKS[exercise].append(Check(exercise, f"{exercise}.{name}", probe, points, expected, judge or compare_all))
        return probe

    return register


def load_exercise(directory: str | Path, exercise: str) -> types.ModuleType:
    """Import ``<directory>/<file>.py`` of ``exercise`` as a submodule of a package made for the folder.

    Only the grading child calls this: importing a student's file runs it.
    """
    directory = Path(directory).resolve()
    pkg = "_course_" + hashlib.sha1(str(directory).encode()).hexdigest()[:10]
    if pkg not in sys.modules:
        module = types.ModuleType(pkg)
        module.__path__ = [str(directory)]
        sys.modules[pkg] = module
    stem = EXERCISES[exercise][0]
    if not (directory / f"{stem}.py").exists():
        raise FileNotFoundError(f"{directory / (stem + '.py')} does not exist")
    return importlib.import_module(f"{pkg}.{stem}")


# ---------------------------------------------------------------------------------------- expected outputs
@dataclass(frozen=True)
class Expected:
    """The expected outputs of one check, or why the grader could not compute them."""

    value: Any = None
    error: str | None = None


_EXPECTED: dict[str, dict[str, Expected]] = {}  # per process: the grader's own, never a child's


def expectations(exercise: str) -> dict[str, Expected]:
    """The expected outputs of every check of ``exercise`` (computed once per process, by the grader's code)."""
    _validate(exercise)
    if exercise not in _EXPECTED:
        import course.checks  # noqa: F401  (registers the checks)

        out = {}
        for c in CHECKS[exercise]:
            torch.manual_seed(0)  # as the child does before each probe
            try:
                out[c.name] = Expected(c.expect() if c.expect is not None else None)
            except Exception as exc:  # a broken reference must cost marks with a reason, not stop the grading
                out[c.name] = Expected(
                    error=f"the grader could not compute the expected values "
                    f"({type(exc).__name__}: {exc}); this is a bug in the grader or the "
                    f"project, not in your file"
                )
        _EXPECTED[exercise] = out
    return _EXPECTED[exercise]


# ---------------------------------------------------------------------------------------- grading
def _validate(exercise: str) -> None:
    if exercise not in EXERCISES:
        raise ValueError(f"unknown exercise {exercise!r}; valid: {', '.join(EXERCISES)}")


def _time_limit(exercise: str, timeout: float | None) -> float:
    seconds = TIMEOUTS[exercise] if timeout is None else float(timeout)
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return seconds


def run_exercise(
    exercise: str, directory: str | Path, verbose: bool = False, timeout: float | None = None
) -> ExerciseResult:
    """Grade one exercise in a child process, killed after ``timeout`` seconds (default :data:`TIMEOUTS`).

    Never raises for anything the student's file does: a file that hangs, exits, crashes or reports nothing
    fails every check of the exercise with the reason. ``verbose`` makes the child print the traceback of
    every failed probe into :attr:`ExerciseResult.output`.
    """
    from course._spawn import run_child

    seconds = _time_limit(exercise, timeout)
    expected = expectations(exercise)  # before the child imports anything of the student's
    checks = CHECKS[exercise]
    result = ExerciseResult(exercise, EXERCISES[exercise][1], total=sum(c.points for c in checks))
    run = run_child(exercise, Path(directory).resolve(), seconds, verbose)
    result.seconds, result.output = run.seconds, run.output
    for c in checks:
        reason = expected[c.name].error or run.error or _verdict(c, run.checks.get(c.name), expected[c.name].value)
        if reason is None:
            result.points += c.points
        else:
            result.failures.append((c.name, reason))
    return result


def _verdict(c: Check, reported: Any, expected: Any) -> str | None:
    """``None`` if the child's report of check ``c`` passes the judge, else the reason it fails."""
    from course._wire import WireError, decode

    if type(reported) is not dict or type(reported.get("ok")) is not bool:
        return "the grading process reported no result for this check"
    if not reported["ok"]:
        reason = reported.get("reason")
        return reason[:2000] if type(reason) is str and reason else "failed (no reason reported)"
    try:
        got = decode(reported.get("data"))
    except WireError as exc:
        return f"the outputs could not be read back: {exc}"
    try:
        c.judge(got, expected)
    except CheckFailed as exc:
        return str(exc)
    except Exception as exc:  # a judge tripping over outputs of an unexpected form: still a failure
        return f"outputs of an unexpected form ({type(exc).__name__}: {exc})"
    return None


def grade(
    exercises: Iterable[str] | None = None,
    directory: str | Path | None = None,
    verbose: bool = False,
    timeout: float | None = None,
    jobs: int = 1,
    on_result: Callable[[ExerciseResult], None] | None = None,
) -> list[ExerciseResult]:
    """Grade ``exercises`` (default all) in ``directory`` (default: ``$TEXTRLHF_COURSE_DIR`` or ``course/exercises``).

    The children are :mod:`multiprocessing` processes, which import the caller's ``__main__`` module: in a
    script, call this under ``if __name__ == "__main__":`` (``python -m course.grade`` does).

    Args:
        timeout: seconds each exercise's child may take (default: the exercise's entry of :data:`TIMEOUTS`).
        jobs: how many exercises to grade at once (each in its own child process).
        on_result: called with each result, in the order of ``exercises``, as soon as it is known.
    """
    from course._spawn import kill_all, warm_up

    exercises = list(exercises or EXERCISES)
    for ex in exercises:  # fail fast on bad arguments, before minutes of grading
        _validate(ex)
        _time_limit(ex, timeout)
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    directory = directory or os.environ.get(ENV_VAR) or DEFAULT_DIR
    warm_up()
    for ex in exercises:  # every reference value before any student code runs (a file could edit the project)
        expectations(ex)
    pool = ThreadPoolExecutor(jobs, thread_name_prefix="course-grade")
    results = []
    try:
        for result in pool.map(lambda ex: run_exercise(ex, directory, verbose, timeout), exercises):
            results.append(result)
            if on_result is not None:
                on_result(result)
    except BaseException:  # e.g. Ctrl-C: don't leave children running until their time limits
        kill_all()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results
