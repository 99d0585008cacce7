"""Stage ``evaluate``: base, SFT and RL policies on the held-out test prompts.

All three policies answer the same test prompts with the same sampling seed and temperature
(:func:`agents.evaluation.evaluate_policy`). The reward model is what RL optimised; the annotator
(VADER by default) never reached the RL stage, so its score and win rate are the honest measure
(Stiennon et al. 2020 report the same gap between RM and human judgement). KL and reference
perplexity are measured against the SFT model, the RL stage's reference (InstructGPT). Win rates:
RL vs its starting policy (SFT), RL vs base, SFT vs base, by the annotator and by a second judge
that no stage sees (``evaluate.second_judge``: TextBlob's pattern lexicon by default), so a gain that
exists only under the annotator shows as a gap.

Every win rate and score difference comes with a 95% bootstrap interval that resamples the held-out
prompts (all samples of a prompt together; the two policies' answers as pairs), in ``metrics.json``
under ``intervals`` (:mod:`textrlhf.stats`; docs/design.md section 9).
"""

from __future__ import annotations

from scripts.run_dir import atomic_write_csv, atomic_write_json, atomic_write_text, mark_done, require, stage_dir
from scripts.stages.common import (
    StageTimer,
    abs_path,
    encode_prompts,
    fmt,
    make_text_env,
    resolve_device,
    seed_everything,
)
from scripts.stages.config import PipelineConfig
from textrlhf.progress import progress_bar

POLICIES = ("base", "sft", "rl")
METRICS = (
    "rm_score",
    "annotator_score",
    "second_judge_score",
    "kl",
    "distinct_1",
    "distinct_2",
    "ref_perplexity",
    "response_len",
)
PAIRS = (("rl", "sft"), ("rl", "base"), ("sft", "base"))
"""The compared policies (first vs second): RL vs its starting point first, the headline."""
JUDGES = ("annotator", "second_judge", "rm")
"""Judges of the win rates and score differences (the reward model's only as a difference: RL optimised it)."""


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip() or "(empty)"


def samples_markdown(rows: list[dict], limit: int | None = None) -> str:
    """Markdown table: prompt, SFT response (scores), RL response (scores)."""
    lines = ["| prompt | SFT (start) response | annot. / RM | RL response | annot. / RM |", "|---|---|---|---|---|"]
    for r in rows[:limit]:
        lines.append(
            f"| {_md_cell(r['prompt'])} | {_md_cell(r['sft_response'])} | "
            f"{fmt(r['sft_annotator'], 2)} / {fmt(r['sft_rm'], 2)} | {_md_cell(r['rl_response'])} | "
            f"{fmt(r['rl_annotator'], 2)} / {fmt(r['rl_rm'], 2)} |"
        )
    return "\n".join(lines) + "\n"


def _evaluate_policies(
    cfg: PipelineConfig,
    sources: dict[str, str],
    rm_dir: str,
    device: str,
    prompts: list[str],
    prompt_ids: list[list[int]],
) -> dict:
    """Each policy of :data:`POLICIES` (loaded from ``sources``) on the same prompts and sampling seed.

    The SFT model doubles as the KL reference, so it is loaded once; the others are loaded one at a
    time and freed after their pass. Returns ``{policy: agents.evaluation.EvalResult}``.
    """
    import torch

    from agents.evaluation import evaluate_policy
    from reward_models import make_reward
    from reward_models.bradley_terry import BradleyTerryRewardModel
    from textenv import load_model, load_tokenizer

    run = cfg.run
    tokenizer = load_tokenizer(sources["sft"])
    reference = load_model(sources["sft"], device=device)
    reward_fn = BradleyTerryRewardModel.from_pretrained(rm_dir, device=device)
    annotator = make_reward(run.annotator)
    second_judge = make_reward(cfg.evaluate.second_judge)
    results = {}
    for name in progress_bar(POLICIES, desc="evaluate", unit="policy", disable=not run.progress):
        model = reference if name == "sft" else load_model(sources[name], device=device)
        results[name] = evaluate_policy(
            name,
            model,
            reference,
            tokenizer,
            prompts,
            prompt_ids,
            reward_fn,
            annotator,
            max_new_tokens=run.max_new_tokens,
            temperature=run.temperature,
            seed=run.seed,
            batch_size=cfg.evaluate.batch_size,
            second_judge=second_judge,
        )
        if model is not reference:
            del model
            if device == "cuda":
                torch.cuda.empty_cache()
    return results


def _win_rates(results: dict, by: str = "annotator") -> dict[str, float]:
    """Win rates of :data:`PAIRS` by the judge ``by`` (``agents.evaluation.win_rate``): ``{"rl_vs_sft": ...}``."""
    from agents.evaluation import win_rate

    return {f"{a}_vs_{b}": win_rate(results[a], results[b], by) for a, b in PAIRS}


def intervals(results: dict, samples_per_prompt: int, n_resamples: int, seed: int) -> dict[str, dict]:
    """95% bootstrap intervals, resampling prompts, of every win rate and score difference of :data:`PAIRS`,
    and of the base and RL policies' KL to SFT (the SFT policy's own is 0).

    Keys: ``win_rate/<judge>/<a>_vs_<b>``, ``gain/<judge>/<a>_minus_<b>`` (mean score of ``a`` minus that of
    ``b``), ``kl/<policy>``; values :meth:`textrlhf.stats.Interval.to_dict`. The samples of one prompt sit in a
    row (``samples_per_prompt`` of them), so prompt ``i // samples_per_prompt`` is the resampled unit.
    """
    import numpy as np

    from agents.evaluation import judge_scores
    from textrlhf.stats import bootstrap_mean, win_indicators

    groups = np.arange(len(results["rl"].prompts)) // samples_per_prompt
    boot = {"groups": groups, "n_resamples": n_resamples, "seed": seed}
    out = {}
    for judge in JUDGES:
        for a, b in PAIRS:
            sa, sb = judge_scores(results[a], judge), judge_scores(results[b], judge)
            if judge != "rm":
                out[f"win_rate/{judge}/{a}_vs_{b}"] = bootstrap_mean(win_indicators(sa, sb), **boot).to_dict()
            out[f"gain/{judge}/{a}_minus_{b}"] = bootstrap_mean(sa - sb, **boot).to_dict()
    for name in ("base", "rl"):
        out[f"kl/{name}"] = bootstrap_mean(results[name].kl, **boot).to_dict()
    return out


def _sample_rows(prompts: list[str], results: dict) -> list[dict]:
    """One ``samples.csv`` row per sampled prompt: each policy's response, annotator, second judge and RM scores, KL."""
    rows = []
    for i, prompt in enumerate(prompts):
        row = {"prompt": prompt}
        for name in POLICIES:
            r = results[name]
            row.update(
                {
                    f"{name}_response": r.responses[i],
                    f"{name}_annotator": r.annotator_scores[i],
                    f"{name}_second_judge": r.second_judge_scores[i],
                    f"{name}_rm": r.rm_scores[i],
                    f"{name}_kl": r.kl[i],
                }
            )
        rows.append(row)
    return rows


def run_evaluate(cfg: PipelineConfig) -> str:
    """Evaluate the three policies; write ``evaluate/metrics.json``, ``samples.csv``, ``samples.md``."""
    timer, run, ev = StageTimer("evaluate"), cfg.run, cfg.evaluate
    sft_dir = abs_path(require(run.run_dir, "sft", "evaluate") / "model")
    rm_dir = abs_path(require(run.run_dir, "reward-model", "evaluate") / "model")
    rl_dir = abs_path(require(run.run_dir, "rl", "evaluate") / "policy")
    out = stage_dir(run.run_dir, "evaluate")
    seed_everything(run.seed)
    device = resolve_device(run.device)
    env = make_text_env(cfg, sft_dir, ev.prompts, split="test", max_prompts=ev.max_prompts)
    if len(env.prompts) < 2:  # before any sampling: the intervals resample prompts
        raise ValueError(f"evaluate.prompts {ev.prompts!r} has {len(env.prompts)} test prompt; give a source with >= 2")
    # Each prompt `samples_per_prompt` times in a row: one seeded sampling pass gives each copy its own
    # response, and win rates compare the policies' i-th responses to the same prompt.
    prompts = [p for p in env.prompts for _ in range(ev.samples_per_prompt)]
    prompt_ids = encode_prompts(env, prompts)
    results = _evaluate_policies(
        cfg, {"base": run.model, "sft": sft_dir, "rl": rl_dir}, rm_dir, device, prompts, prompt_ids
    )
    wins = _win_rates(results)
    metrics = {
        "n_prompts": len(env.prompts),
        "samples_per_prompt": ev.samples_per_prompt,
        "annotator": run.annotator,
        "second_judge": ev.second_judge,
        "temperature": run.temperature,
        "reference": "sft",
        "policies": {k: r.metrics for k, r in results.items()},
        "win_rate": wins,
        "win_rate_second_judge": _win_rates(results, "second_judge"),
        "intervals": intervals(results, ev.samples_per_prompt, ev.n_resamples, run.seed),
    }
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_json(out / "per_prompt.json", {k: r.to_dict() for k, r in results.items()})
    rows = _sample_rows(prompts, results)
    atomic_write_csv(out / "samples.csv", rows)
    atomic_write_text(out / "samples.md", samples_markdown(rows))
    s, r = results["sft"].metrics, results["rl"].metrics
    ci = metrics["intervals"]["win_rate/annotator/rl_vs_sft"]
    summary = timer.summary(
        f"{len(env.prompts)} test prompts x {ev.samples_per_prompt}, annotator {fmt(s['annotator_score'], 2)} (SFT) -> "
        f"{fmt(r['annotator_score'], 2)} (RL), second judge {fmt(s['second_judge_score'], 2)} -> "
        f"{fmt(r['second_judge_score'], 2)}, RM {fmt(s['rm_score'], 2)} -> {fmt(r['rm_score'], 2)}, "
        f"win rate vs SFT {fmt(wins['rl_vs_sft'], 2)} [{fmt(ci['low'], 2)}, {fmt(ci['high'], 2)}], "
        f"vs base {fmt(wins['rl_vs_base'], 2)}, KL {fmt(r['kl'], 2)} nats"
    )
    for result in results.values():
        for name, seconds in result.seconds.items():
            timer.add(name, seconds)
    mark_done(run.run_dir, "evaluate", summary, timer.seconds, phases=timer.phase_seconds())
    return summary
