"""The benchmark's outputs (``scripts/benchmark.py``): the markdown table, ``benchmark.json`` and the chart.

``results`` is ``{batch size: {method: summary over runs}}`` (:func:`scripts.bench_summary.summarize_runs`)
and ``ratios`` is ``{batch size: {ratio name: value}}`` (:func:`scripts.bench_summary.compute_ratios`).
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from scripts.bench_summary import TARGETS, limits_iteration_s
from scripts.bench_utils import fmt
from scripts.cli import config_to_dict

PRECISION_WORDS = {"fp32": "fp32", "bf16": "bf16 autocast over fp32 weights"}
"""How the setup line under the table names the benchmark's ``precision``."""

if TYPE_CHECKING:  # the entry module imports this one; the config is only a type here
    from scripts.benchmark import Config

METHOD_NAMES = {
    "naive": "naive (1 env, no cache, rollout only)",
    "generic": "generic SB3 PPO",
    "rlhf_ppo": "fast rlhf_ppo",
    "grpo": "fast grpo",
    "rloo": "fast rloo",
    "trl_grpo": "TRL 1.16 GRPOTrainer",
    "trl_rloo": "TRL 1.16 RLOOTrainer",
}
"""The table's name of each trainer method (the limits have rows of their own)."""
TABLE_HEADER = (
    "| batch | method | tokens/s (whole iteration) | generate s | rollout s | update s | iteration s | tokens/iter "
    "| peak ΔRSS MB | × TRL GRPO | × TRL RLOO | of limits |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|",
)


# ----------------------------------------------------------------------------- markdown table
def markdown(results: dict, ratios: dict, cfg: Config) -> str:
    """The results as a markdown table, then each batch size's targets met or not, then the settings.

    Args:
        results: ``{batch size: {method: summary}}``.
        ratios: ``{batch size: {ratio name: value}}``.
        cfg: the benchmark config (for the closing line).

    Returns:
        The markdown text.
    """
    lines = list(TABLE_HEADER)
    for n, res in results.items():
        lines += [_method_row(n, m, res[m], ratios[n]) for m in METHOD_NAMES if m in res]
        if "limits" in res:
            lines += _limit_rows(n, res["limits"], ratios[n])
    lines.append("")
    lines += _target_lines(ratios)
    lines.append(
        f"\n{cfg.model} ({PRECISION_WORDS[cfg.precision]} for every trainer and limit), "
        f"prompts {cfg.max_prompt_tokens} tokens, {cfg.max_new_tokens} new tokens, "
        f"temperature {cfg.temperature}, groups of {cfg.group_size} (grpo, rloo, TRL), {cfg.epochs} epoch(s) "
        f"of one optimizer step, KL coef {cfg.kl_coef} (fixed); median of {cfg.runs} run(s) x {cfg.iterations} "
        f"iteration(s) after {cfg.warmup} warm-up(s); tokens counted (EOS ends an episode early except for generic)."
    )
    return "\n".join(lines)


def _method_row(n: int, m: str, r: dict, rat: dict) -> str:
    """The table row of trainer method ``m`` at batch ``n`` (rollout tokens/s when it has no update)."""
    tps = (
        fmt(r["tokens_per_s"]) if r["tokens_per_s"] is not None else f"{fmt(r['rollout_tokens_per_s'])} (rollout only)"
    )
    name = METHOD_NAMES[m] + (" (update skipped)" if m == "generic" and r.get("update_skipped") else "")
    vs = [fmt(rat.get(f"{m}_vs_{t}", rat.get(f"{m}_rollout_vs_{t}")), 2) for t in ("trl_grpo", "trl_rloo")]
    return (
        f"| {n} | {name} | {tps} | {fmt(r.get('generation_s'), 2)} | {fmt(r['rollout_s'], 2)} | "
        f"{fmt(r['update_s'], 2)} | {fmt(r['iteration_s'], 2)} | {fmt(r['tokens_per_iteration'])} | "
        f"{fmt(r['peak_rss_mb'], 0)} | {vs[0]} | {vs[1]} | {fmt(rat.get(f'{m}_of_limits'), 2)} |"
    )


def _limit_rows(n: int, r: dict, rat: dict) -> list[str]:
    """The rows of the raw limits at batch ``n``: generate, forward, forward + backward, and their sum for
    one fast-agent iteration (:func:`scripts.bench_summary.limits_iteration_s`)."""
    vs = [fmt(rat.get(f"limits_generate_vs_{t}"), 2) for t in ("trl_grpo", "trl_rloo")]
    total = limits_iteration_s(r)
    return [
        f"| {n} | limit: `generate`, KV cache (new tokens/s) | {fmt(r['generate_tokens_per_s'])} | "
        f"{fmt(r['generate_s'], 2)} | - | - | - | {fmt(r['tokens_per_iteration'])} | {fmt(r['peak_rss_mb'], 0)} | "
        f"{vs[0]} | {vs[1]} | - |",
        f"| {n} | limit: teacher-forced forward (sequence tokens/s) | {fmt(r['forward_seq_tokens_per_s'])} "
        f"| - | {fmt(r['forward_s'], 2)} | - | - | - | - | - | - | - |",
        f"| {n} | limit: forward + backward (sequence tokens/s) | "
        f"{fmt(r['forward_backward_seq_tokens_per_s'])} | - | - | "
        f"{fmt(r['forward_backward_s'], 2)} | - | - | - | - | - | - |",
        f"| {n} | limits: generate + 2 forwards + forward+backward (new tokens/s) | "
        f"{fmt(r['tokens_per_iteration'] / total)} | - | - | - | {fmt(total, 2)} | {fmt(r['tokens_per_iteration'])} "
        f"| - | - | - | 1.00 |",
    ]


def _target_lines(ratios: dict) -> list[str]:
    """One bullet per batch size: each of :data:`TARGETS` it has a ratio for, met or not."""
    lines = []
    for n, rat in ratios.items():
        parts = []
        for key, (op, target) in TARGETS.items():
            v = rat.get(key)
            if v is not None:
                ok = {">": v > target, "<=": v <= target, ">=": v >= target}[op]
                parts.append(f"{key} = {v:.2f} (target {op} {target}: {'met' if ok else 'NOT met'})")
        if parts:
            lines.append(f"- batch {n}: " + "; ".join(parts))
    return lines


# ----------------------------------------------------------------------------- benchmark.json
def notes(cfg: Config) -> list[str]:
    """What each number in ``benchmark.json`` means (its ``notes`` field)."""
    return [
        "tokens_per_s = tokens generated in the timed iterations / their seconds (rollout + update); tokens are "
        "counted (EOS included; fast-agent and TRL episodes may end early at EOS, generic always generates n*T).",
        f"batch = responses per iteration; grpo, rloo and TRL answer each prompt {cfg.group_size} times "
        "(batch / group_size prompts), rlhf_ppo, generic and naive answer one prompt per response.",
        "naive: the generic policy with kv_cache=False on one env, rollout phase only (SB3 collect_rollouts incl. "
        "the KL buffer's reference forward); measured once and shared by every batch size.",
        f"generic: update skipped above batch {cfg.generic_max_batch} (one full-window forward+backward per "
        f"transition); minibatch {cfg.generic_batch_size or 'all'} transitions.",
        "trl_grpo, trl_rloo: rollout_s = the trainer's _generate_and_score_completions (generation, reward, "
        "reference log-probs, advantages, metrics); update_s = the rest of the step (loss, backward, optimizer "
        "step, dataloader); generation_s = its _generate_single_turn calls (transformers generate).",
        "X_of_limits = X's tokens/s / (batch * max_new_tokens / (generate_s + 2 * forward_s + "
        "forward_backward_s)): the raw limits one iteration needs (generate, reference and reward forwards, "
        "one forward+backward).",
        "limits: generate with min_new_tokens=max_new_tokens (every row generates all tokens); forward and "
        "forward+backward over the generated (prompt + response) sequences, sequence tokens/s.",
        "peak_rss_mb: psutil-sampled RSS high-water during the method's run (model building included) minus RSS "
        "before it, after gc + malloc_trim; one process, so allocator reuse can lower later methods' numbers.",
    ]


def write_report(cfg: Config, dev: str, results: dict, ratios: dict, table: str) -> None:
    """Write ``benchmark.json`` (config, machine, results, ratios, targets, notes, table) and the chart.

    Args:
        cfg: the benchmark config (``out`` is created if needed).
        dev: the device the models ran on.
        results: ``{batch size: {method: summary}}``.
        ratios: ``{batch size: {ratio name: value}}``.
        table: :func:`markdown`'s text.
    """
    cfg.out.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        "config": config_to_dict(cfg),
        "device": dev,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "results": {str(n): r for n, r in results.items()},
        "ratios": {str(n): r for n, r in ratios.items()},
        "targets": {k: f"{op} {v}" for k, (op, v) in TARGETS.items()},
        "notes": notes(cfg),
        "markdown": table,
    }
    (cfg.out / "benchmark.json").write_text(json.dumps(payload, indent=2, default=float))
    bar_chart(results, cfg.out / "tokens_per_s.png")


# ----------------------------------------------------------------------------- chart
_TRAINER_SERIES = (
    ("rlhf_ppo", "fast rlhf_ppo"),
    ("grpo", "fast grpo"),
    ("trl_grpo", "TRL GRPO"),
    ("rloo", "fast rloo"),
    ("trl_rloo", "TRL RLOO"),
)
THROUGHPUT_PANELS = (
    (
        "whole iteration (rollout + update)",
        "tokens_per_s",
        (("generic", "generic SB3 PPO"), *_TRAINER_SERIES, ("limits", "sum of limits")),
    ),
    (
        "rollout only (no update)",
        "rollout_tokens_per_s",
        (
            ("naive", "naive: 1 env, no cache"),
            ("generic", "generic SB3 PPO"),
            *_TRAINER_SERIES,
            ("limits", "generate (limit)"),
        ),
    ),
)
"""The chart's two panels: (title, result key, (method, label) series). Rollout-only rates are far higher
than whole-iteration ones, so one axis for both made the rollout-only generic path look faster than the
fast agent's whole iteration."""
METHOD_COLORS = {
    "naive": "C0",
    "generic": "C1",
    "rlhf_ppo": "C2",
    "grpo": "C3",
    "trl_grpo": "C6",
    "rloo": "C5",
    "trl_rloo": "C9",
    "limits": "C4",
}
"""One colour per method on both panels."""


def _panel_values(results: dict, method: str, key: str) -> list[float | None]:
    """Per batch size, ``method``'s ``key`` rate, or None. The limits: the rate of their sum for a whole
    iteration, ``generate`` alone for the rollout."""
    if method != "limits":
        return [(results[n].get(method) or {}).get(key) for n in results]
    lims = [results[n].get("limits") for n in results]
    if key == "tokens_per_s":
        return [lim and lim["tokens_per_iteration"] / limits_iteration_s(lim) for lim in lims]
    return [lim and lim["generate_tokens_per_s"] for lim in lims]


def throughput_figure(results: dict):
    """Generated tokens/s per batch size: whole iterations and rollouts alone on two separate panels.

    A method with no number for a panel (the generic update skipped above ``--generic-max-batch``, naive
    has no update) has no bar there.

    Args:
        results: ``{batch size: {method: summary}}`` as :func:`scripts.benchmark.main` builds it.

    Returns:
        The ``matplotlib`` ``Figure``.
    """
    from matplotlib.figure import Figure

    sizes = list(results)
    fig = Figure(figsize=(13, 4.5))
    for ax, (title, key, series) in zip(fig.subplots(1, 2), THROUGHPUT_PANELS):
        width = 0.8 / len(series)
        for j, (method, label) in enumerate(series):
            vals = _panel_values(results, method, key)
            xs = [i + (j - (len(series) - 1) / 2) * width for i, v in enumerate(vals) if v]
            vals = [v for v in vals if v]
            if vals:  # a series with no number in this panel gets no legend entry either
                bars = ax.bar(xs, vals, width, label=label, color=METHOD_COLORS[method])
                ax.bar_label(bars, labels=[f"{v:.1f}" for v in vals], fontsize=7)
        ax.set_xticks(np.arange(len(sizes)), [f"batch {n}" for n in sizes])
        ax.set_ylabel(f"generated tokens / s ({title.split(' (')[0]})")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.suptitle("textrlhf throughput")
    fig.tight_layout()
    return fig


def bar_chart(results: dict, path: Path) -> None:
    """Write :func:`throughput_figure` as a PNG."""
    throughput_figure(results).savefig(path, dpi=120)
