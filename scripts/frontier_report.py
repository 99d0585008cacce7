"""The frontier's outputs from its runs: ``frontier.csv``, ``frontier.png``, ``summary.md``, ``summary.json``.

Pure functions of the records of ``runs.jsonl`` (``scripts/frontier.py``), so the outputs can be redrawn
at any time and checked without training.

**Comparing at equal KL.** Each (algorithm, seed) gives a curve: its runs' (held-out KL, held-out score)
points sorted by KL, starting at the untrained reference (KL 0: the policy at beta = infinity). The curve is
interpolated linearly at each ``kl_grid`` value inside its KL range (never extrapolated: a value beyond the
farthest run is "not reached"), and averaged over seeds.

**Intervals.** Two-level bootstrap (docs/design.md section 9): each resample draws the held-out prompts
with replacement (one draw shared by every run, since all answered the same prompts) and, per algorithm,
the seeds with replacement; it recomputes every run's mean KL and score on those prompts, the curves and
their means. The 2.5th and 97.5th percentiles over resamples bound each number; a difference between two
algorithms is significant when its interval excludes 0. With 3 seeds the seed level has only 10 distinct
resamples, so these intervals understate the seed-to-seed spread: read them as the least uncertainty there is.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence

import numpy as np

CSV_COLUMNS = (
    "algo",
    "seed",
    "kl_target",
    "heldout_kl",
    "heldout_score",
    "heldout_second_judge",
    "heldout_response_len",
    "tokens",
    "rollouts",
    "seconds",
    "eval_seconds",
    "threads",
    "learning_rate",
    "beta_last",
    "train_kl_last",
    "train_score_last",
)
"""Columns of ``frontier.csv``: one row per run (the untrained reference first, algo ``reference``)."""
JUDGES = {"score": "held-out score (the env's reward)", "second_judge": "held-out second judge"}
"""The per-prompt arrays compared along the frontier, and their axis labels."""


def csv_rows(runs: Sequence[dict]) -> list[dict]:
    """One ``frontier.csv`` row per run: the means of its per-prompt arrays and its counters."""
    rows = []
    for r in runs:
        row = {k: r.get(k, "") for k in CSV_COLUMNS}
        row.update(
            heldout_kl=float(np.mean(r["kl"])),
            heldout_score=float(np.mean(r["score"])),
            heldout_second_judge=float(np.mean(r["second_judge"])),
            heldout_response_len=r["response_len"],
        )
        rows.append(row)
    return rows


def auto_grid(runs: Sequence[dict]) -> list[float]:
    """30%, 60% and 90% of the smallest held-out KL that every (algorithm, seed) reaches (0.1-nat steps):
    points inside every curve, where no comparison rests on extrapolation."""
    reach: dict[tuple, float] = {}
    for r in runs:
        if r["algo"] != "reference":
            key = (r["algo"], r["seed"])
            reach[key] = max(reach.get(key, 0.0), float(np.mean(r["kl"])))
    top = min(reach.values(), default=0.0)
    grid = sorted({math.floor(f * top * 10) / 10 for f in (0.3, 0.6, 0.9)} - {0.0})  # rounded down: inside
    return grid or [top / 2 if top > 0 else 1e-3]


def _curve_at(kls: np.ndarray, scores: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Scores interpolated at ``grid`` along one seed's runs (NaN outside their KL range)."""
    order = np.argsort(kls)
    x, y = kls[order], scores[order]
    out = np.interp(grid, x, y)
    out[(grid < x[0]) | (grid > x[-1])] = np.nan
    return out


def frontier_stats(runs: Sequence[dict], grid: Sequence[float], judge: str, idx: np.ndarray, seed_draw) -> dict:
    """Per algorithm: mean over (drawn) seeds of the score interpolated at ``grid``, and the mean (KL, score)
    per target, with the held-out prompts ``idx``. ``seed_draw(algo, seeds)`` picks the seeds to average."""
    ref = next(r for r in runs if r["algo"] == "reference")
    ref_score = float(np.mean(np.asarray(ref[judge])[idx]))
    g = np.asarray(grid, dtype=np.float64)
    out = {}
    for algo in dict.fromkeys(r["algo"] for r in runs if r["algo"] != "reference"):
        mine = [r for r in runs if r["algo"] == algo]
        seeds = sorted({r["seed"] for r in mine})
        curves, per_target = [], {}
        for seed in seed_draw(algo, seeds):
            pts = [r for r in mine if r["seed"] == seed]
            kls = np.array([0.0] + [np.mean(np.asarray(r["kl"])[idx]) for r in pts])
            scores = np.array([ref_score] + [np.mean(np.asarray(r[judge])[idx]) for r in pts])
            curves.append(_curve_at(kls, scores, g))
            for r, k, s in zip(pts, kls[1:], scores[1:]):
                per_target.setdefault(r["kl_target"], []).append((k, s))
        out[algo] = {
            "at_kl": np.mean(curves, axis=0),  # NaN where any drawn seed does not reach that KL
            "targets": {t: tuple(np.mean(v, axis=0)) for t, v in sorted(per_target.items())},
        }
    return out


MIN_FINITE = 0.95
"""An interval is given only if at least this share of the resamples reach its KL; otherwise the percentiles
would describe only the resamples that happen to reach it (those whose drawn seeds went further)."""


def bootstrap_frontier(
    runs: Sequence[dict],
    grid: Sequence[float],
    judge: str,
    n_resamples: int,
    samples_per_prompt: int = 1,
    seed: int = 0,
) -> dict:
    """Estimates and 95% intervals of :func:`frontier_stats` and of every pairwise difference at ``grid``.

    The samples of one prompt sit in a row (``samples_per_prompt`` of them) and are resampled together.

    Returns ``{"at_kl": {algo: [interval per grid value]}, "targets": {algo: {target: {"kl", "score"}}},
    "differences": {"a - b": [interval per grid value]}}``; an interval is ``{"estimate", "low", "high"}``,
    ``None`` where the estimate is not reached, and has no ``low`` / ``high`` (``None``) where fewer than
    :data:`MIN_FINITE` of the resamples reach it.
    """
    runs = [{**r, "kl": np.asarray(r["kl"]), judge: np.asarray(r[judge])} for r in runs]  # index once, not per draw
    k = samples_per_prompt
    n_prompts = len(runs[0]["kl"]) // k
    rng = np.random.default_rng(seed)
    point = frontier_stats(runs, grid, judge, np.arange(n_prompts * k), lambda algo, seeds: seeds)
    draws = []
    for _ in range(n_resamples):
        prompts = rng.integers(0, n_prompts, n_prompts)
        idx = (prompts[:, None] * k + np.arange(k)).ravel()  # every sample of each drawn prompt
        draws.append(frontier_stats(runs, grid, judge, idx, lambda algo, seeds: rng.choice(seeds, len(seeds))))
    algos = list(point)

    def interval(estimate: float, samples: list[float]) -> dict | None:
        if not np.isfinite(estimate):
            return None
        values = np.asarray(samples, dtype=np.float64)
        finite = values[np.isfinite(values)]
        if finite.size < MIN_FINITE * n_resamples:
            return {"estimate": float(estimate), "low": None, "high": None}
        low, high = np.quantile(finite, [0.025, 0.975])
        return {"estimate": float(estimate), "low": float(low), "high": float(high)}

    result: dict = {"grid": list(grid), "at_kl": {}, "targets": {}, "differences": {}}
    for a in algos:
        result["at_kl"][a] = [
            interval(point[a]["at_kl"][j], [d[a]["at_kl"][j] for d in draws]) for j in range(len(grid))
        ]
        result["targets"][a] = {
            t: {
                "kl": interval(k, [d[a]["targets"][t][0] for d in draws if t in d[a]["targets"]]),
                "score": interval(s, [d[a]["targets"][t][1] for d in draws if t in d[a]["targets"]]),
            }
            for t, (k, s) in point[a]["targets"].items()
        }
    for i, a in enumerate(algos):
        for b in algos[i + 1 :]:
            result["differences"][f"{a} - {b}"] = [
                interval(
                    point[a]["at_kl"][j] - point[b]["at_kl"][j],
                    [d[a]["at_kl"][j] - d[b]["at_kl"][j] for d in draws],
                )
                for j in range(len(grid))
            ]
    return result


def frontier_figure(runs: Sequence[dict], stats: dict[str, dict], title: str):
    """One panel per judge: every run a dot, the mean per target joined with its 95% intervals (both axes),
    the untrained reference a black star."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.5))
    axes = fig.subplots(1, len(JUDGES))
    ref = next(r for r in runs if r["algo"] == "reference")
    for ax, (judge, label) in zip(axes, JUDGES.items()):
        for k, algo in enumerate(stats[judge]["targets"]):
            color = f"C{k}"
            mine = [r for r in runs if r["algo"] == algo]
            ax.scatter(
                [np.mean(r["kl"]) for r in mine], [np.mean(r[judge]) for r in mine], color=color, s=14, alpha=0.45
            )
            targets = stats[judge]["targets"][algo]
            kls = [0.0] + [v["kl"]["estimate"] for v in targets.values()]
            scores = [float(np.mean(ref[judge]))] + [v["score"]["estimate"] for v in targets.values()]
            ax.plot(kls, scores, color=color, lw=1.8, marker="o", label=algo)
            for v in targets.values():
                kl, sc = v["kl"], v["score"]
                if kl["low"] is None or sc["low"] is None:  # a partial sweep: too few resamples hold this target
                    continue
                ax.errorbar(
                    kl["estimate"],
                    sc["estimate"],
                    xerr=[[kl["estimate"] - kl["low"]], [kl["high"] - kl["estimate"]]],
                    yerr=[[sc["estimate"] - sc["low"]], [sc["high"] - sc["estimate"]]],
                    color=color,
                    capsize=3,
                    lw=1,
                )
        ax.scatter([0.0], [np.mean(ref[judge])], marker="*", s=120, color="black", label="untrained", zorder=3)
        ax.set_xlabel("held-out KL to the reference (nats per response)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{title}\ndots: runs (one per seed and target); line: mean per KL target, bars: 95% bootstrap")
    fig.tight_layout()
    return fig


def _cell(ci: dict | None, star: bool = False) -> str:
    """A table cell: ``estimate [low, high]``, ``*`` after a difference whose interval excludes 0."""
    if ci is None:
        return "not reached"
    if ci["low"] is None:
        return f"{ci['estimate']:.3f} [edge]"
    mark = " *" if star and not ci["low"] <= 0 <= ci["high"] else ""
    return f"{ci['estimate']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]{mark}"


def summary_markdown(stats: dict[str, dict], n_seeds: dict[str, int], n_prompts: int) -> str:
    """The summary tables: each algorithm's score at equal KL, then every pairwise difference (* excludes 0)."""
    md = []
    for judge, label in JUDGES.items():
        s = stats[judge]
        grid = s["grid"]
        head = " | ".join(f"KL {g:g}" for g in grid)
        md += [f"### {label}, interpolated at equal KL", "", f"| algorithm | seeds | {head} |"]
        md.append("|---|---|" + "---|" * len(grid))
        for algo, cis in s["at_kl"].items():
            md.append(f"| {algo} | {n_seeds[algo]} | " + " | ".join(_cell(c) for c in cis) + " |")
        if s["differences"]:
            md += ["", f"| difference | {head} |", "|---|" + "---|" * len(grid)]
            for pair, cis in s["differences"].items():
                md.append(f"| {pair} | " + " | ".join(_cell(c, star=True) for c in cis) + " |")
        md.append("")
    md.append(
        f"Mean over seeds, 95% interval from a bootstrap over seeds and the {n_prompts} held-out prompts; "
        '* marks a difference whose interval excludes 0. "not reached": some seed\'s runs do not span that KL; '
        f'"[edge]": fewer than {MIN_FINITE:.0%} of the resamples reach it, so no interval is given. With few seeds '
        "(3: 10 distinct resamples of them) the intervals understate the seed-to-seed spread."
    )
    return "\n".join(md) + "\n"


def write_outputs(cfg, runs: Sequence[dict]) -> dict:
    """Write ``frontier.csv``, ``frontier.png``, ``summary.md`` and ``summary.json`` into ``cfg.out``
    (each atomically); returns the summary (``rows`` and the per-judge ``stats``)."""
    from scripts.run_dir import atomic_write_bytes, atomic_write_text

    rows = csv_rows(runs)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(cfg.out / "frontier.csv", buf.getvalue())
    trained = [r for r in runs if r["algo"] != "reference"]
    summary: dict = {"rows": rows, "stats": {}}
    if not trained:
        return summary
    grid = cfg.kl_grid or auto_grid(runs)
    stats = {j: bootstrap_frontier(runs, grid, j, cfg.n_resamples, cfg.eval_samples) for j in JUDGES}
    n_seeds = {a: len({r["seed"] for r in trained if r["algo"] == a}) for a in stats["score"]["at_kl"]}
    summary["stats"] = stats
    png = io.BytesIO()
    title = (
        f"{cfg.model}, reward {cfg.reward}, {cfg.n_envs} x {cfg.max_new_tokens} tokens, "
        f"{cfg.total_timesteps} tokens per run"
    )
    frontier_figure(runs, stats, title).savefig(png, format="png", dpi=110)
    atomic_write_bytes(cfg.out / "frontier.png", png.getvalue())
    n_prompts = len(runs[0]["kl"]) // cfg.eval_samples
    atomic_write_text(cfg.out / "summary.md", summary_markdown(stats, n_seeds, n_prompts))
    atomic_write_text(cfg.out / "summary.json", json.dumps(summary, indent=1, default=float, allow_nan=False))
    return summary
