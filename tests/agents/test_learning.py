"""Each SB3-path algorithm really learns: a rule reward on the tiny model, small vocabulary.

Task (``tests/support/learning_sweep.py``): 8 response tokens from {" yes", " no", " cat", " dog"}; reward =
fraction of " yes" tokens. The untrained (near-uniform) policy scores ~0.25; the vocabulary is restricted
by ``allowed_tokens`` in the policy (PPO, A2C, TRPO) or by an action mask (MaskablePPO). Each test asserts
on the median gain over its seeds, against a threshold set by the 8-seed sweep quoted in
``learning_sweep.LEARNERS`` (rerun: ``make sweep ARGS="ppo a2c trpo maskable_ppo"``).
"""

from __future__ import annotations

import numpy as np
import pytest
from learning_sweep import assert_learns, sb3_history


@pytest.mark.parametrize("algo", ["ppo", "a2c", "trpo"])
def test_algorithm_learns_rule_reward(algo):
    assert_learns(algo)


def test_maskable_ppo_learns_exactly_as_ppo():
    """An action mask over the 4 words and PPO's ``allowed_tokens`` give the same distribution and draw the same
    random stream, so MaskablePPO's rollout scores equal PPO's (whose learning the ppo case asserts over 3 seeds;
    the 8-seed sweep gives both the same gains). Stronger than a second learning test, at a third of the cost."""
    masked, plain = sb3_history("maskable_ppo", 0), sb3_history("ppo", 0)  # ppo's run is cached from its test
    assert len(masked) == len(plain) == 5
    np.testing.assert_allclose(masked, plain, rtol=0, atol=1e-6)
