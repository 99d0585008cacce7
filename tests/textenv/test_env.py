"""The environment's spec: spaces, episode end, rewards, masks, render, seeding, pickling."""

import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest

import textenv
from textenv import EnvConfig, TextRLHFEnv


def run_episode(env, tokens):
    """Step through ``tokens`` until the episode ends; return the list of step results."""
    out = []
    for t in tokens:
        out.append(env.step(t))
        if out[-1][2] or out[-1][3]:
            break
    return out


def test_spaces_follow_the_design(make_env):
    env = make_env()
    L = 16 + 8
    assert env.action_space == gym.spaces.Discrete(49152)
    assert env.observation_space["input_ids"].shape == (L,)
    assert env.observation_space["input_ids"].dtype == np.int64
    assert env.observation_space["attention_mask"].dtype == np.int8
    obs, info = env.reset(seed=0)
    assert obs in env.observation_space
    n = int(obs["attention_mask"].sum())
    assert obs["attention_mask"][: L - n].sum() == 0  # left padding
    assert (obs["input_ids"][: L - n] == env.pad_token_id).all()
    assert env.tokenizer.decode(obs["input_ids"][L - n :]) == info["prompt"]


def test_both_registration_paths():
    assert gym.make("TextRLHF-v0", model="tiny", prompts=["x y"]).unwrapped.config.model == "tiny"
    env = gym.make("textenv:TextRLHF-v0", model="tiny", prompts=["x y"])
    assert isinstance(env.unwrapped, TextRLHFEnv)


def test_gymnasium_and_sb3_env_checkers_pass(make_env):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(make_env())
        sb3_check_env(make_env(wrapped=True))


def test_each_step_shifts_the_window_by_one_token(make_env):
    env = make_env()
    obs, _ = env.reset(seed=1)
    for token in [100, 200, 300]:
        new, reward, terminated, truncated, info = env.step(token)
        assert (new["input_ids"][:-1] == obs["input_ids"][1:]).all()
        assert new["input_ids"][-1] == token and new["attention_mask"][-1] == 1
        assert new["attention_mask"].sum() == obs["attention_mask"].sum() + 1
        assert reward == 0.0 and not terminated and not truncated and info == {}
        obs = new


def test_horizon_terminates_never_truncates(make_env):
    env = make_env(max_new_tokens=5, reward=lambda p, r: 0.5)
    env.reset(seed=0)
    steps = run_episode(env, [300] * 10)
    assert len(steps) == 5
    assert [s[2] for s in steps] == [False] * 4 + [True]
    assert not any(s[3] for s in steps)
    assert [s[1] for s in steps] == [0.0] * 4 + [0.5]
    info = steps[-1][4]
    assert info["hit_max_tokens"] and info["score"] == 0.5
    assert info["response_tokens"] == (300,) * 5


def test_eos_ends_the_episode_and_is_not_in_the_text(make_env):
    env = make_env(reward=lambda p, r: float(len(r)))
    env.reset(seed=0)
    steps = run_episode(env, [2001, env.eos_token_id, 2002])
    assert len(steps) == 2 and steps[-1][2]
    info = steps[-1][4]
    assert info["response_tokens"] == (2001, env.eos_token_id)
    assert info["response"] == env.tokenizer.decode([2001])
    assert steps[-1][1] == float(len(info["response"])) and not info["hit_max_tokens"]


def test_no_eos_penalty_applies_only_at_the_length_limit(make_env):
    env = make_env(max_new_tokens=3, reward=lambda p, r: 1.0, no_eos_penalty=-2.0)
    env.reset(seed=0)
    assert run_episode(env, [400] * 3)[-1][1] == -1.0
    env.reset(seed=0)
    assert run_episode(env, [env.eos_token_id])[-1][1] == 1.0


def test_reward_sees_prompt_and_response_text(make_env):
    seen = []
    env = make_env(reward=lambda p, r: seen.append((p, r)) or 0.0)
    _, info = env.reset(seed=3)
    run_episode(env, [env.tokenizer.convert_tokens_to_ids("Ġgood"), env.eos_token_id])
    assert seen == [(info["prompt"], " good")]


def test_named_rewards_from_the_config(make_env):
    env = make_env(reward="length", reward_kwargs={"target": 2}, max_new_tokens=2)
    env.reset(seed=0)
    good = env.tokenizer.convert_tokens_to_ids("Ġgood")
    assert run_episode(env, [good, good])[-1][1] == 0.0  # two words: exactly on target


def test_action_masks(make_env):
    env = make_env(forbidden_tokens=(5, 6))
    env.reset(seed=0)
    mask = env.action_masks()
    assert mask.shape == (env.action_space.n,) and mask.dtype == bool and mask.any()
    assert not mask[env.pad_token_id] and not mask[5] and not mask[6]
    assert mask[env.eos_token_id]
    assert mask.sum() == len(env.tokenizer) - 3


def test_render_modes(make_env, capsys):
    env = make_env(render_mode="ansi", reward=lambda p, r: 0.25)
    _, info = env.reset(seed=0)
    assert env.render() == f"Prompt: {info['prompt']}\nResponse: "
    run_episode(env, [env.eos_token_id])
    assert env.render().endswith("Score: 0.2500")
    human = make_env(render_mode="human")
    _, info = human.reset(seed=0)
    assert info["prompt"] in capsys.readouterr().out
    with pytest.raises(ValueError, match="render_mode"):
        make_env(render_mode="rgb_array")


def test_same_seed_same_50_step_rollout_different_seeds_differ(make_env):
    def rollout(seed):
        env = make_env(max_new_tokens=6, max_prompt_tokens=24, reward="sentiment", prompts="bundled:reviews")
        env.reset(seed=seed)
        env.action_space.seed(seed)
        trace = []
        for _ in range(50):
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            trace.append((obs["input_ids"].tolist(), reward, terminated))
            if terminated:
                env.reset()
        return trace

    assert rollout(7) == rollout(7)
    first_prompts = {
        make_env(prompts="bundled:reviews", max_prompt_tokens=24).reset(seed=s)[1]["prompt"] for s in range(8)
    }
    assert len(first_prompts) > 1


def test_pickled_env_continues_identically(make_env):
    env = make_env(reward="sentiment")
    env.reset(seed=11)
    env.step(1234)
    clone = pickle.loads(pickle.dumps(env))
    for e in (env, clone):
        e.step(99)
    a = [env.step(7) for _ in range(6)] + [env.reset()] + [env.step(8)]
    b = [clone.step(7) for _ in range(6)] + [clone.reset()] + [clone.step(8)]
    assert repr(a) == repr(b)


def test_reset_options_choose_the_prompt(make_env, prompts):
    env = make_env()
    assert env.reset(options={"prompt_index": 2})[1]["prompt"] == prompts[2]
    obs, info = env.reset(options={"prompt": "A custom prompt"})
    assert info["prompt"] == "A custom prompt" and info["prompt_index"] == -1
    run = run_episode(env, [env.eos_token_id])
    assert run[-1][4]["prompt"] == "A custom prompt"


def test_chat_template_mode(make_env):
    env = make_env(chat_template=True, max_prompt_tokens=64)
    obs, info = env.reset(seed=0)
    text = env.tokenizer.decode(obs["input_ids"][obs["attention_mask"] == 1])
    assert text.endswith("<|im_start|>assistant\n") and info["prompt"] in text


def test_config_object_and_overrides():
    cfg = EnvConfig(model="tiny", prompts=["a b c"], max_new_tokens=4)
    env = TextRLHFEnv(cfg, max_new_tokens=5)
    assert env.config.max_new_tokens == 5 and cfg.max_new_tokens == 4
    assert env.config.obs_len == env.config.max_prompt_tokens + 5
    assert set(EnvConfig.field_names()) >= {"model", "prompts", "reward", "max_new_tokens"}
    assert "TextRLHF-v0" in gym.registry and textenv.TextRLHFEnv is TextRLHFEnv
