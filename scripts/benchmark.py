"""Throughput benchmark: the fast agents against TRL's GRPO and RLOO trainers, the generic SB3 path, raw limits.

Reads top to bottom: parse the config, encode the bundled review prompts (left-padded / truncated to
``max_prompt_tokens``, then decoded back into the texts every method gets), then for every batch size
(responses per iteration) run ``runs`` rounds; a round runs every method once (``warmup`` untimed iterations
plus ``iterations`` timed ones), all in this one process, so a drift of the machine's speed is shared
by every method instead of landing on whichever ran last:

* ``naive``    - the generic policy with ``kv_cache=False`` on ONE env (a full forward of the window per
  token, no cache), rollout phase only; it does not depend on the batch size, so it is measured once;
* ``limits``   - batched KV-cached ``generate`` (exactly ``max_new_tokens`` new tokens per row), a
  teacher-forced forward and a forward+backward over the whole (prompt + response) sequences;
* ``generic``  - ``agents.make_agent("ppo")``: SB3's own PPO, KV-cached rollouts, one forward+backward of
  the whole window per stored transition in the update (skipped above ``--generic-max-batch``);
* ``rlhf_ppo``, ``grpo``, ``rloo`` - the fast agents: lock-step KV-cached rollouts through the native
  vector env, sequence-level updates (``grpo`` and ``rloo`` in groups of ``group_size`` per prompt);
* ``trl_grpo``, ``trl_rloo`` - ``trl.GRPOTrainer`` / ``trl.RLOOTrainer`` (trl==1.16.0, the ``bench``
  extra) running their own ``train()``.

Same work for every trainer: same model, prompts, prompt length, batch, groups, temperature,
``max_new_tokens``, one optimizer step per batch, fixed KL coefficient with a reference model, and the
same reward object (a sequence-classification module with the policy's weights and a seeded score
head, called on the prompt and response texts). TRL 1.12's PPO trainer, the reference of the first
benchmark, was removed from TRL in 1.13; its comparison is a dated page of the docs (results history).

Unit: generated tokens per second of whole iteration = tokens generated in the timed iterations / their
seconds. Tokens are COUNTED, not assumed: EOS may end an episode early (EOS counts as a token), except
for the generic path, which always generates ``n * max_new_tokens`` (SB3 resets a finished env and keeps
going), and ``generate`` (limits), forced to ``max_new_tokens`` tokens with ``min_new_tokens``.
``*_of_limits`` compares a trainer's tokens/s with the rate of the sum of the raw limits one iteration
needs (``generate`` + two forwards, reference and reward + one forward+backward).

The parts, one module each: this entry (config, the loop over batch sizes, methods and runs),
``scripts/bench_setup.py`` (prompts, reward module, env), ``scripts/bench_methods.py`` (limits, naive,
generic, fast agents), ``scripts/bench_trl.py`` (TRL), ``scripts/bench_summary.py`` (per-run and median
summaries, ratios, targets), ``scripts/bench_report.py`` (table, ``benchmark.json``, chart) and
``scripts/bench_utils.py`` (timers, peak RSS).

Example (the real measurement; tens of minutes, run it on a quiet machine)::

    python -m scripts.benchmark --out runs/benchmark
    python -m scripts.benchmark --batch-sizes 8 --methods grpo,trl_grpo,rloo,trl_rloo --iterations 1 --runs 1 --out DIR
    python -m scripts.benchmark --model tiny --batch-sizes 4 --max-new-tokens 4 --iterations 1 --runs 1
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
from scripts.bench_methods import run_generic, run_grpo, run_limits, run_naive, run_rlhf_ppo, run_rloo
from scripts.bench_report import markdown, write_report
from scripts.bench_setup import encode_prompts, log, window_texts
from scripts.bench_summary import GROUPED, compute_ratios, summarize_runs
from scripts.bench_trl import run_trl_grpo, run_trl_rloo
from scripts.bench_utils import PeakRSS
from scripts.cli import parse_args

METHODS = ("naive", "limits", "generic", "rlhf_ppo", "grpo", "rloo", "trl_grpo", "trl_rloo")
"""Every method, in the order they run for each batch size."""


@dataclass
class Config:
    """Tokens/s of the fast agents, TRL 1.16's GRPO and RLOO trainers, the generic SB3 PPO path and the raw limits."""

    model: str = "smollm2-135m-instruct"
    """Policy model (also reference and reward trunk): "smollm2-135m-instruct", "tiny", a folder or a hub name."""
    batch_sizes: list[int] = field(default_factory=lambda: [8, 32])
    """Responses per iteration (= envs for the agents, per_device_train_batch_size for TRL)."""
    group_size: int = 4
    """Responses per prompt for the methods that group (grpo, rloo, TRL's num_generations); every batch
    size must be a multiple of it when one of them runs."""
    iterations: int = 3
    """Timed iterations per run, after the ``warmup`` ones."""
    warmup: int = 2
    """Untimed iterations per run before the timed ones, for every method alike. Two, because a trainer's
    first optimizer step creates the Adam state, so its second iteration is the first to hold the whole
    working set and still page-faults it in (minor faults per iteration are in ``benchmark.json``)."""
    runs: int = 3
    """Independent runs per method and batch size (fresh models, seed + run); the median is reported."""
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    """Subset of naive limits generic rlhf_ppo grpo rloo trl_grpo trl_rloo (space- or comma-separated)."""
    epochs: int = 1
    """Passes over each batch, one optimizer step each, for every trainer (n_epochs / TRL's num_iterations)."""
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
    precision: Literal["fp32", "bf16"] = "fp32"
    """Compute precision of every trainer and limit alike: fp32, or bf16 mixed precision (fp32 weights and
    optimizer state, bf16 autocast: the agents' policy ``precision``, TRL's ``bf16=True``, the limits under
    autocast). TRL's own default is bf16; fp32 is this benchmark's default so that its history compares."""
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    """Where the models run (auto: cuda if available)."""
    seed: int = 0
    """Base seed; run r uses seed + r (torch.manual_seed and the agents' seeds)."""
    out: Path = Path("runs/benchmark")
    """Folder for benchmark.json and tokens_per_s.png."""

    def __post_init__(self) -> None:
        self.methods = [m.strip().lower() for item in self.methods for m in str(item).split(",") if m.strip()]
        bad = sorted(set(self.methods) - set(METHODS))
        if bad or not self.methods:
            raise ValueError(f"unknown method(s) {bad}; choose from {list(METHODS)}")
        for name in ("iterations", "runs", "epochs", "max_prompt_tokens", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0 (untimed iterations), got {self.warmup}")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ValueError("batch_sizes must be positive")
        grouped = sorted(set(self.methods) & set(GROUPED))
        if grouped and (self.group_size < 2 or any(n % self.group_size for n in self.batch_sizes)):
            raise ValueError(
                f"{grouped} answer each prompt group_size={self.group_size} times: group_size must be >= 2 and "
                f"divide every batch size {self.batch_sizes} (e.g. --batch-sizes 8 32 with --group-size 4)"
            )


RUNNERS = {
    "naive": run_naive,
    "limits": run_limits,
    "generic": run_generic,
    "rlhf_ppo": run_rlhf_ppo,
    "grpo": run_grpo,
    "rloo": run_rloo,
    "trl_grpo": run_trl_grpo,
    "trl_rloo": run_trl_rloo,
}
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
    prompt_ids = encode_prompts(tokenizer, load_prompts("bundled:reviews", split="train"), cfg.max_prompt_tokens)
    inputs = {
        "prompts": window_texts(tokenizer, prompt_ids),
        "prompt_ids": prompt_ids,
        "dev": dev,
        "tokenizer": tokenizer,
    }
    _import_up_front(cfg.methods)
    log(
        f"benchmark: {cfg.model} on {dev}, batch sizes {cfg.batch_sizes}, methods {cfg.methods}, "
        f"{cfg.runs} run(s) x ({cfg.warmup} warm-up + {cfg.iterations}) iterations, "
        f"torch threads {torch.get_num_threads()}"
    )
    results = measure(cfg, inputs)
    ratios = {n: compute_ratios(res, n, cfg.max_new_tokens) for n, res in results.items()}
    table = markdown(results, ratios, cfg)
    print(table)
    write_report(cfg, dev, results, ratios, table)
    log(f"wrote {cfg.out / 'benchmark.json'} and {cfg.out / 'tokens_per_s.png'}")
    return 0


def _import_up_front(methods: list[str]) -> None:
    """Import the methods' libraries now, so that no method's peak-RSS delta includes import-time memory."""
    if {"naive", "generic", "rlhf_ppo", "grpo", "rloo"} & set(methods):
        import agents.rlhf_ppo  # noqa: F401  (imported for its memory only)
    if {"trl_grpo", "trl_rloo"} & set(methods):
        import trl  # noqa: F401  (imported for its memory only)
        from datasets import Dataset  # noqa: F401  (imported for its memory only)
        from trl import GRPOTrainer, RLOOTrainer  # noqa: F401  (TRL imports its trainers lazily)


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
        methods = [m for m in METHODS if m in cfg.methods and not (m == "naive" and naive_done is not None)]
        # Run r of every method, then run r + 1: the machine's speed drifts over minutes (docs/results/
        # 2026-12-01-benchmark-trl-grpo-rloo.md), and interleaving spreads a drift over every method.
        runs: dict[str, list] = {m: [] for m in methods}
        for r in range(cfg.runs):
            for method in methods:
                runs[method].append(_one_run(cfg, method, n, r, inputs))
        if "naive" in runs:
            naive_done = {**summarize_runs(runs.pop("naive")), "batch_independent": True}
        results[n] = {  # in METHODS order; naive once, shared (one env at a time: independent of the batch size)
            m: naive_done if m == "naive" else summarize_runs(runs[m]) for m in METHODS if m in cfg.methods
        }
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
