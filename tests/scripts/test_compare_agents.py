"""scripts/compare_agents.py at toy scale: every agent trains on the same budget and the outputs parse."""

from __future__ import annotations

import csv
import json
import math

import pytest


def test_tiny_comparison_writes_curves_plot_and_summary(tmp_path):
    from scripts.compare_agents import main

    out = tmp_path / "compare"
    summary = main(
        [
            "--model",
            "tiny",
            "--reward",
            "length",
            "--algos",
            "rlhf_ppo,rloo",
            "--n-envs",
            "4",
            "--max-new-tokens",
            "4",
            "--max-prompt-tokens",
            "16",
            "--total-timesteps",
            "48",
            "--eval-samples",
            "1",
            "--learning-rates",
            '{"rloo": 1e-3}',
            "--run-dir",
            str(out),
        ]
    )
    assert set(summary) == {"reference", "rlhf_ppo", "rloo"}
    assert summary["rloo"]["learning_rate"] == 1e-3
    for algo in ("rlhf_ppo", "rloo"):
        s = summary[algo]
        assert s["rollouts"] >= 3 and s["tokens"] >= 48  # rounds of 4 envs x up to 4 tokens, until 48
        for key in ("final_score", "final_kl", "held_out_score", "held_out_second_judge", "held_out_kl"):
            assert math.isfinite(s[key]), (algo, key)
    rows = list(csv.DictReader(open(out / "curves.csv")))
    assert [r["algo"] for r in rows] == (
        ["rlhf_ppo"] * summary["rlhf_ppo"]["rollouts"] + ["rloo"] * summary["rloo"]["rollouts"]
    )
    assert all(math.isfinite(float(r["rlhf/kl"])) for r in rows)
    assert (out / "curves.png").stat().st_size > 1000
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert "held-out score" in (out / "summary.md").read_text()


def test_config_errors_name_the_fix():
    from scripts.compare_agents import Config

    with pytest.raises(ValueError, match="unknown algorithm"):
        Config(algos=["ppo2"])
    with pytest.raises(ValueError, match="not compared"):
        Config(algos=["rloo"], learning_rates={"grpo": 1e-3})
