"""Intervals (textrlhf.stats): the t quantile against its tables, the bootstrap against what it must do."""

from __future__ import annotations

import numpy as np
import pytest

from textrlhf.stats import (
    Interval,
    bootstrap,
    bootstrap_mean,
    group_means,
    student_t_quantile,
    t_interval,
    win_indicators,
)


@pytest.mark.parametrize(
    "p, df, table",  # Student t tables (e.g. NIST/SEMATECH e-Handbook, table 1.3.6.7.2)
    [(0.975, 1, 12.706205), (0.975, 2, 4.302653), (0.975, 10, 2.228139), (0.95, 4, 2.131847), (0.995, 30, 2.749996)],
)
def test_t_quantile_matches_the_tables(p, df, table):
    assert student_t_quantile(p, df) == pytest.approx(table, abs=1e-5)


def test_t_interval_over_three_seeds():
    ci = t_interval([0.70, 0.75, 0.80])
    half = 4.302653 * 0.05 / np.sqrt(3)  # sd of (0.70, 0.75, 0.80) is 0.05
    assert (ci.estimate, ci.method) == (pytest.approx(0.75), "t")
    assert (ci.low, ci.high) == (pytest.approx(0.75 - half), pytest.approx(0.75 + half))
    assert t_interval([0.5, 0.5]).low == t_interval([0.5, 0.5]).high == 0.5
    with pytest.raises(ValueError, match="at least 2 seeds"):
        t_interval([0.7])


def test_bootstrap_mean_brackets_the_mean_and_narrows_with_more_data():
    rng = np.random.default_rng(1)
    small, large = rng.normal(0.3, 1.0, 50), rng.normal(0.3, 1.0, 800)
    a, b = bootstrap_mean(small), bootstrap_mean(large)
    assert a.low < a.estimate < a.high and a.estimate == pytest.approx(small.mean())
    assert (b.high - b.low) < 0.5 * (a.high - a.low)  # width ~ 1/sqrt(n): 4x the data, about half the width
    # the normal-theory half-width is 1.96 sd / sqrt(n); the percentile bootstrap agrees within 15%
    assert (a.high - a.low) / 2 == pytest.approx(1.96 * small.std() / np.sqrt(50), rel=0.15)
    assert bootstrap_mean(small, seed=3) == bootstrap_mean(small, seed=3)  # seeded, and the caller's RNG untouched


def test_groups_resample_whole_prompts():
    values = [1.0, 3.0, 5.0, 7.0, 0.0, 2.0]
    groups = [0, 0, 1, 1, 2, 2]  # three prompts, two samples each
    np.testing.assert_allclose(group_means(values, groups), [2.0, 6.0, 1.0])
    assert bootstrap_mean(values, groups, seed=0) == bootstrap_mean([2.0, 6.0, 1.0], seed=0)
    with pytest.raises(ValueError, match="one group id per value"):
        group_means(values, [0, 1])


def test_paired_statistic_draws_one_index_set():
    a = np.linspace(0, 1, 40)
    b = a - 0.1  # every pair differs by exactly 0.1: a paired interval has no width at all
    ci = bootstrap(lambda idx: float((a[idx] - b[idx]).mean()), len(a))
    assert (ci.low, ci.estimate, ci.high) == pytest.approx((0.1, 0.1, 0.1))
    assert ci.excludes(0.0) and not Interval(0.1, -0.2, 0.3).excludes(0.0)


def test_win_indicators_count_ties_half():
    np.testing.assert_array_equal(win_indicators([1, 0, 2], [0, 0, 3]), [1.0, 0.5, 0.0])
    with pytest.raises(ValueError, match="paired"):
        win_indicators([1, 2], [1])


@pytest.mark.parametrize("kwargs, match", [({"level": 1.0}, "level"), ({"n_resamples": 10}, "too few")])
def test_bootstrap_checks_its_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bootstrap_mean([1.0, 2.0, 3.0], **kwargs)
    with pytest.raises(ValueError, match="at least 2 units"):
        bootstrap_mean([1.0])
