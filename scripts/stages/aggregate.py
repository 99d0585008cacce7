"""One report over several seeds of the whole pipeline: ``aggregate.md`` and ``aggregate.json``.

``python -m scripts.pipeline --seeds 0 1 2 --run-dir runs/seeds`` runs the pipeline once per seed, each in
its own complete run folder ``runs/seeds/seed-N``, then :func:`write_aggregate` reads their ``evaluate`` and
``reward-model`` metrics and writes, for every headline number, one row per seed (with that seed's bootstrap
interval over prompts where it has one) and the mean over seeds with its Student t 95% interval
(:func:`textrlhf.stats.t_interval`: with 3 seeds a bootstrap over seeds would be too narrow). Like the
single-run report, it reads files only, so it can be redrawn at any time and works on partial sweeps.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from scripts.run_dir import STAGES, atomic_write_json, atomic_write_text, read_marker, stage_dir

HEADLINES: dict[str, tuple[str, Callable[[dict], float | None], str | None]] = {
    "win_rate_rl_vs_sft": (
        "annotator win rate, RL vs SFT",
        lambda m: m["ev"]["win_rate"]["rl_vs_sft"],
        "win_rate/annotator/rl_vs_sft",
    ),
    "win_rate_rl_vs_base": (
        "annotator win rate, RL vs base",
        lambda m: m["ev"]["win_rate"]["rl_vs_base"],
        "win_rate/annotator/rl_vs_base",
    ),
    "second_judge_win_rate_rl_vs_sft": (
        "second-judge win rate, RL vs SFT",
        lambda m: m["ev"]["win_rate_second_judge"]["rl_vs_sft"],
        "win_rate/second_judge/rl_vs_sft",
    ),
    "annotator_gain": (
        "annotator score, RL - SFT",
        lambda m: _gain(m, "annotator_score"),
        "gain/annotator/rl_minus_sft",
    ),
    "second_judge_gain": (
        "second-judge score, RL - SFT",
        lambda m: _gain(m, "second_judge_score"),
        "gain/second_judge/rl_minus_sft",
    ),
    "rm_gain": ("reward-model score, RL - SFT", lambda m: _gain(m, "rm_score"), "gain/rm/rl_minus_sft"),
    "kl_rl": ("KL of RL to SFT (nats)", lambda m: m["ev"]["policies"]["rl"]["kl"], "kl/rl"),
    "rm_accuracy": ("reward model held-out accuracy", lambda m: m["rm"]["after"]["accuracy"], None),
    "minutes": ("pipeline minutes (sum of the stages)", lambda m: m["seconds"] / 60.0, None),
}
"""``key -> (label, value from a seed's metrics, key of its interval in evaluate/metrics.json or None)``."""


def _gain(m: dict, key: str) -> float:
    pols = m["ev"]["policies"]
    return pols["rl"][key] - pols["sft"][key]


def seed_dir(run_dir: str | Path, seed: int) -> Path:
    """The run folder of one seed of a ``--seeds`` sweep."""
    return Path(run_dir) / f"seed-{seed}"


def read_seed(folder: Path) -> dict | None:
    """A finished seed's metrics (``ev``, ``rm``, ``seconds``), or ``None`` before its evaluation is done."""
    ev_path = stage_dir(folder, "evaluate") / "metrics.json"
    rm_path = stage_dir(folder, "reward-model") / "metrics.json"
    if not (ev_path.is_file() and rm_path.is_file() and "intervals" in json.loads(ev_path.read_text())):
        return None
    seconds = sum(float(read_marker(folder, s).get("seconds") or 0.0) for s in STAGES)
    return {"ev": json.loads(ev_path.read_text()), "rm": json.loads(rm_path.read_text()), "seconds": seconds}


def aggregate(per_seed: dict[int, dict]) -> dict:
    """``{key: {"label", "per_seed": {seed: {"value", "low", "high"}}, "mean": Interval dict or None}}``."""
    from textrlhf.stats import t_interval

    out = {}
    for key, (label, value, ci_key) in HEADLINES.items():
        rows = {}
        for seed, m in per_seed.items():
            ci = m["ev"]["intervals"].get(ci_key) if ci_key else None
            rows[seed] = {"value": value(m), "low": ci["low"] if ci else None, "high": ci["high"] if ci else None}
        values = [r["value"] for r in rows.values()]
        out[key] = {"label": label, "per_seed": rows, "mean": t_interval(values).to_dict() if len(values) > 1 else None}
    return out


def _num(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def aggregate_markdown(result: dict, seeds: Sequence[int], missing: Sequence[int], run_dir: Path) -> str:
    """The aggregate page: one row per headline number, one column per seed, the mean with its interval."""
    md = [
        f"# RLHF runs over seeds: `{run_dir.name}`",
        "",
        f"Seeds {', '.join(map(str, seeds))}; each seed's full report is `seed-N/report.md`."
        + (f" **Not finished: seeds {', '.join(map(str, missing))}** (rerun with --resume)." if missing else ""),
        "Per seed: the value and, where there is one, its 95% bootstrap interval over the held-out prompts. "
        "Mean: over seeds, with its Student t 95% interval.",
        "",
        "| number | " + " | ".join(f"seed {s}" for s in result["seeds"]) + " | mean [95% interval] |",
        "|---|" + "---|" * (len(result["seeds"]) + 1),
    ]
    for row in result["numbers"].values():
        cells = []
        for seed in result["seeds"]:
            r = row["per_seed"][seed]
            band = f" [{_num(r['low'], 2)}, {_num(r['high'], 2)}]" if r["low"] is not None else ""
            cells.append(_num(r["value"]) + band)
        mean = row["mean"]
        cells.append(f"**{_num(mean['estimate'])}** [{_num(mean['low'])}, {_num(mean['high'])}]" if mean else "-")
        md.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    return "\n".join(md) + "\n"


def write_aggregate(run_dir: str | Path, seeds: Sequence[int]) -> Path:
    """Write ``aggregate.json`` and ``aggregate.md`` over the finished seeds; returns the markdown's path."""
    run_dir = Path(run_dir)
    per_seed = {s: m for s in seeds if (m := read_seed(seed_dir(run_dir, s))) is not None}
    missing = [s for s in seeds if s not in per_seed]
    result = {"seeds": sorted(per_seed), "missing": missing, "numbers": aggregate(per_seed) if per_seed else {}}
    atomic_write_json(run_dir / "aggregate.json", result)
    path = run_dir / "aggregate.md"
    atomic_write_text(path, aggregate_markdown(result, seeds, missing, run_dir))
    return path
