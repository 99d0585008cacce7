"""``--seeds``: the whole pipeline once per seed, then one aggregate report over them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pipeline_helpers import copy_run


def test_seeds_run_each_seed_and_aggregate(tiny_run, tmp_path):
    from scripts.pipeline import main
    from scripts.stages.aggregate import HEADLINES

    run = tmp_path / "seeds"
    argv = ["--tiny", "--seeds", "0", "1", "--run-dir", str(run), "--no-progress"]
    # Seed 0 is the session's finished tiny run (the same command and seed): --resume keeps it and runs seed 1.
    copy_run(tiny_run, run / "seed-0")
    assert main([*argv, "--resume"]) == 0
    result = json.loads((run / "aggregate.json").read_text())
    assert (
        result["seeds"] == [0, 1]
        and result["missing"] == {}
        and not result["mixed_settings"]
        and set(result["numbers"]) == set(HEADLINES)
    )
    wins = []
    for seed in (0, 1):
        ev = json.loads((run / f"seed-{seed}" / "evaluate" / "metrics.json").read_text())
        config = (run / f"seed-{seed}" / "config.yaml").read_text()
        assert f"seed: {seed}\n" in config  # each folder is an ordinary run of its own seed
        row = result["numbers"]["win_rate_rl_vs_sft"]["per_seed"][str(seed)]
        assert row["value"] == ev["win_rate"]["rl_vs_sft"]
        assert row["low"] == ev["intervals"]["win_rate/annotator/rl_vs_sft"]["low"]
        wins.append(row["value"])
        rm = json.loads((run / f"seed-{seed}" / "reward_model" / "metrics.json").read_text())["after"]
        acc = result["numbers"]["rm_accuracy"]["per_seed"][str(seed)]
        assert (acc["low"], acc["value"], acc["high"]) == (rm["accuracy_low"], rm["accuracy"], rm["accuracy_high"])
    mean = result["numbers"]["win_rate_rl_vs_sft"]["mean"]
    assert mean["estimate"] == pytest.approx(np.mean(wins)) and mean["method"] == "t"
    assert "| annotator win rate, RL vs SFT |" in (run / "aggregate.md").read_text()

    # Resumed, every seed is already done: nothing reruns and the aggregate is the same.
    before = (run / "seed-1" / "rl" / "DONE.json").read_text()
    assert main([*argv, "--resume"]) == 0
    assert (run / "seed-1" / "rl" / "DONE.json").read_text() == before
    assert json.loads((run / "aggregate.json").read_text()) == result

    # The sweep's folder is not a run: a plain command there is refused (exit 2), naming the fix.
    assert main(["--tiny", "--run-dir", str(run), "--no-progress"]) == 2
    # And a run's folder does not become a sweep.
    assert main(["--tiny", "--seeds", "0", "1", "--run-dir", str(run / "seed-0"), "--no-progress"]) == 2
    # A seed whose evaluation was undone is left out, and the page says why and how to fix it.
    (run / "seed-1" / "evaluate" / "DONE.json").unlink()
    from scripts.stages.aggregate import write_aggregate

    write_aggregate(run, [0, 1])
    assert json.loads((run / "aggregate.json").read_text())["missing"] == {
        "1": "not finished (rerun the same command with --resume)"
    }
    assert "Seed 1 is left out" in (run / "aggregate.md").read_text()


def test_a_bad_second_judge_fails_before_any_stage(tmp_path, capsys):
    from scripts.pipeline import main

    with pytest.raises(SystemExit) as exc:
        main(["--tiny", "--run-dir", str(tmp_path / "x"), "--evaluate.second-judge", "sentimnet"])
    assert exc.value.code == 2 and "second-judge" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_one_seed_is_refused_with_the_fix(tmp_path, capsys):
    from scripts.pipeline import main

    with pytest.raises(SystemExit) as exc:
        main(["--tiny", "--seeds", "3", "--run-dir", str(tmp_path / "x")])
    assert exc.value.code == 2 and "--seed" in capsys.readouterr().err
