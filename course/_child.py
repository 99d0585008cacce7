"""The student's side of the autograder: :func:`run`, the target of one grading child process.

Started by :mod:`course._spawn`, one process per exercise. It imports the exercise file, runs the *probe*
of every check of the exercise (the student's functions on seeded inputs) and writes their raw outputs to
a report file as JSON (:mod:`course._wire`). Nothing here decides a mark; the grader judges the report, so
patching anything in this process gains nothing. Failures that happen here (a missing function, an
exception, a ``sys.exit`` inside a function) are reported as reasons.

Importing this module imports torch and registers the checks; the forkserver preloads it, so that work is
done once, before any student code runs.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from pathlib import Path

import torch

import course.checks  # noqa: F401  (registers the probes before any student's file can touch them)
from course._wire import encode
from course.grading import CHECKS, Check, load_exercise
from course.judging import CheckFailed

# No file the child writes (its output, its report, the student's own) may grow past this: a print loop must not
# fill the disk before its time limit.
MAX_FILE_BYTES = 2**30


def run(exercise: str, directory: str, report: str, output: str, verbose: bool) -> None:
    """Grade-side protocol: write ``{"exercise", "import_error", "checks": {name: {"ok", "data" | "reason"}}}``
    to ``report``, with stdout and stderr going to ``output``; then end the process."""
    if hasattr(os, "setsid"):
        os.setsid()  # a group of its own: the grader kills it with all it started; Ctrl-C reaches only the grader
    _release_forkserver()
    _die_with_parent()
    _limit_files()
    _redirect_output(output)
    directory_, report_ = Path(directory), Path(report)
    checks = list(CHECKS[exercise])
    payload: dict = {"exercise": exercise, "import_error": None, "checks": {}}
    try:
        module = load_exercise(directory_, exercise)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt too: they end the import, not the report
        payload["import_error"] = _safe(lambda e: f"{type(e).__name__}: {e}", exc)
        if verbose:
            _safe(traceback.print_exception, exc)
    else:
        ctx = {"dir": directory_, "tmp": report_.parent}
        for c in checks:
            payload["checks"][c.name] = _run_probe(c, module, ctx, directory_, verbose)
    _write(report_, payload)
    _run_multiprocessing_finalizers()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # the file may have closed or filled it
            pass
    os._exit(0)  # skip the atexit hooks and threads the file may have left behind


def _release_forkserver() -> None:
    """Close the grader's end of the pipe that tells the forkserver the grader is alive.

    multiprocessing hands it to every child; a child holding it would keep the server alive after the grader
    is killed, and with it (see :func:`_die_with_parent`) a child looping forever.
    """
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    alive_fd = getattr(server, "_forkserver_alive_fd", None)
    if isinstance(alive_fd, int):
        os.close(alive_fd)
        server._forkserver_alive_fd = None


def _die_with_parent() -> None:
    """On Linux, have the kernel kill this process when its parent (the forkserver, which lives exactly as long
    as the grader) ends: a grader killed by SIGTERM or SIGKILL must not leave a looping child behind."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent ended before prctl took effect
        os._exit(1)


def _run_multiprocessing_finalizers() -> None:
    """Unlink the semaphores that libraries made here (tqdm makes one when ``datasets`` loads the prompts):
    ``os._exit`` skips it, and the grader's resource tracker would then warn about "leaked semaphores"."""
    try:
        from multiprocessing import util

        util._run_finalizers(0)
    except Exception:  # a private helper of multiprocessing; without it, only the warning comes back
        pass


def _limit_files() -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_FILE_BYTES, MAX_FILE_BYTES))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (OSError) instead of killing
    except (ImportError, AttributeError, ValueError, OSError):  # no such limits here (Windows)
        pass


def _redirect_output(path: str) -> None:
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    # Line-buffered, so the prints before an os._exit() in the student's code are not lost.
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)


def _run_probe(c: Check, module, ctx: dict, directory: Path, verbose: bool) -> dict:
    torch.manual_seed(0)  # as the grader does before computing the expected outputs
    try:
        outputs = c.probe(module, ctx)
    except BaseException as exc:  # SystemExit, KeyboardInterrupt: they fail this check, not the grading
        if verbose:
            _safe(traceback.print_exception, exc)
        return {"ok": False, "reason": _safe(lambda e: reason(e, directory), exc)}
    try:
        return {"ok": True, "data": encode(outputs)}
    except Exception as exc:
        return {
            "ok": False,
            "reason": _safe(lambda e: f"returned something the grader cannot read ({type(e).__name__}: {e})", exc),
        }


def reason(exc: BaseException, directory: Path) -> str:
    """A failed probe's reason: the check's message, or what the student's code raised and where."""
    if isinstance(exc, CheckFailed):
        return str(exc)
    if isinstance(exc, NotImplementedError):
        return f"not implemented yet (NotImplementedError: {exc})"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if str(directory) in str(Path(f.filename).resolve())]
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"raised {type(exc).__name__}{where}: {exc}"


def _safe(describe, exc: BaseException):
    """``describe(exc)``, or a plain description if that fails (an exception's ``__str__`` is student code too)."""
    try:
        return describe(exc)
    except BaseException:
        return f"raised {type(exc).__name__} (and its message could not be shown)"


def _write(path: Path, payload: dict) -> None:
    """Write the report atomically, so the grader never reads half of it."""
    tmp = path.with_suffix(".part")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f)
    os.replace(tmp, path)
