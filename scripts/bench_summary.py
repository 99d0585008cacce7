"""Summaries of the benchmark's measurements (``scripts/benchmark.py``): per run, over runs, against TRL.

Unit: generated tokens per second of whole iteration = tokens generated in the timed iterations / their
seconds. Tokens are COUNTED, not assumed: EOS may end an episode early (EOS counts as a token).
"""

from __future__ import annotations

from scripts.bench_utils import median, ratio

# Issue 8's targets: the fast agent at >= 1.5x TRL PPO tokens/s, its rollout within 1.25x of batched
# generation, the generic SB3 path at >= 3x naive one-env-at-a-time stepping.
TARGETS = {
    "fast_vs_trl": (">=", 1.5),
    "fast_rollout_vs_generate": ("<=", 1.25),
    "generic_rollout_vs_naive": (">=", 3.0),
}
"""Ratio name -> (comparison, target)."""


def summarize_iterations(its: list[dict]) -> dict:
    """One run: mean seconds per iteration, tokens/s = all tokens / all seconds of the timed iterations."""
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
    }


def summarize_runs(runs: list[dict]) -> dict:
    """Median over runs of every numeric field (per-run values kept under ``runs``)."""
    keys = [k for k, v in runs[0].items() if v is None or isinstance(v, (int, float)) and not isinstance(v, bool)]
    out = {k: median(r[k] for r in runs) for k in keys}
    out.update({k: v for k, v in runs[0].items() if isinstance(v, bool)})
    out["runs"] = runs
    return out


def compute_ratios(res: dict, n: int, T: int) -> dict:
    """The speed ratios of one batch size: each method against TRL, and the issue's :data:`TARGETS`.

    Args:
        res: ``{method: summary over runs}`` of batch size ``n``.
        n: the batch size (prompts per iteration).
        T: ``max_new_tokens``.

    Returns:
        ``{ratio name: value}``; a ratio with a missing side is None (``bench_utils.ratio``) or absent.
    """
    trl = (res.get("trl") or {}).get("tokens_per_s")
    out = {}
    for m, r in res.items():
        if m == "limits":
            out["limits_generate_vs_trl"] = ratio(r["generate_tokens_per_s"], trl)
        elif m != "trl" and r.get("tokens_per_s") is not None:
            out[f"{m}_vs_trl"] = ratio(r["tokens_per_s"], trl)
        elif m != "trl":  # naive, or generic with its update skipped: rollout tokens/s vs TRL's whole iteration
            out[f"{m}_rollout_vs_trl"] = ratio(r["rollout_tokens_per_s"], trl)
    fast, lim, gen, naive = res.get("fast"), res.get("limits"), res.get("generic"), res.get("naive")
    if fast and lim:
        per_tok_gen = lim["generate_s"] / (n * T)
        out["fast_rollout_vs_generate"] = ratio(fast["rollout_s"] / fast["tokens_per_iteration"], per_tok_gen)
        out["fast_generation_vs_generate"] = ratio(
            (fast.get("generation_s") or float("nan")) / fast["tokens_per_iteration"], per_tok_gen
        )
    if gen and naive:
        out["generic_rollout_vs_naive"] = ratio(gen["rollout_tokens_per_s"], naive["rollout_tokens_per_s"])
    return out
