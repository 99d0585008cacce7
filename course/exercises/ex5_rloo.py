"""Exercise 5: an RLOO agent on ``TextRLHF-v0``, written by hand against the Gymnasium API.

REINFORCE (Williams 1992, "Simple Statistical Gradient-Following Algorithms for Connectionist
Reinforcement Learning") raises the log-probability of each sampled response in proportion to how good
it was: ``grad J = E[A * grad log pi(response)]`` with ``log pi(response) = sum_t log pi(a_t|s_t)``.
A baseline ``b`` (anything not depending on the response itself) leaves the gradient unbiased and cuts
its variance: ``A = R - b``. RLOO (Kool et al. 2019, "Buy 4 REINFORCE Samples, Get a Baseline for
Free!"; Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style Optimization for Learning
from Human Feedback in LLMs") samples ``k`` responses per prompt and uses the mean reward of the
*other* ``k - 1`` as each one's baseline -- no critic network needed::

    R_i  = score_i - beta * sum_t [log pi(a_t|s_t) - log pi_ref(a_t|s_t)]       (k1 KL, exercise 1)
    A_i  = R_i - 1/(k-1) * sum_{j != i, same prompt} R_j
    loss = -1/B * sum_i A_i * sum_t mask_it * log pi(a_t|s_t)                    (B = n_prompts * k)

Given (read them): ``course/scaffold.py`` plays the episodes through ``env.reset`` / ``env.step`` and
hands you a :class:`~course.scaffold.Batch`; :func:`train` below is the whole loop. You write the
three functions marked TODO. Run it (prints score and KL per iteration, held-out score before/after)::

    python -m course.exercises.ex5_rloo                                   # tiny model, ~1-2 min
    python -m course.exercises.ex5_rloo --model smollm2-135m-instruct     # real SmolLM2, ~5-10 min

On the tiny (random) model the policy may only emit a few dozen sentiment words (see
``scaffold.SENTIMENT_WORDS``), so it can learn to be positive quickly; SmolLM2 uses its whole vocabulary.

Grading: ``rloo_advantages`` and ``reinforce_loss`` against references and closed forms; one
``update`` on a seeded batch must move the tiny model's weights exactly as the reference does (with
plain SGD); a short run of :func:`train` must raise the held-out score.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import torch

from course.scaffold import (
    Batch,
    Timer,
    TrainConfig,
    allowed_token_ids,
    collect,
    evaluate,
    make_envs,
    write_csv,
)


def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Leave-one-out advantages.

    Args:
        rewards: ``(n_prompts * group_size,)``; rows ``g*k .. g*k+k-1`` are the ``k = group_size``
            samples of prompt ``g``.
        group_size: ``k >= 2``.

    Returns:
        ``(n_prompts * group_size,)``: ``A_i = R_i - (sum of the other k-1 rewards of its prompt) / (k-1)``.
        Each group's advantages sum to 0.
    """
    # TODO: reshape to (n_prompts, k).
    raise NotImplementedError("ex5.rloo_advantages")


def reinforce_loss(logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sequence-level REINFORCE loss ``-1/B * sum_i A_i * sum_t mask_it * logp_it``.

    Args:
        logp: ``(B, S)`` token log-probs under the current policy (requires grad).
        advantages: ``(B,)`` one advantage per response; treat it as a constant (``.detach()``).
        mask: ``(B, S)`` 1 on response tokens (``logp`` elsewhere may be anything).

    Returns:
        0-d tensor whose gradient is the (negated) REINFORCE estimate.
    """
    # TODO
    raise NotImplementedError("ex5.reinforce_loss")


def update(
    model,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    cfg: TrainConfig,
    allowed_tokens=None,
    advantage_fn: Callable | None = None,
) -> dict[str, float]:
    """One RLOO gradient step on a batch of finished episodes.

    Steps (in this order, so the grader can compare you with the reference exactly):

    1. ``kl = sum_t (batch.logp - batch.ref_logp) * mask`` per response, ``(B,)`` (k1, from the
       rollout log-probs: no gradient), with ``mask = batch.response_mask.float()``;
    2. ``rewards = batch.scores - cfg.beta * kl``;
    3. ``advantages = advantage_fn(rewards, cfg.group_size)`` (default: your :func:`rloo_advantages`);
    4. ``logp = token_logprobs(model, batch.input_ids, batch.attention_mask, batch.response_mask,
       cfg.temperature, allowed_tokens)`` (with gradient; from ``course.scaffold``);
    5. ``loss = reinforce_loss(logp, advantages, mask)``;
    6. ``optimizer.zero_grad()``, ``loss.backward()``,
       ``torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)``, ``optimizer.step()``.

    Returns:
        ``{"loss": float, "kl": mean of kl, "reward": mean of rewards}`` (Python floats).
    """
    advantage_fn = advantage_fn or rloo_advantages
    # TODO
    raise NotImplementedError("ex5.update")


def train(
    cfg: TrainConfig, advantage_fn: Callable | None = None, algorithm: str = "rloo", verbose: bool = True
) -> dict:
    """The whole loop: sample, score, update; evaluate on held-out prompts before and after.

    Returns:
        ``{"history": [per-iteration dicts: algorithm, iteration, score, kl, reward, loss, seconds],
        "before": eval dict, "after": eval dict, "config": dict}``.
    """
    import textenv

    torch.manual_seed(cfg.seed)
    policy = textenv.load_model(cfg.model)
    ref = textenv.load_model(cfg.model).requires_grad_(False)
    envs = make_envs(cfg, cfg.n_prompts * cfg.group_size, "train")
    eval_envs = make_envs(cfg, cfg.eval_prompts, "test")
    allowed = allowed_token_ids(cfg, envs[0].unwrapped.tokenizer)
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    n_train = len(envs[0].unwrapped.prompts)
    timer = Timer()
    before = evaluate(policy, ref, eval_envs, cfg, allowed)
    if verbose:
        print(f"[{algorithm}] before: score {before['score']:+.3f}  kl {before['kl']:.3f}  {before['example']}")
    history = []
    for it in range(cfg.iterations):
        chosen = torch.randint(n_train, (cfg.n_prompts,), generator=gen).tolist()
        indices = [p for p in chosen for _ in range(cfg.group_size)]  # k consecutive rows per prompt
        batch = collect(policy, ref, envs, indices, cfg, gen, allowed)
        stats = update(policy, optimizer, batch, cfg, allowed, advantage_fn)
        row = {
            "algorithm": algorithm,
            "iteration": it,
            "score": float(batch.scores.mean()),
            "kl": stats["kl"],
            "reward": stats["reward"],
            "loss": stats["loss"],
            "seconds": round(timer(), 2),
        }
        history.append(row)
        if verbose:
            print(
                f"[{algorithm}] it {it:3d}  score {row['score']:+.3f}  kl {row['kl']:.3f}  "
                f"loss {row['loss']:+.3f}  {row['seconds']:.0f}s"
            )
    after = evaluate(policy, ref, eval_envs, cfg, allowed)
    if verbose:
        print(f"[{algorithm}] after:  score {after['score']:+.3f}  kl {after['kl']:.3f}  {after['example']}")
    return {"history": history, "before": before, "after": after, "config": vars(cfg)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="tiny | smollm2-135m-instruct")
    parser.add_argument("--iterations", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--beta", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--csv", help="write the per-iteration history here")
    args = parser.parse_args(argv)
    cfg = TrainConfig.preset(args.model, iterations=args.iterations, lr=args.lr, beta=args.beta, seed=args.seed)
    result = train(cfg)
    if args.csv:
        write_csv(result["history"], args.csv)
    print(
        json.dumps(
            {"before": result["before"]["score"], "after": result["after"]["score"], "kl_after": result["after"]["kl"]}
        )
    )
    return result


if __name__ == "__main__":
    main()
