"""scripts/bench_decode_threads.py at toy scale: every setting is measured and compared with the first."""

from __future__ import annotations

import json
import math

import pytest


def test_decode_threads_benchmark_measures_every_setting(tmp_path):
    from scripts.bench_decode_threads import main, parse_setting

    out = tmp_path / "dt"
    args = ["--model", "tiny", "--batch-size", "4", "--group-size", "2", "--max-new-tokens", "4"]
    args += ["--settings", "all/autocast", "1/packed", "--warmup", "1", "--repeats", "2", "--out", str(out)]
    result = main(args)
    assert set(result["rollout_s"]) == {"all/autocast", "1/packed"}
    assert all(len(v) == 2 for v in result["runs"].values())
    for s in ("all/autocast", "1/packed"):
        assert math.isfinite(result["rollout_s"][s]) and result["generation_s"][s] < result["rollout_s"][s]
    assert result["rollout_vs_baseline"]["all/autocast"] == 1.0
    with pytest.raises(ValueError, match="THREADS/WEIGHTS"):
        parse_setting("auto", 2)
    assert parse_setting("all/packed", 2) == (2, True) and parse_setting("auto/autocast", 2) == ("auto", False)
    assert json.loads((out / "decode_threads.json").read_text())["config"]["settings"] == ["all/autocast", "1/packed"]
