"""Generate preference pairs offline: a policy samples, a simulated annotator labels.

Reads top to bottom: parse the config, load the prompts, sample K continuations of each prompt from
the policy, score them with the annotator (a reward spec, VADER sentiment by default), keep the
pairs whose scores differ by more than ``min_gap``, write jsonl plus a ``.meta.json`` sidecar.
After Ziegler et al. (2019), "Fine-Tuning Language Models from Human Preferences" (mock sentiment).

Example:
    python -m scripts.generate_preferences --output runs/preferences/sentiment_pairs.jsonl
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the default models ship offline; never hit the hub by accident

import json
import time
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from reward_models.annotator import AnnotatorConfig, generate_preference_pairs, load_prompt_file, write_pairs
from scripts.cli import config_to_dict, parse_args


@dataclass
class Config(AnnotatorConfig):
    """Sample responses from a policy and label pairs of them with a simulated annotator."""

    samples_per_prompt: int = 4
    """Responses sampled per prompt (K); all K(K-1)/2 pairs of them are labelled."""
    min_gap: float = 0.3
    """Skip pairs whose annotator scores differ by at most this (near-ties are label noise)."""
    output: Path = Path("runs/preferences/sentiment_pairs.jsonl")
    """Where the pairs go (jsonl); the metadata goes to <output>.meta.json."""
    prompts: Path | None = None
    """Prompt file (jsonl rows {"prompt", "task", "split"}); default: the bundled textrlhf/data/prompts.jsonl."""
    task: str | None = "review"
    """Keep prompts of this task ("review" or "instruction"; none = all)."""
    split: str | None = "train"
    """Keep prompts of this split ("train" or "test"; none = all)."""
    max_prompts: int | None = None
    """Use only the first N prompts (none = all)."""
    threads: int | None = None
    """torch CPU threads (none = torch's default; 1 helps on a machine shared with other jobs)."""
    progress: bool = True
    """Show progress bars."""


def main(argv=None) -> dict:
    cfg = parse_args(Config, argv)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    start = time.perf_counter()

    # 1. Prompts: the bundled review prompts (train split) by default.
    prompts = load_prompt_file(cfg.prompts, task=cfg.task, split=cfg.split)
    if cfg.max_prompts is not None:
        prompts = prompts[: cfg.max_prompts]
    print(
        f"{len(prompts)} prompts, {cfg.samples_per_prompt} samples each, policy {cfg.policy!r}, "
        f"annotator {cfg.annotator!r}"
    )

    # 2. Sample, score, label (reward_models.annotator documents ties, noise and the gap filter).
    annotator_cfg = AnnotatorConfig(**{f.name: getattr(cfg, f.name) for f in fields(AnnotatorConfig)})
    rows, meta = generate_preference_pairs(prompts, annotator_cfg, progress=cfg.progress)

    # 3. Write the pairs and the sidecar metadata (whole script config, counts, wall time).
    meta["script_config"] = config_to_dict(cfg)
    meta["seconds_total"] = round(time.perf_counter() - start, 2)
    write_pairs(rows, cfg.output, meta)
    counts = meta["counts"]
    print(
        f"wrote {counts['pairs']} pairs to {cfg.output} ({counts['candidates']} candidates, "
        f"{counts['skipped_ties']} ties/near-ties skipped, {counts['skipped_invalid']} invalid; sampled in "
        f"{meta['precision']}) in {meta['seconds_total']:.1f} s"
    )
    print(json.dumps(counts))
    return meta


if __name__ == "__main__":
    main()
