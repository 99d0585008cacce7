"""Confidence intervals for the project's evaluation numbers: bootstrap over prompts, Student t over seeds.

Two sources of noise decide whether a difference is real (docs/design.md section 9):

* **which prompts were held out**: a win rate measured on 100 prompts would move on another 100. The
  nonparametric bootstrap (Efron & Tibshirani 1993) resamples the prompts with replacement and reads the
  2.5th and 97.5th percentiles of the statistic over the resamples (the percentile interval). Several samples
  of one prompt are not independent, so the prompt is the unit that is resampled (``groups``), and two
  policies answered the same prompts, so their difference is resampled as pairs (one index draw for both).
* **which seed trained the policy**: with 3 seeds a bootstrap over seeds has only 10 distinct resamples and
  is too narrow; :func:`t_interval` gives the Student t interval of the mean over seeds instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_RESAMPLES = 2000
"""Bootstrap resamples: enough for the 2.5th / 97.5th percentiles to move by less than ~0.005 on a win rate."""


@dataclass(frozen=True)
class Interval:
    """A point estimate with its two-sided confidence interval."""

    estimate: float
    low: float
    high: float
    level: float = 0.95
    method: str = "bootstrap"
    """``"bootstrap"`` (percentile, resampling prompts) or ``"t"`` (Student t over seeds)."""

    def excludes(self, value: float = 0.0) -> bool:
        """Whether ``value`` lies outside the interval (a difference "significant" at this level)."""
        return value < self.low or value > self.high

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict (``metrics.json``'s ``intervals``)."""
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}]"


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1), got {level!r}; 0.95 gives a 95% interval")


def group_means(values: Sequence[float], groups: Sequence[int] | None = None) -> np.ndarray:
    """The mean of ``values`` within each group, in order of first appearance (no groups: the values).

    With the same number of samples in every group, the mean of the group means is the mean of the values.
    """
    x = np.asarray(values, dtype=np.float64)
    if groups is None:
        return x
    g = np.asarray(groups)
    if g.shape != x.shape:
        raise ValueError(f"groups has shape {g.shape}, values {x.shape}: give one group id per value")
    ids, first = np.unique(g, return_index=True)
    order = ids[np.argsort(first)]
    return np.array([x[g == i].mean() for i in order])


def bootstrap(
    statistic: Callable[[np.ndarray], float],
    n_units: int,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap interval of ``statistic(indices)`` over ``n_units`` resampled units.

    Args:
        statistic: maps an index array ``(n_units,)`` of units drawn with replacement to a number; called
            once with ``arange(n_units)`` for the estimate. Resampling indices, not values, lets paired
            statistics (two policies on the same prompts) draw one set of indices for both.
        n_units: how many units (prompts) there are.
        n_resamples: bootstrap resamples.
        level: confidence level.
        seed: seed of the resampling (its own generator: the caller's random state is untouched).

    Raises:
        ValueError: fewer than 2 units, fewer than 100 resamples or a level outside (0, 1).
    """
    _check_level(level)
    if n_units < 2:
        raise ValueError(f"a bootstrap needs at least 2 units (prompts), got {n_units}")
    if n_resamples < 100:
        raise ValueError(f"n_resamples={n_resamples} is too few for 95% percentiles; use at least 100 (default 2000)")
    rng = np.random.default_rng(seed)
    estimate = float(statistic(np.arange(n_units)))
    draws = np.array([statistic(rng.integers(0, n_units, n_units)) for _ in range(n_resamples)], dtype=np.float64)
    if not (np.isfinite(estimate) and np.isfinite(draws).all()):
        raise ValueError("the statistic is not finite on some resample: bootstrap only finite scores")
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(draws, [alpha, 1.0 - alpha])
    return Interval(estimate, float(low), float(high), level, "bootstrap")


def bootstrap_mean(values: Sequence[float], groups: Sequence[int] | None = None, **kwargs) -> Interval:
    """Bootstrap interval of the mean of ``values``, resampling whole groups (prompts) when given.

    ``kwargs`` are :func:`bootstrap`'s (``n_resamples``, ``level``, ``seed``).
    """
    per_unit = group_means(values, groups)
    return bootstrap(lambda idx: per_unit[idx].mean(), len(per_unit), **kwargs)


def win_indicators(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    """1 where ``a`` beats ``b``, 0.5 on a tie, 0 otherwise: the terms whose mean is the win rate."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"a win rate compares paired scores; got shapes {x.shape} and {y.shape}")
    return (x > y) + 0.5 * (x == y)


def t_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """Student t interval of the mean of independent values (one per seed): ``mean +- t * sd / sqrt(n)``.

    Raises:
        ValueError: fewer than 2 values (no spread to estimate) or a level outside (0, 1).
    """
    _check_level(level)
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        raise ValueError(f"an interval over seeds needs at least 2 seeds, got {x.size}")
    mean, half = float(x.mean()), 0.0
    sd = float(x.std(ddof=1))
    if sd > 0:
        half = student_t_quantile(0.5 + level / 2.0, x.size - 1) * sd / math.sqrt(x.size)
    return Interval(mean, mean - half, mean + half, level, "t")


def student_t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom, for ``p`` in [0.5, 0.995].

    Bisection on the CDF, itself Simpson's rule on the density (no SciPy dependency for one number);
    within 1e-5 of the tables up to p = 0.995, that is intervals up to 99% (tests/textrlhf/test_stats.py).
    Further in the tail the uniform grid loses accuracy, so such levels are refused.
    """
    if not 0.5 <= p <= 0.995 or df < 1:
        raise ValueError(f"need 0.5 <= p <= 0.995 (intervals up to 99%) and df >= 1, got p={p!r}, df={df!r}")
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf_above_half(x: float) -> float:  # P(0 <= T <= x), Simpson on a fine grid
        ts = np.linspace(0.0, x, 4001)
        dens = np.exp(log_norm - (df + 1) / 2 * np.log1p(ts**2 / df))
        h = x / 4000
        return float(h / 3 * (dens[0] + dens[-1] + 4 * dens[1:-1:2].sum() + 2 * dens[2:-1:2].sum()))

    low, high = 0.0, 1.0
    while cdf_above_half(high) < p - 0.5:
        high *= 2.0
    for _ in range(60):
        mid = (low + high) / 2.0
        low, high = (mid, high) if cdf_above_half(mid) < p - 0.5 else (low, mid)
    return (low + high) / 2.0
