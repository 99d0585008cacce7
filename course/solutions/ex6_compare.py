"""Exercise 6 (reference solution): RLOO vs plain REINFORCE (no baseline) on the same budget.

Williams (1992) REINFORCE with ``A = R`` is unbiased but noisy; RLOO (Ahmadian et al. 2024) subtracts
the other samples' mean reward. Same seed, prompts and learning rate for both.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from course.scaffold import TrainConfig, plot_curves, write_csv

from .ex5_rloo import rloo_advantages, train


def no_baseline(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Plain REINFORCE: the advantage is the reward itself."""
    return rewards.clone()


def run_comparison(out_dir: str | Path, cfg: TrainConfig | None = None) -> Path:
    """See ``course/exercises/ex6_compare.py``."""
    cfg = cfg or TrainConfig.preset("tiny")
    out_dir = Path(out_dir)
    rows = []
    for name, fn in (("rloo", rloo_advantages), ("reinforce", no_baseline)):
        rows += train(cfg, advantage_fn=fn, algorithm=name)["history"]
    path = write_csv(rows, out_dir / "curves.csv")
    plot_curves(rows, out_dir / "curves.png")
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Exercise 6: compare two algorithms")
    parser.add_argument("--run-dir", default="runs/ex6")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--iterations", type=int)
    args = parser.parse_args()
    print(run_comparison(args.run_dir, TrainConfig.preset(args.model, iterations=args.iterations)))
