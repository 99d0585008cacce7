"""``RLHFHistory``: the ``rlhf/*`` metrics of every rollout, kept in memory for scripts and plots."""

from __future__ import annotations

import time

from stable_baselines3.common.callbacks import BaseCallback


class RLHFHistory(BaseCallback):
    """Record the ``rlhf/*`` metrics every agent logs at the end of each rollout.

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
        row = {"rollout": len(self.history) + 1, "timesteps": int(self.num_timesteps),
               "seconds": time.perf_counter() - self._t0}
        row.update({k: float(v) for k, v in self.model.logger.name_to_value.items() if k.startswith("rlhf/")})
        self.history.append(row)

    @property
    def last(self) -> dict[str, float]:
        """The last rollout's row (empty before the first rollout)."""
        return dict(self.history[-1]) if self.history else {}
