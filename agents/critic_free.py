"""Critic-free policy gradients on ``TextRLHF-v0``: REINFORCE, RLOO, GRPO, REINFORCE++.

Same machinery as :class:`agents.rlhf_ppo.RLHFPPO`, their one base :class:`agents.sequence_agent.SequenceAgent`
(lock-step KV-cached rollouts through the env, batched reference scoring, sequence-level updates, SB3
logger / callbacks / ``save`` / ``load``), but the baseline comes from the batch instead of a value
network, and the policy has none (``value_head=False``: no critic parameters in the policy, the
optimizer or the saved zip):

* ``reinforce``: ``A = R - b`` with ``b`` a running mean of past returns (Williams 1992); with
  ``baseline=False`` and ``group_size=1`` it is the plain score-function estimator.
* ``rloo``: ``A_i = R_i - mean_{j != i} R_j`` over the ``k`` responses to the same prompt
  (Kool et al. 2019; Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style Optimization
  for Learning from Human Feedback in LLMs").
* ``grpo``: ``A_i = (R_i - mean_group) / std_group`` (Shao et al. 2024, DeepSeekMath), with the KL
  as a per-token k3 loss term instead of a reward penalty by default.
* ``reinforce_pp``: token-level KL penalty in the reward, return-to-go per token, then advantages
  normalised over the whole batch (Hu 2025, "REINFORCE++").

Groups are sampled honestly through the env: with ``group_size=k``, envs ``[g*k, (g+1)*k)`` answer
the same prompt (the group's first env draws it, the others get ``reset(options={"prompt_index":
...})``), so ``n_envs`` must be a multiple of ``k``.

The loss is PPO's clipped surrogate on the rollout log-probs. With ``n_epochs=1`` and one minibatch
the ratio is exactly 1 at the only step and the gradient is the vanilla policy gradient
``-E[A * grad log pi]``; more epochs give the clipped multi-step variant GRPO describes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from agents.kl import KLConfig, kl_estimate, shape_rewards
from agents.losses import masked_mean, masked_whiten
from agents.rollout import EpisodeBatch
from agents.sequence_agent import SequenceAgent

ESTIMATORS = ("reinforce", "rloo", "grpo", "reinforce_pp")
"""Advantage estimators of :class:`CriticFreePG`."""
AGGREGATIONS = ("sequence_sum", "sequence_mean", "token_mean")
"""How per-token loss terms are averaged: sum over each response then mean over responses
(REINFORCE/RLOO: the score function of the whole sequence), mean per response then over responses
(GRPO's ``1/G sum_i 1/|o_i| sum_t``), or mean over all tokens of the batch (PPO, REINFORCE++)."""

_DEFAULTS: dict[str, dict[str, Any]] = {
    "reinforce": {"group_size": 1, "kl_in": "reward", "aggregation": "sequence_sum"},
    "rloo": {"group_size": 4, "kl_in": "reward", "aggregation": "sequence_sum"},
    "grpo": {"group_size": 4, "kl_in": "loss", "aggregation": "sequence_mean", "kl_estimator": "k3"},
    "reinforce_pp": {"group_size": 1, "kl_in": "reward", "aggregation": "token_mean", "kl_mode": "per_token"},
}


def group_advantages(returns: torch.Tensor, groups: np.ndarray, estimator: str, eps: float = 1e-4) -> torch.Tensor:
    """Sequence-level advantages from per-episode returns and group ids.

    Args:
        returns: ``(n,)`` per-episode returns.
        groups: ``(n,)`` group id of each episode (episodes with the same id answer the same prompt).
        estimator: ``"rloo"`` (leave-one-out mean) or ``"grpo"`` (group mean and std).
        eps: added to GRPO's std (TRL uses 1e-4).

    Returns:
        ``(n,)`` advantages.
    """
    adv = torch.zeros_like(returns)
    for g in np.unique(groups):
        idx = torch.as_tensor(np.flatnonzero(groups == g))
        r = returns[idx]
        k = len(idx)
        if estimator == "rloo":
            if k < 2:
                raise ValueError("RLOO needs at least 2 responses per prompt (group_size >= 2)")
            # Ahmadian et al. 2024, eq. 5: baseline = mean of the other k - 1 samples' returns.
            adv[idx] = r - (r.sum() - r) / (k - 1)
        elif estimator == "grpo":
            if k < 2:
                raise ValueError("GRPO needs at least 2 responses per prompt (group_size >= 2)")
            # Shao et al. 2024, sec. 4.1.2 (outcome supervision): normalise by the group's mean and std.
            adv[idx] = (r - r.mean()) / (r.std() + eps)
        else:
            raise ValueError(f"group_advantages takes 'rloo' or 'grpo', got {estimator!r}")
    return adv


def reward_to_go(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``G_t = sum_{s >= t} r_s`` inside each episode (gamma 1): ``(n, T)``, 0 on padding."""
    return torch.flip(torch.cumsum(torch.flip(rewards * mask, [-1]), -1), [-1]) * mask


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """Average a ``(n, T)`` per-token loss as :data:`AGGREGATIONS` describes."""
    mask = mask.to(per_token.dtype)
    if how == "sequence_sum":
        return (per_token * mask).sum(-1).mean()
    if how == "sequence_mean":
        return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()
    if how == "token_mean":
        return masked_mean(per_token, mask)
    raise ValueError(f"unknown aggregation {how!r}; use one of {list(AGGREGATIONS)}")


def _critic_free_options(estimator: str, group_size, kl_in, aggregation) -> tuple[int, str, str]:
    """``(group_size, kl_in, aggregation)`` of ``estimator``, its defaults filled in, after checking them.

    Raises:
        ValueError: an unknown estimator, ``kl_in`` or aggregation, or a group too small to compare.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; use one of {list(ESTIMATORS)}")
    defaults = _DEFAULTS[estimator]
    group_size = int(group_size if group_size is not None else defaults["group_size"])
    kl_in, aggregation = kl_in or defaults["kl_in"], aggregation or defaults["aggregation"]
    if kl_in not in ("reward", "loss"):
        raise ValueError(f"kl_in must be 'reward' or 'loss', got {kl_in!r}")
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; use one of {list(AGGREGATIONS)}")
    if estimator in ("rloo", "grpo") and group_size < 2:
        raise ValueError(f"{estimator} compares responses to the same prompt: group_size must be >= 2")
    return group_size, kl_in, aggregation


def _headless(policy_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """``policy_kwargs`` with ``value_head=False``: a critic-free agent trains no critic.

    Raises:
        ValueError: ``value_head=True`` was asked for.
    """
    policy_kwargs = dict(policy_kwargs or {})
    if policy_kwargs.get("value_head", False):
        raise ValueError(
            "critic-free agents have no value head (their baseline comes from the batch); drop value_head "
            "from policy_kwargs, or use RLHFPPO for an agent with a critic"
        )
    return {**policy_kwargs, "value_head": False}


class CriticFreePG(SequenceAgent):
    """REINFORCE / RLOO / GRPO / REINFORCE++ on ``TextRLHF-v0`` (see the module docstring).

    Args:
        policy: as :class:`agents.rlhf_ppo.RLHFPPO`.
        env: as :class:`agents.rlhf_ppo.RLHFPPO`.
        estimator: one of :data:`ESTIMATORS`.
        group_size: responses per prompt ``k`` (default per estimator: 4 for rloo/grpo, else 1).
        kl_in: ``"reward"`` (``score - beta * KL``, the other agents' objective) or ``"loss"``
            (``beta * KL`` per token added to the loss, GRPO's choice).
        aggregation: one of :data:`AGGREGATIONS` (default per estimator).
        baseline: ``reinforce`` only: subtract a running mean of past returns.
        baseline_momentum: weight of the old mean in that running mean.
        learning_rate: as :class:`RLHFPPO`; defaults to 1e-4, docs/design.md section 5's measured scale
            for one Adam step per batch on this CPU.
        n_epochs: as :class:`RLHFPPO`; defaults to 1 (on-policy).
        kl_estimator: as :class:`RLHFPPO`; ``None`` takes the estimator's choice in ``_DEFAULTS`` (GRPO:
            k3), else :class:`agents.kl.KLConfig`'s.
        kl_mode: as :class:`RLHFPPO`; ``None`` takes the estimator's choice (REINFORCE++: per_token),
            else :class:`agents.kl.KLConfig`'s.
        policy_kwargs: as :class:`RLHFPPO`; the policy is built without a value head.
        **kwargs: every other argument of :class:`RLHFPPO` (``n_steps``, ``batch_size``, ``clip_range``,
            ``max_grad_norm``, ``kl_coef``, ``adaptive_kl``, ``kl_target``, ``kl_horizon``, ``target_kl``,
            ...). The critic's options (``vf_coef``, ``clip_range_vf``, ``gae_lambda``) are accepted and
            unused.

    Raises:
        ValueError: a bad estimator option, or ``policy_kwargs={"value_head": True}``.
    """

    def __init__(
        self,
        policy,
        env,
        estimator: str = "rloo",
        group_size: int | None = None,
        kl_in: str | None = None,
        aggregation: str | None = None,
        baseline: bool = True,
        baseline_momentum: float = 0.9,
        learning_rate: float = 1e-4,
        n_epochs: int = 1,
        kl_estimator: str | None = None,
        kl_mode: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        self.estimator = estimator
        self.group_size, self.kl_in, self.aggregation = _critic_free_options(estimator, group_size, kl_in, aggregation)
        self.baseline = bool(baseline)
        self.baseline_momentum = float(baseline_momentum)
        self._baseline_value: float | None = None
        defaults = _DEFAULTS[estimator]
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_epochs=n_epochs,
            kl_estimator=kl_estimator or defaults.get("kl_estimator", KLConfig.kl_estimator),
            kl_mode=kl_mode or defaults.get("kl_mode", KLConfig.kl_mode),
            policy_kwargs=_headless(policy_kwargs),
            **kwargs,
        )

    def _setup_model(self) -> None:
        # Checked here, not in __init__: load() builds the agent with the constructor's defaults
        # (rloo: group_size 4) and only then restores the saved group_size, before calling this.
        if self.env is not None and self.env.num_envs % self.group_size:
            raise ValueError(
                f"n_envs ({self.env.num_envs}) must be a multiple of group_size ({self.group_size}): each group of "
                f"envs answers one prompt"
            )
        super()._setup_model()

    @torch.no_grad()
    def compute_advantages(self, batch: EpisodeBatch, beta: float) -> None:
        """Rewards with the KL (if ``kl_in="reward"``), then the estimator's advantages; returns are unused (0)."""
        mask = batch.mask
        reward_beta = beta if self.kl_in == "reward" else 0.0
        batch.rewards = shape_rewards(
            batch.scores, batch.logp, batch.ref_logp, reward_beta, self.kl_mode, self.kl_estimator, mask.bool()
        )
        returns = batch.rewards.sum(-1)  # (n,) undiscounted return of each episode
        if self.estimator == "reinforce":
            adv = (returns - self._running_baseline(returns))[:, None] * mask
        elif self.estimator == "reinforce_pp":
            # Hu 2025, REINFORCE++ eq. 6-7: token-level return-to-go, normalised over the global batch.
            dp = self._dp if self._dp.distributed else None  # the global batch: every rank's episodes
            adv = masked_whiten(reward_to_go(batch.rewards, mask), mask, sum_over=dp and dp.sum)
        else:
            adv = group_advantages(returns, batch.extras["group"], self.estimator)[:, None] * mask
        batch.advantages = adv
        batch.returns = torch.zeros_like(adv)

    def _running_baseline(self, returns: torch.Tensor) -> float:
        """REINFORCE's baseline for this batch (from *past* batches: Williams 1992, unbiased), then updated."""
        if not self.baseline:
            return 0.0
        b = self._baseline_value if self._baseline_value is not None else 0.0
        mean, m = self._dp.mean(returns) if self._dp.distributed else float(returns.mean()), self.baseline_momentum
        self._baseline_value = mean if self._baseline_value is None else m * self._baseline_value + (1 - m) * mean
        return b

    def minibatch_weight(self, batch: EpisodeBatch, idx: torch.Tensor) -> float:
        """Tokens with ``token_mean`` aggregation, else episodes (the sequence aggregations average over them)."""
        return super().minibatch_weight(batch, idx) if self.aggregation == "token_mean" else float(len(idx))

    def minibatch_loss(
        self, batch: EpisodeBatch, idx: torch.Tensor, clip_range: float
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Clipped surrogate aggregated as ``aggregation`` says, + ``beta`` x KL (``kl_in="loss"``), - entropy bonus."""
        dev = self.device
        mask, logp, _, entropy = self.minibatch_forward(batch, idx)
        old = batch.logp[idx].to(dev)
        adv = batch.advantages[idx].to(dev)
        ratio = torch.exp(logp - old)
        surrogate = torch.min(ratio * adv, torch.clamp(ratio, 1 - clip_range, 1 + clip_range) * adv)
        loss = -aggregate(surrogate, mask, self.aggregation)
        kl_loss = torch.zeros((), device=dev)
        if self.kl_in == "loss":
            # Shao et al. 2024, eq. 4: k3 KL to the reference, per token, in the loss.
            kl_loss = aggregate(
                kl_estimate(logp, batch.ref_logp[idx].to(dev), self.kl_estimator), mask, self.aggregation
            )
            loss = loss + self.beta * kl_loss
        if self.ent_coef:
            loss = loss - self.ent_coef * masked_mean(entropy, mask)
        with torch.no_grad():
            log_ratio = logp - old
            stats = {
                "approx_kl": float(masked_mean(torch.expm1(log_ratio) - log_ratio, mask)),
                "clip_fraction": float(masked_mean(((ratio - 1).abs() > clip_range).float(), mask)),
                "kl_loss": float(kl_loss),
                "entropy": float(masked_mean(entropy, mask)),
            }
        return loss, stats

    def record_train(self, logs: dict[str, list[float]], clip_range: float) -> None:
        """``train/{loss, approx_kl, clip_fraction, kl_loss, entropy}``: means over minibatches."""
        for key, values in logs.items():
            self.logger.record(f"train/{key}", float(np.mean(values)))
