"""The autograder's machinery (the command line is :mod:`course.grade`).

Loads the exercise files from a folder (default ``course/exercises``; ``--solutions DIR`` or the
environment variable ``TEXTRLHF_COURSE_DIR`` point it elsewhere, e.g. ``course/solutions`` in CI), runs
the checks of :mod:`course.checks` against them and prints one score per exercise, with the reason of
every failed check. Exit status 0 only when every graded exercise has full marks.

The folder is imported as a package of its own, so exercise files may import each other relatively
(``from .ex5_rloo import train``).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
import time
import traceback
import types
from dataclasses import dataclass, field
from pathlib import Path

import torch

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


class CheckFailed(AssertionError):
    """A check's readable reason for failing."""


@dataclass
class Check:
    exercise: str
    name: str  # e.g. "ex2.gae[lambda=1]"
    fn: object
    points: int = 1


@dataclass
class ExerciseResult:
    exercise: str
    title: str
    points: int = 0
    total: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def full_marks(self) -> bool:
        return self.points == self.total and self.total > 0


CHECKS: dict[str, list[Check]] = {ex: [] for ex in EXERCISES}


def check(exercise: str, name: str, points: int = 1):
    """Register ``fn(module, ctx)`` as a check of ``exercise``; it fails by raising :class:`CheckFailed`."""

    def register(fn):
        CHECKS[exercise].append(Check(exercise, f"{exercise}.{name}", fn, points))
        return fn

    return register


# ---------------------------------------------------------------------------------------- comparisons
def _index(flat: int, shape) -> list[int]:
    out = []
    for size in reversed(shape):
        out.append(flat % size)
        flat //= size
    return out[::-1]


def assert_close(got, expected, what: str, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """Fail with "<what> differ from the reference at [i, j]: got x, expected y" (worst entry first)."""
    if got is None:
        raise CheckFailed(f"{what}: got None (did you forget to return?)")
    try:
        got_t = torch.as_tensor(got).detach().double()
    except Exception:
        raise CheckFailed(f"{what}: expected a tensor, got {type(got).__name__}") from None
    exp_t = torch.as_tensor(expected).detach().double()
    if tuple(got_t.shape) != tuple(exp_t.shape):
        raise CheckFailed(f"{what}: shape {tuple(got_t.shape)}, expected {tuple(exp_t.shape)}")
    diff = (got_t - exp_t).abs()
    bad = ~(diff <= atol + rtol * exp_t.abs())  # nan counts as bad
    if bool(bad.any()):
        worst = torch.where(bad, torch.nan_to_num(diff, nan=float("inf")), torch.tensor(-1.0, dtype=torch.float64))
        flat = int(worst.reshape(-1).argmax())
        idx = _index(flat, got_t.shape)
        g, e = got_t.reshape(-1)[flat].item(), exp_t.reshape(-1)[flat].item()
        where = f" at {idx}" if idx else ""
        raise CheckFailed(f"{what} differ from the reference{where}: got {g:.6g}, expected {e:.6g} "
                          f"({int(bad.sum())} of {bad.numel()} entries off)")


def require(condition: bool, message: str) -> None:
    """Fail with ``message`` unless ``condition``."""
    if not condition:
        raise CheckFailed(message)


def func(module, name: str):
    """The student's function ``name`` (a readable failure if it is missing)."""
    fn = getattr(module, name, None)
    if not callable(fn):
        raise CheckFailed(f"no function {name!r} in {getattr(module, '__file__', module)}")
    return fn


# ---------------------------------------------------------------------------------------- loading
def load_exercise(directory: str | Path, exercise: str) -> types.ModuleType:
    """Import ``<directory>/<file>.py`` of ``exercise`` as a submodule of a package made for the folder."""
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


def _reason(exc: BaseException, directory: Path) -> str:
    if isinstance(exc, CheckFailed):
        return str(exc)
    if isinstance(exc, NotImplementedError):
        return f"not implemented yet (NotImplementedError: {exc})"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if str(directory) in str(Path(f.filename).resolve())]
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"raised {type(exc).__name__}{where}: {exc}"


def run_exercise(exercise: str, directory: str | Path, verbose: bool = False) -> ExerciseResult:
    """Run every check of one exercise; never raises."""
    import course.checks  # noqa: F401  (registers the checks)

    directory = Path(directory).resolve()
    result = ExerciseResult(exercise, EXERCISES[exercise][1])
    checks = CHECKS[exercise]
    result.total = sum(c.points for c in checks)
    start = time.perf_counter()
    try:
        module = load_exercise(directory, exercise)
    except Exception as exc:  # syntax error, missing file, import error: every check fails
        reason = f"could not import the exercise file: {type(exc).__name__}: {exc}"
        result.failures = [(c.name, reason) for c in checks]
        result.seconds = time.perf_counter() - start
        return result
    ctx: dict = {"dir": directory}
    for c in checks:
        torch.manual_seed(0)
        try:
            c.fn(module, ctx)
            result.points += c.points
        except Exception as exc:
            result.failures.append((c.name, _reason(exc, directory)))
            if verbose:
                traceback.print_exc()
    result.seconds = time.perf_counter() - start
    return result


def grade(exercises=None, directory: str | Path | None = None, verbose: bool = False) -> list[ExerciseResult]:
    """Grade ``exercises`` (default all) in ``directory`` (default: ``$TEXTRLHF_COURSE_DIR`` or ``course/exercises``)."""
    directory = directory or os.environ.get(ENV_VAR) or DEFAULT_DIR
    return [run_exercise(ex, directory, verbose) for ex in (exercises or list(EXERCISES))]
