"""KLRolloutBuffer: hand-computed shaped returns, per-token mode, episodes spanning rollouts."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from sb3_helpers import PROMPTS

from agents import KLBufferNotBoundError, KLRolloutBuffer, LMActorCriticPolicy

TOKENS = [9805, 787, 2644]  # " yes", " no", " cat"
DELTA = np.array([0.3, -0.1, 0.5], dtype=np.float32)  # log pi - log pi_ref per token: k1 = DELTA
SCORE, BETA = 2.0, 0.5


@pytest.fixture(scope="module")
def episode():
    """Observations of one 3-token episode, the policy, and its reference log-probs."""
    import textenv  # noqa: F401  (registers TextRLHF-v0)

    env = gym.make("TextRLHF-v0", model="tiny", prompts=PROMPTS, reward="length", max_prompt_tokens=8, max_new_tokens=3)
    policy = LMActorCriticPolicy(env.observation_space, env.action_space, lambda _: 1e-4, model="tiny")
    obs, _ = env.reset(seed=0, options={"prompt_index": 0})
    observations = [obs]
    for tok in TOKENS:
        obs, *_ = env.step(tok)
        observations.append(obs)
    full = observations[-1]
    resp = np.zeros_like(full["input_ids"], dtype=bool)
    resp[-3:] = True
    ref = policy.reference_logprobs(
        torch.as_tensor(full["input_ids"])[None],
        torch.as_tensor(full["attention_mask"])[None],
        torch.as_tensor(resp)[None],
    )[0, -3:].numpy()
    return env, policy, observations[:3], ref


def _buffer(env, policy, size, lam, mode="terminal"):
    buf = KLRolloutBuffer(
        size,
        env.observation_space,
        env.action_space,
        device="cpu",
        gamma=1.0,
        gae_lambda=lam,
        n_envs=1,
        kl_coef=BETA,
        adaptive_kl=False,
        kl_mode=mode,
    )
    buf.bind(policy)
    return buf


def _add(buf, obs, t, ref, start, values):
    reward = SCORE if t == 2 else 0.0
    batch = {k: v[None] for k, v in obs.items()}
    buf.add(
        batch,
        np.array([[TOKENS[t]]]),
        np.array([reward]),
        np.array([start]),
        torch.tensor([values[t]]),
        torch.tensor([ref[t] + DELTA[t]]),
    )


def _gae(rewards, values, lam):
    adv, last = np.zeros(3), 0.0
    for t in reversed(range(3)):
        nxt = values[t + 1] if t < 2 else 0.0
        last = rewards[t] + nxt - values[t] + lam * last
        adv[t] = last
    return adv


@pytest.mark.parametrize("lam", [1.0, 0.95])
@pytest.mark.parametrize("mode", ["terminal", "per_token"])
def test_shaped_returns_by_hand(episode, lam, mode):
    env, policy, observations, ref = episode
    values = [0.1, -0.2, 0.4]
    buf = _buffer(env, policy, 3, lam, mode)
    for t in range(3):
        _add(buf, observations[t], t, ref, float(t == 0), values)
    buf.compute_returns_and_advantage(torch.zeros(1), np.array([True]))
    kl = float(DELTA.sum())
    if mode == "terminal":
        expected_rewards = np.array([0.0, 0.0, SCORE - BETA * kl])
    else:
        expected_rewards = -BETA * DELTA + np.array([0.0, 0.0, SCORE])
    np.testing.assert_allclose(buf.rewards[:, 0], expected_rewards, atol=1e-5)
    adv = _gae(expected_rewards, values, lam)
    np.testing.assert_allclose(buf.advantages[:, 0], adv, atol=1e-5)
    np.testing.assert_allclose(buf.returns[:, 0], adv + np.array(values), atol=1e-5)
    if lam == 1.0:  # Monte Carlo: the return-to-go of the shaped rewards
        to_go = [SCORE - BETA * (kl if mode == "terminal" else float(DELTA[t:].sum())) for t in range(3)]
        np.testing.assert_allclose(buf.returns[:, 0], to_go, atol=1e-5)
    assert buf.last_stats["rlhf/kl"] == pytest.approx(kl, abs=1e-5)
    assert buf.last_stats["rlhf/score"] == pytest.approx(SCORE)
    assert buf.last_stats["rlhf/response_len"] == 3


def test_episode_spanning_two_rollouts_is_penalised_once_at_its_end(episode):
    env, policy, observations, ref = episode
    values = [0.0, 0.0, 0.0]
    buf = _buffer(env, policy, 2, 1.0)
    _add(buf, observations[0], 0, ref, 1.0, values)
    _add(buf, observations[1], 1, ref, 0.0, values)
    buf.compute_returns_and_advantage(torch.zeros(1), np.array([False]))
    np.testing.assert_allclose(buf.rewards[:, 0], [0.0, 0.0])
    assert "rlhf/kl" not in buf.last_stats  # no episode finished in this rollout
    buf.reset()  # what SB3 does at the start of the next rollout
    _add(buf, observations[2], 2, ref, 0.0, values)
    _add(buf, observations[0], 0, ref, 1.0, values)  # the next episode starts
    buf.compute_returns_and_advantage(torch.zeros(1), np.array([False]))
    assert buf.rewards[0, 0] == pytest.approx(SCORE - BETA * float(DELTA.sum()), abs=1e-5)
    assert buf.last_stats["rlhf/response_len"] == 3


def test_an_unbound_buffer_raises_the_typed_error_with_the_fix(episode):
    env, policy, observations, ref = episode
    buf = KLRolloutBuffer(3, env.observation_space, env.action_space, device="cpu", gamma=1.0, n_envs=1)
    for t in range(3):
        _add(buf, observations[t], t, ref, float(t == 0), [0.0, 0.0, 0.0])
    with pytest.raises(KLBufferNotBoundError, match=r"agents\.make_agent.*rollout_buffer\.bind\(model\)"):
        buf.compute_returns_and_advantage(torch.zeros(1), np.array([True]))
    assert buf.rewards[2, 0] == SCORE  # nothing was shaped


def test_the_bound_controller_keeps_beta_in_the_policy_and_a_rebind_resumes_it(episode):
    env, policy, observations, ref = episode
    buf = KLRolloutBuffer(
        3, env.observation_space, env.action_space, device="cpu", gamma=1.0, n_envs=1, kl_coef=BETA, kl_horizon=1.0
    )
    policy.kl_beta.fill_(float("nan"))  # a fresh policy: the buffer's kl_coef starts beta
    buf.bind(policy)
    assert float(policy.kl_beta) == BETA and buf.controller.value == BETA
    for t in range(3):
        _add(buf, observations[t], t, ref, float(t == 0), [0.0, 0.0, 0.0])
    buf.compute_returns_and_advantage(torch.zeros(1), np.array([True]))
    moved = float(policy.kl_beta)
    assert moved != BETA and buf.controller.value == moved  # the adaptive update wrote the policy's buffer
    fresh = KLRolloutBuffer(3, env.observation_space, env.action_space, device="cpu", n_envs=1, kl_coef=9.0)
    fresh.bind(policy)  # what a loaded agent's buffer does: the saved beta wins over kl_coef
    assert fresh.controller.value == moved and type(fresh.controller).__name__ == "AdaptiveKLController"
    policy.kl_beta.fill_(float("nan"))  # leave the module-scoped fixture as it was
