"""A student file cannot fool the autograder: it cannot hang it, end it, make it exit 0, or patch the checks or
the reference implementations into giving marks.

Each case grades a copy of ``course/solutions`` with one file changed. The CLI cases run the grader as a
subprocess, because the point is what the grader *process* does (its exit status and its last line).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from course.grading import SOLUTIONS_DIR, grade

ROOT = Path(__file__).resolve().parents[2]

# Correct discounted returns; wrong (all-zero) GAE. Appended to by the cases below.
WRONG_GAE = (
    "import torch\n"
    "def discounted_returns(rewards, mask, gamma=1.0):\n"
    "    return torch.zeros_like(rewards)\n"
    "def gae(rewards, values, mask, gamma=1.0, lam=0.95):\n"
    "    return torch.zeros_like(rewards), torch.zeros_like(rewards)\n"
)


def _student(tmp_path: Path, filename: str, source: str) -> Path:
    """A copy of the reference solutions with ``filename`` replaced by ``source``."""
    target = tmp_path / "mine"
    shutil.copytree(SOLUTIONS_DIR, target, ignore=shutil.ignore_patterns("__pycache__"))
    (target / filename).write_text(source)
    return target


def _with_gae(body: str) -> str:
    """The reference ex2 file with ``body`` as the first statement of ``gae``."""
    source = (SOLUTIONS_DIR / "ex2_gae.py").read_text()
    anchor = '    """See ``course/exercises/ex2_gae.py``."""\n    return _gae('
    assert anchor in source, "course/solutions/ex2_gae.py changed; update this test"
    return source.replace(anchor, anchor.replace("    return _gae(", f"    {body}\n    return _gae("))


def _cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-m", "course.grade", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_an_infinite_loop_costs_that_exercise_only(tmp_path):
    mine = _student(tmp_path, "ex2_gae.py", _with_gae("while True: pass"))
    out = _cli("ex2", "ex1", "--solutions", str(mine), "--timeout", "15")
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert any(line.startswith("FAIL ex2") and " 0/6 " in line for line in lines), out.stdout
    assert "ex2.gae[vs agents.losses.gae]: timed out after 15 s" in out.stdout
    assert any(line.startswith("ok   ex1") for line in lines), out.stdout  # graded after the hang
    assert lines[-1] == "TOTAL 9/15", out.stdout


# (the file's change, where the reason shows up, what it says, the total)
ENDINGS = {
    "sys.exit(0) at import": (
        "import sys\nsys.exit(0)\n" + WRONG_GAE,
        "ex2.gae[vs agents.losses.gae]",
        "could not import the exercise file: SystemExit: 0",
        "TOTAL 0/6",
    ),
    "os._exit(0) in a graded function": (
        _with_gae("import os; os._exit(0)"),
        "ex2.gae[vs agents.losses.gae]",
        "the grading process of ex2 ended (exit status 0) before reporting",
        "TOTAL 0/6",
    ),
    "KeyboardInterrupt in a graded function": (
        _with_gae("raise KeyboardInterrupt"),
        "ex2.gae[vs agents.losses.gae]",
        "raised KeyboardInterrupt at ex2_gae.py:",
        "TOTAL 2/6",
    ),  # the discounted_returns checks still pass
}


@pytest.mark.parametrize("case", list(ENDINGS))
def test_a_student_file_cannot_end_the_grader_or_make_it_exit_0(tmp_path, case):
    source, check_name, reason, total = ENDINGS[case]
    mine = _student(tmp_path, "ex2_gae.py", source)
    out = _cli("ex2", "--solutions", str(mine))
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"{check_name}: {reason}" in out.stdout, out.stdout
    assert out.stdout.splitlines()[-1] == total, out.stdout


def test_patching_the_checks_gives_no_marks(tmp_path, monkeypatch):
    import course.checks
    import course.grading

    for module, name in (
        (course.checks, "assert_close"),
        (course.grading, "assert_close"),
        (course.checks, "require"),
        (course.grading, "require"),
    ):
        monkeypatch.setattr(module, name, getattr(module, name))  # restored afterwards, whatever the file does
    mine = _student(
        tmp_path,
        "ex2_gae.py",
        "import course.checks, course.grading\n"
        "course.checks.assert_close = course.grading.assert_close = lambda *a, **k: None\n"
        "course.checks.require = course.grading.require = lambda *a, **k: None\n" + WRONG_GAE,
    )
    (r,) = grade(["ex2"], directory=mine)
    assert r.points == 0, f"{r.points}/{r.total}; failures: {r.failures}"
    reasons = dict(r.failures)
    assert "advantages (gamma=1.0, lam=0.95) differ from the reference" in reasons["ex2.gae[vs agents.losses.gae]"]


def test_patching_the_reference_gives_no_marks(tmp_path, monkeypatch):
    import agents.losses

    monkeypatch.setattr(agents.losses, "gae", agents.losses.gae)  # restored afterwards, whatever the file does
    mine = _student(tmp_path, "ex2_gae.py", WRONG_GAE + "import agents.losses\nagents.losses.gae = gae\n")
    (r,) = grade(["ex2"], directory=mine)
    assert r.points == 0, f"{r.points}/{r.total}; failures: {r.failures}"
    reasons = dict(r.failures)
    assert "differ from the reference" in reasons["ex2.gae[vs agents.losses.gae]"]
    assert "differ from the reference" in reasons["ex2.discounted_returns[vs reference]"]


def test_the_wire_carries_plain_data_only():
    import base64

    import numpy as np
    import torch

    from course._wire import ARRAY, Unsupported, WireError, decode, encode

    sent = {
        "loss": torch.tensor(1.5),
        "grad": torch.ones(2, 3, dtype=torch.bfloat16),
        "n": np.int64(3),
        "pair": (torch.arange(3), [None, "x", True]),
        "odd": {1, 2},
    }
    got = decode(encode(sent))
    assert got["loss"].shape == () and float(got["loss"]) == 1.5
    assert got["grad"].dtype == np.float32 and got["grad"].shape == (2, 3)
    assert got["n"] == 3 and type(got["n"]) is int
    assert got["pair"][0].tolist() == [0, 1, 2] and got["pair"][1] == [None, "x", True]
    assert got["odd"] == Unsupported("set")
    data = base64.b64encode(b"\0" * 8).decode()
    for bad in (
        {ARRAY: {"dtype": "object", "shape": [1], "data": data}},  # numpy would unpickle objects
        {ARRAY: {"dtype": "float64", "shape": [2], "data": data}},  # 8 bytes cannot hold 2 floats
        {ARRAY: {"dtype": "float64", "shape": [1], "data": "not base64!"}},
        {ARRAY: {"dtype": "float64", "shape": [-1], "data": data}},
    ):
        with pytest.raises(WireError):
            decode(bad)
    nested = []
    for _ in range(100):
        nested = [nested]
    with pytest.raises(WireError):
        decode(nested)
