"""scripts/benchmark.py at toy scale: every method runs and reports positive, finite numbers."""

from __future__ import annotations

import json
import math

import pytest


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _check_timings(r: dict) -> None:
    for key in ("tokens_per_s", "rollout_s", "update_s", "iteration_s", "tokens_per_iteration", "rollout_tokens_per_s"):
        assert _positive(r[key]), key
    assert math.isfinite(r["peak_rss_mb"]), r["peak_rss_mb"]
    assert r["tokens_per_iteration"] <= 2 * 4


def _run_tiny(tmp_path, methods: str) -> dict:
    """One toy-scale benchmark run (batch 2, 4 tokens, 1 iteration); its benchmark.json."""
    from scripts.benchmark import main

    out = tmp_path / "bench"
    rc = main(
        [
            "--model",
            "tiny",
            "--batch-sizes",
            "2",
            "--max-new-tokens",
            "4",
            "--iterations",
            "1",
            "--runs",
            "1",
            "--methods",
            methods,
            "--run-dir",
            str(out),
        ]
    )
    assert rc == 0
    assert (out / "tokens_per_s.png").stat().st_size > 1000
    return json.loads((out / "benchmark.json").read_text())


def test_tiny_benchmark_reports_every_method(tmp_path, capsys):
    """Every method but TRL's (the bench extra; next test), with the dev install of `make test`."""
    data = _run_tiny(tmp_path, "generic,fast,limits,naive")
    res = data["results"]["2"]
    assert set(res) == {"generic", "fast", "limits", "naive"}
    for method in ("generic", "fast"):
        _check_timings(res[method])
    assert res["generic"]["tokens_per_iteration"] == 2 * 4  # SB3 keeps stepping after EOS: always n * T
    assert _positive(res["fast"]["generation_s"])
    for key in ("rollout_s", "rollout_tokens_per_s"):
        assert _positive(res["naive"][key])
    assert res["naive"]["tokens_per_iteration"] == 4  # one env at a time
    for key in (
        "generate_s",
        "forward_s",
        "forward_backward_s",
        "generate_tokens_per_s",
        "forward_seq_tokens_per_s",
        "forward_backward_seq_tokens_per_s",
    ):
        assert _positive(res["limits"][key]), key
    ratios = data["ratios"]["2"]
    for key in ("fast_rollout_vs_generate", "generic_rollout_vs_naive"):
        assert _positive(ratios[key]), key
    assert "| batch | method |" in capsys.readouterr().out


@pytest.mark.bench
def test_tiny_benchmark_against_trl(tmp_path, capsys):
    """TRL 1.12's PPOTrainer next to the fast agent (`make test-bench`: needs the bench extra)."""
    data = _run_tiny(tmp_path, "generic,fast,trl")
    res = data["results"]["2"]
    assert set(res) == {"generic", "fast", "trl"}
    _check_timings(res["trl"])
    assert _positive(res["trl"]["generation_s"])
    for key in ("fast_vs_trl", "generic_vs_trl"):
        assert _positive(data["ratios"]["2"][key]), key
    assert "TRL 1.12 PPOTrainer" in capsys.readouterr().out


def test_config_rejects_unknown_method():
    from scripts.benchmark import Config

    with pytest.raises(ValueError, match="unknown method"):
        Config(methods=["fast,warp"])
    assert Config(methods=["fast,trl", "naive"]).methods == ["fast", "trl", "naive"]
