"""``PrefetchReward``: several envs' episode ends scored in one batched reward call.

Gymnasium's ``step`` returns the reward of that step, so an env scores its episode alone, a batch of
one. For a reward *model* that is the dominant cost of a lock-step rollout: on this 2-core CPU a
135M-parameter scorer takes about 0.11 s per call at batch 1, so 32 episodes ending together cost
3.6 s one by one and about 1 s in one batch (issue 8's benchmark, ``scripts/benchmark.py``).

``PrefetchReward`` keeps the env the source of truth. A rollout that steps many envs in lock-step
first asks each env what its step would score (:meth:`textenv.TextRLHFEnv.preview_end`), hands those
pairs to :meth:`prefetch` in one batch, then steps the envs as usual; each env calls :meth:`score`
on its own (prompt, response), which returns the prefetched value. A pair that was not prefetched is
scored on the spot, so stepping the env by hand, or from any other agent, gives the same rewards.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from reward_models.base import RewardFunction, check_scores, make_reward


class PrefetchReward:
    """Wrap a reward so that episode ends can be scored ahead of ``step``, in one batch.

    Args:
        reward: any reward spec :func:`reward_models.make_reward` accepts (a name, a reward-model
            folder, a callable, an object with ``score``).
        **kwargs: options of a named reward.

    Scores are the wrapped reward's own: a batch of ``n`` pairs gives the same numbers as ``n``
    calls of one pair, up to the float rounding of a padded batch in a neural reward model.
    """

    def __init__(self, reward, **kwargs):
        self.reward: RewardFunction = make_reward(reward, **kwargs)
        self._kept: dict[tuple[str, str], list[float]] = {}
        self.prefetched = 0
        """Pairs scored ahead of ``step`` (a counter, for tests and logs)."""

    def prefetch(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Score ``(prompt, response)`` pairs now, in one call, and keep the scores for :meth:`score`."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        if not prompts:
            return np.zeros(0, dtype=np.float32)
        scores = check_scores(self.reward.score(list(prompts), list(responses)), prompts, source=repr(self.reward))
        for key, value in zip(zip(prompts, responses), scores):
            self._kept.setdefault(key, []).append(float(value))
        self.prefetched += len(prompts)
        return scores

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Prefetched scores where there are some (each used once), the wrapped reward's for the rest."""
        out = np.zeros(len(prompts), dtype=np.float32)
        missing = []
        for i, key in enumerate(zip(prompts, responses)):
            kept = self._kept.get(key)
            if kept:
                out[i] = kept.pop()
                if not kept:
                    del self._kept[key]
            else:
                missing.append(i)
        if missing:
            sub_p, sub_r = [prompts[i] for i in missing], [responses[i] for i in missing]
            out[missing] = check_scores(self.reward.score(sub_p, sub_r), sub_p, source=repr(self.reward))
        return out

    @property
    def pending(self) -> int:
        """Prefetched scores not yet used by an env."""
        return sum(len(v) for v in self._kept.values())

    def clear(self) -> None:
        """Forget unused prefetched scores (a rollout that stopped between prefetch and step)."""
        self._kept.clear()

    def __repr__(self) -> str:
        return f"PrefetchReward({self.reward!r})"
