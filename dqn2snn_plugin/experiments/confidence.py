"""95% confidence intervals of game scores: a mean, and the difference of two independent means (Welch).

Both intervals are Student-t intervals (for the demo's 20-odd games the normal 1.96 would be 5%
too narrow; for 100 games 1%). SciPy is not a dependency, so `t_quantile` inverts the t
distribution by numerical integration (numpy): it matches printed t tables at every df
(tests/test_confidence.py) and takes the fractional degrees of freedom of Welch's interval. A set of identical scores (a game that always ends 1.0) has a
zero-width interval; fewer than two scores have none (`low` and `high` are None).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

LEVEL = 0.95
METHOD = "Student t, 95%, two-sided; difference: Welch (unequal variances, Welch-Satterthwaite df)"


def t_quantile(p: float, df: float) -> float:
    """The p-quantile (p >= 0.5) of Student's t with `df` >= 1 degrees of freedom (the normal's for df = inf).

    With t = sqrt(df) tan(theta) the t density becomes c cos(theta)**(df - 1) on [0, pi/2), c =
    Gamma((df + 1) / 2) / (sqrt(pi) Gamma(df / 2)): a smooth bounded integrand whose running integral
    (trapezoids on a fine grid) is inverted by interpolation; exact to about 1e-6 at any df, fractional too."""
    if math.isinf(df):
        return NormalDist().inv_cdf(p)
    theta = np.linspace(0.0, math.pi / 2, 20001)
    density = np.cos(theta) ** (df - 1) * math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(math.pi)
    cdf = np.concatenate(([0.0], np.cumsum((density[1:] + density[:-1]) / 2 * np.diff(theta))))
    return math.sqrt(df) * math.tan(float(np.interp(p - 0.5, cdf, theta)))


@dataclass(frozen=True)
class Interval:
    """An estimate with its 95% interval [low, high] (None with fewer than two scores) and the t's df."""

    estimate: float
    low: float | None
    high: float | None
    df: float | None

    @classmethod
    def of(cls, estimate: float, standard_error: float, df: float | None) -> Interval:
        if df is None:
            return cls(estimate, None, None, None)
        half = t_quantile(0.5 + LEVEL / 2, df) * standard_error if standard_error > 0 else 0.0
        return cls(estimate, estimate - half, estimate + half, df)

    def contains(self, x: float) -> bool:
        return self.low is not None and self.low <= x <= self.high

    def to_json(self) -> dict:
        return asdict(self)


def _mean_and_variance(scores: Sequence[float]) -> tuple[float, float, int]:
    """(mean, sample variance (n - 1 in the denominator), n)."""
    n = len(scores)
    mean = math.fsum(scores) / n
    return mean, (math.fsum((x - mean) ** 2 for x in scores) / (n - 1) if n > 1 else 0.0), n


def mean_interval(scores: Sequence[float]) -> Interval:
    """The mean of `scores` with its Student-t 95% interval (n - 1 degrees of freedom)."""
    if not scores:
        raise ValueError("no scores")
    mean, variance, n = _mean_and_variance(scores)
    return Interval.of(mean, math.sqrt(variance / n), n - 1 if n > 1 else None)


def difference_interval(a: Sequence[float], b: Sequence[float]) -> Interval:
    """mean(a) - mean(b) with Welch's 95% interval (independent samples, unequal variances)."""
    if not a or not b:
        raise ValueError("no scores")
    (mean_a, var_a, n_a), (mean_b, var_b, n_b) = _mean_and_variance(a), _mean_and_variance(b)
    if n_a < 2 or n_b < 2:
        return Interval(mean_a - mean_b, None, None, None)
    u_a, u_b = var_a / n_a, var_b / n_b
    if u_a + u_b == 0:
        return Interval(mean_a - mean_b, mean_a - mean_b, mean_a - mean_b, math.inf)
    df = (u_a + u_b) ** 2 / (u_a ** 2 / (n_a - 1) + u_b ** 2 / (n_b - 1))
    return Interval.of(mean_a - mean_b, math.sqrt(u_a + u_b), df)


def indistinguishable(snn: Sequence[float], dqn: Sequence[float], tolerance: float = 0.05) -> bool:
    """The SNN keeps the DQN's score: the difference's 95% interval contains 0, or the mean difference
    is within `tolerance` (5%) of the DQN's mean score."""
    difference = difference_interval(snn, dqn)
    return difference.contains(0.0) or abs(difference.estimate) <= tolerance * abs(math.fsum(dqn) / len(dqn))
