"""Issue 17: an LM policy trained with no KL penalty (no KL rollout buffer) warns once, the fixes do not.

``PPO(agents.LMActorCriticPolicy, env)`` without ``rollout_buffer_class=agents.KLRolloutBuffer`` used to
train on the bare score, with no KL to the reference and no word about it.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from sb3_helpers import small_env_kwargs

import agents


def _env(n_envs: int = 2, **kwargs):
    return agents.make_vec_text_env(n_envs, seed=0, **small_env_kwargs(max_new_tokens=4, **kwargs))


def _no_kl_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    category = agents.NoKLPenaltyWarning
    return [str(w.message) for w in record if issubclass(w.category, category)]


@pytest.mark.parametrize("algo", ["ppo", "a2c", "trpo"])
def test_plain_sb3_without_the_kl_buffer_warns_once(algo):
    """PPO and A2C reach ``evaluate_actions``, TRPO ``get_distribution``: both warn, at the first update only."""
    from stable_baselines3 import A2C, PPO

    from agents.trpo import LMTRPO  # sb3-contrib's TRPO.train, with faster actor gradients

    policy_kwargs = {"model": "tiny"}
    options = {"ppo": {"batch_size": 8, "n_epochs": 1}, "a2c": {}, "trpo": {"batch_size": 8, "cg_max_steps": 2}}[algo]
    if algo == "trpo":
        policy_kwargs["attn_implementation"] = "eager"  # double backward (see agents.registry)
    cls = {"ppo": PPO, "a2c": A2C, "trpo": LMTRPO}[algo]
    agent = cls(agents.LMActorCriticPolicy, _env(), policy_kwargs=policy_kwargs, n_steps=4, seed=0, **options)
    assert issubclass(agents.NoKLPenaltyWarning, UserWarning)
    with pytest.warns(agents.NoKLPenaltyWarning) as record:
        agent.learn(8)  # 2 envs x 4 steps: one rollout, one update
    messages = _no_kl_warnings(record)
    assert len(messages) == 1
    assert "rollout_buffer_class=agents.KLRolloutBuffer" in messages[0] and "make_agent" in messages[0]
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        agent.learn(8, reset_num_timesteps=False)
    assert not _no_kl_warnings(again)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("ppo", {"n_steps": 4, "n_epochs": 1}),
        ("trpo", {"n_steps": 4, "cg_max_steps": 2}),  # LMTRPO: the get_distribution path
        ("maskable_ppo", {"n_steps": 4, "n_epochs": 1}),
        ("rlhf_ppo", {"n_epochs": 1}),  # the fast agents add the KL themselves, no rollout buffer
        ("reinforce", {}),
    ],
)
def test_agents_with_a_kl_penalty_do_not_warn(name, kwargs):
    env = _env(mask="reference", mask_kwargs={"top_k": 5}) if name == "maskable_ppo" else _env()
    agent = agents.make_agent(name, env, seed=0, **kwargs)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        agent.learn(8)
    assert not _no_kl_warnings(record)
    assert agent.policy.kl_penalty_source is not None  # marked by the KL buffer or the reference scoring


def _plain_ppo_with_the_kl_buffer():
    from stable_baselines3 import PPO

    return PPO(
        agents.LMActorCriticPolicy,
        _env(),
        policy_kwargs={"model": "tiny"},
        rollout_buffer_class=agents.KLRolloutBuffer,
        n_steps=4,
        batch_size=8,
        n_epochs=1,
        seed=0,
    )


@pytest.mark.parametrize("how", ["bind", "callback"])
def test_plain_sb3_with_the_bound_kl_buffer_does_not_warn(how):
    """The README's plain-SB3 recipe: ``bind`` once after building, or the zoo's ``BindKLBuffer`` callback."""
    agent = _plain_ppo_with_the_kl_buffer()
    if how == "bind":
        agent.rollout_buffer.bind(agent)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        agent.learn(8, callback=agents.BindKLBuffer() if how == "callback" else None)
    assert not _no_kl_warnings(record)
    assert agent.policy.kl_penalty_source == "KLRolloutBuffer"
    assert "rlhf/kl" in agent.rollout_buffer.last_stats
    assert agent.rollout_buffer.controller.value == float(agent.policy.kl_beta)  # one home of beta


def test_plain_sb3_with_an_unbound_kl_buffer_fails_before_any_update_with_the_fixes():
    agent = _plain_ppo_with_the_kl_buffer()
    before = [p.detach().clone() for p in agent.policy.parameters()]
    with pytest.raises(agents.KLBufferNotBoundError) as err:
        agent.learn(8)
    message = str(err.value)
    assert "rollout_buffer.bind(model)" in message and "agents.make_agent" in message and "BindKLBuffer" in message
    assert all(torch.equal(a, b) for a, b in zip(before, agent.policy.parameters()))  # no step without the KL


def test_the_bind_callback_refuses_an_algorithm_without_a_kl_buffer():
    from stable_baselines3 import PPO

    agent = PPO(agents.LMActorCriticPolicy, _env(), policy_kwargs={"model": "tiny"}, n_steps=4, batch_size=8)
    with pytest.raises(TypeError, match="rollout_buffer_class=agents.KLRolloutBuffer"):
        agent.learn(8, callback=agents.BindKLBuffer())
