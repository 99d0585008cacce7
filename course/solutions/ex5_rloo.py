"""Exercise 5 (reference solution): an RLOO agent on ``TextRLHF-v0``, written by hand.

REINFORCE (Williams 1992) with the leave-one-out baseline, RLOO (Kool et al. 2019, "Buy 4 REINFORCE
Samples, Get a Baseline for Free!"; Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style
Optimization for Learning from Human Feedback in LLMs"), on the KL-penalised RLHF objective

    R_i = score_i - beta * sum_t [log pi(a_t|s_t) - log pi_ref(a_t|s_t)]        (k1, Schulman 2020)
    A_i = R_i - 1/(k-1) * sum_{j != i, same prompt} R_j
    loss = -1/B * sum_i A_i * sum_t log pi(a_t|s_t)

Run: ``python -m course.solutions.ex5_rloo`` (tiny, ~1 min) or ``--model smollm2-135m-instruct``.
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
    token_logprobs,
    write_csv,
)


def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Leave-one-out advantages; ``rewards`` is ``(n_prompts * group_size,)``, grouped consecutively."""
    r = rewards.reshape(-1, group_size)
    baseline = (r.sum(-1, keepdim=True) - r) / (group_size - 1)
    return (r - baseline).reshape(-1)


def reinforce_loss(logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``-mean_i(A_i * sum_t mask_it * logp_it)``; ``advantages`` carry no gradient."""
    return -(advantages.detach() * (logp * mask).sum(-1)).mean()


def update(
    model,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    cfg: TrainConfig,
    allowed_tokens=None,
    advantage_fn: Callable | None = None,
) -> dict[str, float]:
    """One RLOO gradient step on ``batch``; returns ``loss``, ``kl`` and ``reward`` (batch means)."""
    advantage_fn = advantage_fn or rloo_advantages
    mask = batch.response_mask.float()
    kl = ((batch.logp - batch.ref_logp) * mask).sum(-1)  # (B,) k1, summed over the response
    rewards = batch.scores - cfg.beta * kl
    advantages = advantage_fn(rewards, cfg.group_size)
    logp = token_logprobs(
        model, batch.input_ids, batch.attention_mask, batch.response_mask, cfg.temperature, allowed_tokens
    )
    loss = reinforce_loss(logp, advantages, mask)
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
    optimizer.step()
    return {"loss": loss.item(), "kl": float(kl.mean()), "reward": float(rewards.mean())}


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
