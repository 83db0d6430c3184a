"""verl_ext/stats.py on inputs with known answers: the t-interval across seeds, the bootstrap over problems and
seeds, the separation verdict and its words, and the first step a curve reaches a level."""

from __future__ import annotations

import pytest

from verl_ext.stats import Interval, bootstrap_over_problems_and_seeds, first_reaching, in_words, seed_interval, \
    separated, t_quantile

T_975_DF2 = 4.302652729911275  # Student t quantile 0.975, 2 degrees of freedom
T_975_DF1 = 12.706204736174707


@pytest.mark.parametrize("values, expected", [
    ([1.0, 2.0, 3.0], (2.0, 2.0 - T_975_DF2 / 3 ** 0.5, 2.0 + T_975_DF2 / 3 ** 0.5, 3)),
    ([0.0, 1.0], (0.5, 0.5 - T_975_DF1 * 0.5, 0.5 + T_975_DF1 * 0.5, 2)),
    ([2.0, 2.0, 2.0], (2.0, 2.0, 2.0, 3)),
    ([5.0], (5.0, None, None, 1)),
    ([5.0, None, float("nan")], (5.0, None, None, 1)),
])
def test_seed_interval(values, expected):
    got = seed_interval(values)
    assert (got.mean, got.low, got.high, got.n) == pytest.approx(expected) if expected[1] is not None else \
        (got.mean, got.low, got.high, got.n) == expected


@pytest.mark.parametrize("p, df, quantile", [  # published Student t table values
    (0.975, 1, T_975_DF1), (0.975, 2, T_975_DF2), (0.975, 4, 2.7764451051977987), (0.975, 30, 2.0422724563012373),
    (0.95, 10, 1.8124611228107335), (0.975, 1000, 1.9623390808264078),
])
def test_t_quantile(p, df, quantile):
    assert t_quantile(p, df) == pytest.approx(quantile, rel=1e-5)


def test_seed_interval_of_nothing_is_none():
    assert seed_interval([]) is None


@pytest.mark.parametrize("interval, spec, scale, text", [
    (Interval(0.5, 0.25, 0.75, 3), ".3f", 1.0, "0.500 [0.250, 0.750]"),
    (Interval(0.5, 0.25, 0.75, 3), ".1f", 100.0, "50.0 [25.0, 75.0]"),
    (Interval(0.5, None, None, 1), ".2f", 1.0, "0.50 (n=1, no interval)"),
])
def test_interval_format(interval, spec, scale, text):
    assert interval.format(spec, scale) == text


def test_bootstrap_of_a_constant_table_is_that_constant():
    got = bootstrap_over_problems_and_seeds([[0.3] * 50] * 3)
    assert (got.mean, got.low, got.high, got.n) == pytest.approx((0.3, 0.3, 0.3, 3))


def test_bootstrap_over_problems_matches_the_normal_approximation():
    # one seed, 400 problems half solved: the mean's standard error is sqrt(0.25 / 400) = 0.025
    got = bootstrap_over_problems_and_seeds([[1.0, 0.0] * 200])
    assert got.mean == 0.5 and got.n == 1
    assert got.low == pytest.approx(0.5 - 1.96 * 0.025, abs=0.008)
    assert got.high == pytest.approx(0.5 + 1.96 * 0.025, abs=0.008)


def test_bootstrap_resamples_seeds_too():
    # two seeds, one solves everything, the other nothing: a seed resample gives 0, 0.5 or 1 (each problem resample
    # of a constant row is that constant), so the 95% interval spans [0, 1]
    got = bootstrap_over_problems_and_seeds([[1.0] * 100, [0.0] * 100])
    assert (got.mean, got.low, got.high) == (0.5, 0.0, 1.0)


def test_bootstrap_is_deterministic_and_checks_its_input():
    table = [[0.0, 1.0, 1.0, 0.0, 1.0], [1.0, 1.0, 0.0, 0.0, 1.0]]
    assert bootstrap_over_problems_and_seeds(table) == bootstrap_over_problems_and_seeds(table)
    with pytest.raises(ValueError, match="seeds x problems"):
        bootstrap_over_problems_and_seeds([1.0, 0.0])


@pytest.mark.parametrize("a, b, verdict", [
    (Interval(1.0, 0.9, 1.1, 3), Interval(0.5, 0.4, 0.6, 3), True),
    (Interval(0.5, 0.4, 0.6, 3), Interval(1.0, 0.9, 1.1, 3), True),
    (Interval(1.0, 0.7, 1.1, 3), Interval(0.6, 0.4, 0.75, 3), False),
    (Interval(1.0, None, None, 1), Interval(0.5, None, None, 1), None),
    (None, Interval(0.5, 0.4, 0.6, 3), None),
])
def test_separated(a, b, verdict):
    assert separated(a, b) is verdict


def test_in_words():
    names = ("sent", "grpo")
    assert in_words("reward", Interval(1.0, 0.9, 1.1, 3), Interval(0.5, 0.4, 0.6, 3), names) == \
        "reward: higher than grpo (1 vs 0.5) beyond the 95% intervals"
    assert "lower than grpo" in in_words("x", Interval(0.5, 0.4, 0.6, 3), Interval(1.0, 0.9, 1.1, 3), names)
    assert "within noise" in in_words("x", Interval(1.0, 0.7, 1.1, 3), Interval(0.6, 0.4, 0.75, 3), names)
    assert "cannot tell" in in_words("x", Interval(1.0, None, None, 1), Interval(0.5, None, None, 1), names)
    assert in_words("x", None, Interval(0.5, 0.4, 0.6, 3), names) == "x: not measured for both"


@pytest.mark.parametrize("values, target, step", [
    ([0.1, 0.3, 0.5, 0.4], 0.5, 3),
    ([0.1, 0.3, 0.5, 0.4], 0.3, 2),
    ([0.1, 0.3, 0.5, 0.4], 0.6, None),
    ([0.7], 0.5, 1),
])
def test_first_reaching(values, target, step):
    assert first_reaching(list(range(1, len(values) + 1)), values, target) == step
