"""Plots (matplotlib, Agg backend, PNG) and ``report.md``: a run's numbers, plots and samples on one page.

Built from the artifacts in the run directory only, so it can be regenerated at any time
(``python -m scripts.pipeline --run-dir runs/x --stages report``) and works on partial runs
(sections of unfinished stages say so).

Each plot is a function from data to a ``matplotlib`` ``Figure`` (:func:`rl_figure`, :func:`scores_figure`...),
wrapped by a ``plot_*`` function that reads the run folder and writes the PNG, so the figures can be checked
without files. RL curves show the raw values faintly under an exponential moving average
(:func:`smooth_ema`); iteration and step axes have whole-number ticks.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display (servers, CI, tests)
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from scripts.run_dir import (
    STAGES,
    atomic_write_bytes,
    atomic_write_text,
    read_csv,
    read_marker,
    stage_dir,
)
from scripts.stages.common import accuracy_band, fmt
from scripts.stages.config import PipelineConfig
from scripts.stages.report_evaluation import evaluation_md

RL_CURVES = (
    ("rlhf/score", "RM score (normalised)"),
    ("rlhf/kl", "KL to SFT (nats / episode)"),
    ("rlhf/beta", "KL coefficient beta"),
    ("rlhf/response_len", "response length (tokens)"),
)
EMA_WEIGHT = 0.6
"""Smoothing of RL curves (:func:`smooth_ema`): weight of the running value, about the last 4 points count."""
SMOOTHING_NOTE = f"faint: raw; solid: EMA-smoothed (weight {EMA_WEIGHT})"
"""Says on each RL plot which line is which."""


# ----------------------------------------------------------------------------- plot helpers
def smooth_ema(values: Sequence[float], weight: float = EMA_WEIGHT) -> list[float]:
    """Exponential moving average of a training curve, debiased as in TensorBoard's smoothing slider.

    ``s_t = weight * s_(t-1) + (1 - weight) * x_t`` from ``s_0 = 0``, divided by ``1 - weight**t`` so that
    the first points are not pulled towards 0. Causal: a point depends on earlier ones only, so a
    trend shows with a lag of about ``weight / (1 - weight)`` points (1.5 at 0.6). A non-finite value
    is skipped (its smoothed value repeats the previous one; NaN before the first finite value).

    Raises:
        ValueError: ``weight`` outside ``[0, 1)`` (0 returns the values unchanged).
    """
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"EMA weight must be in [0, 1), got {weight!r}; 0 disables smoothing")
    out, acc, n = [], 0.0, 0
    for value in values:
        if math.isfinite(value):
            acc, n = weight * acc + (1.0 - weight) * value, n + 1
        out.append(acc / (1.0 - weight**n) if n else math.nan)
    return out


def plot_raw_and_smoothed(
    ax,
    xs: Sequence[float],
    ys: Sequence[float],
    label: str | None = None,
    color: str | None = None,
    weight: float = EMA_WEIGHT,
) -> tuple:
    """Draw a training curve as a faint raw line and, on top, its :func:`smooth_ema` in the same colour.

    Only the smoothed line carries ``label`` (one legend entry per curve); say which is which with
    :data:`SMOOTHING_NOTE`. Returns ``(raw line, smoothed line)``.
    """
    (raw,) = ax.plot(xs, ys, color=color, lw=0.8, alpha=0.35, marker="o", ms=2, label="_nolegend_")
    (smooth,) = ax.plot(
        xs, smooth_ema(ys, weight), color=raw.get_color(), lw=2, label=label if label is not None else "_nolegend_"
    )
    return raw, smooth


def integer_ticks(ax) -> None:
    """Whole-number ticks on the x axis (iterations, steps): no "iteration 2.5"."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _figure(nrows: int, ncols: int, figsize: tuple[float, float]):
    # A bare Figure (not pyplot): nothing to close, no global state shared between threads or tests.
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _save(fig: Figure, path: Path) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path.name


def _column(rows, key):
    pts = [(float(r["iteration"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
    return [p[0] for p in pts], [p[1] for p in pts]


# ----------------------------------------------------------------------------- figures (data in, Figure out)
def rl_figure(rows: Sequence[dict]) -> Figure:
    """Score, KL, beta and response length per iteration (``rl/progress.csv`` rows), raw and smoothed."""
    fig, axes = _figure(2, 2, (10, 6.5))
    for ax, (key, label) in zip(axes.flat, RL_CURVES):
        plot_raw_and_smoothed(ax, *_column(rows, key))
        ax.set_title(label)
        ax.set_xlabel("iteration (rollout)")
        integer_ticks(ax)
        ax.grid(alpha=0.3)
    fig.suptitle(f"RL training ({SMOOTHING_NOTE})")
    fig.tight_layout()
    return fig


def reward_model_figure(rows: Sequence[dict], metrics: dict) -> Figure:
    """Bradley-Terry loss and accuracy against the training step (``train_log.csv`` rows, ``metrics.json``)."""
    fig, ((ax1, ax2),) = _figure(1, 2, (10, 3.8))
    tr = [(float(r["step"]), float(r["loss"])) for r in rows if r.get("loss")]
    ev = [(float(r["step"]), float(r["eval_loss"]), float(r["eval_accuracy"])) for r in rows if r.get("eval_loss")]
    if tr:
        ax1.plot(*zip(*tr), label="train loss")
    if ev:
        ax1.plot([e[0] for e in ev], [e[1] for e in ev], marker="o", label="held-out loss")
    ax1.axhline(0.6931, color="gray", ls=":", label="ln 2 (chance)")
    ax1.set_title("Bradley-Terry loss")
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
    for ax in (ax1, ax2):
        ax.set_xlabel("step")
        integer_ticks(ax)
        ax.grid(alpha=0.3)
    return fig


def scores_figure(data: dict) -> Figure:
    """Histograms of the held-out annotator scores of base, SFT and RL (``per_prompt.json``): one count per
    sampled response (``samples_per_prompt`` of them per prompt), on shared bins."""
    import numpy as np

    fig, ((ax,),) = _figure(1, 1, (6.5, 3.8))
    every = np.concatenate([data[k]["annotator_scores"] for k in data])
    bins = np.histogram_bin_edges(every, bins=20)  # shared bins: the three histograms line up
    for name, label in (("base", "base"), ("sft", "SFT (before RL)"), ("rl", "RL (after)")):
        if name in data:
            ax.hist(data[name]["annotator_scores"], bins=bins, alpha=0.45, label=label)
    ax.set_title("held-out annotator scores")
    ax.set_xlabel("annotator score")
    ax.set_ylabel("responses")  # each score is one sampled response, not one prompt
    ax.legend()
    return fig


def sft_figure(rows: Sequence[dict]) -> Figure:
    """SFT loss on response tokens against the training step (``sft/train_log.csv`` rows)."""
    fig, ((ax,),) = _figure(1, 1, (5, 3.2))
    ax.plot([float(r["step"]) for r in rows], [float(r["loss"]) for r in rows], marker="o", ms=3)
    ax.set_title("SFT loss (response tokens)")
    ax.set_xlabel("step")
    integer_ticks(ax)
    ax.grid(alpha=0.3)
    return fig


# ----------------------------------------------------------------------------- run folder -> PNG
def plot_rl(run_dir: Path, plots: Path) -> str | None:
    """``plots/rl_training.png`` from ``rl/progress.csv``; its file name, or ``None`` without data."""
    rows = read_csv(stage_dir(run_dir, "rl") / "progress.csv")
    return _save(rl_figure(rows), plots / "rl_training.png") if rows else None


def plot_reward_model(run_dir: Path, plots: Path) -> str | None:
    """``plots/reward_model.png`` from the reward-model stage; its file name, or ``None`` without data."""
    rm = stage_dir(run_dir, "reward-model")
    if not (rm / "metrics.json").is_file():
        return None
    fig = reward_model_figure(read_csv(rm / "train_log.csv"), json.loads((rm / "metrics.json").read_text()))
    return _save(fig, plots / "reward_model.png")


def plot_scores(run_dir: Path, plots: Path) -> str | None:
    """``plots/annotator_scores.png`` from ``evaluate/per_prompt.json``; its file name, or ``None``."""
    path = stage_dir(run_dir, "evaluate") / "per_prompt.json"
    if not path.is_file():
        return None
    return _save(scores_figure(json.loads(path.read_text())), plots / "annotator_scores.png")


def plot_sft(run_dir: Path, plots: Path) -> str | None:
    """``plots/sft_loss.png`` from ``sft/train_log.csv``; its file name, or ``None`` without data."""
    rows = read_csv(stage_dir(run_dir, "sft") / "train_log.csv")
    return _save(sft_figure(rows), plots / "sft_loss.png") if rows else None


PLOT_CAPTIONS = {
    "rl": "RL training: score, KL, beta, response length per iteration (raw and EMA-smoothed)",
    "rm": "Reward model: Bradley-Terry loss and accuracy",
    "scores": "Held-out annotator scores (one count per sampled response)",
    "sft": "SFT loss",
}
"""Caption of each plot in ``report.md``, keyed like :func:`write_report`'s plots."""
METRICS_GLOSSARY = [
    "## Metrics",
    "",
    "- **RM score**: the trained reward model's score, normalised to mean 0 / std 1 on SFT samples "
    "(what RL maximised).",
    "- **annotator score**: the simulated annotator's score (never seen by RL; the honest measure).",
    "- **second judge score**: another sentiment lexicon's score, seen by no stage (not even the preference "
    "labels): a gain under the annotator that this judge does not confirm is an artefact of the annotator.",
    "- **[low, high]**: 95% bootstrap interval, resampling held-out prompts; * marks a difference that excludes 0.",
    "- **win rate**: share of prompts where the first policy's response beats the second's by the annotator "
    "(in the intervals table, by the row's judge).",
    "- **KL**: summed log pi - log pi_SFT over the response at the sampling temperature (k1), nats per response.",
    "- **distinct-1/2**: unique word uni/bigrams over all responses / their count (diversity).",
    "- **perplexity under SFT**: exp of the mean per-token negative log-likelihood under the SFT model at T=1.",
    "",
]
"""The last section of ``report.md``: what each metric means."""


# ----------------------------------------------------------------------------- report.md, one section each
def _header_md(cfg: PipelineConfig, run_dir: Path) -> list[str]:
    """Title, the run's main settings, and the stages table (each stage's summary and wall time)."""
    r = cfg.run
    md = [
        f"# RLHF run `{run_dir.name}`",
        "",
        f"Base model `{r.model}`, algorithm `{r.algo}`, annotator `{r.annotator}`, reward model backbone "
        f"`{cfg.reward_model.backbone}`, seed {r.seed}, {r.max_new_tokens} new tokens at temperature "
        f"{r.temperature}. Full config: [config.yaml](config.yaml).",
        "",
        "## Stages",
        "",
        "| stage | summary | seconds | where the time went (s) |",
        "|---|---|---|---|",
    ]
    for stage in STAGES:
        m = read_marker(run_dir, stage)
        text = re.sub(r", \d+ s$", "", m.get("summary", "not finished").removeprefix(f"[{stage}] "))
        text = text.replace("|", "/")
        md.append(f"| {stage} | {text} | {fmt(m.get('seconds'), 0)} | {phases_text(m.get('phases'))} |")
    return md


def phases_text(phases: dict[str, float] | None) -> str:
    """A stage's phases (``StageTimer.phase_seconds``) as ``name seconds`` pairs, largest first."""
    if not phases:
        return "-"
    return ", ".join(f"{name} {seconds:.0f}" for name, seconds in sorted(phases.items(), key=lambda kv: -kv[1]))


def _reward_model_md(run_dir: Path) -> list[str]:
    """Pair counts, accuracy before and after training, normalisation; nothing before the stage ran."""
    rm_path = stage_dir(run_dir, "reward-model") / "metrics.json"
    if not rm_path.is_file():
        return []
    rm = json.loads(rm_path.read_text())
    band = accuracy_band(rm["after"])
    return [
        "## Reward model",
        "",
        f"{rm['train_pairs']} training pairs, {rm['heldout_pairs']} held-out; "
        f"{rm['accuracy_set']} accuracy {fmt(rm['before']['accuracy'], 3)} before, "
        f"**{fmt(rm['after']['accuracy'], 3)}**{band} after training"
        f"{' (95% interval, resampling prompts)' if band else ''}; normalisation gain {fmt(rm['gain'], 4)}, "
        f"bias {fmt(rm['bias'], 4)}.",
        "",
    ]


def _plots_md(pngs: dict[str, str | None]) -> list[str]:
    """One image link per drawn plot, captioned from :data:`PLOT_CAPTIONS`."""
    md = ["## Plots", ""]
    for key, png in pngs.items():
        if png:
            md += [f"![{PLOT_CAPTIONS[key]}](plots/{png})", ""]
    return md


def _samples_md(cfg: PipelineConfig, run_dir: Path) -> list[str]:
    """The first ``evaluate.samples_in_report`` rows of ``evaluate/samples.csv``; nothing without it."""
    samples = stage_dir(run_dir, "evaluate") / "samples.csv"
    if not samples.is_file():
        return []
    from scripts.stages.evaluate import samples_markdown

    rows = read_csv(samples)
    return [
        "## Samples (held-out prompts)",
        "",
        f"First {min(len(rows), cfg.evaluate.samples_in_report)} of "
        f"{len(rows)}; all in [evaluate/samples.csv](evaluate/samples.csv).",
        "",
        samples_markdown(rows, cfg.evaluate.samples_in_report),
    ]


def write_report(cfg: PipelineConfig) -> Path:
    """Draw every plot whose data exists and write ``report.md``; returns its path."""
    run_dir = Path(cfg.run.run_dir)
    plots = run_dir / "plots"
    pngs = {
        name: fn(run_dir, plots)
        for name, fn in (("rl", plot_rl), ("rm", plot_reward_model), ("scores", plot_scores), ("sft", plot_sft))
    }
    md = (
        _header_md(cfg, run_dir)
        + evaluation_md(run_dir)
        + _reward_model_md(run_dir)
        + _plots_md(pngs)
        + _samples_md(cfg, run_dir)
        + METRICS_GLOSSARY
    )
    path = run_dir / "report.md"
    atomic_write_text(path, "\n".join(md) + "\n")
    return path
