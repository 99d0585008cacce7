"""The grader's side of a grading child: start it, stop it at its time limit, read back its report and output.

Children are :mod:`multiprocessing` processes of the ``forkserver`` context (``spawn`` where there is
none): each is forked from a server process that imported torch, the checks and the common project modules
once (:data:`PRELOAD`) and never imports a student's file, so a fresh, clean child costs milliseconds
instead of seconds. Nothing comes back through
multiprocessing's pickles: the child writes a JSON report and its output to files in a temporary folder,
which this module reads with size limits. The child starts a session of its own (:func:`course._child.run`),
so killing its process group also kills whatever the student's file started, and Ctrl-C in the terminal
reaches only the grader (which then kills its children, see :func:`kill_all`).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

MAX_REPORT_BYTES = 256 * 2**20  # ex5's report holds every parameter change of the tiny model (~17 MB)
MAX_OUTPUT_BYTES = 32 * 2**10  # the tail of the child's output that the grader shows

# What the forkserver imports once for all children: torch and the checks (course._child), and the project
# modules most exercise files import. Not reward_models: importing it starts threads, which a fork leaves behind.
PRELOAD = ["course._child", "agents.losses", "agents.kl", "agents.critic_free", "course.scaffold"]

_LIVE: set = set()
_LOCK = threading.Lock()
_CONTEXT = None


@dataclass
class ChildRun:
    """What one grading child left: per-check reports (raw JSON), or why there are none; its output."""

    checks: dict = field(default_factory=dict)
    error: str | None = None  # fails every check of the exercise when set
    output: str = ""
    seconds: float = 0.0


def _context():
    global _CONTEXT
    with _LOCK:
        if _CONTEXT is None:
            if "forkserver" in multiprocessing.get_all_start_methods():
                _CONTEXT = multiprocessing.get_context("forkserver")
                _CONTEXT.set_forkserver_preload(PRELOAD)
            else:
                _CONTEXT = multiprocessing.get_context("spawn")
        return _CONTEXT


def warm_up() -> None:
    """Start the forkserver now, so that its imports overlap with the grader computing the expected values."""
    if _context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def run_child(exercise: str, directory: Path, timeout: float, verbose: bool) -> ChildRun:
    """Run the probes of ``exercise`` on ``directory`` in a child process killed after ``timeout`` seconds."""
    from course._child import run as child_main

    with tempfile.TemporaryDirectory(prefix=f"course-{exercise}-", ignore_cleanup_errors=True) as tmp:
        report, output = Path(tmp) / "report.json", Path(tmp) / "output.txt"
        start = time.perf_counter()
        proc = _context().Process(
            target=child_main,
            name=f"course-grade-{exercise}",
            args=(exercise, str(directory), str(report), str(output), verbose),
        )
        try:
            with _LOCK:  # one start at a time: multiprocessing does not promise thread-safe starts
                proc.start()
                _LIVE.add(proc)
        except OSError as exc:
            return ChildRun(error=f"could not start the grading process ({type(exc).__name__}: {exc})")
        try:
            proc.join(timeout)
            status = proc.exitcode
        finally:
            _kill_group(proc)  # also what the file left running (a timed-out child, forked helpers)
            proc.join()
            with _LOCK:
                _LIVE.discard(proc)
        run = ChildRun(output=_tail(output), seconds=time.perf_counter() - start)
        if status is None:
            run.error = f"timed out after {timeout:g} s"
        else:
            run.checks, run.error = _outcome(_read_report(report, exercise), exercise, status)
        return run


def _outcome(read: tuple[dict | None, str], exercise: str, status: int) -> tuple[dict, str | None]:
    payload, problem = read
    if payload is None:
        return {}, (
            f"the grading process of {exercise} ended ({_describe(status)}) before reporting its "
            f"results{problem}; does the file call sys.exit() or os._exit(), or crash Python?"
        )
    if payload["import_error"] is not None:
        return {}, f"could not import the exercise file: {payload['import_error']}"
    return payload["checks"], None


def kill_all() -> None:
    """Kill every grading child still running (the grader is being interrupted)."""
    with _LOCK:
        live = list(_LIVE)
    for proc in live:
        _kill_group(proc)


def _kill_group(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the child leads its own group (see course._child.run)
        return
    except (AttributeError, ProcessLookupError, PermissionError):  # no killpg, no group yet, or gone
        pass
    try:
        proc.kill()
    except (OSError, ValueError):  # already gone
        pass


def _describe(status: int) -> str:
    if status >= 0:
        return f"exit status {status}"
    try:
        return f"killed by {signal.Signals(-status).name}"
    except ValueError:
        return f"killed by signal {-status}"


def _read_report(path: Path, exercise: str) -> tuple[dict | None, str]:
    """The child's report, or ``None`` and why it is unusable (nothing written, too big, not JSON, malformed)."""
    try:
        size = path.stat().st_size
    except OSError:
        return None, ""
    if size > MAX_REPORT_BYTES:
        return None, f" (its report has {size} bytes, more than the limit of {MAX_REPORT_BYTES})"
    try:
        payload = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as exc:  # a half-written or hand-made report
        return None, f" (its report is not valid JSON: {str(exc)[:200]})"
    if (
        type(payload) is not dict
        or payload.get("exercise") != exercise
        or type(payload.get("checks")) is not dict
        or type(payload.get("import_error")) not in (str, type(None))
    ):
        return None, " (its report is malformed)"
    return payload, ""


def _tail(path: Path) -> str:
    """The last :data:`MAX_OUTPUT_BYTES` of what the child printed."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - MAX_OUTPUT_BYTES))
            data = f.read(MAX_OUTPUT_BYTES)
    except OSError:
        return ""
    return ("[... earlier output cut ...]\n" if size > MAX_OUTPUT_BYTES else "") + data.decode(errors="replace")
