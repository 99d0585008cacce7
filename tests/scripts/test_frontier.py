"""scripts/frontier.py: the tiny sweep of the issue end to end, resume, and the equal-KL statistics on
runs whose answer is known."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

TINY = ["--tiny", "--seeds", "0", "1", "--kl-targets", "2", "6", "--algos", "rloo", "grpo", "--no-progress"]


def test_tiny_sweep_writes_rows_plot_and_summary_and_resumes(tmp_path):
    import matplotlib.image as mpimg

    from scripts.frontier import main
    from scripts.frontier_report import CSV_COLUMNS

    out = tmp_path / "frontier"
    main([*TINY, "--out", str(out)])
    with open(out / "frontier.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert rows[0]["algo"] == "reference" and float(rows[0]["heldout_kl"]) == 0.0
    keys = sorted((r["algo"], int(r["seed"]), float(r["kl_target"])) for r in rows[1:])
    assert keys == sorted((a, s, t) for a in ("rloo", "grpo") for s in (0, 1) for t in (2.0, 6.0))
    for r in rows[1:]:
        assert int(r["tokens"]) >= 32 and float(r["seconds"]) > 0
        for key in ("heldout_kl", "heldout_score", "heldout_second_judge", "beta_last"):
            assert np.isfinite(float(r[key])), key
    assert mpimg.imread(out / "frontier.png").shape[0] > 100
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["stats"]) == {"score", "second_judge"}
    assert set(summary["stats"]["score"]["differences"]) == {"rloo - grpo"}
    assert "interpolated at equal KL" in (out / "summary.md").read_text()

    # Resume: the same command finds every run done and trains nothing (runs.jsonl does not grow); a kill
    # that cut the last line short loses that run only.
    lines = (out / "runs.jsonl").read_text().splitlines()
    (out / "runs.jsonl").write_text("\n".join(lines) + "\n" + lines[-1][:40])
    main([*TINY, "--out", str(out)])
    assert (out / "runs.jsonl").read_text().splitlines() == lines  # the cut line is gone, nothing retrained
    # A new seed runs only its own runs, appended after the finished ones.
    main([*TINY, "--seeds", "0", "1", "2", "--algos", "rloo", "--out", str(out)])
    grown = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert grown[: len(lines)] == [json.loads(line) for line in lines]
    assert [(r["algo"], r["seed"]) for r in grown[len(lines) :]] == [("rloo", 2), ("rloo", 2)]
    # Other options would mix unlike runs in one frontier: refused, naming the option.
    with pytest.raises(ValueError, match="total_timesteps"):
        main([*TINY, "--total-timesteps", "64", "--out", str(out)])


def test_jobs_run_in_parallel_processes_with_the_same_numbers(tmp_path):
    """--jobs 2 trains each run in its own one-thread process; the runs are those of --jobs 1, and so are
    their numbers (sampling is seeded per run; only float sums over another thread count may differ)."""
    from scripts.frontier import Config, main

    small = ["--tiny", "--seeds", "0", "--kl-targets", "2", "6", "--algos", "rloo", "--no-progress"]
    serial = main([*small, "--out", str(tmp_path / "serial")])["rows"]
    parallel = main([*small, "--jobs", "2", "--out", str(tmp_path / "parallel")])["rows"]
    key = lambda r: (r["algo"], r["seed"], r["kl_target"])  # noqa: E731
    assert sorted(map(key, parallel)) == sorted(map(key, serial))
    by_key = {key(r): r for r in serial}
    for row in parallel[1:]:
        assert row["threads"] == 1
        mine = by_key[key(row)]
        assert row["heldout_score"] == pytest.approx(mine["heldout_score"], abs=1e-6)
        assert row["heldout_kl"] == pytest.approx(mine["heldout_kl"], abs=1e-4)
        assert row["tokens"] == mine["tokens"]
    with pytest.raises(ValueError, match="--jobs 0: give 1 to"):
        Config(tiny=True, jobs=0)


def test_a_failing_parallel_run_keeps_the_finished_ones_and_raises(tmp_path):
    """With --jobs, one run's error (here an option grpo does not take) stops the queued runs and is raised;
    the runs that finished are in runs.jsonl, so fixing the option and running again resumes."""
    from scripts.frontier import main

    out = tmp_path / "f"
    bad = ["--algos", "rloo", "grpo", "--algo-kwargs", '{"grpo": {"no_such_option": 1}}']
    with pytest.raises(TypeError, match="no_such_option"):
        main(["--tiny", "--seeds", "0", "--kl-targets", "2", "6", *bad, "--jobs", "2", "--out", str(out)])
    kept = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert {r["algo"] for r in kept} <= {"reference", "rloo"} and any(r["algo"] == "rloo" for r in kept)


def _run(algo, seed, target, kl, slope, rng, n=60):
    """A run whose held-out KL is ``kl`` on every prompt and whose score is ``slope * kl`` plus noise."""
    return {
        "algo": algo,
        "seed": seed,
        "kl_target": target,
        "kl": [kl] * n,
        "score": list(slope * kl + rng.normal(0, 0.01, n)),
        "second_judge": list(0.5 * slope * kl + rng.normal(0, 0.01, n)),
        "response_len": 10.0,
    }


def test_equal_kl_interpolation_and_significance():
    from scripts.frontier_report import bootstrap_frontier

    rng = np.random.default_rng(0)
    ref = {"algo": "reference", "seed": 0, "kl_target": 0.0, "kl": [0.0] * 60, "score": [0.0] * 60}
    ref["second_judge"], ref["response_len"] = [0.0] * 60, 10.0
    runs = [ref]
    for seed in (0, 1, 2):  # "steep" buys 0.1 per nat, "flat" 0.05; "flat" never goes past 5 nats
        runs += [_run("steep", seed, t, t + 0.2 * seed, 0.1, rng) for t in (2.0, 6.0)]
        runs += [_run("flat", seed, t, t - 1.0, 0.05, rng) for t in (2.0, 6.0)]
    stats = bootstrap_frontier(runs, [1.0, 4.0, 5.5], "score", n_resamples=300)
    steep, flat = stats["at_kl"]["steep"], stats["at_kl"]["flat"]
    assert steep[1]["estimate"] == pytest.approx(0.4, abs=0.01)  # interpolated between its runs at ~2 and ~6 nats
    assert flat[0]["estimate"] == pytest.approx(0.05, abs=0.01)  # between the untrained origin and its 1-nat runs
    assert flat[2] is None  # 5.5 nats is past the farthest "flat" run: not extrapolated
    diff = stats["differences"]["steep - flat"][1]
    assert diff["estimate"] == pytest.approx(0.2, abs=0.01) and diff["low"] > 0  # significant
    target = stats["targets"]["steep"][6.0]
    assert target["kl"]["estimate"] == pytest.approx(6.2) and target["kl"]["low"] <= 6.2 <= target["kl"]["high"]


def test_default_grid_lies_inside_every_curve():
    from scripts.frontier_report import auto_grid

    rng = np.random.default_rng(0)
    runs = [_run("a", 0, 2.0, 2.0, 0.1, rng), _run("a", 0, 8.0, 9.0, 0.1, rng), _run("b", 0, 8.0, 5.0, 0.1, rng)]
    assert auto_grid(runs) == [1.5, 3.0, 4.5]  # 30/60/90% of 5 nats, the farthest point "b" reaches
