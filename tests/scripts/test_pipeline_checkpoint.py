"""The RL stage's data-only checkpoint (scripts/stages/rl_checkpoint.py) round-trips every algorithm.

An agent trains one rollout, is saved, and a freshly built agent (``agents.make_agent``, as the
pipeline builds it) gets the state back: weights, optimizer state, counters and the KL coefficient
must be equal, and training must continue. The optimizer file is read with ``weights_only=True``:
a crafted one is refused without running its code.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

import agents
from scripts.run_dir import RunDirError
from scripts.stages.rl_checkpoint import OPTIMIZER, STATE, load_checkpoint, read_state, save_checkpoint

PROMPTS = ["The movie was", "I think that", "A short story:", "Hello"]
GENERIC = ("ppo", "a2c", "trpo", "maskable_ppo")
OPTIONS = {  # small and fast; adaptive beta with a short horizon so that it visibly moves in one rollout
    "ppo": {"n_steps": 4, "n_epochs": 1, "batch_size": 8},
    "a2c": {"n_steps": 4},
    "maskable_ppo": {"n_steps": 4, "n_epochs": 1, "batch_size": 8},
    "trpo": {"n_steps": 4, "batch_size": 8, "n_critic_updates": 1, "cg_max_steps": 1, "line_search_max_iter": 1},
    "rlhf_ppo": {"n_epochs": 1},
    "reinforce": {},
    "rloo": {"group_size": 2},
    "grpo": {"group_size": 2},
    "reinforce_pp": {},
}


@pytest.fixture(scope="module")
def env():
    """One tiny env for every agent of the module (building one takes seconds; make_agent reseeds it)."""
    vec_env = agents.make_vec_text_env(
        2, seed=0, model="tiny", reward="length", prompts=PROMPTS, max_new_tokens=4, max_prompt_tokens=16
    )
    yield vec_env
    vec_env.close()


def _make(algo: str, env):
    return agents.make_agent(algo, env, seed=0, learning_rate=1e-3, kl_coef=0.2, kl_horizon=4.0, **OPTIONS[algo])


def _assert_same(a, b, where="optimizer"):
    """Equal nested optimizer state (tensors bit for bit)."""
    if torch.is_tensor(a):
        torch.testing.assert_close(b, a, atol=0, rtol=0, msg=where)
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def _beta_in_use(agent) -> float:
    """The KL coefficient the next rollout will use (the buffer's controller, or the agent's)."""
    if agent.rollout_buffer is not None and hasattr(agent.rollout_buffer, "controller"):
        return agent.rollout_buffer.controller.value
    return agent.beta


@pytest.mark.parametrize("algo", [*GENERIC, "rlhf_ppo", "reinforce", "rloo", "grpo", "reinforce_pp"])
def test_checkpoint_round_trip_restores_the_agent(algo, env, tmp_path):
    agent = _make(algo, env)
    agent.learn(8)
    beta = float(agent.policy.kl_beta)
    assert beta != 0.2  # the adaptive controller moved it: restoring it is not a no-op
    state = save_checkpoint(agent, tmp_path / "checkpoint", algo, iteration=1, seconds=1.5)
    assert read_state(tmp_path / "checkpoint") == state and state["beta"] == beta

    fresh = _make(algo, env)
    load_checkpoint(fresh, tmp_path / "checkpoint", read_state(tmp_path / "checkpoint"))
    for key, value in agent.policy.state_dict().items():
        torch.testing.assert_close(fresh.policy.state_dict()[key], value, atol=0, rtol=0, msg=key)
    _assert_same(agent.policy.optimizer.state_dict(), fresh.policy.optimizer.state_dict())
    assert (fresh.num_timesteps, fresh._n_updates) == (agent.num_timesteps, agent._n_updates)
    assert float(fresh.policy.kl_beta) == beta and _beta_in_use(fresh) == beta

    if algo == "trpo":  # one TRPO update of the tiny LM takes ~30 s here; its resume path is PPO's and A2C's
        return
    before = fresh.num_timesteps
    fresh.learn(8, reset_num_timesteps=False)  # training continues from the restored state
    assert fresh.num_timesteps > before and np.isfinite(float(fresh.policy.kl_beta))


class _CreatesFile:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_crafted_optimizer_file_is_refused_without_running_it(env, tmp_path):
    agent = _make("rlhf_ppo", env)
    folder = tmp_path / "checkpoint"
    save_checkpoint(agent, folder, "rlhf_ppo", iteration=1, seconds=0.0)
    marker = tmp_path / "code-ran"
    torch.save({"state": _CreatesFile(marker), "param_groups": []}, folder / OPTIMIZER)
    with pytest.raises(RunDirError, match=r"optimizer\.pt .*delete .*checkpoint"):
        load_checkpoint(agent, folder, read_state(folder))
    assert not marker.exists()
    (folder / OPTIMIZER).write_bytes(pickle.dumps(_CreatesFile(marker), protocol=2))  # a bare pickle, not torch's zip
    with pytest.raises(RunDirError):
        load_checkpoint(agent, folder, read_state(folder))
    assert not marker.exists()


def test_state_json_is_checked_key_by_key(tmp_path):
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    (folder / STATE).write_text(
        json.dumps(
            {
                "format": "textrlhf-rl-checkpoint-v1",
                "algo": "ppo",
                "num_timesteps": "64",
                "iteration": 4,
                "n_updates": 4,
                "beta": 0.2,
                "seconds": 1.0,
            }
        )
    )
    with pytest.raises(RunDirError, match=r"state\.json is corrupt \(missing or mistyped \['num_timesteps'\]\)"):
        read_state(folder)
