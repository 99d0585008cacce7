"""Exercise 1: KL estimators and the KL-penalised terminal reward.

RLHF maximises ``score(prompt, response) - beta * KL(pi || pi_ref)``: the reward model's score, minus a
penalty for drifting away from the starting ("reference") model ``pi_ref`` (Ziegler et al. 2019;
Ouyang et al. 2022). The exact KL of a whole response needs a sum over every possible sequence, so we
*estimate* it from the tokens we sampled. With ``r = pi_ref(a_t|s_t) / pi(a_t|s_t)`` for a token ``a_t``
sampled from ``pi``, John Schulman's note "Approximating KL Divergence" (2020,
http://joschu.net/blog/kl-approx.html) gives three estimators of ``KL(pi || pi_ref)``:

* ``k1 = -log r = log pi - log pi_ref``   unbiased, high variance, can be negative;
* ``k2 = 0.5 * (log r) ** 2``              biased (good when pi ~ pi_ref), always >= 0;
* ``k3 = (r - 1) - log r``                 unbiased and always >= 0 (since log x <= x - 1).

Grading (``python -m course.grade ex1``): your functions are compared with the project's
``agents.kl.kl_estimate`` / ``agents.kl.shape_rewards`` on seeded inputs, and checked against
closed-form values (the KL of two known categoricals, Monte-Carlo averages of k1 and k3).
"""

from __future__ import annotations

import torch


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-token KL estimate from the log-probs of the *sampled* tokens.

    Args:
        logp: ``log pi(a_t|s_t)``, any shape (the tokens were sampled from ``pi``).
        ref_logp: ``log pi_ref(a_t|s_t)``, same shape.
        kind: ``"k1"``, ``"k2"`` or ``"k3"`` (see the module docstring).

    Returns:
        A tensor of the same shape. Its mean over samples from ``pi`` estimates ``KL(pi || pi_ref)``.

    Raises:
        ValueError: ``kind`` is not one of the three (name the valid ones in the message).

    Hint: work with ``log_r = ref_logp - logp``; ``torch.expm1(x) = exp(x) - 1`` is accurate near 0.
    """
    # TODO: return k1, k2 or k3 elementwise.
    raise NotImplementedError("ex1.kl_estimate")


def categorical_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Exact ``KL(p || q) = sum_x p(x) * (log p(x) - log q(x))`` of categoricals given by logits.

    Args:
        p_logits: ``(..., V)`` unnormalised log-probabilities of ``p``.
        q_logits: ``(..., V)`` unnormalised log-probabilities of ``q``.

    Returns:
        ``(...)``: one KL per leading index, in nats (>= 0; 0 iff p == q).

    Hint: ``torch.log_softmax`` turns logits into log-probabilities.
    """
    # TODO
    raise NotImplementedError("ex1.categorical_kl")


def kl_penalized_reward(
    scores: torch.Tensor,
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    beta: float,
    mask: torch.Tensor,
    kind: str = "k1",
) -> torch.Tensor:
    """Per-token rewards of the KL-penalised objective, with the whole penalty on the last token.

    For each response ``i`` with last real token ``T_i``::

        reward[i, t] = score_i - beta * sum_{t'} mask[i, t'] * KL_{i,t'}    if t == T_i
        reward[i, t] = 0                                                   otherwise

    so that the (undiscounted) return of every token is the objective ``score - beta * KL``.

    Args:
        scores: ``(B,)`` reward-model scores of the whole responses.
        logp: ``(B, T)`` policy log-probs of the response tokens.
        ref_logp: ``(B, T)`` reference log-probs of the same tokens.
        beta: KL coefficient (>= 0).
        mask: ``(B, T)`` bool, True on real response tokens. Responses may be left- or right-aligned;
            the *last* True of each row is its final token. Every row has at least one True.
        kind: KL estimator, see :func:`kl_estimate`.

    Returns:
        ``(B, T)`` float32 rewards, 0 outside ``mask``.
    """
    # TODO: use your kl_estimate; find each row's last True (e.g. T - 1 - mask.flip(-1).float().argmax(-1)).
    raise NotImplementedError("ex1.kl_penalized_reward")
