"""Several seeds of the whole pipeline (``--seeds``) and their one report: ``aggregate.md`` and ``aggregate.json``.

``python -m scripts.pipeline --seeds 0 1 2 --run-dir runs/seeds`` runs the pipeline once per seed, each in
its own complete run folder ``runs/seeds/seed-N``, then :func:`write_aggregate` reads their ``evaluate`` and
``reward-model`` metrics and writes, for every headline number, one row per seed (with that seed's bootstrap
interval over prompts where it has one) and the mean over seeds with its Student t 95% interval
(:func:`textrlhf.stats.t_interval`: with 3 seeds a bootstrap over seeds would be too narrow). Like the
single-run report, it reads files only, so it can be redrawn at any time and works on partial sweeps.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from scripts.run_dir import STAGES, RunDirError, atomic_write_json, atomic_write_text, is_done, read_marker, stage_dir

SWEEP_FILE = "sweep.json"
"""Written in the sweep's folder: its seeds and command, so the folder is never mistaken for one run."""


def _ev_interval(key: str) -> Callable[[dict], dict | None]:
    """A seed's bootstrap interval ``key`` of ``evaluate/metrics.json`` (``intervals``)."""
    return lambda m: m["ev"]["intervals"].get(key)


def _rm_interval(m: dict) -> dict | None:
    """A seed's reward-model accuracy interval (``reward-model/metrics.json``; absent before it existed)."""
    after = m["rm"]["after"]
    return {"low": after["accuracy_low"], "high": after["accuracy_high"]} if "accuracy_low" in after else None


HEADLINES: dict[str, tuple[str, Callable[[dict], float | None], Callable[[dict], dict | None] | None]] = {
    "win_rate_rl_vs_sft": (
        "annotator win rate, RL vs SFT",
        lambda m: m["ev"]["win_rate"]["rl_vs_sft"],
        _ev_interval("win_rate/annotator/rl_vs_sft"),
    ),
    "win_rate_rl_vs_base": (
        "annotator win rate, RL vs base",
        lambda m: m["ev"]["win_rate"]["rl_vs_base"],
        _ev_interval("win_rate/annotator/rl_vs_base"),
    ),
    "second_judge_win_rate_rl_vs_sft": (
        "second-judge win rate, RL vs SFT",
        lambda m: m["ev"]["win_rate_second_judge"]["rl_vs_sft"],
        _ev_interval("win_rate/second_judge/rl_vs_sft"),
    ),
    "annotator_gain": (
        "annotator score, RL - SFT",
        lambda m: _gain(m, "annotator_score"),
        _ev_interval("gain/annotator/rl_minus_sft"),
    ),
    "second_judge_gain": (
        "second-judge score, RL - SFT",
        lambda m: _gain(m, "second_judge_score"),
        _ev_interval("gain/second_judge/rl_minus_sft"),
    ),
    "rm_gain": ("reward-model score, RL - SFT", lambda m: _gain(m, "rm_score"), _ev_interval("gain/rm/rl_minus_sft")),
    "kl_rl": ("KL of RL to SFT (nats)", lambda m: m["ev"]["policies"]["rl"]["kl"], _ev_interval("kl/rl")),
    "rm_accuracy": ("reward model accuracy (its accuracy_set)", lambda m: m["rm"]["after"]["accuracy"], _rm_interval),
    "minutes": ("pipeline minutes (sum of the stages)", lambda m: m["seconds"] / 60.0, None),
}
"""``key -> (label, value from a seed's metrics, that seed's 95% interval ({"low", "high"}) or None)``."""


def _gain(m: dict, key: str) -> float:
    pols = m["ev"]["policies"]
    return pols["rl"][key] - pols["sft"][key]


def seed_dir(run_dir: str | Path, seed: int) -> Path:
    """The run folder of one seed of a ``--seeds`` sweep."""
    return Path(run_dir) / f"seed-{seed}"


def read_seed(folder: Path) -> tuple[dict | None, str]:
    """A finished seed's metrics (``ev``, ``rm``, ``seconds``, ``config``) and ``""``, or ``None`` and why not."""
    if not (is_done(folder, "evaluate") and is_done(folder, "reward-model")):
        return None, "not finished (rerun the same command with --resume)"
    ev = json.loads((stage_dir(folder, "evaluate") / "metrics.json").read_text())
    if "intervals" not in ev:
        return None, "evaluated before intervals existed (rerun with --stages evaluate)"
    rm = json.loads((stage_dir(folder, "reward-model") / "metrics.json").read_text())
    seconds = sum(float(read_marker(folder, s).get("seconds") or 0.0) for s in STAGES)
    config = (folder / "config.yaml").read_text() if (folder / "config.yaml").is_file() else ""
    return {"ev": ev, "rm": rm, "seconds": seconds, "config": config}, ""


def _settings(config_yaml: str) -> dict:
    """A seed's saved config without what legitimately differs between seeds."""
    import yaml

    layer = yaml.safe_load(config_yaml) or {}
    for key in ("seed", "run_dir", "stages", "resume", "seeds", "progress", "threads"):
        layer.get("run", {}).pop(key, None)
    return layer


def aggregate(per_seed: dict[int, dict]) -> dict:
    """``{key: {"label", "per_seed": {seed: {"value", "low", "high"}}, "mean": Interval dict or None}}``."""
    from textrlhf.stats import t_interval

    out = {}
    for key, (label, value, interval) in HEADLINES.items():
        rows = {}
        for seed, m in per_seed.items():
            ci = interval(m) if interval else None
            rows[seed] = {"value": value(m), "low": ci["low"] if ci else None, "high": ci["high"] if ci else None}
        values = [r["value"] for r in rows.values()]
        out[key] = {"label": label, "per_seed": rows, "mean": t_interval(values).to_dict() if len(values) > 1 else None}
    return out


def _num(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def aggregate_markdown(result: dict, run_dir: Path) -> str:
    """The aggregate page: one row per headline number, one column per seed, the mean with its interval."""
    md = [
        f"# RLHF runs over seeds: `{run_dir.name}`",
        "",
        f"Seeds {', '.join(map(str, result['seeds']))}; each seed's full report is `seed-N/report.md`.",
        *[f"**Seed {seed} is left out: {why}.**" for seed, why in result["missing"].items()],
        *(
            ["**Warning: the seeds were run with different settings** (their config.yaml differ beyond the seed)."]
            if result["mixed_settings"]
            else []
        ),
        "",
        "Per seed: the value and, where there is one, its 95% bootstrap interval over the held-out prompts "
        "(for the reward model, over the prompts of its held-out pairs). "
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
    per_seed, missing = {}, {}
    for seed in seeds:
        metrics, why = read_seed(seed_dir(run_dir, seed))
        if metrics is None:
            missing[seed] = why
        else:
            per_seed[seed] = metrics
    settings = [_settings(m["config"]) for m in per_seed.values()]
    result = {
        "seeds": sorted(per_seed),
        "missing": missing,
        "mixed_settings": any(s != settings[0] for s in settings),
        "numbers": aggregate(per_seed) if per_seed else {},
    }
    atomic_write_json(run_dir / "aggregate.json", result)
    path = run_dir / "aggregate.md"
    atomic_write_text(path, aggregate_markdown(result, run_dir))
    return path


def run_seeds(seeds: Sequence[int], run_dir: str, argv: list[str], run_one: Callable[[list[str]], int]) -> int:
    """``--seeds``: ``run_one(argv + seed flags)`` once per seed in ``RUN_DIR/seed-N``, then the aggregate.

    Each seed is an ordinary run folder (``--resume`` resumes each; a finished seed skips every stage): the
    later flags ``--seed N --run-dir RUN_DIR/seed-N --seeds`` (none) override the sweep's own.

    Returns:
        0, or the first failing seed's exit status; 2 when ``RUN_DIR`` is itself a run folder or under a
        multi-process launch (one line on stderr names the fix).
    """
    from agents.distributed import launched_world_size

    folder = Path(run_dir)
    if launched_world_size() > 1:
        print("textrlhf: error: --seeds under torchrun: launch once per seed with --seed N instead", file=sys.stderr)
        return 2
    if (folder / "config.yaml").is_file():
        print(f"textrlhf: error: {folder} is a single run's folder; give --seeds a new --run-dir", file=sys.stderr)
        return 2
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / SWEEP_FILE, {"seeds": list(seeds), "argv": argv})
    for seed in seeds:
        print(f"[pipeline] seed {seed} of {list(seeds)}: {seed_dir(folder, seed)}", flush=True)
        status = run_one([*argv, "--seed", str(seed), "--run-dir", str(seed_dir(folder, seed)), "--seeds"])
        if status != 0:
            return status
    try:
        path = write_aggregate(folder, seeds)
    except (RunDirError, ValueError) as exc:  # a damaged seed folder: one line with the file, no traceback
        print(f"textrlhf: error: {exc}", file=sys.stderr, flush=True)
        return 2
    print(f"[pipeline] {len(seeds)} seeds done; aggregate report: {path}", flush=True)
    return 0
