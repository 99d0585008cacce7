"""Each SB3-path algorithm really learns: a rule reward on the tiny model, small vocabulary, 3 seeds each.

Task (``tests/learning_sweep.py``): 8 response tokens from {" yes", " no", " cat", " dog"}; reward =
fraction of " yes" tokens. The untrained (near-uniform) policy scores ~0.25; the vocabulary is restricted
by ``allowed_tokens`` in the policy (PPO, A2C, TRPO) or by an action mask (MaskablePPO). Each test asserts
on the median gain over its seeds, against a threshold set by the 8-seed sweep quoted in
``learning_sweep.LEARNERS`` (rerun: ``python tests/learning_sweep.py ppo a2c trpo maskable_ppo``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from learning_sweep import assert_learns  # noqa: E402  (it takes tests/ off sys.path again)


@pytest.mark.parametrize("algo", ["ppo", "a2c", "trpo", "maskable_ppo"])
def test_algorithm_learns_rule_reward(algo):
    assert_learns(algo)
