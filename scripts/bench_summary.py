"""Summaries of the benchmark's measurements (``scripts/benchmark.py``): per run, over runs, ratios, targets.

Unit: generated tokens per second of whole iteration = tokens generated in the timed iterations / their
seconds. Tokens are COUNTED, not assumed: EOS may end an episode early (EOS counts as a token).
"""

from __future__ import annotations

from scripts.bench_utils import median, ratio

FAST_AGENTS = ("rlhf_ppo", "grpo", "rloo")
"""The project's fast sequence-level agents."""
TRL_METHODS = ("trl_grpo", "trl_rloo")
"""TRL's trainers (the reference points)."""
GROUPED = ("grpo", "rloo", "trl_grpo", "trl_rloo")
"""Methods that answer each prompt ``group_size`` times."""

# Issue 16's targets: each fast agent at >= 1.5x the TRL trainer of its algorithm and at >= 85% of the
# rate of the sum of its raw limits; issue 8's: the fast PPO rollout within 1.25x of batched generation,
# the generic SB3 path at >= 3x naive one-env-at-a-time stepping.
TARGETS = {
    "grpo_vs_trl_grpo": (">=", 1.5),
    "rloo_vs_trl_rloo": (">=", 1.5),
    "rlhf_ppo_of_limits": (">=", 0.85),
    "grpo_of_limits": (">=", 0.85),
    "rloo_of_limits": (">=", 0.85),
    "rlhf_ppo_rollout_vs_generate": ("<=", 1.25),
    "generic_rollout_vs_naive": (">=", 3.0),
}
"""Ratio name -> (comparison, target)."""


def summarize_iterations(records: list[dict]) -> dict:
    """One run: mean seconds per iteration, tokens/s = all tokens / all seconds of the timed iterations.

    Args:
        records: one dict per iteration (``tokens``, ``rollout_s``, ``update_s``, ``generation_s``, and
            optionally ``warmup``: such iterations are left out of the means, and ``minor_faults``).

    Returns:
        The means, plus every record under ``iterations`` (warm-ups included, so that another warm-up
        count can be recomputed from the JSON).
    """
    its = [i for i in records if not i.get("warmup", False)]
    if not its:
        raise ValueError("no timed iteration to summarize (every record is a warm-up)")
    tokens = sum(i["tokens"] for i in its)
    roll = sum(i["rollout_s"] for i in its)
    upd = None if its[0]["update_s"] is None else sum(i["update_s"] for i in its)
    gen = None if its[0]["generation_s"] is None else sum(i["generation_s"] for i in its)
    k = len(its)
    return {
        "tokens_per_iteration": tokens / k,
        "rollout_s": roll / k,
        "update_s": None if upd is None else upd / k,
        "generation_s": None if gen is None else gen / k,
        "iteration_s": None if upd is None else (roll + upd) / k,
        "tokens_per_s": None if upd is None else tokens / (roll + upd),
        "rollout_tokens_per_s": tokens / roll,
        "iterations": records,
    }


def summarize_runs(runs: list[dict]) -> dict:
    """Median over runs of every numeric field (per-run values kept under ``runs``); flags and labels
    (``update_skipped``, ``precision``) from the first run."""
    keys = [k for k, v in runs[0].items() if v is None or isinstance(v, (int, float)) and not isinstance(v, bool)]
    out = {k: median(r[k] for r in runs) for k in keys}
    out.update({k: v for k, v in runs[0].items() if isinstance(v, (bool, str))})
    out["runs"] = runs
    return out


def limits_iteration_s(limits: dict) -> float:
    """Seconds of the raw limits one fast-agent iteration needs: ``generate``, a teacher-forced forward for
    the reference log-probs, another for the reward module (a trunk of the policy's size), one
    forward+backward for the update (the value head rides on the policy's forwards)."""
    return limits["generate_s"] + 2 * limits["forward_s"] + limits["forward_backward_s"]


def compute_ratios(res: dict, n: int, T: int) -> dict:
    """The speed ratios of one batch size: each method against each TRL trainer and the raw limits.

    Args:
        res: ``{method: summary over runs}`` of batch size ``n``.
        n: the batch size (responses per iteration).
        T: ``max_new_tokens``.

    Returns:
        ``{ratio name: value}``: ``{m}_vs_{trl}`` (tokens/s over the TRL trainer's; ``{m}_rollout_vs_{trl}``
        for a method without update), ``{m}_of_limits`` (tokens/s over ``n * T`` tokens per
        :func:`limits_iteration_s`), ``{fast agent}_rollout_vs_generate``, ``generic_rollout_vs_naive``.
        A ratio with a missing side is None (``bench_utils.ratio``) or absent.
    """
    out = {}
    for trl in (t for t in TRL_METHODS if t in res):
        ref = res[trl].get("tokens_per_s")
        for m, r in res.items():
            if m == "limits":
                out[f"limits_generate_vs_{trl}"] = ratio(r["generate_tokens_per_s"], ref)
            elif m != trl and r.get("tokens_per_s") is not None:
                out[f"{m}_vs_{trl}"] = ratio(r["tokens_per_s"], ref)
            elif m != trl:  # naive, or generic with its update skipped: rollout tokens/s vs the whole iteration
                out[f"{m}_rollout_vs_{trl}"] = ratio(r["rollout_tokens_per_s"], ref)
    lim = res.get("limits")
    if lim:
        limit_rate = n * T / limits_iteration_s(lim)
        per_tok_gen = lim["generate_s"] / (n * T)
        for m, r in res.items():
            if m in FAST_AGENTS + TRL_METHODS and r.get("tokens_per_s") is not None:
                out[f"{m}_of_limits"] = ratio(r["tokens_per_s"], limit_rate)
            if m in FAST_AGENTS:
                out[f"{m}_rollout_vs_generate"] = ratio(r["rollout_s"] / r["tokens_per_iteration"], per_tok_gen)
                out[f"{m}_generation_vs_generate"] = ratio(
                    (r.get("generation_s") or float("nan")) / r["tokens_per_iteration"], per_tok_gen
                )
    gen, naive = res.get("generic"), res.get("naive")
    if gen and naive:
        out["generic_rollout_vs_naive"] = ratio(gen["rollout_tokens_per_s"], naive["rollout_tokens_per_s"])
    return out
