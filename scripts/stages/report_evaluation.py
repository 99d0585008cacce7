"""The held-out evaluation section of ``report.md``: base / SFT / RL metrics, win rates, and every win rate
and score difference with its 95% interval (``evaluate/metrics.json``; docs/pipeline.md, "Metrics")."""

from __future__ import annotations

import json
from pathlib import Path

from scripts.run_dir import stage_dir
from scripts.stages.common import fmt

METRIC_NAMES = {
    "rm_score": "RM score",
    "annotator_score": "annotator score",
    "second_judge_score": "second judge score",
    "kl": "KL to SFT (nats)",
    "distinct_1": "distinct-1",
    "distinct_2": "distinct-2",
    "ref_perplexity": "perplexity under SFT",
    "response_len": "response length (tokens)",
}
"""Row labels of the held-out metrics table, in order."""


def evaluation_md(run_dir: Path) -> list[str]:
    """The held-out metrics table of base, SFT and RL, the annotator win rates, and the 95% intervals of the
    win rates and score differences by each judge."""
    ev_path = stage_dir(run_dir, "evaluate") / "metrics.json"
    md = ["", "## Held-out evaluation", ""]
    if not ev_path.is_file():
        return md + ["Not evaluated yet."]
    ev = json.loads(ev_path.read_text())
    pols = ev["policies"]
    md += [
        f"{ev['n_prompts']} test prompts, {ev.get('samples_per_prompt', 1)} sample(s) each, "
        "same seed for every policy. KL and perplexity are measured against the SFT model (the RL reference).",
        "",
        "| metric | base | SFT (RL start) | RL |",
        "|---|---|---|---|",
    ]
    for key, label in METRIC_NAMES.items():
        md.append(f"| {label} | " + " | ".join(fmt(pols[p].get(key)) for p in ("base", "sft", "rl")) + " |")
    w = ev["win_rate"]
    return md + [
        "",
        f"**Annotator win rate** (ties count 1/2): RL vs SFT **{fmt(w['rl_vs_sft'], 2)}**, "
        f"RL vs base {fmt(w['rl_vs_base'], 2)}, SFT vs base {fmt(w['sft_vs_base'], 2)}.",
        "",
        *_intervals_md(ev),
    ]


JUDGE_NAMES = {"annotator": "annotator", "second_judge": "second judge", "rm": "reward model"}
"""How report.md names the judges of ``evaluate/metrics.json``'s ``intervals``."""


def interval_text(ci: dict | None, digits: int = 3) -> str:
    """``estimate [low, high]`` of an interval dict (``textrlhf.stats.Interval.to_dict``), ``-`` if missing."""
    if not ci:
        return "-"
    return f"{fmt(ci['estimate'], digits)} [{fmt(ci['low'], digits)}, {fmt(ci['high'], digits)}]"


def _intervals_md(ev: dict) -> list[str]:
    """Win rates and score differences with their 95% intervals (bootstrap over prompts), by every judge."""
    ci = ev.get("intervals")
    if not ci:  # a run evaluated before intervals existed
        return []
    judges = [j for j in JUDGE_NAMES if f"gain/{j}/rl_minus_sft" in ci]
    second = f" (`{ev['second_judge']}`)" if ev.get("second_judge") else ""
    md = [
        f"With 95% intervals (bootstrap over the {ev['n_prompts']} prompts); a difference "
        f"whose interval excludes 0 is marked *. The annotator is `{ev['annotator']}`, the second judge{second} "
        "is seen by no stage.",
        "",
        "| judge | win rate RL vs SFT | win rate RL vs base | score RL - SFT | score RL - base | score SFT - base |",
        "|---|---|---|---|---|---|",
    ]
    for judge in judges:
        cells = [interval_text(ci.get(f"win_rate/{judge}/{p}"), 2) for p in ("rl_vs_sft", "rl_vs_base")]
        for pair in ("rl_minus_sft", "rl_minus_base", "sft_minus_base"):
            c = ci[f"gain/{judge}/{pair}"]
            cells.append(interval_text(c) + (" *" if not c["low"] <= 0 <= c["high"] else ""))
        md.append(f"| {JUDGE_NAMES[judge]} | " + " | ".join(cells) + " |")
    return md + ["", f"KL of RL to SFT: {interval_text(ci['kl/rl'], 2)} nats.", ""]
