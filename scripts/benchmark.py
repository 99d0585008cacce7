"""Throughput benchmark (issue 8): the generic SB3 PPO path, the fast agent, TRL 1.12's PPO, raw limits.

Reads top to bottom: parse the config, encode the bundled review prompts (left-padded / truncated to
``max_prompt_tokens``), then for every batch size (prompts per iteration) and method run ``runs``
independent runs of one warm-up iteration plus ``iterations`` timed ones, in this one process:

* ``naive``   - the generic policy with ``kv_cache=False`` on ONE env (a full forward of the window per
  token, no cache), rollout phase only; it does not depend on the batch size, so it is measured once;
* ``generic`` - ``agents.make_agent("ppo")``: SB3's own PPO, KV-cached rollouts, one forward+backward of
  the whole window per stored transition in the update (skipped above ``--generic-max-batch``);
* ``fast``    - ``agents.rlhf_ppo.RLHFPPO``: lock-step KV-cached rollouts, sequence-level updates;
* ``trl``     - ``trl.experimental.ppo.PPOTrainer`` (trl==1.12.0) with a separate value model;
* ``limits``  - batched KV-cached ``generate`` (exactly ``max_new_tokens`` new tokens per row), a
  teacher-forced forward and a forward+backward over the whole (prompt + response) sequences.

Same work for every trainer: same model, prompts, prompt length, batch, temperature, ``max_new_tokens``,
PPO epochs, fixed KL coefficient, and the same reward MODULE: ``AutoModelForSequenceClassification``
(num_labels=1, the policy's weights, a seeded score head). TRL calls it on token ids; the env calls it
through ``SequenceClassifierReward`` (text -> policy tokenizer -> score at the last token), one
episode at a time, as the env calls any reward.

Unit: generated tokens per second of whole iteration = tokens generated in the timed iterations / their
seconds. Tokens are COUNTED, not assumed: EOS may end an episode early (EOS counts as a token). The
generic path always generates ``n * max_new_tokens`` tokens (SB3 resets a finished env and keeps going);
TRL's count is each row's response up to and including its first EOS; ``generate`` (limits) is forced to
``max_new_tokens`` tokens with ``min_new_tokens``.

The parts, one module each: this entry (config, the loop over batch sizes, methods and runs),
``scripts/bench_setup.py`` (prompts, reward module, env), ``scripts/bench_methods.py`` (limits, naive,
generic, fast), ``scripts/bench_trl.py`` (TRL), ``scripts/bench_summary.py`` (per-run and median
summaries, ratios, targets), ``scripts/bench_report.py`` (table, ``benchmark.json``, chart) and
``scripts/bench_utils.py`` (timers, peak RSS).

Example (the real measurement; several minutes, run it on a quiet machine)::

    python -m scripts.benchmark --run-dir runs/benchmark
    python -m scripts.benchmark --model tiny --batch-sizes 2 --max-new-tokens 4 --iterations 1 --runs 1
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from agents.kl import KLConfig
from scripts.bench_methods import run_fast, run_generic, run_limits, run_naive
from scripts.bench_report import markdown, write_report
from scripts.bench_setup import encode_prompts, log
from scripts.bench_summary import compute_ratios, summarize_runs
from scripts.bench_trl import run_trl
from scripts.bench_utils import PeakRSS
from scripts.cli import parse_args

METHODS = ("naive", "limits", "generic", "fast", "trl")
"""Every method, in the order they run for each batch size."""


@dataclass
class Config:
    """Tokens/s of the generic SB3 PPO path, the fast agent, TRL 1.12 PPO and the raw limits."""

    model: str = "smollm2-135m-instruct"
    """Policy model (also reference, reward and TRL value model): "smollm2-135m-instruct" or "tiny"."""
    batch_sizes: list[int] = field(default_factory=lambda: [8, 32])
    """Prompts per iteration (= envs for the SB3 paths, per_device_train_batch_size for TRL)."""
    iterations: int = 3
    """Timed iterations per run, after one warm-up iteration that is excluded."""
    runs: int = 3
    """Independent runs per method and batch size (fresh models, seed + run); the median is reported."""
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    """Subset of naive limits generic fast trl (space- or comma-separated)."""
    epochs: int = 1
    """PPO epochs per iteration for every trainer (n_epochs / num_ppo_epochs)."""
    max_prompt_tokens: int = 10
    """Prompt length: every prompt is left-padded or truncated (keeping its end) to this many tokens."""
    max_new_tokens: int = 24
    """Response length (episode horizon, TRL response_length, generate max_new_tokens)."""
    temperature: float = 0.7
    """Sampling temperature for everyone."""
    kl_coef: float = KLConfig.kl_coef
    """Fixed KL coefficient for every trainer (no adaptive controller)."""
    learning_rate: float = 3e-5
    """Adam(W) learning rate for every trainer (does not affect speed)."""
    generic_batch_size: int | None = 64
    """Minibatch size (transitions) of the generic SB3 update; none = all transitions in one minibatch."""
    generic_max_batch: int = 8
    """Skip the generic path's update above this batch size (it does one full-window forward+backward per
    transition, T times the work); its rollout is still measured."""
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    """Where the models run (auto: cuda if available)."""
    seed: int = 0
    """Base seed; run r uses seed + r (torch.manual_seed and the agents' seeds)."""
    run_dir: Path = Path("runs/benchmark")
    """Folder for benchmark.json and tokens_per_s.png."""

    def __post_init__(self) -> None:
        self.methods = [m.strip().lower() for item in self.methods for m in str(item).split(",") if m.strip()]
        bad = sorted(set(self.methods) - set(METHODS))
        if bad or not self.methods:
            raise ValueError(f"unknown method(s) {bad}; choose from {list(METHODS)}")
        for name in ("iterations", "runs", "epochs", "max_prompt_tokens", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ValueError("batch_sizes must be positive")


RUNNERS = {"naive": run_naive, "limits": run_limits, "generic": run_generic, "fast": run_fast, "trl": run_trl}
"""Method -> runner; each takes ``(cfg, n, seed=, prompts=, prompt_ids=, dev=, tokenizer=)`` and returns
one run's summary."""


def main(argv: list[str] | None = None) -> int:
    """Measure every method at every batch size; print the table, write ``benchmark.json`` and the chart.

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``); ``--help`` lists them.

    Returns:
        0 (the exit status).
    """
    cfg = parse_args(Config, argv)
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    from textenv import load_prompts, load_tokenizer

    tokenizer = load_tokenizer(cfg.model)
    prompts = load_prompts("bundled:reviews", split="train")
    inputs = {
        "prompts": prompts,
        "prompt_ids": encode_prompts(tokenizer, prompts, cfg.max_prompt_tokens),
        "dev": dev,
        "tokenizer": tokenizer,
    }
    _import_up_front(cfg.methods)
    log(
        f"benchmark: {cfg.model} on {dev}, batch sizes {cfg.batch_sizes}, methods {cfg.methods}, "
        f"{cfg.runs} run(s) x (1 warm-up + {cfg.iterations}) iterations, torch threads {torch.get_num_threads()}"
    )
    results = measure(cfg, inputs)
    ratios = {n: compute_ratios(res, n, cfg.max_new_tokens) for n, res in results.items()}
    table = markdown(results, ratios, cfg)
    print(table)
    write_report(cfg, dev, results, ratios, table)
    log(f"wrote {cfg.run_dir / 'benchmark.json'} and {cfg.run_dir / 'tokens_per_s.png'}")
    return 0


def _import_up_front(methods: list[str]) -> None:
    """Import the methods' libraries now, so that no method's peak-RSS delta includes import-time memory."""
    if {"naive", "generic", "fast"} & set(methods):
        import agents.rlhf_ppo  # noqa: F401  (imported for its memory only)
    if "trl" in methods:
        import trl.experimental.ppo.ppo_trainer  # noqa: F401  (imported for its memory only)
        from datasets import Dataset  # noqa: F401  (imported for its memory only)


def measure(cfg: Config, inputs: dict[str, Any]) -> dict[int, dict]:
    """``cfg.runs`` runs of every selected method at every batch size, summarised over the runs.

    Args:
        cfg: the benchmark config.
        inputs: the runners' shared keyword arguments (``prompts``, ``prompt_ids``, ``dev``, ``tokenizer``).

    Returns:
        ``{batch size: {method: median summary}}``. ``naive`` runs one env whatever the batch size, so it
        is measured at the first batch size only and shared (``batch_independent``).
    """
    results: dict[int, dict] = {}
    naive_done = None
    for n in cfg.batch_sizes:
        results[n] = {}
        for method in [m for m in METHODS if m in cfg.methods]:
            if method == "naive" and naive_done is not None:
                results[n]["naive"] = naive_done  # one env at a time: independent of the batch size
                continue
            results[n][method] = summarize_runs([_one_run(cfg, method, n, r, inputs) for r in range(cfg.runs)])
            if method == "naive":
                results[n]["naive"]["batch_independent"] = True
                naive_done = results[n]["naive"]
    return results


def _one_run(cfg: Config, method: str, n: int, r: int, inputs: dict[str, Any]) -> dict:
    """Run ``r`` (seed ``cfg.seed + r``) of ``method`` at batch ``n``, with its peak memory."""
    seed = cfg.seed + r
    log(f"[batch {n}] {method} run {r + 1}/{cfg.runs}")
    torch.manual_seed(seed)
    with PeakRSS() as mem:
        out = RUNNERS[method](cfg, n, seed=seed, **inputs)
    out["peak_rss_mb"] = mem.peak_mb
    if mem.cuda_peak_mb is not None:
        out["peak_cuda_mb"] = mem.cuda_peak_mb
    return out


if __name__ == "__main__":
    sys.exit(main())
