"""scripts/benchmark.py at toy scale: every method runs and reports positive, finite numbers."""

from __future__ import annotations

import json
import math

import pytest


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _check_timings(r: dict, max_tokens: int) -> None:
    for key in ("tokens_per_s", "rollout_s", "update_s", "iteration_s", "tokens_per_iteration", "rollout_tokens_per_s"):
        assert _positive(r[key]), key
    assert _positive(r["generation_s"]) and r["generation_s"] < r["rollout_s"]
    assert math.isfinite(r["peak_rss_mb"]), r["peak_rss_mb"]
    assert r["tokens_per_iteration"] <= max_tokens


def _run_tiny(tmp_path, *args: str) -> dict:
    """One benchmark run on the tiny model with the command-line ``args``; its benchmark.json."""
    from scripts.benchmark import main

    out = tmp_path / "bench"
    assert main(["--model", "tiny", *args, "--out", str(out)]) == 0
    assert (out / "tokens_per_s.png").stat().st_size > 1000
    return json.loads((out / "benchmark.json").read_text())


def test_short_benchmark_against_trl_grpo_and_rloo(tmp_path, capsys):
    """The issue's short command, on the tiny model: both fast agents and both TRL 1.16 trainers, one JSON."""
    data = _run_tiny(
        tmp_path, "--batch-sizes", "8", "--methods", "grpo,trl_grpo,rloo,trl_rloo", "--iterations", "1", "--runs", "1"
    )
    res = data["results"]["8"]
    assert set(res) == {"grpo", "trl_grpo", "rloo", "trl_rloo"}
    for method in res:
        _check_timings(res[method], max_tokens=8 * 24)
        assert len(res[method]["runs"]) == 1
        its = res[method]["runs"][0]["iterations"]  # every iteration, the default 2 warm-ups first
        assert [i["warmup"] for i in its] == [True, True, False], method
        assert all(isinstance(i["minor_faults"], int) and i["minor_faults"] >= 0 for i in its), method
        assert res[method]["rollout_s"] == its[2]["rollout_s"]  # the one timed iteration, warm-ups left out
    ratios = data["ratios"]["8"]
    for key in ("grpo_vs_trl_grpo", "rloo_vs_trl_rloo", "grpo_vs_trl_rloo", "rloo_vs_trl_grpo"):
        assert _positive(ratios[key]), key
    assert data["config"]["group_size"] == 4 and data["config"]["batch_sizes"] == [8]
    assert {r["precision"] for r in res.values()} == {"fp32"}  # the default, on both sides
    out = capsys.readouterr().out
    assert "TRL 1.16 GRPOTrainer" in out and "TRL 1.16 RLOOTrainer" in out


def test_tiny_benchmark_reports_the_other_methods(tmp_path, capsys):
    """The limits, naive, generic and rlhf_ppo; the fraction of the limits each fast agent reaches."""
    data = _run_tiny(
        tmp_path,
        *("--batch-sizes", "2", "--group-size", "2", "--max-new-tokens", "4", "--iterations", "1", "--runs", "1"),
        *("--methods", "generic,rlhf_ppo,grpo,limits,naive", "--warmup", "1"),
    )
    res = data["results"]["2"]
    assert set(res) == {"generic", "rlhf_ppo", "grpo", "limits", "naive"}
    for method in ("rlhf_ppo", "grpo"):
        _check_timings(res[method], max_tokens=2 * 4)
    assert _positive(res["generic"]["tokens_per_s"])
    assert res["generic"]["tokens_per_iteration"] == 2 * 4  # SB3 keeps stepping after EOS: always n * T
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
    for key in ("rlhf_ppo_rollout_vs_generate", "generic_rollout_vs_naive", "rlhf_ppo_of_limits", "grpo_of_limits"):
        assert _positive(ratios[key]), key
    assert "| batch | method |" in capsys.readouterr().out


def test_bf16_runs_every_trainer_and_limit_in_bf16(tmp_path, capsys):
    """--precision bf16: the agents' policies, TRL (bf16=True, its own default) and the limits, all in bf16."""
    data = _run_tiny(
        tmp_path,
        *("--batch-sizes", "4", "--group-size", "2", "--max-new-tokens", "4", "--iterations", "1", "--runs", "1"),
        *("--methods", "limits,rlhf_ppo,grpo,trl_grpo", "--precision", "bf16", "--warmup", "1"),
    )
    res = data["results"]["4"]
    methods = ("limits", "rlhf_ppo", "grpo", "trl_grpo")
    assert {m: r["precision"] for m, r in res.items()} == dict.fromkeys(methods, "bf16")
    for method in ("rlhf_ppo", "grpo", "trl_grpo"):
        _check_timings(res[method], max_tokens=4 * 4)
    assert data["config"]["precision"] == "bf16"
    assert "bf16 autocast over fp32 weights for every trainer and limit" in capsys.readouterr().out


def test_summaries_leave_warm_ups_out_and_keep_every_record():
    from scripts.bench_summary import summarize_iterations

    def rec(seconds, warmup):
        return {"tokens": 10, "rollout_s": seconds, "update_s": seconds, "generation_s": None, "warmup": warmup}

    out = summarize_iterations([rec(9.0, True), rec(5.0, True), rec(1.0, False), rec(3.0, False)])
    assert out["rollout_s"] == 2.0 and out["iteration_s"] == 4.0 and out["tokens_per_s"] == 20 / 8
    assert [i["rollout_s"] for i in out["iterations"]] == [9.0, 5.0, 1.0, 3.0]
    with pytest.raises(ValueError, match="no timed iteration"):
        summarize_iterations([rec(1.0, True)])


def test_config_rejects_a_negative_warm_up():
    from scripts.benchmark import Config

    with pytest.raises(ValueError, match="warmup must be >= 0"):
        Config(warmup=-1)
    assert Config(warmup=0).warmup == 0


def test_config_rejects_unknown_method():
    from scripts.benchmark import Config

    with pytest.raises(ValueError, match="unknown method"):
        Config(methods=["rlhf_ppo,warp"])
    assert Config(methods=["rlhf_ppo,trl_grpo", "naive"]).methods == ["rlhf_ppo", "trl_grpo", "naive"]


def test_config_rejects_batches_that_groups_do_not_divide():
    from scripts.benchmark import Config

    with pytest.raises(ValueError, match="divide every batch size"):
        Config(methods=["grpo"], batch_sizes=[8, 6], group_size=4)
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        Config(methods=["trl_rloo"], batch_sizes=[8], group_size=1)
    assert Config(methods=["rlhf_ppo"], batch_sizes=[6], group_size=4).batch_sizes == [6]  # rlhf_ppo has no groups


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
        2: {
            "naive": _summary(None),
            "limits": limits,
            "grpo": _summary(30.0),
            "trl_grpo": _summary(15.0),
            "trl_rloo": _summary(20.0),
        },
        8: {"generic": {**_summary(None), "update_skipped": True}, "rlhf_ppo": _summary(10.0)},
    }
    ratios = {n: compute_ratios(res, n, 4) for n, res in results.items()}
    assert ratios[2]["grpo_vs_trl_grpo"] == 2.0 and ratios[2]["grpo_vs_trl_rloo"] == 1.5
    assert ratios[2]["naive_rollout_vs_trl_grpo"] == pytest.approx(20 / 15)
    assert ratios[2]["grpo_rollout_vs_generate"] == pytest.approx((1.0 / 8) / (0.5 / (2 * 4)))
    # the limits of one iteration: generate + reference and reward forwards + forward+backward = 1.0 s for 8 tokens
    assert ratios[2]["grpo_of_limits"] == pytest.approx(30.0 / 8.0)
    assert ratios[2]["trl_grpo_of_limits"] == pytest.approx(15.0 / 8.0)
    assert "rlhf_ppo_of_limits" not in ratios[8]  # no limits measured at batch 8
    text = markdown(results, ratios, Config(model="tiny", max_new_tokens=4, group_size=2))
    rows = [line for line in text.splitlines() if line.startswith("| 2 |") or line.startswith("| 8 |")]
    assert [row.split(" | ")[1] for row in rows] == [
        "naive (1 env, no cache, rollout only)",
        "fast grpo",
        "TRL 1.16 GRPOTrainer",
        "TRL 1.16 RLOOTrainer",
        "limit: `generate`, KV cache (new tokens/s)",
        "limit: teacher-forced forward (sequence tokens/s)",
        "limit: forward + backward (sequence tokens/s)",
        "limits: generate + 2 forwards + forward+backward (new tokens/s)",
        "generic SB3 PPO (update skipped)",
        "fast rlhf_ppo",
    ]
    assert all(row.count(" | ") == 11 for row in rows), rows  # 12 columns in every row
    assert rows[0].startswith("| 2 | naive (1 env, no cache, rollout only) | 20.0 (rollout only) | 0.50 | 1.00 | - |")
    assert rows[1].endswith("| 2.00 | 1.50 | 3.75 |")  # grpo over TRL GRPO, over TRL RLOO, of the limits
    assert rows[7].split(" | ")[2:8] == ["8.0", "-", "-", "-", "1.00", "8.0"]  # the limits' sum: 8 tokens in 1 s
    targets = "- batch 2: grpo_vs_trl_grpo = 2.00 (target >= 1.5: met); grpo_of_limits = 3.75 (target >= 0.85: met)"
    assert targets in text
    assert "- batch 8" not in text  # batch 8 has no ratio with a target
    assert text.endswith("tokens counted (EOS ends an episode early except for generic).")


def test_trl_phase_timer_splits_rollout_generation_and_update_and_counts_completion_tokens():
    """TRL's phases as the benchmark times them, without TRL: the wrapped trainer methods and step ends."""
    import time

    from scripts.bench_trl import PhaseTimer

    timer = PhaseTimer("cpu", warmup=1)
    completion_ids = [[1, 9], [1, 2, 3]]  # TRL's completions stop after the first EOS

    def generate_single_turn():
        time.sleep(0.02)
        return completion_ids

    single = timer.wrap_generation(generate_single_turn)
    decode = timer.wrap_decode(lambda: ([[5, 5], [5, 5]], single(), ["a", "b"]))

    def generate_and_score():
        out = decode()
        time.sleep(0.02)  # reward, reference log-probs
        return out

    rollout = timer.wrap_rollout(generate_and_score)
    timer.start()  # on_train_begin; each step end starts the next iteration
    for _ in range(2):
        assert rollout()[1] is completion_ids
        time.sleep(0.03)  # loss, backward, optimizer step
        timer.end_step()
    assert len(timer.iterations) == 2
    assert [rec["warmup"] for rec in timer.iterations] == [True, False]
    for rec in timer.iterations:
        assert rec["tokens"] == 2 + 3
        assert rec["rollout_s"] >= 0.04 and rec["rollout_s"] > rec["generation_s"] >= 0.02
        assert 0.03 <= rec["update_s"] < 0.03 + rec["rollout_s"]


def test_runs_interleave_methods_and_naive_is_measured_once(monkeypatch):
    """Run r of every method before run r + 1 (a drift of the machine lands on every method alike)."""
    import scripts.benchmark as bench

    calls = []
    monkeypatch.setattr(bench, "_one_run", lambda cfg, method, n, r, inputs: calls.append((n, r, method)) or {})
    monkeypatch.setattr(bench, "summarize_runs", lambda runs: {"runs": len(runs)})
    cfg = bench.Config(batch_sizes=[4, 8], methods=["limits", "naive", "rlhf_ppo"], runs=2, group_size=2)
    results = bench.measure(cfg, {})
    assert calls == [
        *((4, r, m) for r in (0, 1) for m in ("naive", "limits", "rlhf_ppo")),
        *((8, r, m) for r in (0, 1) for m in ("limits", "rlhf_ppo")),
    ]
    assert list(results[8]) == ["naive", "limits", "rlhf_ppo"]
    assert results[8]["naive"] is results[4]["naive"] and results[4]["naive"]["batch_independent"]
