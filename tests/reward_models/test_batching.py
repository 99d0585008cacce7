"""PrefetchReward (reward_models/batching.py) and the env's preview_end."""

import numpy as np
import pytest

from reward_models import CallableReward, PrefetchReward


class CountingReward:
    def __init__(self):
        self.calls = []

    def score(self, prompts, responses):
        self.calls.append(len(prompts))
        return np.array([len(p) + 10 * len(r) for p, r in zip(prompts, responses)], dtype=np.float32)


def test_prefetched_scores_are_used_once_and_missing_ones_computed():
    inner = CountingReward()
    reward = PrefetchReward(inner)
    reward.prefetch(["a", "a", "bb"], ["x", "x", "yy"])
    assert inner.calls == [3] and reward.pending == 3
    assert reward.score(["a"], ["x"]).tolist() == [11.0]
    assert reward.score(["bb", "a", "c"], ["yy", "x", "zzz"]).tolist() == [22.0, 11.0, 31.0]
    assert inner.calls == [3, 1]  # only the pair that was not prefetched
    assert reward.pending == 0
    assert reward.score(["a"], ["x"]).tolist() == [11.0] and inner.calls == [3, 1, 1]  # used up: recomputed


def test_prefetch_checks_the_wrapped_reward_and_clear_forgets():
    reward = PrefetchReward(CallableReward(lambda p, r: float("nan")))
    with pytest.raises(ValueError, match="not finite"):
        reward.prefetch(["p"], ["r"])
    ok = PrefetchReward("length", target=3)
    ok.prefetch(["p"], ["a b"])
    ok.clear()
    assert ok.pending == 0
    with pytest.raises(ValueError, match="responses"):
        ok.prefetch(["p"], [])


def test_env_preview_end_is_what_step_scores_and_changes_nothing():
    import gymnasium as gym

    import textenv  # noqa: F401

    env = gym.make("TextRLHF-v0", model="tiny", prompts=["Hello there"], max_new_tokens=3, max_prompt_tokens=8,
                   reward="length").unwrapped
    assert env.preview_end(5) is None  # before reset
    obs, _ = env.reset(seed=0)
    assert env.preview_end(5) is None  # 1 of 3 tokens, not EOS
    assert env.preview_end(env.eos_token_id) == ("Hello there", "")  # EOS would end it (special token dropped)
    env.step(5)
    env.step(6)
    prompt, response = env.preview_end(7)
    before = env._obs()["input_ids"].copy()
    assert np.array_equal(env._obs()["input_ids"], before)
    _, reward, terminated, _, info = env.step(7)
    assert terminated and (prompt, response) == (info["prompt"], info["response"])
    assert env.preview_end(7) is None  # over
