"""Exercise 1 (reference solution): thin wrappers of :mod:`agents.kl` (Schulman 2020)."""

from __future__ import annotations

import torch

from agents.kl import kl_estimate as _kl_estimate
from agents.kl import shape_rewards


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """See ``course/exercises/ex1_kl.py``."""
    return _kl_estimate(logp, ref_logp, kind)


def categorical_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """See ``course/exercises/ex1_kl.py``."""
    logp, logq = torch.log_softmax(p_logits, -1), torch.log_softmax(q_logits, -1)
    return (logp.exp() * (logp - logq)).sum(-1)


def kl_penalized_reward(scores, logp, ref_logp, beta, mask, kind="k1"):
    """See ``course/exercises/ex1_kl.py``."""
    return shape_rewards(scores, logp, ref_logp, beta, mode="terminal", kind=kind, mask=mask)
