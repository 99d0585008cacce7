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

from scripts.bench_summary import TARGETS
from scripts.bench_utils import fmt
from scripts.cli import config_to_dict

if TYPE_CHECKING:  # the entry module imports this one; the config is only a type here
    from scripts.benchmark import Config

METHOD_NAMES = {
    "naive": "naive (1 env, no cache, rollout only)",
    "generic": "generic SB3 PPO",
    "fast": "fast RLHFPPO",
    "trl": "TRL 1.12 PPOTrainer",
}
"""The table's name of each trainer method (the limits have rows of their own)."""
TABLE_HEADER = (
    "| batch | method | tokens/s (whole iteration) | rollout s | update s | iteration s | tokens/iter "
    "| peak ΔRSS MB | × TRL |",
    "|---|---|---|---|---|---|---|---|---|",
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
        f"\n{cfg.model}, prompts {cfg.max_prompt_tokens} tokens, {cfg.max_new_tokens} new tokens, "
        f"temperature {cfg.temperature}, {cfg.epochs} PPO epoch(s), KL coef {cfg.kl_coef} (fixed); median "
        f"of {cfg.runs} run(s) x {cfg.iterations} iteration(s) after 1 warm-up; tokens counted (EOS ends "
        f"an episode early for fast and TRL)."
    )
    return "\n".join(lines)


def _method_row(n: int, m: str, r: dict, rat: dict) -> str:
    """The table row of trainer method ``m`` at batch ``n`` (rollout tokens/s when it has no update)."""
    tps = (
        fmt(r["tokens_per_s"]) if r["tokens_per_s"] is not None else f"{fmt(r['rollout_tokens_per_s'])} (rollout only)"
    )
    name = METHOD_NAMES[m] + (" (update skipped)" if m == "generic" and r.get("update_skipped") else "")
    return (
        f"| {n} | {name} | {tps} | {fmt(r['rollout_s'], 2)} | {fmt(r['update_s'], 2)} | "
        f"{fmt(r['iteration_s'], 2)} | {fmt(r['tokens_per_iteration'])} | {fmt(r['peak_rss_mb'], 0)} | "
        f"{fmt(rat.get(f'{m}_vs_trl', rat.get(f'{m}_rollout_vs_trl')), 2)} |"
    )


def _limit_rows(n: int, r: dict, rat: dict) -> list[str]:
    """The three rows of the raw limits at batch ``n``: generate, forward, forward + backward."""
    return [
        f"| {n} | limit: `generate`, KV cache (new tokens/s) | {fmt(r['generate_tokens_per_s'])} | "
        f"{fmt(r['generate_s'], 2)} | - | - | {fmt(r['tokens_per_iteration'])} | {fmt(r['peak_rss_mb'], 0)} | "
        f"{fmt(rat.get('limits_generate_vs_trl'), 2)} |",
        f"| {n} | limit: teacher-forced forward (sequence tokens/s) | {fmt(r['forward_seq_tokens_per_s'])} "
        f"| {fmt(r['forward_s'], 2)} | - | - | - | - | - |",
        f"| {n} | limit: forward + backward (sequence tokens/s) | "
        f"{fmt(r['forward_backward_seq_tokens_per_s'])} | - | "
        f"{fmt(r['forward_backward_s'], 2)} | - | - | - | - |",
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
        "counted (EOS included; fast and TRL episodes may end early at EOS, generic always generates n*T).",
        "naive: the generic policy with kv_cache=False on one env, rollout phase only (SB3 collect_rollouts incl. "
        "the KL buffer's reference forward); measured once and shared by every batch size.",
        f"generic: update skipped above batch {cfg.generic_max_batch} (one full-window forward+backward per "
        f"transition); minibatch {cfg.generic_batch_size or 'all'} transitions.",
        "trl: rollout_s = iteration start to the first forward with gradients (generation, reference/value/reward "
        "forwards, GAE, gc); update_s = the PPO epochs plus TRL's metrics/logging to the end of the step; "
        "generation_s = its batch_generation calls.",
        "limits: generate with min_new_tokens=max_new_tokens (every row generates all tokens); forward and "
        "forward+backward over the generated (prompt + response) sequences, sequence tokens/s.",
        "peak_rss_mb: psutil-sampled RSS high-water during the method's run (model building included) minus RSS "
        "before it, after gc + malloc_trim; one process, so allocator reuse can lower later methods' numbers.",
    ]


def write_report(cfg: Config, dev: str, results: dict, ratios: dict, table: str) -> None:
    """Write ``benchmark.json`` (config, machine, results, ratios, targets, notes, table) and the chart.

    Args:
        cfg: the benchmark config (``run_dir`` is created if needed).
        dev: the device the models ran on.
        results: ``{batch size: {method: summary}}``.
        ratios: ``{batch size: {ratio name: value}}``.
        table: :func:`markdown`'s text.
    """
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
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
    (cfg.run_dir / "benchmark.json").write_text(json.dumps(payload, indent=2, default=float))
    bar_chart(results, cfg.run_dir / "tokens_per_s.png")


# ----------------------------------------------------------------------------- chart
THROUGHPUT_PANELS = (
    (
        "whole iteration (rollout + update)",
        "tokens_per_s",
        (("generic", "generic SB3 PPO"), ("fast", "fast RLHFPPO"), ("trl", "TRL PPO")),
    ),
    (
        "rollout only (no update)",
        "rollout_tokens_per_s",
        (
            ("naive", "naive: 1 env, no cache"),
            ("generic", "generic SB3 PPO"),
            ("fast", "fast RLHFPPO"),
            ("trl", "TRL PPO"),
            ("limits", "generate (limit)"),
        ),
    ),
)
"""The chart's two panels: (title, result key, (method, label) series). Rollout-only rates are far higher
than whole-iteration ones, so one axis for both made the rollout-only generic path look faster than the
fast agent's whole iteration."""
METHOD_COLORS = {"naive": "C0", "generic": "C1", "fast": "C2", "trl": "C3", "limits": "C4"}
"""One colour per method on both panels."""


def _panel_values(results: dict, method: str, key: str) -> list[float | None]:
    """Per batch size, ``method``'s ``key`` rate (``generate_tokens_per_s`` for the limit), or None."""
    key = "generate_tokens_per_s" if method == "limits" else key
    return [(results[n].get(method) or {}).get(key) for n in results]


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
