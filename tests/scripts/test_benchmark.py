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


def _summary(tokens_per_s):
    """One method's summary over runs, as :func:`scripts.bench_summary.summarize_runs` returns it."""
    update = None if tokens_per_s is None else 1.0
    return {
        "tokens_per_s": tokens_per_s,
        "rollout_tokens_per_s": 20.0,
        "rollout_s": 1.0,
        "update_s": update,
        "iteration_s": None if update is None else 2.0,
        "tokens_per_iteration": 8,
        "peak_rss_mb": 1.0,
        "generation_s": 0.5,
    }


def test_markdown_table_rows_ratios_and_targets():
    """The table without any model: row order, rollout-only rows, the limits' rows, targets met or not."""
    from scripts.bench_report import markdown
    from scripts.bench_summary import compute_ratios
    from scripts.benchmark import Config

    limits = {
        "generate_s": 0.5,
        "forward_s": 0.1,
        "forward_backward_s": 0.3,
        "tokens_per_iteration": 8,
        "generate_tokens_per_s": 16.0,
        "forward_seq_tokens_per_s": 100.0,
        "forward_backward_seq_tokens_per_s": 33.0,
        "peak_rss_mb": 2.0,
    }
    results = {
        2: {"naive": _summary(None), "limits": limits, "fast": _summary(30.0), "trl": _summary(15.0)},
        8: {"generic": {**_summary(None), "update_skipped": True}, "fast": _summary(10.0)},
    }
    ratios = {n: compute_ratios(res, n, 4) for n, res in results.items()}
    assert ratios[2]["fast_vs_trl"] == 2.0 and ratios[2]["naive_rollout_vs_trl"] == pytest.approx(20 / 15)
    assert ratios[2]["fast_rollout_vs_generate"] == pytest.approx((1.0 / 8) / (0.5 / (2 * 4)))
    text = markdown(results, ratios, Config(model="tiny", max_new_tokens=4))
    rows = [line for line in text.splitlines() if line.startswith("| 2 |") or line.startswith("| 8 |")]
    assert [row.split(" | ")[1] for row in rows] == [
        "naive (1 env, no cache, rollout only)",
        "fast RLHFPPO",
        "TRL 1.12 PPOTrainer",
        "limit: `generate`, KV cache (new tokens/s)",
        "limit: teacher-forced forward (sequence tokens/s)",
        "limit: forward + backward (sequence tokens/s)",
        "generic SB3 PPO (update skipped)",
        "fast RLHFPPO",
    ]
    assert rows[0].startswith("| 2 | naive (1 env, no cache, rollout only) | 20.0 (rollout only) | 1.00 | - | - |")
    assert rows[1].endswith("| 2.00 |")  # fast's tokens/s over TRL's
    assert "- batch 2: fast_vs_trl = 2.00 (target >= 1.5: met); fast_rollout_vs_generate = 2.00 (target <= " in text
    assert "1.25: NOT met)" in text and "- batch 8" not in text  # batch 8 has no ratio with a target
    assert text.endswith("tokens counted (EOS ends an episode early for fast and TRL).")


def test_trl_phase_timer_counts_tokens_to_the_first_eos_and_splits_rollout_from_update():
    """TRL's phases as the benchmark times them, without TRL: wrapped generation and forward, step ends."""
    import time

    import torch

    from scripts.bench_trl import PhaseTimer

    timer = PhaseTimer("cpu", prompt_tokens=2, eos=9)
    query_responses = torch.tensor([[5, 5, 1, 9, 3], [5, 5, 1, 2, 3]])  # EOS as 2nd response token; no EOS

    def generation(*a, **k):
        time.sleep(0.02)
        return query_responses, None

    generate, forward = timer.wrap_generation(generation), timer.wrap_forward(lambda x: x + 1)
    timer.start()  # on_train_begin; each step end starts the next iteration
    for _ in range(2):
        assert generate()[0] is query_responses
        with torch.no_grad():
            assert forward(1) == 2  # a forward without gradients belongs to the rollout
        time.sleep(0.02)
        forward(1)  # the first forward with gradients starts the update
        time.sleep(0.03)
        timer.end_step()
    assert len(timer.iterations) == 2
    for rec in timer.iterations:
        assert rec["tokens"] == 2 + 3  # up to and including the first EOS, else all 3 tokens
        assert rec["rollout_s"] >= 0.04 and rec["rollout_s"] > rec["generation_s"] >= 0.02
        assert rec["update_s"] >= 0.03
