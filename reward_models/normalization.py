"""Reward normalisation: an affine map ``gain * score + bias`` fitted on reference-policy samples.

Stiennon et al. (2020, "Learning to summarize from human feedback") normalise the reward model
"such that the reference summaries from the dataset achieve a mean score of 0"; Ziegler et al.
(2019) and OpenAI's lm-human-preferences fit gain and bias so that samples of the *initial* policy
score mean 0 and standard deviation 1. The RL hyper-parameters (KL coefficient, learning rate) are
then on a known scale whatever reward model is plugged in. The fit uses float64 and the population
standard deviation (``ddof=0``), so re-scoring the same samples gives mean 0 and std 1 exactly up to
float32 rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from reward_models.base import RewardFunction, check_scores, make_reward


def fit_gain_bias(
    scores: Sequence[float] | np.ndarray, target_mean: float = 0.0, target_std: float = 1.0
) -> tuple[float, float]:
    """Gain and bias that map ``scores`` to mean ``target_mean`` and std ``target_std``.

    Args:
        scores: raw scores of reference-policy samples (at least 2, not all equal).
        target_mean: wanted mean after the map.
        target_std: wanted (population) standard deviation after the map; must be positive.

    Returns:
        ``(gain, bias)`` with ``gain * scores + bias`` having the target moments.

    Raises:
        ValueError: fewer than 2 scores, non-finite scores, or scores with zero spread.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if s.size < 2:
        raise ValueError(f"normalisation needs at least 2 reference scores, got {s.size}")
    if not np.isfinite(s).all():
        raise ValueError("normalisation got non-finite reference scores; check the reward function")
    if not target_std > 0:
        raise ValueError(f"target_std must be positive, got {target_std!r}")
    std = float(s.std())
    if std <= 1e-12 * max(1.0, float(np.abs(s).max())):
        raise ValueError(
            f"all {s.size} reference scores are equal ({s[0]:.6g}): the reward does not separate these "
            f"samples, so no gain can give them unit variance; use more varied reference samples"
        )
    gain = target_std / std
    bias = target_mean - gain * float(s.mean())
    return gain, bias


class NormalizedReward:
    """Wrap any reward so that its scores are ``gain * score + bias``.

    Args:
        reward: any reward spec accepted by :func:`reward_models.make_reward`.
        gain: multiplier (default 1).
        bias: offset (default 0).

    Example:
        >>> r = NormalizedReward("sentiment").fit(prompts, reference_responses)  # doctest: +SKIP
    """

    def __init__(self, reward, gain: float = 1.0, bias: float = 0.0):
        self.reward: RewardFunction = make_reward(reward)
        self.gain = float(gain)
        self.bias = float(bias)

    def fit(self, prompts: Sequence[str], responses: Sequence[str]) -> NormalizedReward:
        """Fit gain/bias on reference-policy samples (mean 0, std 1); returns ``self``."""
        raw = check_scores(self.reward.score(prompts, responses), prompts, repr(self.reward))
        self.gain, self.bias = fit_gain_bias(raw)
        return self

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Normalised scores, float32, one per pair."""
        raw = check_scores(self.reward.score(prompts, responses), prompts, repr(self.reward))
        return check_scores(self.gain * raw.astype(np.float64) + self.bias, prompts, "normalized reward")

    def __repr__(self) -> str:
        return f"NormalizedReward({self.reward!r}, gain={self.gain:.6g}, bias={self.bias:.6g})"
