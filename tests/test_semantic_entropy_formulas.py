"""Semantic entropy formulas (natural log): discrete from counts, likelihood-weighted from sequence log-probs."""

from __future__ import annotations

import math

import pytest

from verl_ext.semantic_entropy import semantic_entropy


def test_discrete():
    assert semantic_entropy([0, 0, 0, 0]) == 0.0
    assert semantic_entropy([0, 1]) == pytest.approx(math.log(2))
    assert semantic_entropy(list(range(8))) == pytest.approx(math.log(8))
    # counts 4, 2, 1, 1 of 8
    p = [0.5, 0.25, 0.125, 0.125]
    assert semantic_entropy([0, 0, 0, 0, 1, 1, 2, 3]) == pytest.approx(-sum(x * math.log(x) for x in p))
    # ids are labels only
    assert semantic_entropy([7, 7, 3]) == semantic_entropy([0, 0, 1])
    assert semantic_entropy([]) == 0.0


def test_weighted_matches_definition():
    ids = [0, 0, 1, 2]
    lps = [math.log(0.1), math.log(0.2), math.log(0.3), math.log(0.4)]
    mass = [0.3, 0.3, 0.4]
    z = sum(mass)
    expected = -sum((m / z) * math.log(m / z) for m in mass)
    assert semantic_entropy(ids, lps) == pytest.approx(expected)


def test_weighted_equal_probs_equals_discrete():
    ids = [0, 0, 1, 2, 2, 2]
    assert semantic_entropy(ids, [-3.0] * 6) == pytest.approx(semantic_entropy(ids))


def test_weighted_no_underflow_for_long_sequences():
    # sequence log-probs of long chains of thought: exp() underflows to 0 without log-space arithmetic
    ids = [0, 1]
    h = semantic_entropy(ids, [-5000.0, -5000.0])
    assert h == pytest.approx(math.log(2))
    assert semantic_entropy(ids, [-5000.0, -9000.0]) == pytest.approx(0.0, abs=1e-12)
    assert semantic_entropy([0, 1], [float("-inf"), float("-inf")]) == pytest.approx(math.log(2))  # falls back


def test_weighted_bad_input():
    with pytest.raises(ValueError):
        semantic_entropy([0, 1], [-1.0])
    with pytest.raises(ValueError):
        semantic_entropy([0, 1], [-1.0, float("nan")])


def test_bounds():
    for m in (2, 4, 8, 16):
        assert 0.0 <= semantic_entropy([i % 3 for i in range(m)]) <= math.log(m) + 1e-12


def test_two_readings_of_the_weighted_formula_differ_on_answers_of_different_lengths():
    """Two clusters, every token at -0.5 nats: a 10-token answer and a 100-token one. Per token they are equally
    likely, so the length-normalised reading (Farquhar et al. 2024's code) gives log 2; read literally, the sequence
    probabilities differ by e^45 and the short answer takes all the mass (SE ~ 0)."""
    from verl_ext.semantic_entropy.entropy import sample_log_likelihoods

    ids, cum, tokens = [0, 1], [-5.0, -50.0], [10, 100]
    per_token = sample_log_likelihoods(cum, tokens, length_normalized=True)
    sequence = sample_log_likelihoods(cum, tokens, length_normalized=False)
    assert per_token == [-0.5, -0.5] and sequence == [-5.0, -50.0]
    assert semantic_entropy(ids, per_token) == pytest.approx(math.log(2))
    assert semantic_entropy(ids, sequence) < 1e-16  # e^-45 * 46 nats
    # with equal lengths the readings agree up to the 1/length scale of the log-probs
    assert semantic_entropy([0, 1], sample_log_likelihoods([-3.0, -3.0], [6, 6], length_normalized=True)) == \
        pytest.approx(semantic_entropy([0, 1], [-3.0, -3.0]))
    assert sample_log_likelihoods([-1.0, None], [1, 1], length_normalized=True) is None  # no log-probs: no weighted SE
    assert sample_log_likelihoods([-2.0], [0], length_normalized=True) == [-2.0]  # an empty answer counts as one token
