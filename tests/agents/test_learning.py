"""Each SB3-path algorithm really learns: a rule reward on the tiny model, small vocabulary, 3 seeds each.

Task (``tests/support/learning_sweep.py``): 8 response tokens from {" yes", " no", " cat", " dog"}; reward =
fraction of " yes" tokens. The untrained (near-uniform) policy scores ~0.25; the vocabulary is restricted
by ``allowed_tokens`` in the policy (PPO, A2C, TRPO) or by an action mask (MaskablePPO). Each test asserts
on the median gain over its seeds, against a threshold set by the 8-seed sweep quoted in
``learning_sweep.LEARNERS`` (rerun: ``make sweep ARGS="ppo a2c trpo maskable_ppo"``).
"""

from __future__ import annotations

import pytest
from learning_sweep import assert_learns


@pytest.mark.parametrize("algo", ["ppo", "a2c", "trpo", "maskable_ppo"])
def test_algorithm_learns_rule_reward(algo):
    assert_learns(algo)
