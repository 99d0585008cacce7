"""Exercise 2: returns and generalised advantage estimation (GAE) for one terminal reward.

In ``TextRLHF-v0`` one episode is one response and the reward comes only at the end, so every token's
return is (a discounted copy of) the final reward. A critic ``V(s_t)`` predicts it; the advantage
``A_t`` says how much better the sampled token turned out than predicted. GAE (Schulman et al. 2016,
"High-Dimensional Continuous Control Using Generalized Advantage Estimation", eq. 16) mixes n-step
estimates with a parameter ``lambda``::

    delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)          (V(s_{T}) = 0 after the last token: terminated)
    A_t     = delta_t + gamma * lambda * A_{t+1}          (A_T = 0)
    R_t     = A_t + V(s_t)                                (the critic's regression target)

Special cases you can check by hand: ``lambda = 1`` gives ``A_t = G_t - V(s_t)`` (Monte-Carlo return
minus value); ``lambda = 0`` gives ``A_t = delta_t`` (one-step TD error).

Tensors are padded ``(B, T)`` batches: ``mask[i, t] = 1`` on response tokens, and each row's ones are
a *prefix* (episode ``i`` has ``mask[i].sum()`` tokens, then padding). Padding must get 0 and must not
leak into the episode (nothing is bootstrapped past an episode's last token).

Grading: compared with the project's ``agents.losses.gae`` on seeded batches of different lengths,
and the special cases above.
"""

from __future__ import annotations

import torch


def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """Reward-to-go ``G_t = sum_{k >= t} gamma^(k - t) r_k`` inside each episode.

    Args:
        rewards: ``(B, T)`` per-token rewards (0 on padding).
        mask: ``(B, T)`` 1 on response tokens (a prefix of each row), 0 on padding.
        gamma: discount factor in ``[0, 1]``.

    Returns:
        ``(B, T)`` returns, 0 on padding. With one terminal reward ``R`` at ``T_i - 1``,
        ``G_t = gamma^(T_i - 1 - t) * R``.
    """
    # TODO: loop t from T-1 down to 0.
    raise NotImplementedError("ex2.discounted_returns")


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE advantages and returns (see the module docstring).

    Args:
        rewards: ``(B, T)`` per-token rewards (0 on padding).
        values: ``(B, T)`` critic values ``V(s_t)`` (arbitrary numbers on padding: ignore them).
        mask: ``(B, T)`` 1 on response tokens (a prefix of each row).
        gamma: discount (1 in RLHF).
        lam: GAE lambda.

    Returns:
        ``(advantages, returns)``: both ``(B, T)``, 0 on padding; ``returns = advantages + values`` on
        the response tokens.
    """
    # TODO: the next value is values[:, t + 1] only while t + 1 is still inside the episode.
    raise NotImplementedError("ex2.gae")
