"""Evaluate a trained reward model: held-out accuracy, and agreement with the annotator on fresh samples.

Reads top to bottom: parse the config, load the model, (1) accuracy and mean margin on held-out
preference pairs (by default the ``heldout_pairs.jsonl`` that train_reward_model.py wrote beside the
model), (2) sample fresh responses from the policy on prompts the model never saw (the test split),
score them with both the reward model and the annotator, and report how often the two rank a pair
of responses the same way, plus rank correlations and the mean/std of the normalised scores.

Example:
    python -m scripts.evaluate_reward_model --model runs/reward_model
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the default models ship offline; never hit the hub by accident

import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from reward_models import BradleyTerryRewardModel, evaluate_preferences
from reward_models.annotator import load_prompt_file, sample_responses
from reward_models.base import make_reward
from reward_models.preferences import load_preferences
from scripts.cli import config_to_dict, parse_args


@dataclass
class Config:
    """Evaluate a trained reward model against held-out pairs and the annotator."""

    model: Path = Path("runs/reward_model")
    """Folder of the trained reward model."""
    pairs: str | None = None
    """Held-out preference pairs (default: <model>/heldout_pairs.jsonl if it exists; none to skip)."""
    policy: str = "smollm2-135m-instruct"
    """Policy that writes the fresh samples."""
    annotator: str = "sentiment"
    """Reward spec the model's ranking is compared with."""
    prompts: Path | None = None
    """Prompt file for fresh samples (default: the bundled textrlhf/data/prompts.jsonl)."""
    task: str | None = "review"
    """Task of the fresh-sample prompts (none = all)."""
    split: str | None = "test"
    """Split of the fresh-sample prompts: "test" prompts were never used for training pairs."""
    samples_per_prompt: int = 4
    """Fresh responses per prompt; all pairs of them are compared (0 skips fresh samples)."""
    temperature: float = 1.0
    """Sampling temperature of the policy."""
    max_new_tokens: int = 24
    """Length limit of the fresh responses, in tokens."""
    batch_size: int = 32
    """Sequences per generate() call."""
    min_gap: float = 0.3
    """Also report agreement on pairs whose annotator scores differ by more than this."""
    seed: int = 1234
    """Seed of the fresh samples (differs from the data-generation seed)."""
    output: Path | None = None
    """Write the report as json here (default: <model>/eval_report.json)."""
    threads: int | None = None
    """torch CPU threads (none = torch's default; 1 helps on a machine shared with other jobs)."""
    progress: bool = True
    """Show progress bars."""


def agreement(rm: np.ndarray, ann: np.ndarray, groups: list[list[int]], min_gap: float) -> dict:
    """Share of same-prompt pairs that the reward model and the annotator order the same way.

    Pairs the annotator ties are left out (no order to agree with); ``agreement_gap`` keeps only the
    pairs whose annotator scores differ by more than ``min_gap``.
    """
    agree, agree_gap = [], []
    for idx in groups:
        for a, b in itertools.combinations(idx, 2):
            d_ann = ann[a] - ann[b]
            if d_ann == 0:
                continue
            same = bool(np.sign(rm[a] - rm[b]) == np.sign(d_ann))
            agree.append(same)
            if abs(d_ann) > min_gap:
                agree_gap.append(same)
    return {
        "agreement": float(np.mean(agree)) if agree else float("nan"),
        "pairs": len(agree),
        "agreement_gap": float(np.mean(agree_gap)) if agree_gap else float("nan"),
        "pairs_gap": len(agree_gap),
    }


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))  # ties broken by order: fine for a report
    return float(np.corrcoef(rx, ry)[0, 1])


def heldout_accuracy(cfg: Config, model: BradleyTerryRewardModel) -> dict | None:
    """Accuracy and mean margin on held-out pairs (``None`` when there are none to read).

    Args:
        cfg: the script's config (``pairs``, or ``model``'s ``heldout_pairs.jsonl``).
        model: the reward model under evaluation.
    """
    pairs_path = cfg.pairs or (
        str(cfg.model / "heldout_pairs.jsonl") if (cfg.model / "heldout_pairs.jsonl").exists() else None
    )
    if not pairs_path or pairs_path.lower() == "none":
        return None
    held = evaluate_preferences(model, load_preferences(pairs_path))
    print(f"held-out: accuracy {held['accuracy']:.3f}, mean margin {held['mean_margin']:.3f} ({held['n_pairs']} pairs)")
    return held


def fresh_agreement(cfg: Config, model: BradleyTerryRewardModel) -> dict:
    """Sample fresh responses on unseen prompts and compare the model's ranking with the annotator's.

    Args:
        cfg: the script's config (policy, prompts, sampling settings, annotator, ``min_gap``).
        model: the reward model under evaluation.

    Returns:
        :func:`agreement`'s numbers plus prompt and sample counts, Pearson and Spearman correlations,
        and the mean and std of the model's (normalised) scores.
    """
    from textrlhf.models import load_model, load_tokenizer

    prompts = load_prompt_file(cfg.prompts, task=cfg.task, split=cfg.split)
    responses = sample_responses(
        load_model(cfg.policy),
        load_tokenizer(cfg.policy),
        prompts,
        cfg.samples_per_prompt,
        cfg.temperature,
        cfg.max_new_tokens,
        cfg.batch_size,
        cfg.seed,
        progress=cfg.progress,
    )
    flat_p = [p for p in prompts for _ in range(cfg.samples_per_prompt)]
    flat_r = [r for group in responses for r in group]
    rm_scores = model.score(flat_p, flat_r).astype(np.float64)
    ann_scores = make_reward(cfg.annotator).score(flat_p, flat_r).astype(np.float64)
    k = cfg.samples_per_prompt
    groups = [list(range(i * k, (i + 1) * k)) for i in range(len(prompts))]
    fresh = agreement(rm_scores, ann_scores, groups, cfg.min_gap)
    fresh.update(
        {
            "prompts": len(prompts),
            "samples": len(flat_r),
            "pearson": float(np.corrcoef(rm_scores, ann_scores)[0, 1]),
            "spearman": _spearman(rm_scores, ann_scores),
            "rm_mean": float(rm_scores.mean()),
            "rm_std": float(rm_scores.std()),
        }
    )
    print(
        f"fresh samples ({len(prompts)} {cfg.split} prompts x {k}): agreement {fresh['agreement']:.3f} "
        f"on {fresh['pairs']} non-tied pairs, {fresh['agreement_gap']:.3f} on {fresh['pairs_gap']} pairs with "
        f"gap > {cfg.min_gap}; pearson {fresh['pearson']:.3f}, spearman {fresh['spearman']:.3f}; "
        f"normalised scores mean {fresh['rm_mean']:.3f}, std {fresh['rm_std']:.3f}"
    )
    return fresh


def main(argv=None) -> dict:
    """Evaluate a reward model from the command line; returns the report (also written as JSON)."""
    cfg = parse_args(Config, argv)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    start = time.perf_counter()
    report: dict = {"config": config_to_dict(cfg)}
    model = BradleyTerryRewardModel.from_pretrained(cfg.model)
    print(f"loaded {model}")

    # 1. Held-out preference pairs.
    held = heldout_accuracy(cfg, model)
    if held is not None:
        report["heldout"] = held

    # 2. Fresh samples on unseen prompts: does the model rank them like the annotator?
    if cfg.samples_per_prompt > 0:
        report["fresh"] = fresh_agreement(cfg, model)

    report["seconds"] = round(time.perf_counter() - start, 2)
    output = cfg.output or cfg.model / "eval_report.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2))
    print(f"report written to {output} ({report['seconds']:.1f} s)")
    return report


if __name__ == "__main__":
    main()
