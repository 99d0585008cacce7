"""The scripts under a real 2-process ``torchrun`` launch (gloo, CPU): the pipeline's RL stage killed, then
resumed; what the pipeline refuses under a launch; ``scripts.train_agent``.

Rank 0 alone writes the run folder (progress.csv, checkpoints, the policy); both ranks train. A run
killed with SIGKILL (both workers and torchrun at once) continues from rank 0's last checkpoint under
the same launch, and every iteration appears in progress.csv exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pipeline_helpers import copy_run

from scripts.pipeline import check_launchable
from scripts.run_dir import RunDirError, is_done, read_csv

ROOT = Path(__file__).resolve().parents[2]
TOKENS_PER_ITERATION = 2 * 2 * 8  # ranks x tiny preset's n_envs x n_steps
ITERATIONS = 24  # enough for a kill after iteration 3 to land mid-run; the resumed part is most of the test's time
# The rollout cap is given too: the budget is whichever of tokens and rollouts comes first (default cap 15).
RL_FLAGS = ["--rl.total-timesteps", str(ITERATIONS * TOKENS_PER_ITERATION), "--rl.rollouts", str(ITERATIONS)]
RL_FLAGS += ["--rl.checkpoint-every", "1"]


def _launch(run_dir: Path, *flags: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "scripts.pipeline", "--run-dir", str(run_dir), "--stages", "rl", "--no-progress", *RL_FLAGS, *flags]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc): torchrun starts each worker in a session of its own."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill_all(proc: subprocess.Popen) -> None:
    """SIGKILL torchrun and both ranks at once, as a power cut or the OOM killer would."""
    for pid in [proc.pid, *_descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.communicate()


def _checkpoint_iteration(run_dir: Path) -> int:
    try:
        return json.loads((run_dir / "rl" / "checkpoint" / "state.json").read_text())["iteration"]
    except (OSError, ValueError, KeyError):
        return 0


def test_a_killed_two_process_rl_stage_resumes_under_the_same_launch(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run, tmp_path / "run", "rl", "evaluate", "plots", "report.md")
    proc = _launch(run_dir)
    deadline = time.monotonic() + 300
    while _checkpoint_iteration(run_dir) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed: raise --rl.total-timesteps"
    _kill_all(proc)
    killed_at = _checkpoint_iteration(run_dir)
    assert 3 <= killed_at < ITERATIONS and not is_done(run_dir, "rl")

    proc = _launch(run_dir, "--resume")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    assert f"resuming rlhf_ppo at iteration {killed_at}" in out
    assert is_done(run_dir, "rl") and (run_dir / "rl" / "policy" / "config.json").is_file()
    rows = read_csv(run_dir / "rl" / "progress.csv")
    assert [int(r["iteration"]) for r in rows] == list(range(1, ITERATIONS + 1))
    # Every iteration counts both ranks' tokens, and the logged episodes are both ranks' (2 x 2 envs x 2 rounds).
    assert [int(r["timesteps"]) for r in rows] == [TOKENS_PER_ITERATION * i for i in range(1, ITERATIONS + 1)]
    assert {float(r["rlhf/episodes"]) for r in rows} == {8.0}


def test_stages_that_train_with_the_hf_trainer_are_refused_under_a_launch():
    check_launchable(["preferences", "rl", "evaluate"], "grpo")  # rank 0 runs preferences and evaluate alone
    with pytest.raises(RunDirError, match=r"\['sft', 'reward-model'\] train with transformers.Trainer"):
        check_launchable(["sft", "preferences", "reward-model", "rl", "evaluate"], "rlhf_ppo")
    with pytest.raises(RunDirError, match="--algo ppo trains in one process"):
        check_launchable(["rl"], "ppo")


def test_train_agent_under_torchrun_trains_on_both_ranks_and_rank_0_writes(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "scripts.train_agent", "--algo", "grpo", "--model", "tiny", "--n-envs", "4"]
    cmd += ["--max-new-tokens", "6", "--total-timesteps", "96", "--run-dir", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summaries = [line for line in proc.stdout.splitlines() if line.startswith('{"seconds"')]
    assert len(summaries) == 1  # rank 0 alone reports
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("events.")) == [
        "agent.zip",
        "config.json",
        "model",
        "progress.csv",
    ]
    assert len(list(out.glob("events.*"))) == 1  # one TensorBoard writer
    rows = read_csv(out / "progress.csv")
    # 2 ranks x 4 envs per rollout; 96 tokens over both ranks = 2 rollouts of 2 x 4 x 6
    assert [float(r["rlhf/episodes"]) for r in rows] == [8.0, 8.0]
    assert [int(float(r["time/total_timesteps"])) for r in rows] == [48, 96]
