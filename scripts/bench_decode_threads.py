"""Rollout seconds of a fast agent by how its decode runs: intra-op threads, and plain or packed bf16 weights.

Two things change a bf16 rollout's token-by-token forwards and nothing else (the env's reward, the
reference and the update stay as they are): the policy option ``decode_threads`` (:mod:`textrlhf.threads`)
and the packed bf16 weights of the LM's linear layers (``LMPolicyModel.decode_weights``,
:func:`textrlhf.precision.packed_bf16_linears`). A setting ``THREADS/WEIGHTS`` names both: ``THREADS`` is
``all`` (torch's own count), ``auto`` or an int; ``WEIGHTS`` is ``autocast`` (autocast's casts, the rollout
before packing) or ``packed`` (what the policy does where the CPU packs bf16 weights). One
``grpo`` agent on the benchmark's task (the same prompts, reward module and lengths as
``scripts/benchmark.py``) alternates the settings rollout by rollout, with an update after each, so the
machine's drift and the policy's training hit every setting alike. Printed and written to
``DIR/decode_threads.json``: the median rollout and generation seconds of each setting and the ratio of
each to the first (the baseline; by default the rollout before both changes).

Example (about 3 minutes per precision and batch size on the 2-core machine; nothing else may run)::

    python -m scripts.bench_decode_threads --precision bf16 --batch-size 8 --out runs/decode-threads
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from scripts.cli import config_to_dict, parse_args


@dataclass
class Config:
    """Rollout seconds with each decode setting, alternating on one agent."""

    model: str = "smollm2-135m-instruct"
    """Policy model (also the reward trunk): an offline name, "tiny", a folder or a hub name."""
    precision: Literal["fp32", "bf16"] = "bf16"
    """The policy's precision (bf16: autocast over fp32 weights)."""
    batch_size: int = 8
    """Episodes per rollout (groups of group_size per prompt)."""
    group_size: int = 4
    """Responses per prompt."""
    max_new_tokens: int = 24
    """Response length."""
    settings: list[str] = field(default_factory=lambda: ["all/autocast", "auto/autocast", "auto/packed"])
    """THREADS/WEIGHTS per setting (module docstring); the first is the baseline of the ratios."""
    warmup: int = 2
    """Untimed rollout + update pairs first (the optimizer state and the working set settle)."""

    repeats: int = 4
    """Timed rollouts of each setting; the median is reported."""
    seed: int = 0
    """The agent's and the reward head's seed."""
    out: Path = Path("runs/decode-threads")
    """Folder for decode_threads.json."""


def parse_setting(setting: str, threads: int) -> tuple[int | str, bool]:
    """``(decode_threads, packed)`` of ``THREADS/WEIGHTS``; ``all`` is torch's count ``threads``.

    Raises:
        ValueError: not ``THREADS/WEIGHTS`` with ``WEIGHTS`` ``autocast`` or ``packed``.
    """
    count, _, weights = setting.partition("/")
    if weights not in ("autocast", "packed"):
        raise ValueError(f"a setting is THREADS/WEIGHTS with WEIGHTS autocast or packed, got {setting!r}")
    return (threads if count == "all" else count if count == "auto" else int(count)), weights == "packed"


def build_agent(cfg: Config):
    """The benchmark's ``grpo`` agent at ``cfg.batch_size`` (:func:`scripts.bench_methods.build_fast_agent`)."""
    from scripts.bench_methods import build_fast_agent
    from scripts.benchmark import Config as BenchConfig
    from scripts.benchmark import encode_prompts, window_texts
    from textenv import load_prompts, load_tokenizer

    bench = BenchConfig(
        model=cfg.model,
        precision=cfg.precision,
        max_new_tokens=cfg.max_new_tokens,
        group_size=cfg.group_size,
        batch_sizes=[cfg.batch_size],
        methods=["grpo"],
    )
    tok = load_tokenizer(cfg.model)
    ids = encode_prompts(tok, load_prompts("bundled:reviews", split="train"), bench.max_prompt_tokens)
    agent, _ = build_fast_agent(bench, cfg.batch_size, cfg.seed, window_texts(tok, ids), "cpu", tok, "grpo")
    return agent


def main(argv=None) -> dict:
    cfg = parse_args(Config, argv)
    import torch

    from scripts.bench_utils import median, ratio

    agent = build_agent(cfg)
    _, callback = agent._setup_learn(10**12, callback=None)
    callback.on_training_start(locals(), globals())
    default = agent.policy.decode_threads

    def rollout() -> tuple[float, float]:
        start = time.perf_counter()
        agent.collect_rollouts(agent.env, callback, agent.rollout_buffer, n_rollout_steps=agent.n_steps)
        return time.perf_counter() - start, float(agent.logger.name_to_value["time/generation_s"])

    for _ in range(cfg.warmup):
        rollout()
        agent.train()
    runs: dict[str, list[dict]] = {s: [] for s in cfg.settings}
    for _ in range(cfg.repeats):
        for s in cfg.settings:
            agent.policy.decode_threads, packed = parse_setting(s, torch.get_num_threads())
            if not packed:  # the rollout before packing: autocast's casts (an instance attribute, removed below)
                agent.policy.decode_weights = lambda rows: contextlib.nullcontext()
            seconds, gen = rollout()
            agent.policy.__dict__.pop("decode_weights", None)
            agent.policy.decode_threads = default  # the update never reads it; restored all the same
            agent.train()
            runs[s].append({"rollout_s": seconds, "generation_s": gen})
    rollout_s = {s: median(r["rollout_s"] for r in v) for s, v in runs.items()}
    generation_s = {s: median(r["generation_s"] for r in v) for s, v in runs.items()}
    base = cfg.settings[0]
    result = {
        "config": config_to_dict(cfg),
        "torch_threads": torch.get_num_threads(),
        "rollout_s": rollout_s,
        "generation_s": generation_s,
        "rollout_vs_baseline": {s: ratio(v, rollout_s[base]) for s, v in rollout_s.items()},
        "runs": runs,
        "command": " ".join(["python -m scripts.bench_decode_threads", *sys.argv[1:]]) if argv is None else None,
    }
    print(f"{cfg.precision}, {cfg.batch_size} episodes, torch threads {torch.get_num_threads()}")
    print(f"{'threads/weights':<16} {'rollout s':>9} {'generation s':>12} {'rollout x ' + base:>22}")
    for s in cfg.settings:
        print(f"{s:<16} {rollout_s[s]:>9.2f} {generation_s[s]:>12.2f} {result['rollout_vs_baseline'][s]:>22.2f}")
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "decode_threads.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
