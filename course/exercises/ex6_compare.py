"""Exercise 6 (open): swap the algorithm and compare score and KL curves.

Your RLOO loop from exercise 5 is one point in a family. Change one thing, run both variants with the
same seed and budget, and compare. Ideas (pick one or more):

* the baseline: none (plain REINFORCE, Williams 1992: ``A = R``), the batch mean (``A = R - mean(R)``),
  leave-one-out (RLOO), or the group mean divided by the group std (GRPO, Shao et al. 2024);
* the KL: ``beta = 0`` vs ``0.05`` vs ``0.2``, or the estimator k1 vs k3 (exercise 1);
* PPO with a critic: ``agents.make_agent("ppo", agents.make_vec_text_env(...))`` (Schulman et al.
  2017) -- log the same columns from its rollouts;
* several gradient steps per batch with the PPO clip (exercise 3) instead of one REINFORCE step.

Your ``run_comparison`` is graded on what it writes, not on the numbers:

* ``out_dir / "curves.csv"`` with at least the columns ``algorithm, iteration, score, kl`` (more are
  fine), one row per algorithm and iteration, at least two distinct ``algorithm`` values, and finite
  numbers;
* ``out_dir / "curves.png"``: a picture of the curves (``course.scaffold.plot_curves(rows, path)``
  draws score and KL against iteration, one line per algorithm).

Run it: ``python -m course.exercises.ex6_compare --run-dir runs/ex6`` (tiny, a few minutes) or add
``--model smollm2-135m-instruct``. How to read the plot: the score curve should rise; the KL curve
shows what the rise cost (nats of drift from the reference model). A variant that gets the same score
at a lower KL, or sooner, is better; a flat KL with a flat score means nothing was learned.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from course.scaffold import TrainConfig, plot_curves, write_csv  # noqa: F401  (you will need them)


def run_comparison(out_dir: str | Path, cfg: TrainConfig | None = None) -> Path:
    """Train at least two algorithm variants with ``cfg`` and write ``curves.csv`` and ``curves.png``.

    Args:
        out_dir: folder to write into (create it).
        cfg: the training config shared by all variants (default ``TrainConfig.preset("tiny")``); the
            grader passes a very short one, so do not override its ``iterations``.

    Returns:
        The path of ``curves.csv``.

    Hint: ``from .ex5_rloo import train`` (this file sits next to yours); ``train(cfg, advantage_fn=...,
    algorithm="name")["history"]`` already has the ``algorithm, iteration, score, kl`` columns.
    """
    # TODO
    raise NotImplementedError("ex6.run_comparison")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Exercise 6: compare two algorithms")
    parser.add_argument("--run-dir", default="runs/ex6")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--iterations", type=int)
    args = parser.parse_args()
    print(run_comparison(args.run_dir, TrainConfig.preset(args.model, iterations=args.iterations)))
