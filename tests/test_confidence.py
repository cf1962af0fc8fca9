"""95% intervals: the t quantile against printed tables, a mean's and Welch's interval by hand."""

from __future__ import annotations

import math

import pytest

from dqn2snn_plugin.experiments.confidence import (
    Interval, difference_interval, indistinguishable, mean_interval, t_quantile,
)


@pytest.mark.parametrize("df, table", [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (5, 2.571), (10, 2.228),
                                       (19, 2.093), (29, 2.045), (99, 1.984), (198, 1.972)])
def test_the_t_quantile_matches_the_printed_table(df, table):
    assert t_quantile(0.975, df) == pytest.approx(table, abs=1e-3)


def test_the_t_quantile_matches_closed_forms():
    # df = 1 is Cauchy: tan(pi (p - 1/2)); df = 2: (2p - 1) / sqrt(2 p (1 - p))
    for p in (0.6, 0.9, 0.975, 0.995):
        assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-5)
        assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-5)


def test_infinite_degrees_of_freedom_give_the_normal_quantile():
    assert t_quantile(0.975, math.inf) == pytest.approx(1.959964, abs=1e-6)


def test_a_mean_interval_by_hand():
    # scores 1..5: mean 3, sample variance 2.5, standard error sqrt(0.5), t(0.975, 4) = 2.776
    interval = mean_interval([1, 2, 3, 4, 5])
    half = 2.7764 * math.sqrt(0.5)  # 1.9633
    assert (interval.estimate, interval.df) == (3.0, 4)
    assert (interval.low, interval.high) == pytest.approx((3 - half, 3 + half), abs=1e-3)


def test_welch_interval_by_hand():
    # a = 1..5 (mean 3, var 2.5), b = 0,0,0,4 (mean 1, var 4): u_a = 0.5, u_b = 1, se = sqrt(1.5)
    # df = 1.5^2 / (0.5^2/4 + 1^2/3) = 2.25 / 0.395833 = 5.6842; t(0.975, 5.684) = 2.4802 (between
    # the tables' 2.571 at 5 and 2.447 at 6; SciPy's ttest_ind(equal_var=False) gives [-1.0377, 5.0377])
    interval = difference_interval([1, 2, 3, 4, 5], [0, 0, 0, 4])
    assert interval.estimate == 2.0 and interval.df == pytest.approx(5.6842, abs=1e-4)
    half = 2.4802 * math.sqrt(1.5)  # 3.0376
    assert (interval.low, interval.high) == pytest.approx((2 - half, 2 + half), abs=2e-3)
    assert interval.contains(0.0) and not interval.contains(5.1)


def test_equal_samples_give_a_zero_width_interval_and_one_score_gives_none():
    assert difference_interval([1.0] * 5, [1.0] * 7) == Interval(0.0, 0.0, 0.0, math.inf)
    assert mean_interval([2.0, 2.0]) == Interval(2.0, 2.0, 2.0, 1)
    assert mean_interval([2.0]) == Interval(2.0, None, None, None)
    assert not difference_interval([2.0], [1.0, 3.0]).contains(1.0)
    with pytest.raises(ValueError):
        mean_interval([])


def test_indistinguishable_is_an_interval_around_zero_or_within_five_percent():
    dqn = [100.0, 102.0] * 50  # mean 101, tight
    assert indistinguishable([99.0, 103.0] * 50, dqn)  # same mean: the interval holds 0
    assert indistinguishable([97.0, 98.0] * 50, dqn)  # 3.5 below, outside the interval but within 5%
    assert not indistinguishable([90.0, 91.0] * 50, dqn)  # 10.5 below: neither
