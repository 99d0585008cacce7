"""Exercise 3: PPO's clipped surrogate and value losses on padded token batches.

PPO (Schulman et al. 2017, "Proximal Policy Optimization Algorithms", eq. 7) re-uses one batch of
samples for several gradient steps. With ``ratio_t = pi(a_t|s_t) / pi_old(a_t|s_t)`` it maximises

    L_clip = E_t[ min(ratio_t * A_t, clip(ratio_t, 1 - eps, 1 + eps) * A_t) ]

so a token stops pushing once its probability has moved by more than ``eps`` in the helpful direction.
We *minimise* ``-L_clip``. The critic regresses on the GAE returns, optionally with PPO2-style value
clipping (also used by OpenAI's lm-human-preferences and TRL):

    L_V = mean((V - R)^2)                                                     (no clipping)
    L_V = 0.5 * mean(max((V - R)^2, (V_old + clip(V - V_old, -e, e) - R)^2))   (with clip range e)

All means are over the masked (real) tokens only: ``masked_mean(x, m) = sum(x * m) / sum(m)``.
Advantages are usually "whitened" per batch: ``(A - mean) / sqrt(var + 1e-8)`` with masked mean and
(biased) variance; padding stays 0.

Grading: compared with ``agents.losses.{masked_mean, masked_whiten, ppo_policy_loss, value_loss}``,
and checked for properties: ratio 1 gives ``-mean(A)``; clipped tokens get zero gradient; padding
values never change the result.
"""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is 1 (a 0-d tensor; use ``clamp(min=1)`` on the count)."""
    # TODO
    raise NotImplementedError("ex3.masked_mean")


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``(x - mean) / sqrt(var + eps)`` with masked mean/variance (biased: divide by the count); 0 on padding."""
    # TODO
    raise NotImplementedError("ex3.masked_whiten")


def ppo_policy_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip_range: float = 0.2
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate loss ``-masked_mean(min(ratio * A, clip(ratio, 1-eps, 1+eps) * A))``.

    Args:
        logp: ``(B, T)`` log-probs under the current policy (requires grad).
        old_logp: ``(B, T)`` log-probs at rollout time.
        advantages: ``(B, T)``.
        mask: ``(B, T)`` 1 on real tokens.
        clip_range: ``eps``.

    Returns:
        ``(loss, stats)``: a 0-d loss tensor, and ``stats`` with two 0-d tensors (no gradient):
        ``"clip_fraction"`` = masked mean of ``|ratio - 1| > eps``, and ``"approx_kl"`` = masked mean of
        ``(ratio - 1) - log(ratio)`` (the k3 estimator of ``KL(pi_old || pi)``, as SB3 logs it).
    """
    # TODO
    raise NotImplementedError("ex3.ppo_policy_loss")


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range_vf: float | None = None,
) -> torch.Tensor:
    """Critic loss (see the module docstring for both forms).

    Args:
        values: ``(B, T)`` current value predictions (requires grad).
        old_values: ``(B, T)`` value predictions at rollout time.
        returns: ``(B, T)`` regression targets.
        mask: ``(B, T)`` 1 on real tokens.
        clip_range_vf: ``None`` for the plain masked MSE, else the clip range ``e``.

    Returns:
        0-d tensor.
    """
    # TODO
    raise NotImplementedError("ex3.value_loss")
