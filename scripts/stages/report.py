"""Plots (matplotlib, Agg backend, PNG) and ``report.md``: a run's numbers, plots and samples on one page.

Built from the artifacts in the run directory only, so it can be regenerated at any time
(``python -m scripts.pipeline --run-dir runs/x --stages report``) and works on partial runs
(sections of unfinished stages say so).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display (servers, CI, tests)
import matplotlib.pyplot as plt  # noqa: E402

from scripts.run_dir import (  # noqa: E402
    STAGES,
    atomic_write_bytes,
    atomic_write_text,
    read_csv,
    read_marker,
    stage_dir,
)
from scripts.stages.common import fmt  # noqa: E402
from scripts.stages.config import PipelineConfig  # noqa: E402

RL_CURVES = (("rlhf/score", "RM score (normalised)"), ("rlhf/kl", "KL to SFT (nats / episode)"),
             ("rlhf/beta", "KL coefficient beta"), ("rlhf/response_len", "response length (tokens)"))
METRIC_NAMES = {
    "rm_score": "RM score", "annotator_score": "annotator score", "kl": "KL to SFT (nats)",
    "distinct_1": "distinct-1", "distinct_2": "distinct-2", "ref_perplexity": "perplexity under SFT",
    "response_len": "response length (tokens)",
}


def _save(fig, path: Path) -> str:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path.name


def _column(rows, key):
    pts = [(float(r["iteration"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_rl(run_dir: Path, plots: Path) -> str | None:
    rows = read_csv(stage_dir(run_dir, "rl") / "progress.csv")
    if not rows:
        return None
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5))
    for ax, (key, label) in zip(axes.flat, RL_CURVES):
        xs, ys = _column(rows, key)
        ax.plot(xs, ys, marker="o", ms=3)
        ax.set_title(label)
        ax.set_xlabel("iteration (rollout)")
        ax.grid(alpha=0.3)
    fig.suptitle("RL training")
    fig.tight_layout()
    return _save(fig, plots / "rl_training.png")


def plot_reward_model(run_dir: Path, plots: Path) -> str | None:
    rm = stage_dir(run_dir, "reward-model")
    rows = read_csv(rm / "train_log.csv")
    if not (rm / "metrics.json").is_file():
        return None
    metrics = json.loads((rm / "metrics.json").read_text())
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    tr = [(float(r["step"]), float(r["loss"])) for r in rows if r.get("loss")]
    ev = [(float(r["step"]), float(r["eval_loss"]), float(r["eval_accuracy"])) for r in rows if r.get("eval_loss")]
    if tr:
        ax1.plot(*zip(*tr), label="train loss")
    if ev:
        ax1.plot([e[0] for e in ev], [e[1] for e in ev], marker="o", label="held-out loss")
    ax1.axhline(0.6931, color="gray", ls=":", label="ln 2 (chance)")
    ax1.set_title("Bradley-Terry loss")
    ax1.set_xlabel("step")
    ax1.legend()
    steps = [0.0] + [e[0] for e in ev]
    accs = [metrics["before"]["accuracy"]] + [e[2] for e in ev]
    if not ev:
        steps = [0.0, float(metrics["train"].get("steps", 1))]
        accs = [metrics["before"]["accuracy"], metrics["after"]["accuracy"]]
    ax2.plot(steps, accs, marker="o")
    ax2.axhline(0.5, color="gray", ls=":")
    ax2.set_ylim(0, 1)
    ax2.set_title(f"{metrics.get('accuracy_set', 'held-out')} accuracy")
    ax2.set_xlabel("step")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    return _save(fig, plots / "reward_model.png")


def plot_scores(run_dir: Path, plots: Path) -> str | None:
    path = stage_dir(run_dir, "evaluate") / "per_prompt.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    every = np.concatenate([data[k]["annotator_scores"] for k in data])
    bins = np.histogram_bin_edges(every, bins=20)  # shared bins: the three histograms line up
    for name, label in (("base", "base"), ("sft", "SFT (before RL)"), ("rl", "RL (after)")):
        if name in data:
            ax.hist(data[name]["annotator_scores"], bins=bins, alpha=0.45, label=label)
    ax.set_title("held-out annotator scores")
    ax.set_xlabel("annotator score")
    ax.set_ylabel("prompts")
    ax.legend()
    return _save(fig, plots / "annotator_scores.png")


def plot_sft(run_dir: Path, plots: Path) -> str | None:
    rows = read_csv(stage_dir(run_dir, "sft") / "train_log.csv")
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([float(r["step"]) for r in rows], [float(r["loss"]) for r in rows], marker="o", ms=3)
    ax.set_title("SFT loss (response tokens)")
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    return _save(fig, plots / "sft_loss.png")


def write_report(cfg: PipelineConfig) -> Path:
    """Draw every plot whose data exists and write ``report.md``; returns its path."""
    run_dir = Path(cfg.run.run_dir)
    plots = run_dir / "plots"
    pngs = {name: fn(run_dir, plots) for name, fn in
            (("rl", plot_rl), ("rm", plot_reward_model), ("scores", plot_scores), ("sft", plot_sft))}
    r = cfg.run
    md = [f"# RLHF run `{run_dir.name}`", "",
          f"Base model `{r.model}`, algorithm `{r.algo}`, annotator `{r.annotator}`, reward model backbone "
          f"`{cfg.reward_model.backbone}`, seed {r.seed}, {r.max_new_tokens} new tokens at temperature "
          f"{r.temperature}. Full config: [config.yaml](config.yaml).", "",
          "## Stages", "", "| stage | summary | seconds |", "|---|---|---|"]
    for stage in STAGES:
        m = read_marker(run_dir, stage)
        text = re.sub(r", \d+ s$", "", m.get("summary", "not finished").removeprefix(f"[{stage}] "))
        text = text.replace("|", "/")
        md.append(f"| {stage} | {text} | {fmt(m.get('seconds'), 0)} |")
    ev_path = stage_dir(run_dir, "evaluate") / "metrics.json"
    md += ["", "## Held-out evaluation", ""]
    if ev_path.is_file():
        ev = json.loads(ev_path.read_text())
        pols = ev["policies"]
        md += [f"{ev['n_prompts']} test prompts, {ev.get('samples_per_prompt', 1)} sample(s) each, same seed for every policy. KL and perplexity are "
               f"measured against the SFT model (the RL reference).", "",
               "| metric | base | SFT (RL start) | RL |", "|---|---|---|---|"]
        for key, label in METRIC_NAMES.items():
            md.append(f"| {label} | " + " | ".join(fmt(pols[p].get(key)) for p in ("base", "sft", "rl")) + " |")
        w = ev["win_rate"]
        md += ["", f"**Annotator win rate** (ties count 1/2): RL vs SFT **{fmt(w['rl_vs_sft'], 2)}**, "
               f"RL vs base {fmt(w['rl_vs_base'], 2)}, SFT vs base {fmt(w['sft_vs_base'], 2)}.", ""]
    else:
        md.append("Not evaluated yet.")
    rm_path = stage_dir(run_dir, "reward-model") / "metrics.json"
    if rm_path.is_file():
        rm = json.loads(rm_path.read_text())
        md += ["## Reward model", "", f"{rm['train_pairs']} training pairs, {rm['heldout_pairs']} held-out; "
               f"{rm['accuracy_set']} accuracy {fmt(rm['before']['accuracy'], 3)} before, "
               f"**{fmt(rm['after']['accuracy'], 3)}** after training; normalisation gain {fmt(rm['gain'], 4)}, "
               f"bias {fmt(rm['bias'], 4)}.", ""]
    md += ["## Plots", ""]
    captions = {"rl": "RL training: score, KL, beta, response length per iteration",
                "rm": "Reward model: Bradley-Terry loss and accuracy", "scores": "Held-out annotator scores",
                "sft": "SFT loss"}
    for key, png in pngs.items():
        if png:
            md += [f"![{captions[key]}](plots/{png})", ""]
    samples = stage_dir(run_dir, "evaluate") / "samples.csv"
    if samples.is_file():
        from scripts.stages.evaluate import samples_markdown

        rows = read_csv(samples)
        md += ["## Samples (held-out prompts)", "", f"First {min(len(rows), cfg.evaluate.samples_in_report)} of "
               f"{len(rows)}; all in [evaluate/samples.csv](evaluate/samples.csv).", "",
               samples_markdown(rows, cfg.evaluate.samples_in_report)]
    md += ["## Metrics", "",
           "- **RM score**: the trained reward model's score, normalised to mean 0 / std 1 on SFT samples "
           "(what RL maximised).",
           "- **annotator score**: the simulated annotator's score (never seen by RL; the honest measure).",
           "- **win rate**: share of prompts where the first policy's response beats the second's by the annotator.",
           "- **KL**: summed log pi - log pi_SFT over the response at the sampling temperature (k1), "
           "nats per response.",
           "- **distinct-1/2**: unique word uni/bigrams over all responses / their count (diversity).",
           "- **perplexity under SFT**: exp of the mean per-token negative log-likelihood under the SFT model "
           "at T=1.", ""]
    path = run_dir / "report.md"
    atomic_write_text(path, "\n".join(md) + "\n")
    return path
