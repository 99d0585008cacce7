"""The SB3 adapter over the native vector env and the fast rollout stepping it (agents/vec_env.py)."""

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

import agents
from agents.policy import LMActorCriticPolicy
from agents.rlhf_ppo import RLHFPPO
from agents.vec_env import TextRLHFVecEnv, text_vector_env
from textenv import TextRLHFVectorEnv

KWARGS = dict(
    model="tiny",
    prompts=["one two", "three four five", "six"],
    max_new_tokens=3,
    max_prompt_tokens=8,
    reward="length",
    reward_kwargs={"target": 3},
)


def test_adapter_steps_like_sb3s_dummy_vec_env_of_single_envs():
    ours = agents.make_vec_text_env(3, seed=5, **KWARGS)
    theirs = make_vec_env("TextRLHF-v0", n_envs=3, seed=5, env_kwargs={**KWARGS, "render_mode": None})
    assert isinstance(ours, TextRLHFVecEnv) and isinstance(ours.vector_env.unwrapped, TextRLHFVectorEnv)
    eos = ours.get_attr("eos_token_id")[0]
    rng = np.random.default_rng(0)
    first, expected = ours.reset(), theirs.reset()
    for key, value in first.items():
        np.testing.assert_array_equal(value, expected[key])
    for _ in range(10):  # several episodes per env, ending at different steps: SB3's autoreset
        actions = np.where(rng.random(3) < 0.3, eos, rng.integers(300, 400, 3))
        o1, r1, d1, i1 = ours.step(actions)
        o2, r2, d2, i2 = theirs.step(actions)
        for key in o1:
            np.testing.assert_array_equal(o1[key], o2[key])
        np.testing.assert_array_equal(r1, r2)
        np.testing.assert_array_equal(d1, d2)
        for a, b in zip(i1, i2):
            assert a.keys() == b.keys()
            for key in a.keys() - {"episode", "terminal_observation"}:
                assert a[key] == b[key], key
            if "episode" in a:
                assert (a["episode"]["r"], a["episode"]["l"]) == (b["episode"]["r"], b["episode"]["l"])
                for key in a["terminal_observation"]:
                    np.testing.assert_array_equal(a["terminal_observation"][key], b["terminal_observation"][key])


def test_adapter_shares_attributes_and_splits_action_masks():
    env = agents.make_vec_text_env(2, **KWARGS)
    assert env.get_attr("reward_fn")[0] is env.get_attr("reward_fn")[1]
    masks = env.env_method("action_masks")
    assert len(masks) == 2 and masks[0].shape == (env.action_space.n,)
    assert env.env_method("action_masks", indices=[1])[0].shape == masks[1].shape
    with pytest.raises(TypeError, match="step"):
        env.env_method("step", 5)


def test_fast_rollout_steps_the_vector_env_once_per_token():
    env = agents.make_vec_text_env(3, seed=0, **{**KWARGS, "max_new_tokens": 5})
    agent = RLHFPPO(LMActorCriticPolicy, env, policy_kwargs={"model": "tiny"}, seed=0)
    calls = []
    venv = env.vector_env
    real_step = venv.step
    venv.step = lambda actions: calls.append(np.asarray(actions).shape) or real_step(actions)
    env.reset()
    batch, _ = agents.collect_round(agent.policy, env)
    assert calls == [(3,)] * int(batch.lengths.max())  # one call per token for all rows
    assert batch.n == 3 and batch.extras == {}


def test_text_vector_env_accepts_what_the_fast_agents_can_step_and_refuses_the_rest():
    env = agents.make_vec_text_env(2, **KWARGS)
    assert text_vector_env(env) is env.vector_env and text_vector_env(env.vector_env) is env.vector_env
    single = make_vec_env("TextRLHF-v0", n_envs=1, env_kwargs={**KWARGS, "render_mode": None})  # Monitor-wrapped
    assert isinstance(text_vector_env(single), TextRLHFVectorEnv)
    with pytest.raises(TypeError, match="VecEnv wrappers"):
        text_vector_env(VecNormalize(env))
    clipped = make_vec_env(
        "TextRLHF-v0",
        n_envs=1,
        env_kwargs={**KWARGS, "render_mode": None},
        wrapper_class=gym.wrappers.TransformReward,
        wrapper_kwargs={"func": lambda r: 2 * r},
    )
    with pytest.raises(TypeError, match="TransformReward"):
        text_vector_env(clipped)
