"""Output people read (issue 17): numbers printed as they are, plots that say what they show.

Every plot is checked on small synthetic data through the function that returns its ``Figure``.
"""

from __future__ import annotations

import json
import math

import pytest
from matplotlib.ticker import MaxNLocator

RL_KEYS = ("rlhf/score", "rlhf/kl", "rlhf/beta", "rlhf/response_len")


def _integer_ticks(ax) -> bool:
    """Whether the x axis uses an integer MaxNLocator and every tick it places is a whole number."""
    locator = ax.xaxis.get_major_locator()
    return isinstance(locator, MaxNLocator) and all(float(t).is_integer() for t in locator())


def _legend_labels(ax) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


def _progress_rows(n: int = 3) -> list[dict]:
    # Three iterations: matplotlib's default locator would put ticks at 1.25, 1.5, ...
    return [
        {"iteration": str(i), "timesteps": str(8 * i), **{k: str(0.1 * i + j) for j, k in enumerate(RL_KEYS)}}
        for i in range(1, n + 1)
    ]


# ----------------------------------------------------------------------------- numbers
def test_compare_summary_line_keeps_small_learning_rates():
    from scripts.compare_agents import display_number, summary_line

    line = summary_line(
        "grpo",
        {
            "learning_rate": 3e-5,
            "seconds": 12.34,
            "final_score": 0.123456,
            "held_out_kl": 1234.56789,
            "rollouts": 3,
            "zero": 0.0,
        },
    )
    assert line.startswith("[compare] grpo: ")
    shown = json.loads(line.removeprefix("[compare] grpo: "))
    assert "3e-05" in line and shown["learning_rate"] == 3e-5
    assert shown == {
        "learning_rate": 3e-5,
        "seconds": 12.34,
        "final_score": 0.123,
        "held_out_kl": 1234.568,
        "rollouts": 3,
        "zero": 0.0,
    }
    assert display_number(-0.000123456) == -0.000123
    assert math.isnan(display_number(float("nan")))


# ----------------------------------------------------------------------------- smoothing
def test_smooth_ema_is_debiased_and_skips_missing_values():
    from scripts.stages.report import smooth_ema

    assert smooth_ema([5.0, 5.0, 5.0]) == pytest.approx([5.0, 5.0, 5.0])  # no pull towards 0 at the start
    assert smooth_ema([1.0, 3.0], weight=0.0) == [1.0, 3.0]
    assert smooth_ema([0.0, 1.0], weight=0.5) == pytest.approx([0.0, 0.5 / 0.75])
    out = smooth_ema([float("nan"), 2.0, float("nan")])
    assert math.isnan(out[0]) and out[1:] == pytest.approx([2.0, 2.0])
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        smooth_ema([1.0], weight=1.0)


# ----------------------------------------------------------------------------- pipeline report
def test_rl_figure_draws_raw_and_smoothed_lines_on_integer_iterations():
    from scripts.stages.report import rl_figure, smooth_ema

    rows = _progress_rows()
    fig = rl_figure(rows)
    assert len(fig.axes) == 4
    for ax, key in zip(fig.axes, RL_KEYS):
        raw, smooth = ax.get_lines()
        assert list(raw.get_ydata()) == pytest.approx([float(r[key]) for r in rows])
        assert list(smooth.get_ydata()) == pytest.approx(smooth_ema([float(r[key]) for r in rows]))
        assert raw.get_alpha() < 1 and raw.get_linewidth() < smooth.get_linewidth()
        assert raw.get_color() == smooth.get_color()
        assert ax.get_xlabel() == "iteration (rollout)" and _integer_ticks(ax)
    assert "EMA" in fig._suptitle.get_text()


def test_score_histogram_counts_responses_not_prompts():
    from scripts.stages.report import scores_figure

    fig = scores_figure(
        {"sft": {"annotator_scores": [0.1, 0.2, 0.2, 0.9]}, "rl": {"annotator_scores": [0.5, 0.6, 0.7, 0.9]}}
    )
    (ax,) = fig.axes
    assert ax.get_ylabel() == "responses"
    assert _legend_labels(ax) == ["SFT (before RL)", "RL (after)"]


def test_step_axes_have_integer_ticks():
    from scripts.stages.report import reward_model_figure, sft_figure

    sft = sft_figure([{"step": str(s), "loss": str(2.0 / s)} for s in (1, 2, 3)])
    assert sft.axes[0].get_xlabel() == "step" and _integer_ticks(sft.axes[0])
    metrics = {"before": {"accuracy": 0.5}, "after": {"accuracy": 0.7}, "train": {"steps": 3}}
    rm = reward_model_figure([{"step": "1", "loss": "0.7"}, {"step": "3", "loss": "0.6"}], metrics)
    assert all(ax.get_xlabel() == "step" and _integer_ticks(ax) for ax in rm.axes)


def test_plot_rl_writes_the_png_from_the_run_folder(tmp_path):
    from scripts.run_dir import atomic_write_csv, stage_dir
    from scripts.stages.report import plot_rl

    assert plot_rl(tmp_path, tmp_path / "plots") is None  # no RL stage yet: no plot
    atomic_write_csv(stage_dir(tmp_path, "rl") / "progress.csv", _progress_rows())
    assert plot_rl(tmp_path, tmp_path / "plots") == "rl_training.png"
    assert (tmp_path / "plots" / "rl_training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- compare_agents and the course
def _check_two_agent_curves(fig, algos) -> None:
    assert len(fig.axes) == 2
    for ax in fig.axes:
        lines = ax.get_lines()
        assert len(lines) == 2 * len(algos)  # raw + smoothed per agent
        raws, smooths = lines[0::2], lines[1::2]
        assert all(r.get_alpha() < 1 and r.get_color() == s.get_color() for r, s in zip(raws, smooths))
        assert len({s.get_color() for s in smooths}) == len(algos)
        assert _legend_labels(ax) == list(algos)  # one entry per agent, not per line
        assert _integer_ticks(ax)
    left, right = ([s.get_color() for s in ax.get_lines()[1::2]] for ax in fig.axes)
    assert left == right  # the same agent has the same colour on both panels


def test_compare_agents_curves_are_smoothed_per_agent(tmp_path):
    from scripts.compare_agents import curves_figure, plot

    rows = [
        {"algo": algo, "timesteps": 8 * i, "rlhf/score": 0.1 * i + k, "rlhf/kl": 0.01 * i}
        for k, algo in enumerate(("rloo", "grpo"))
        for i in range(1, 4)
    ]
    fig = curves_figure(rows, "title")
    _check_two_agent_curves(fig, ("rloo", "grpo"))
    assert fig.axes[0].get_xlabel() == "generated tokens"
    plot(rows, tmp_path / "curves.png", "title")
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]


def test_course_curves_are_smoothed_per_algorithm(tmp_path):
    from course.scaffold import curves_figure, plot_curves

    rows = [
        {"algorithm": algo, "iteration": i, "score": 0.1 * i + k, "kl": 0.01 * i}
        for k, algo in enumerate(("rloo", "ppo"))
        for i in range(3)
    ]
    fig = curves_figure(rows)
    _check_two_agent_curves(fig, ("rloo", "ppo"))
    assert fig.axes[0].get_xlabel() == "iteration"
    assert plot_curves(rows, tmp_path / "c.png").stat().st_size > 1000


# ----------------------------------------------------------------------------- benchmark chart
def _bench(tps, rollout):
    return {"tokens_per_s": tps, "rollout_tokens_per_s": rollout}


def test_benchmark_chart_keeps_rollout_only_rates_off_the_whole_iteration_panel(tmp_path):
    from scripts.bench_report import bar_chart, throughput_figure

    def limits(generate_rate, tokens, seconds):  # generate, forward, forward+backward seconds
        return {
            "generate_tokens_per_s": generate_rate,
            "tokens_per_iteration": tokens,
            "generate_s": seconds[0],
            "forward_s": seconds[1],
            "forward_backward_s": seconds[2],
        }

    results = {
        2: {
            "naive": _bench(None, 5.0),
            "generic": _bench(20.0, 40.0),
            "rlhf_ppo": _bench(30.0, 60.0),
            "trl_grpo": _bench(10.0, 15.0),
            "limits": limits(100.0, 8, (0.5, 0.1, 0.3)),  # sum of the limits: 8 tokens in 1 s
        },
        8: {
            "naive": _bench(None, 5.0),
            "generic": _bench(None, 90.0),
            "rlhf_ppo": _bench(50.0, 80.0),
            "trl_grpo": _bench(25.0, 30.0),
            "limits": limits(200.0, 32, (1.0, 0.25, 0.5)),  # 32 tokens in 2 s
        },
    }
    whole, rollout = throughput_figure(results).axes
    assert "whole iteration" in whole.get_title() and "whole iteration" in whole.get_ylabel()
    assert "rollout only" in rollout.get_title() and "rollout only" in rollout.get_ylabel()
    # no rollout-only series; the limits as the rate of their sum for one iteration
    assert _legend_labels(whole) == ["generic SB3 PPO", "fast rlhf_ppo", "TRL GRPO", "sum of limits"]
    assert sorted(p.get_height() for p in whole.patches) == [8.0, 10.0, 16.0, 20.0, 25.0, 30.0, 50.0]
    assert _legend_labels(rollout) == [
        "naive: 1 env, no cache",
        "generic SB3 PPO",
        "fast rlhf_ppo",
        "TRL GRPO",
        "generate (limit)",
    ]
    assert sorted(p.get_height() for p in rollout.patches) == [
        5.0,
        5.0,
        15.0,
        30.0,
        40.0,
        60.0,
        80.0,
        90.0,
        100.0,
        200.0,
    ]
    colours = [
        {label: h.patches[0].get_facecolor() for h, label in zip(*ax.get_legend_handles_labels())}
        for ax in (whole, rollout)
    ]
    assert all(colours[0][k] == colours[1][k] for k in colours[0] if k in colours[1])  # same colour on both panels
    assert colours[0]["sum of limits"] == colours[1]["generate (limit)"]
    bar_chart(results, tmp_path / "tokens_per_s.png")
    assert (tmp_path / "tokens_per_s.png").stat().st_size > 1000
