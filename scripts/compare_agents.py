"""Side-by-side RL agents on the same env, reward, KL and token budget (issue 7).

Reads top to bottom: for each ``--algos`` entry, build the same vector env (same seed, prompts, reward,
horizon) and the agent with the same KL coefficient, train it until it has generated
``--total-timesteps`` tokens, record ``rlhf/score`` and ``rlhf/kl`` after every rollout, then sample
the held-out (test split) prompts with the trained policy and score them with the same reward and
``--second-judge``. Writes
``curves.csv`` (one row per rollout), ``curves.png`` (score and KL against generated tokens, one colour
per agent: raw values faint, an exponential moving average on top), ``summary.json`` and ``summary.md``.

    python -m scripts.compare_agents                       # SmolLM2, sentiment: rlhf_ppo, rloo, grpo
    python -m scripts.compare_agents --model tiny --total-timesteps 384 --n-envs 4 --run-dir runs/compare-tiny

Each agent keeps its registry defaults (``agents.registry``: learning rate, epochs, group size, where
the KL goes) unless ``--learning-rates`` / ``--algo-kwargs`` say otherwise; the objective
``score - beta * KL`` to the same frozen reference is common to all.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import csv
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agents.kl import KLConfig
from scripts.algo_task import AlgoTask
from scripts.cli import config_to_dict, parse_args

LIBRARY_OVERRIDES: dict[str, str] = {
    "adaptive_kl": "a comparison needs one fixed price per nat of KL for every agent: an adaptive beta would "
    "move differently for each one and confound the curves (the comparison in "
    "docs/results/2026-11-22-compare-agents.md is at a fixed beta)",
}
"""``{field: reason}``: the defaults of :class:`Config` that differ, on purpose, from the field of the same
name of :class:`agents.kl.KLConfig` (every other such field takes the library's default;
tests/scripts/test_config_defaults.py checks both)."""


@dataclass
class Config(AlgoTask):
    """Train several agents on the same RLHF task and plot their score and KL curves together."""

    total_timesteps: int = 7680
    """Generated tokens per agent (the common budget: 16 envs x 24 tokens x 20 full-length rounds)."""
    kl_coef: float = KLConfig.kl_coef
    """KL coefficient beta, the same for every agent (in the reward, or GRPO's loss)."""
    adaptive_kl: bool = False  # a named override: LIBRARY_OVERRIDES
    """Adapt beta (Ziegler et al. 2019); off by default so every agent pays the same price per nat."""
    eval_samples: int = 2
    """Samples per held-out prompt in the final evaluation."""
    seed: int = 0
    """Seed of the envs, the agents and the evaluation (the same for every agent)."""
    run_dir: Path = Path("runs/compare")
    """Folder for curves.csv, curves.png, summary.json and summary.md."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("total_timesteps", "eval_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
        unknown = sorted((set(self.learning_rates) | set(self.algo_kwargs)) - set(self.algos))
        if unknown:
            raise ValueError(f"--learning-rates/--algo-kwargs name agents that are not compared: {unknown}")


def train_one(cfg: Config, algo: str):
    """Train ``algo`` on the common task; return ``(history rows, policy, env, seconds)``."""
    import agents
    from agents.callbacks import ProgressBar

    env = cfg.make_env(cfg.seed)
    agent = agents.make_agent(
        algo,
        env,
        temperature=cfg.temperature,
        kl_coef=cfg.kl_coef,
        adaptive_kl=cfg.adaptive_kl,
        seed=cfg.seed,
        **cfg.agent_options(algo),
    )
    history = agents.RLHFHistory()
    t0 = time.perf_counter()
    agent.learn(cfg.total_timesteps, callback=[history, ProgressBar()])
    seconds = time.perf_counter() - t0
    rows = [{"algo": algo, "learning_rate": agent.learning_rate, **row} for row in history.history]
    return rows, agent.policy, env, seconds


def evaluate_held_out(cfg: Config, lm, reference, env) -> dict[str, float]:
    """Mean reward of ``lm`` and its KL to ``reference`` on the test-split prompts (``eval_samples`` each),
    by the pipeline's own :func:`agents.evaluation.evaluate_policy` (the env's reward as the judge, and
    ``cfg.second_judge`` beside it)."""
    from agents.evaluation import evaluate_on_env
    from reward_models import make_reward
    from textenv import load_prompts

    prompts = load_prompts(cfg.prompts, split="test") * cfg.eval_samples
    result = evaluate_on_env(
        "held_out",
        lm,
        reference,
        env,
        prompts,
        cfg.max_new_tokens,
        cfg.temperature,
        cfg.seed,
        second_judge=make_reward(cfg.second_judge),
    )
    m = result.metrics
    return {
        "held_out_score": m["annotator_score"],
        "held_out_second_judge": m["second_judge_score"],
        "held_out_kl": m["kl"],
        "held_out_len": m["response_len"],
        "held_out_n": len(prompts),
    }


def curves_figure(rows: list[dict], title: str):
    """Score and KL against generated tokens, one colour per agent: raw values faint, EMA-smoothed on top."""
    from matplotlib.figure import Figure

    from scripts.stages.report import SMOOTHING_NOTE, integer_ticks, plot_raw_and_smoothed

    fig = Figure(figsize=(11, 4.3))
    axes = fig.subplots(1, 2)
    for algo in dict.fromkeys(r["algo"] for r in rows):
        mine = [r for r in rows if r["algo"] == algo]
        x = [r["timesteps"] for r in mine]
        _, line = plot_raw_and_smoothed(axes[0], x, [r["rlhf/score"] for r in mine], label=algo)
        plot_raw_and_smoothed(axes[1], x, [r["rlhf/kl"] for r in mine], label=algo, color=line.get_color())
    for ax, label in zip(axes, ("reward score (mean per episode)", "KL to reference (nats per episode)")):
        ax.set_xlabel("generated tokens")
        ax.set_ylabel(label)
        integer_ticks(ax)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{title}\n{SMOOTHING_NOTE}")
    fig.tight_layout()
    return fig


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Write :func:`curves_figure` as a PNG, atomically (temporary sibling, then rename)."""
    tmp = path.with_suffix(".tmp.png")
    curves_figure(rows, title).savefig(tmp, dpi=110)
    os.replace(tmp, path)


def display_number(value: float, digits: int = 3) -> float:
    """``value`` rounded for a log line: ``digits`` decimals, but never fewer than ``digits`` significant
    digits, so 3e-5 stays 3e-05 (``round(3e-5, 3)`` printed a learning rate of 0.0)."""
    if not math.isfinite(value) or value == 0:
        return value
    return round(value, max(digits, digits - 1 - math.floor(math.log10(abs(value)))))


def summary_line(algo: str, stats: dict) -> str:
    """One agent's summary as the ``[compare]`` log line (JSON, floats by :func:`display_number`)."""
    shown = {k: display_number(v) if isinstance(v, float) else v for k, v in stats.items()}
    return f"[compare] {algo}: {json.dumps(shown)}"


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_args(Config, argv)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    (cfg.run_dir / "config.json").write_text(json.dumps(config_to_dict(cfg), indent=2))
    rows, summary = [], {}
    for algo in cfg.algos:
        print(f"[compare] {algo}: training to {cfg.total_timesteps} generated tokens", flush=True)
        mine, policy, env, seconds = train_one(cfg, algo)
        rows += mine
        last = mine[-3:]  # the final numbers: mean of the last three rollouts
        summary[algo] = {
            "learning_rate": mine[0]["learning_rate"],
            "rollouts": len(mine),
            "tokens": mine[-1]["timesteps"],
            "seconds": round(seconds, 1),
            "first_score": mine[0]["rlhf/score"],
            "final_score": float(np.mean([r["rlhf/score"] for r in last])),
            "final_kl": float(np.mean([r["rlhf/kl"] for r in last])),
            **evaluate_held_out(cfg, policy.lm, policy.reference_model, env),
        }
        if "reference" not in summary:  # the untrained policy, for scale (same samples procedure)
            summary = {
                "reference": evaluate_held_out(cfg, policy.reference_model, policy.reference_model, env),
                **summary,
            }
        env.close()
        print(summary_line(algo, summary[algo]), flush=True)
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k != "algo", k))
    with open(cfg.run_dir / "curves.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    plot(
        rows,
        cfg.run_dir / "curves.png",
        f"{cfg.model}, reward {cfg.reward}, {cfg.n_envs} envs x {cfg.max_new_tokens} tokens, beta {cfg.kl_coef}",
    )
    (cfg.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    lines = [
        "| agent | lr | rollouts | tokens | minutes | train score first -> last 3 | train KL last 3 | "
        "held-out score | held-out second judge | held-out KL |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    ref = summary["reference"]
    lines.append(
        f"| untrained reference | - | - | - | - | - | - | {ref['held_out_score']:.3f} | "
        f"{ref['held_out_second_judge']:.3f} | 0 |"
    )
    for algo, s in summary.items():
        if algo == "reference":
            continue
        lines.append(
            f"| {algo} | {s['learning_rate']:g} | {s['rollouts']} | {s['tokens']} | {s['seconds'] / 60:.1f} | "
            f"{s['first_score']:.3f} -> {s['final_score']:.3f} | {s['final_kl']:.2f} | "
            f"{s['held_out_score']:.3f} | {s['held_out_second_judge']:.3f} | {s['held_out_kl']:.2f} |"
        )
    (cfg.run_dir / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return summary


if __name__ == "__main__":
    main()
