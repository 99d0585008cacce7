"""``--seeds``: the whole pipeline once per seed, then one aggregate report over them."""

from __future__ import annotations

import json

import numpy as np
import pytest


def test_seeds_run_each_seed_and_aggregate(tmp_path):
    from scripts.pipeline import main
    from scripts.stages.aggregate import HEADLINES

    run = tmp_path / "seeds"
    argv = ["--tiny", "--seeds", "0", "1", "--run-dir", str(run), "--no-progress"]
    assert main(argv) == 0
    result = json.loads((run / "aggregate.json").read_text())
    assert result["seeds"] == [0, 1] and result["missing"] == [] and set(result["numbers"]) == set(HEADLINES)
    wins = []
    for seed in (0, 1):
        ev = json.loads((run / f"seed-{seed}" / "evaluate" / "metrics.json").read_text())
        config = (run / f"seed-{seed}" / "config.yaml").read_text()
        assert f"seed: {seed}\n" in config  # each folder is an ordinary run of its own seed
        row = result["numbers"]["win_rate_rl_vs_sft"]["per_seed"][str(seed)]
        assert row["value"] == ev["win_rate"]["rl_vs_sft"]
        assert row["low"] == ev["intervals"]["win_rate/annotator/rl_vs_sft"]["low"]
        wins.append(row["value"])
    mean = result["numbers"]["win_rate_rl_vs_sft"]["mean"]
    assert mean["estimate"] == pytest.approx(np.mean(wins)) and mean["method"] == "t"
    assert "| annotator win rate, RL vs SFT |" in (run / "aggregate.md").read_text()

    # Resumed, every seed is already done: nothing reruns and the aggregate is the same.
    before = (run / "seed-1" / "rl" / "DONE.json").read_text()
    assert main([*argv, "--resume"]) == 0
    assert (run / "seed-1" / "rl" / "DONE.json").read_text() == before
    assert json.loads((run / "aggregate.json").read_text()) == result


def test_one_seed_is_refused_with_the_fix(tmp_path, capsys):
    from scripts.pipeline import main

    with pytest.raises(SystemExit) as exc:
        main(["--tiny", "--seeds", "3", "--run-dir", str(tmp_path / "x")])
    assert exc.value.code == 2 and "--seed" in capsys.readouterr().err
