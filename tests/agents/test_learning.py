"""Each algorithm really learns: a rule reward on the tiny model, small vocabulary, 2 seeds each.

Task: 8 response tokens from {" yes", " no", " cat", " dog"}; reward = fraction of " yes" tokens.
The untrained (near-uniform) policy scores ~0.25 (std of a rollout mean over 64 tokens ~0.05); the
vocabulary is restricted by ``allowed_tokens`` in the policy (PPO, A2C, TRPO) or by an action mask
(MaskablePPO), so the sampled, stored and optimised distributions are the same.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))  # --import-mode=importlib: make the helper importable
from sb3_helpers import ScoreRecorder, small_env_kwargs, target_fraction, word_ids  # noqa: F401

import agents

# Per-algorithm settings for a ~5-rollout CI budget (64 transitions per rollout). Learning rates are
# far above the LM defaults because the tiny random model needs large steps to move in 5 updates.
SETTINGS = {
    "ppo": dict(learning_rate=1e-2, n_epochs=2, batch_size=64),
    "a2c": dict(learning_rate=1e-2),
    # sb3-contrib's TRPO takes one backward pass per parameter tensor for its Hessian-vector products,
    # so it is the slowest here: a larger trust region, fewer CG and line-search steps.
    "trpo": dict(target_kl=0.1, n_critic_updates=1, cg_max_steps=3, line_search_max_iter=5,
                 learning_rate=1e-2),
    "maskable_ppo": dict(learning_rate=1e-2, n_epochs=2, batch_size=64),
}


def _train(algo: str, seed: int, word_ids: list[int], rollouts: int = 5):
    kw = small_env_kwargs(reward=target_fraction, max_new_tokens=8)
    if algo == "maskable_ppo":
        env = agents.make_vec_text_env(4, seed=seed, mask="subset", mask_kwargs={"token_ids": word_ids}, **kw)
        policy_kwargs = {}
    else:
        env = agents.make_vec_text_env(4, seed=seed, **kw)
        policy_kwargs = {"allowed_tokens": word_ids}
    agent = agents.make_agent(
        algo, env, seed=seed, temperature=1.0, policy_kwargs=policy_kwargs, kl_coef=0.0, adaptive_kl=False,
        n_steps=16, **SETTINGS[algo],
    )
    rec = ScoreRecorder()
    agent.learn(16 * 4 * rollouts, callback=rec)
    return [h["rlhf/score"] for h in rec.history]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("algo", ["ppo", "a2c", "trpo", "maskable_ppo"])
def test_algorithm_learns_rule_reward(algo, seed, word_ids):
    scores = _train(algo, seed, word_ids, rollouts=6 if algo == "trpo" else 5)
    before, after = scores[0], float(np.mean(scores[-2:]))
    # The first rollout is the untrained policy. 0.2 is 4 standard deviations of a rollout mean.
    assert after > before + 0.2, f"{algo} seed {seed} did not learn: rollout scores {np.round(scores, 2)}"
