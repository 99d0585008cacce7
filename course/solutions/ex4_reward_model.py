"""Exercise 4 (reference solution): the project's Bradley-Terry loss (Bradley & Terry 1952; Ouyang et al.
2022, eq. 1) and the accuracy of ``reward_models.bt_training.evaluate_preferences``."""

from __future__ import annotations

import torch

from course._reference import preference_accuracy as _accuracy
from reward_models.bradley_terry import bradley_terry_loss as _bt_loss


def bradley_terry_loss(r_chosen, r_rejected, margin=0.0):
    """See ``course/exercises/ex4_reward_model.py``."""
    return _bt_loss(r_chosen, r_rejected, margin)


def preference_accuracy(r_chosen, r_rejected) -> float:
    """See ``course/exercises/ex4_reward_model.py``."""
    return _accuracy(r_chosen, r_rejected)


def train_linear_reward_model(x_chosen, x_rejected, steps=300, lr=0.05, seed=0):
    """See ``course/exercises/ex4_reward_model.py``."""
    torch.manual_seed(seed)
    w = torch.zeros(x_chosen.shape[1], requires_grad=True)
    opt = torch.optim.Adam([w], lr=lr)
    for _ in range(steps):
        loss = bradley_terry_loss(x_chosen @ w, x_rejected @ w)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return w.detach()
