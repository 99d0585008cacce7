"""Exercise 3 (reference solution): thin wrappers of :mod:`agents.losses` (Schulman et al. 2017)."""

from __future__ import annotations

from agents import losses


def masked_mean(x, mask):
    """See ``course/exercises/ex3_ppo.py``."""
    return losses.masked_mean(x, mask)


def masked_whiten(x, mask, eps=1e-8):
    """See ``course/exercises/ex3_ppo.py``."""
    return losses.masked_whiten(x, mask, eps=eps)


def ppo_policy_loss(logp, old_logp, advantages, mask, clip_range=0.2):
    """See ``course/exercises/ex3_ppo.py``."""
    return losses.ppo_policy_loss(logp, old_logp, advantages, mask, clip_range)


def value_loss(values, old_values, returns, mask, clip_range_vf=None):
    """See ``course/exercises/ex3_ppo.py``."""
    return losses.value_loss(values, old_values, returns, mask, clip_range_vf)
