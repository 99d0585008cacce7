"""The ``rlhf/*`` metrics every agent logs (:data:`RLHF_METRICS`), and the callbacks that use them.

:class:`RLHFHistory` keeps the metrics of every rollout; :class:`ProgressBar` shows generated tokens.

Every path logs the same names with the same meaning, once per rollout, before ``on_rollout_end``: the
generic SB3 path (PPO, A2C, TRPO, MaskablePPO) from :class:`agents.KLRolloutBuffer`, the sequence-level
agents (:class:`agents.RLHFPPO`, :class:`agents.CriticFreePG`) from their own rollout. Both compute
them with :func:`rollout_metrics`, so they cannot drift apart. The README's metrics table lists
exactly these keys (``tests/agents/test_sb3_conventions.py`` checks it).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

RLHF_METRICS: dict[str, str] = {
    "rlhf/score": "mean reward-model score of the episodes that ended in this rollout (before the KL penalty)",
    "rlhf/kl": "mean summed KL estimate (nats) of those episodes, policy vs reference, with the configured "
    "estimator (k1: can be slightly negative when policy == reference)",
    "rlhf/kl_penalty": "`beta * rlhf/kl`, the mean KL penalty per episode",
    "rlhf/shaped_score": "`rlhf/score - rlhf/kl_penalty`, the mean KL-regularised RLHF objective; with the KL "
    'in the reward (every agent but GRPO\'s default `kl_in="loss"`) it is the mean '
    "episode return the agent maximises",
    "rlhf/beta": "the KL coefficient used for this rollout (after it, the adaptive controller updates it)",
    "rlhf/response_len": "mean response length in tokens (EOS included)",
    "rlhf/episodes": "episodes that ended in this rollout",
}
"""``rlhf/*`` metric name -> meaning: what every agent logs once per rollout (the one list of them)."""


def rollout_metrics(
    scores: Sequence[float], kls: Sequence[float], lengths: Sequence[float], beta: float
) -> dict[str, float]:
    """The :data:`RLHF_METRICS` of one rollout, from the episodes that ended in it.

    Args:
        scores: reward-model score of each finished episode.
        kls: summed KL estimate of each finished episode (nats).
        lengths: response length of each finished episode (tokens).
        beta: the KL coefficient the rollout's penalty used.

    Returns:
        ``rlhf/beta`` and ``rlhf/episodes`` always; the per-episode means only if an episode ended.
    """
    stats = {"rlhf/beta": float(beta), "rlhf/episodes": float(len(scores))}
    if len(scores):
        score, kl = float(np.mean(scores)), float(np.mean(kls))
        stats.update(
            {
                "rlhf/score": score,
                "rlhf/kl": kl,
                "rlhf/kl_penalty": beta * kl,
                "rlhf/shaped_score": score - beta * kl,
                "rlhf/response_len": float(np.mean(lengths)),
            }
        )
    return stats


class RLHFHistory(BaseCallback):
    """Record the ``rlhf/*`` metrics (:data:`RLHF_METRICS`) every agent logs at the end of each rollout.

    Works with every algorithm of :func:`agents.make_agent`: the generic SB3 path logs them from
    :class:`agents.KLRolloutBuffer`, the sequence-level agents from their own rollout, both before
    ``on_rollout_end``.

    Attributes:
        history: one dict per rollout: ``rollout`` (1-based), ``timesteps`` (generated tokens so far),
            ``seconds`` (wall time since training started) and every ``rlhf/*`` value.
    """

    def __init__(self, verbose: int = 0):
        super().__init__(verbose)
        self.history: list[dict[str, float]] = []
        self._t0 = time.perf_counter()

    def _on_training_start(self) -> None:
        self._t0 = time.perf_counter()

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        row = {
            "rollout": len(self.history) + 1,
            "timesteps": int(self.num_timesteps),
            "seconds": time.perf_counter() - self._t0,
        }
        row.update({k: float(v) for k, v in self.model.logger.name_to_value.items() if k.startswith("rlhf/")})
        self.history.append(row)

    @property
    def last(self) -> dict[str, float]:
        """The last rollout's row (empty before the first rollout)."""
        return dict(self.history[-1]) if self.history else {}


class ProgressBar(BaseCallback):
    """Generated tokens so far, as the project's tqdm bar (:func:`textrlhf.progress.progress_bar`).

    Use instead of SB3's ``learn(progress_bar=True)``, which draws a ``rich`` bar in another style (and
    warns that ``tqdm.rich`` is experimental). Counts steps of all envs, as SB3's own bar does. A run that
    another callback stops before its token budget (the pipeline's ``rl.rollouts`` cap) ends its bar at 100%
    of the tokens it took, not part-way.
    """

    def _on_training_start(self) -> None:
        from textrlhf.progress import progress_bar

        self.bar = progress_bar(total=self.locals["total_timesteps"] - self.model.num_timesteps, desc="rl", unit="tok")

    def _on_step(self) -> bool:
        self.bar.update(self.training_env.num_envs)
        return True

    def _on_training_end(self) -> None:
        self.bar.total = self.bar.n  # learn() ended normally: the run is complete, whichever budget ended it
        self.bar.close()
