"""Data-parallel training of the fast agents under a real 2-process ``torchrun`` launch (gloo, CPU).

The worker (tests/support/data_parallel_worker.py) is plain user code: ``make_agent`` then ``learn()``.
Each rank collects its own rollout E_r; the checks here are issue 13's: every parameter identical on both
ranks and moved; ``num_timesteps`` counts both ranks' tokens; and one data-parallel update on E_0 and E_1
equals a single-process update on E_0 and E_1 together (same full-batch minibatch, two epochs), within 1e-5.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from stable_baselines3.common.logger import Logger

import agents
from agents.distributed import DataParallel
from agents.rollout import EpisodeBatch
from tests.support.data_parallel_worker import OPTIONS, make_env

ROOT = Path(__file__).resolve().parents[2]
ALGOS = ("rlhf_ppo", "grpo", "reinforce_pp")  # token-mean loss + GAE; per-sequence loss + groups; global whitening


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> dict[str, list[dict]]:
    out = tmp_path_factory.mktemp("dp")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += [str(ROOT / "tests/support/data_parallel_worker.py"), str(out), *ALGOS]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {a: [torch.load(out / f"{a}-rank{r}.pt", weights_only=False) for r in (0, 1)] for a in ALGOS}


@pytest.mark.parametrize("algo", ALGOS)
def test_every_parameter_is_identical_on_both_ranks_and_moved(ranks, algo):
    r0, r1 = ranks[algo]
    assert r0["world_size"] == r1["world_size"] == 2
    moved = 0
    for name, value in r0["end"].items():
        torch.testing.assert_close(value, r1["end"][name], rtol=0, atol=0, equal_nan=True, msg=name)
        # rank 0's start, broadcast (kl_beta is NaN until the first rollout)
        torch.testing.assert_close(r0["start"][name], r1["start"][name], rtol=0, atol=0, equal_nan=True, msg=name)
        moved += not torch.equal(value, r0["start"][name])
    assert moved > 0.5 * len(r0["end"])


@pytest.mark.parametrize("algo", ALGOS)
def test_ranks_draw_their_own_prompts_and_timesteps_count_every_rank(ranks, algo):
    r0, r1 = ranks[algo]
    b0, b1 = r0["batch"], r1["batch"]
    assert not torch.equal(b0["input_ids"], b1["input_ids"])
    tokens = int(b0["mask"].sum() + b1["mask"].sum())
    assert r0["num_timesteps"] == r1["num_timesteps"] == tokens


def _batch(parts: list[dict]) -> EpisodeBatch:
    """Rollouts as one batch, each part's group ids kept apart (groups never straddle ranks)."""
    batches = []
    for i, b in enumerate(parts):
        kept = {k: v for k, v in b.items() if k not in ("ref_logp", "rewards", "advantages", "returns", "extras")}
        batches.append(EpisodeBatch(**kept, extras={"group": np.asarray(b["extras"]["group"]) + 10_000 * i}))
    batch = EpisodeBatch.concat(batches)
    batch.ref_logp = torch.cat([b["ref_logp"] for b in parts])
    return batch


def _one_process_update(algo: str, start: dict, parts: list[dict], beta: float) -> dict[str, torch.Tensor]:
    """The weights after a single-process agent does, on ``parts`` together, what ``learn()`` did per rank."""
    agent = agents.make_agent(algo, make_env(), **OPTIONS)
    assert agent.data_parallel == DataParallel()  # this process is not launched: a single-process agent
    agent.set_logger(Logger(folder=None, output_formats=[]))
    agent.policy.load_state_dict(start)
    batch = _batch(parts)
    # What _finish_batch does after scoring the reference: advantages, then the KL controller's step.
    agent.compute_advantages(batch, beta)
    agent._update_kl_and_log(batch, beta)
    agent._batch = batch
    agent.train()
    return agent.policy.state_dict()


def _max_diff(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a if a[k].is_floating_point())


@pytest.mark.parametrize("algo", ALGOS)
def test_data_parallel_update_equals_one_process_on_both_rollouts(ranks, algo):
    r0, r1 = ranks[algo]
    together = _one_process_update(algo, r0["start"], [r0["batch"], r1["batch"]], r0["beta"])
    assert _max_diff(together, r0["end"]) < 1e-5
    # The tolerance separates: an update on rank 0's rollout alone lands far from the data-parallel one.
    alone = _one_process_update(algo, r0["start"], [r0["batch"]], r0["beta"])
    assert _max_diff(alone, r0["end"]) > 1e-4
