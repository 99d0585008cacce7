"""The autograder gives full marks to ``course/solutions`` and fails every blank exercise with a reason.

Grading ex5/ex6 trains the tiny model for a few iterations (~1-2 min for the whole module on 2 cores); each
exercise is graded in a child process (see ``course.grading``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from course.grading import CHECKS, DEFAULT_DIR, ENV_VAR, EXERCISES, SOLUTIONS_DIR, grade

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def solution_results():
    return {r.exercise: r for r in grade(directory=SOLUTIONS_DIR, jobs=2)}  # ex5 and ex6 overlap


@pytest.fixture(scope="module")
def blank_results():
    return {r.exercise: r for r in grade(directory=DEFAULT_DIR)}


@pytest.mark.parametrize("exercise", list(EXERCISES))
def test_reference_solutions_get_full_marks(solution_results, exercise):
    r = solution_results[exercise]
    assert r.total >= 2, f"{exercise} has too few checks ({r.total})"
    assert r.full_marks, f"{exercise}: {r.points}/{r.total}; failures: {r.failures}"


@pytest.mark.parametrize("exercise", list(EXERCISES))
def test_blank_exercises_fail_every_check_with_a_reason(blank_results, exercise):
    r = blank_results[exercise]
    assert r.points == 0, f"{exercise}: the blank TODO file scored {r.points}/{r.total}"
    assert len(r.failures) == len(CHECKS[exercise]), f"{exercise}: not every check failed with a reason"
    for name, reason in r.failures:
        assert name.startswith(exercise + "."), name
        assert "not implemented yet" in reason, f"{name}: {reason}"


def _copy_solutions(tmp_path: Path) -> Path:
    target = tmp_path / "mine"
    shutil.copytree(SOLUTIONS_DIR, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def test_wrong_gae_gets_a_readable_reason(tmp_path):
    mine = _copy_solutions(tmp_path)
    (mine / "ex2_gae.py").write_text(
        "import torch\n"
        "from agents.losses import gae as _gae\n"
        "def discounted_returns(rewards, mask, gamma=1.0):\n"
        "    return _gae(rewards, torch.zeros_like(rewards), mask, gamma, 1.0)[1]\n"
        "def gae(rewards, values, mask, gamma=1.0, lam=0.95):\n"
        "    return _gae(rewards, values, mask, gamma, 1.0)  # bug: ignores lam\n"
    )
    (r,) = grade(["ex2"], directory=mine)
    assert 0 < r.points < r.total
    reasons = dict(r.failures)
    reason = reasons["ex2.gae[vs agents.losses.gae]"]
    assert "advantages (gamma=1.0, lam=0.95) differ from the reference at [" in reason
    assert "got " in reason and "expected " in reason
    assert "ex2.gae[lambda=1: advantage = return - value]" not in reasons  # lambda=1 is still right


def test_crashing_and_unimportable_files_are_reported(tmp_path):
    mine = _copy_solutions(tmp_path)
    (mine / "ex3_ppo.py").write_text("def masked_mean(x, mask):\n    return x.sum() / undefined_name\n")
    (mine / "ex4_reward_model.py").write_text("def broken(:\n")
    r3, r4 = grade(["ex3", "ex4"], directory=mine)
    assert r3.points == 0 and r4.points == 0
    assert any("raised NameError at ex3_ppo.py:2" in reason for _, reason in r3.failures), r3.failures
    assert any("no function 'ppo_policy_loss'" in reason for _, reason in r3.failures), r3.failures
    assert all("could not import the exercise file: SyntaxError" in reason for _, reason in r4.failures)


def test_cli_exit_status_and_env_var(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    ok = subprocess.run(
        [sys.executable, "-m", "course.grade", "ex2", "--solutions", str(SOLUTIONS_DIR)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ex2" in ok.stdout and "TOTAL 6/6" in ok.stdout
    env[ENV_VAR] = str(DEFAULT_DIR)
    bad = subprocess.run(
        [sys.executable, "-m", "course.grade", "2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert bad.returncode == 1
    assert "ex2.gae[vs agents.losses.gae]: not implemented yet" in bad.stdout
