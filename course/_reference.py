"""Reference implementations the autograder needs that the project does not (yet) expose.

Everything else is graded against the project's own code (:mod:`agents.kl`, :mod:`agents.losses`,
:func:`reward_models.bradley_terry.bradley_terry_loss`). ``rloo_advantages`` delegates to the project's
:func:`agents.critic_free.group_advantages`; ``preference_accuracy`` and ``reinforce_loss`` are
candidates for moving into the project.
"""

from __future__ import annotations

import torch


def preference_accuracy(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> float:
    """Share of pairs with ``r_chosen > r_rejected`` (ties count as errors), as in
    ``reward_models.bt_training.evaluate_preferences``."""
    return float((torch.as_tensor(r_chosen) > torch.as_tensor(r_rejected)).float().mean())


def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """REINFORCE leave-one-out advantages (Kool et al. 2019; Ahmadian et al. 2024).

    ``rewards`` holds ``group_size`` consecutive samples per prompt; each sample's baseline is the mean
    reward of the *other* samples of its prompt: ``A_i = R_i - (sum_j R_j - R_i) / (k - 1)``.
    The project's own estimator (:func:`agents.critic_free.group_advantages`) is the reference.
    """
    import numpy as np

    from agents.critic_free import group_advantages

    r = torch.as_tensor(rewards, dtype=torch.float32).reshape(-1)
    return group_advantages(r, np.arange(len(r)) // group_size, "rloo")


def reinforce_loss(logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sequence-level REINFORCE loss (Williams 1992): ``-mean_i(A_i * sum_t mask_it * logp_it)``."""
    seq_logp = (logp * mask.to(logp.dtype)).sum(-1)
    return -(advantages.detach().to(logp.dtype) * seq_logp).mean()


def rloo_update(model, optimizer, batch, cfg, allowed_tokens=None) -> dict[str, float]:
    """One RLOO step exactly as ``course/exercises/ex5_rloo.py:update`` specifies (the grader's reference)."""
    from course.scaffold import token_logprobs

    mask = batch.response_mask.float()
    kl = ((batch.logp - batch.ref_logp) * mask).sum(-1)
    rewards = batch.scores - cfg.beta * kl
    advantages = rloo_advantages(rewards, cfg.group_size)
    logp = token_logprobs(
        model, batch.input_ids, batch.attention_mask, batch.response_mask, cfg.temperature, allowed_tokens
    )
    loss = reinforce_loss(logp, advantages, mask)
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
    optimizer.step()
    return {"loss": loss.item(), "kl": float(kl.mean()), "reward": float(rewards.mean())}
