"""Exercise 4: the Bradley-Terry preference loss and reward-model accuracy.

A reward model ``r(prompt, response)`` is learned from pairs ``(chosen, rejected)`` that a person (or
a simulated annotator) ranked. The Bradley-Terry model (Bradley & Terry 1952) says the chosen side wins
with probability ``sigmoid(r_chosen - r_rejected)``; maximising the likelihood of the observed choices
gives the reward-model loss of InstructGPT (Ouyang et al. 2022, eq. 1), with an optional margin
(Llama 2, Touvron et al. 2023)::

    loss = -mean_i log sigmoid(r_chosen_i - r_rejected_i - margin_i)

Equal rewards give ``log 2 = 0.693``. Accuracy = share of pairs with ``r_chosen > r_rejected``
(ties count as errors). Only reward *differences* matter: adding a constant to every reward changes
nothing, which is why trained reward models are normalised afterwards (mean 0, std 1 on samples).

Grading: compared with the project's ``reward_models.bradley_terry.bradley_terry_loss``; closed forms
(``log 2`` for ties, the gradient ``-sigmoid(-d) / N``); a linear reward model you train on synthetic
preferences must reach >= 85% held-out accuracy.
"""

from __future__ import annotations

import torch


def bradley_terry_loss(
    r_chosen: torch.Tensor, r_rejected: torch.Tensor, margin: torch.Tensor | float = 0.0
) -> torch.Tensor:
    """Mean ``-log sigmoid(r_chosen - r_rejected - margin)`` over pairs.

    Args:
        r_chosen: ``(N,)`` rewards of the preferred responses.
        r_rejected: ``(N,)`` rewards of the other responses.
        margin: scalar or ``(N,)``.

    Returns:
        0-d tensor. Use ``torch.nn.functional.logsigmoid`` (``log(sigmoid(x))`` overflows for x << 0).
    """
    # TODO
    raise NotImplementedError("ex4.bradley_terry_loss")


def preference_accuracy(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> float:
    """Share of pairs with ``r_chosen > r_rejected`` (ties are errors), as a Python float in [0, 1]."""
    # TODO
    raise NotImplementedError("ex4.preference_accuracy")


def train_linear_reward_model(
    x_chosen: torch.Tensor, x_rejected: torch.Tensor, steps: int = 300, lr: float = 0.05, seed: int = 0
) -> torch.Tensor:
    """Fit ``r(x) = x @ w`` to preference pairs with your Bradley-Terry loss.

    Args:
        x_chosen: ``(N, d)`` features of the chosen responses.
        x_rejected: ``(N, d)`` features of the rejected responses.
        steps: full-batch gradient steps (Adam).
        lr: learning rate.
        seed: seeds the initialisation (start from zeros or small random weights).

    Returns:
        ``(d,)`` weights ``w`` (detached).
    """
    # TODO: w = zeros(d, requires_grad=True); Adam; loss = bradley_terry_loss(x_chosen @ w, x_rejected @ w).
    raise NotImplementedError("ex4.train_linear_reward_model")
