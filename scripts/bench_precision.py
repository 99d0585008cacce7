"""fp32 vs bf16 autocast: tokens/s and the learning curve of one short RL run each, in one process.

Both runs are the same seeded ``rlhf_ppo`` run on SmolLM2-135M-Instruct with the sentiment reward; only
the policy's ``precision`` differs (``agents.LMActorCriticPolicy``: bf16 autocast over fp32 weights).
Prints tokens/s of each and the ratio; writes ``precision.json`` and ``precision.png`` (``rlhf/score``
and ``rlhf/kl`` per iteration, both precisions in one figure).

Example (about 10 minutes on the 2-core machine; nothing else may run)::

    python -m scripts.bench_precision --out runs/precision
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from scripts.cli import config_to_dict, parse_args


@dataclass
class Config:
    """tokens/s and learning curves of the same short RL run in fp32 and in bf16 autocast."""

    precisions: list[str] = field(default_factory=lambda: ["fp32", "bf16"])
    """Policy precisions to run (agents.lm_model.PRECISIONS)."""
    model: str = "smollm2-135m-instruct"
    """Policy and env model."""
    iterations: int = 12
    """Rollouts + updates per run."""
    n_envs: int = 8
    """Episodes per rollout."""
    max_new_tokens: int = 24
    """Tokens per episode."""
    learning_rate: float = 1e-4
    """Adam learning rate (the pipeline's RL default)."""
    n_epochs: int = 1
    """Passes over each rollout (the pipeline's RL default)."""
    seed: int = 0
    """Seed of both runs."""
    out: Path = Path("runs/precision")
    """Folder for precision.json and precision.png."""


def run(cfg: Config, precision: str) -> dict:
    """One seeded run; its per-iteration ``rlhf/*`` metrics and tokens/s."""
    import agents

    env = agents.make_vec_text_env(
        n_envs=cfg.n_envs, model=cfg.model, reward="sentiment", max_new_tokens=cfg.max_new_tokens, seed=cfg.seed
    )
    agent = agents.make_agent(
        "rlhf_ppo",
        env,
        seed=cfg.seed,
        learning_rate=cfg.learning_rate,
        n_epochs=cfg.n_epochs,
        policy_kwargs={"precision": precision},
    )
    history = agents.RLHFHistory()
    t0 = time.perf_counter()
    agent.learn(cfg.iterations * cfg.n_envs * cfg.max_new_tokens, callback=history)
    seconds = time.perf_counter() - t0
    return {
        "precision": precision,
        "seconds": seconds,
        "tokens": int(agent.num_timesteps),
        "tokens_per_s": agent.num_timesteps / seconds,
        "score": [row["rlhf/score"] for row in history.history],
        "kl": [row["rlhf/kl"] for row in history.history],
    }


def plot(results: list[dict], path: Path) -> None:
    """Score and KL per iteration, one line per precision, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for r in results:
        label = f"{r['precision']} ({r['tokens_per_s']:.1f} tokens/s)"
        axes[0].plot(range(1, len(r["score"]) + 1), r["score"], marker="o", label=label)
        axes[1].plot(range(1, len(r["kl"]) + 1), r["kl"], marker="o", label=label)
    axes[0].set(xlabel="iteration", ylabel="rlhf/score", title="reward (sentiment)")
    axes[1].set(xlabel="iteration", ylabel="rlhf/kl (nats)", title="KL to the reference")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run every precision, then print, plot and write the JSON."""
    cfg = parse_args(Config, argv)
    cfg.out.mkdir(parents=True, exist_ok=True)
    results = []
    for precision in cfg.precisions:
        r = run(cfg, precision)
        results.append(r)
        print(f"[precision] {precision}: {r['tokens_per_s']:.2f} tokens/s over {r['seconds']:.0f} s", flush=True)
    base = results[0]["tokens_per_s"]
    for r in results[1:]:
        print(f"[precision] {r['precision']} / {results[0]['precision']}: {r['tokens_per_s'] / base:.2f}x tokens/s")
    plot(results, cfg.out / "precision.png")
    payload = {"config": config_to_dict(cfg), "runs": results}
    (cfg.out / "precision.json").write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
