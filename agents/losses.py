"""The policy-gradient maths as plain functions on padded ``(batch, T)`` token tensors.

Shared by the sequence-level agents (:mod:`agents.rlhf_ppo`), hand-written loops and the course's
reference solutions. Every function takes a ``mask`` (1 on real response tokens, 0 on padding
after the episode ended) so that whole episodes of different lengths sit in one tensor.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is 1."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_whiten(
    x: torch.Tensor,
    mask: torch.Tensor,
    shift_mean: bool = True,
    eps: float = 1e-8,
    sum_over: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Normalise ``x`` to mean 0 (optional) and std 1 over the masked positions; padding stays 0.

    Advantage whitening per minibatch, as SB3's ``normalize_advantage`` and TRL's ``masked_whiten``.
    ``sum_over`` (e.g. :meth:`agents.distributed.DataParallel.sum`) pools the mean and variance over
    more positions than this tensor's: every data-parallel rank's.
    """
    if sum_over is None:
        mean = masked_mean(x, mask)
        var = masked_mean((x - mean) ** 2, mask)
    else:
        m = mask.to(x.dtype)
        totals = sum_over(torch.stack([(x * m).sum(), m.sum()]))
        count = totals[1].clamp(min=1)
        mean = totals[0] / count
        var = sum_over(((x - mean) ** 2 * m).sum()) / count
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask.to(x.dtype)


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation inside finished episodes (Schulman et al. 2016).

    Every episode ends (terminated) at its last masked token, so nothing is bootstrapped past it:
    ``delta_t = r_t + gamma * V_{t+1} * [t+1 in episode] - V_t``,
    ``A_t = delta_t + gamma * lam * A_{t+1}``.

    Args:
        rewards: ``(batch, T)`` per-token rewards (0 on padding).
        values: ``(batch, T)`` value estimates ``V(s_t)`` taken before each token.
        mask: ``(batch, T)`` 1 on response tokens; each row's ones must be a prefix.
        gamma: discount (1 for RLHF: the horizon is short and the reward comes at the end).
        lam: GAE lambda.

    Returns:
        ``(advantages, returns)``, both ``(batch, T)`` and 0 on padding; ``returns = advantages + values``.
    """
    mask = mask.to(rewards.dtype)
    T = rewards.shape[1]
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(T)):
        next_value = values[:, t + 1] * mask[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * last * (mask[:, t + 1] if t + 1 < T else 0.0)) * mask[:, t]
        adv[:, t] = last
    returns = (adv + values) * mask
    return adv, returns


def ppo_policy_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip_range: float = 0.2
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate (Schulman et al. 2017), averaged over masked tokens.

    ``L = -mean(min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A))`` with ``ratio = exp(logp - old_logp)``.

    Returns:
        ``(loss, stats)`` with ``stats``: ``clip_fraction``, ``approx_kl`` (``mean((ratio - 1) - log ratio)``,
        the k3 estimator SB3 logs), ``ratio`` (mean).
    """
    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range) * advantages
    loss = -masked_mean(torch.min(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {
            "clip_fraction": masked_mean(((ratio - 1.0).abs() > clip_range).float(), mask),
            "approx_kl": masked_mean(torch.expm1(log_ratio) - log_ratio, mask),
            "ratio": masked_mean(ratio, mask),
        }
    return loss, stats


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range_vf: float | None = None,
) -> torch.Tensor:
    """Squared error to the returns, optionally clipped around the rollout values (PPO2, TRL).

    With ``clip_range_vf`` the loss is ``max((V - R)^2, (clip(V, V_old +- eps) - R)^2)``, halved as in TRL
    and lm-human-preferences; without it, SB3's plain ``MSE(R, V)``.
    """
    if clip_range_vf is None:
        return masked_mean((returns - values) ** 2, mask)
    clipped = old_values + torch.clamp(values - old_values, -clip_range_vf, clip_range_vf)
    return 0.5 * masked_mean(torch.max((values - returns) ** 2, (clipped - returns) ** 2), mask)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution of each row of ``logits`` (``(..., V)`` -> ``(...)``)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)
