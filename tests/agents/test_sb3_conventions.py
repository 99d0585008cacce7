"""SB3 conventions on the fast agents (issue 17): load without an env, class checks on load, single
envs in ``make_agent``, and one set of ``rlhf/*`` metric names on every path."""

import re
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from sb3_helpers import small_env_kwargs  # also sets the offline environment variables
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import is_wrapped
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

import agents
from agents.critic_free import CriticFreePG
from agents.rlhf_ppo import RLHFPPO

README = Path(__file__).resolve().parents[2] / "README.md"
AGENTS_DOC = Path(__file__).resolve().parents[2] / "docs" / "agents.md"


def _vec_env(n_envs: int = 2):
    return agents.make_vec_text_env(n_envs=n_envs, **small_env_kwargs())


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """``name -> (agent, zip path)`` for an ``rlhf_ppo``, an ``rloo`` (group_size 2) and a plain ``ppo`` agent."""
    folder = tmp_path_factory.mktemp("zips")
    out = {}
    for name, kwargs in (("rlhf_ppo", {}), ("rloo", {"group_size": 2}), ("ppo", {})):
        agent = agents.make_agent(name, _vec_env(), seed=0, **kwargs)
        agent.save(folder / f"{name}.zip")
        out[name] = (agent, folder / f"{name}.zip")
    return out


@pytest.mark.parametrize("name, cls", [("rlhf_ppo", RLHFPPO), ("rloo", CriticFreePG)])
def test_fast_agents_load_without_env_and_predict(saved, name, cls):
    agent, path = saved[name]
    loaded = cls.load(path)  # SB3: no env needed for prediction
    assert type(loaded) is cls and loaded.env is None
    obs = _vec_env().reset()
    expected, _ = agent.predict(obs, deterministic=True)
    action, _ = loaded.predict(obs, deterministic=True)
    np.testing.assert_array_equal(action, expected)


def test_critic_free_load_with_env_keeps_the_saved_group_size(saved):
    """The constructor's defaults (rloo: group_size 4) must not be checked against a 2-env VecEnv."""
    agent, path = saved["rloo"]
    loaded = CriticFreePG.load(path, env=_vec_env(2))
    assert loaded.group_size == 2 and loaded.estimator == "rloo" and loaded.env.num_envs == 2


@pytest.mark.parametrize(
    "loader, saved_by, use",
    [
        (PPO, "rlhf_ppo", r"saved by agents\.rlhf_ppo\.RLHFPPO.*RLHFPPO\.load"),
        (PPO, "rloo", r"saved by agents\.critic_free\.CriticFreePG.*CriticFreePG\.load"),
        (RLHFPPO, "ppo", r"not saved by agents\.rlhf_ppo\.RLHFPPO.*PPO\.load"),
        (CriticFreePG, "ppo", r"not saved by agents\.critic_free\.CriticFreePG.*PPO\.load"),
        (RLHFPPO, "rloo", r"saved by agents\.critic_free\.CriticFreePG.*CriticFreePG\.load"),
        (CriticFreePG, "rlhf_ppo", r"saved by agents\.rlhf_ppo\.RLHFPPO.*RLHFPPO\.load"),
    ],
)
def test_loading_with_the_wrong_class_names_the_right_one(saved, loader, saved_by, use):
    with pytest.raises(ValueError, match=use) as err:
        loader.load(saved[saved_by][1])
    assert type(err.value).__name__ == "AgentClassMismatchError"


def test_plain_ppo_still_loads_its_own_zips(saved):
    assert type(PPO.load(saved["ppo"][1])) is PPO


@pytest.mark.parametrize("name", ["rlhf_ppo", "reinforce", "reinforce_pp"])
def test_make_agent_wraps_a_single_env_like_sb3(name):
    env = gym.make("TextRLHF-v0", **small_env_kwargs(), render_mode=None)
    agent = agents.make_agent(name, env, seed=0)
    assert isinstance(agent.env, DummyVecEnv) and agent.env.num_envs == 1
    assert is_wrapped(agent.env.envs[0], Monitor)
    agent.learn(1)  # one round of one episode through the wrapped env
    assert agent._batch.n == 1


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("ppo", {"n_steps": 6, "n_epochs": 1, "batch_size": 6}),  # generic path: KLRolloutBuffer
        ("rlhf_ppo", {"kl_coef": 0.1, "adaptive_kl": False}),  # fast path, KL in the reward
        ("grpo", {"group_size": 2}),  # fast path, KL in the loss
    ],
)
def test_every_path_logs_the_same_rlhf_metrics(name, kwargs):
    from agents.callbacks import RLHF_METRICS, RLHFHistory

    agent = agents.make_agent(name, _vec_env(), seed=0, **kwargs)
    history = RLHFHistory()
    agent.learn(1, callback=history)
    row = history.history[0]
    assert {k for k in row if k.startswith("rlhf/")} == set(RLHF_METRICS)
    assert row["rlhf/kl_penalty"] == pytest.approx(row["rlhf/beta"] * row["rlhf/kl"])
    assert row["rlhf/shaped_score"] == pytest.approx(row["rlhf/score"] - row["rlhf/kl_penalty"])
    if name == "rlhf_ppo":  # with the KL in the reward, the shaped score is what the shaped rewards sum to
        returns = agent._batch.rewards.sum(-1).mean().float()
        torch.testing.assert_close(torch.tensor(row["rlhf/shaped_score"]), returns, atol=1e-5, rtol=0)


def test_docs_metrics_table_lists_exactly_rlhf_metrics():
    """The metrics table (docs/agents.md) lists exactly RLHF_METRICS; no other ``rlhf/`` name in it or the README."""
    from agents.callbacks import RLHF_METRICS

    table = set(re.findall(r"^\| `(rlhf/\w+)` \|", AGENTS_DOC.read_text(encoding="utf-8"), flags=re.M))
    assert table == set(RLHF_METRICS)  # one row per key
    for page in (README, AGENTS_DOC):
        text = page.read_text(encoding="utf-8")
        assert set(re.findall(r"`(rlhf/\w+)`", text)) <= set(RLHF_METRICS), page  # no other name anywhere
        assert "shaped_return" not in text, page
