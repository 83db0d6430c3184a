"""Uncertainty of the lab's numbers: a t-interval across seeds, a bootstrap over problems and seeds for held-out
accuracy, whether two intervals separate, and the first step a curve reaches a level. Pure numpy, no I/O (scipy is
not among the project's dependencies, so the t quantile is computed here)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # fixed: the same inputs give the same interval


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float | None  # None: no interval (one seed or one value)
    high: float | None
    n: int

    def format(self, spec: str = ".3f", scale: float = 1.0) -> str:
        """'0.512 [0.401, 0.623]'; one value: '0.512 (n=1, no interval)'."""
        mean = format(self.mean * scale, spec)
        if self.low is None or self.high is None:
            return f"{mean} (n={self.n}, no interval)"
        return f"{mean} [{format(self.low * scale, spec)}, {format(self.high * scale, spec)}]"


def seed_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval | None:
    """Mean and Student-t interval of per-seed values (None when there are none; no interval for one)."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if x.size == 0:
        return None
    mean = float(x.mean())
    if x.size == 1:
        return Interval(mean, None, None, 1)
    sem = float(x.std(ddof=1) / math.sqrt(x.size))
    if sem == 0.0:
        return Interval(mean, mean, mean, int(x.size))
    half = t_quantile(0.5 + confidence / 2, x.size - 1) * sem
    return Interval(mean, mean - half, mean + half, int(x.size))


def t_quantile(p: float, df: int) -> float:
    """Student t's p-quantile (p in (0.5, 1)): bisection on its CDF, the density integrated by Simpson's rule."""
    if not 0.5 < p < 1 or df < 1:
        raise ValueError(f"t_quantile needs 0.5 < p < 1 and df >= 1; got p={p}, df={df}")
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def upper_half(x: float) -> float:  # P(0 <= T <= x)
        grid = np.linspace(0.0, x, 4001)
        density = np.exp(log_norm - (df + 1) / 2 * np.log1p(grid ** 2 / df))
        h = x / 4000
        return float(h / 3 * (density[0] + density[-1] + 4 * density[1:-1:2].sum() + 2 * density[2:-1:2].sum()))

    low, high = 0.0, 1.0
    while upper_half(high) < p - 0.5:
        high *= 2
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if upper_half(mid) < p - 0.5 else (low, mid)
    return (low + high) / 2


def bootstrap_over_problems_and_seeds(scores: Sequence[Sequence[float]], confidence: float = CONFIDENCE,
                                      resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> Interval:
    """`scores[s][p]`: problem p's score (e.g. its pass@k estimate) under seed s, the same problems for every seed.
    Each resample draws the seeds with replacement and, independently, the problems with replacement (a two-level
    bootstrap: both the training seed and the finite held-out set vary); the interval is the percentile one of the
    resampled grand means. One seed: the problems alone are resampled."""
    x = np.asarray(scores, dtype=float)
    if x.ndim != 2 or x.size == 0:
        raise ValueError(f"scores must be a non-empty seeds x problems table; got shape {x.shape}")
    n_seeds, n_problems = x.shape
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, n_seeds, size=(resamples, n_seeds))
    problems = rng.integers(0, n_problems, size=(resamples, n_problems))
    means = x[seeds[:, :, None], problems[:, None, :]].mean(axis=(1, 2))
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return Interval(float(x.mean()), float(low), float(high), n_seeds)


def separated(a: Interval | None, b: Interval | None) -> bool | None:
    """True when the two intervals do not overlap, False when they do, None when either has no interval."""
    if a is None or b is None or None in (a.low, a.high, b.low, b.high):
        return None
    return a.low > b.high or b.low > a.high


def in_words(what: str, a: Interval | None, b: Interval | None, names: tuple[str, str]) -> str:
    """One clause on `what` of `names[0]` against `names[1]`: higher/lower beyond the intervals, or within noise."""
    if a is None or b is None:
        return f"{what}: not measured for both"
    verdict = separated(a, b)
    if verdict is None:
        return f"{what}: {a.mean:.3g} vs {b.mean:.3g}, one seed: no interval, cannot tell"
    if not verdict:
        return f"{what}: {a.mean:.3g} vs {b.mean:.3g}, within noise (the 95% intervals overlap)"
    side = "higher" if a.mean > b.mean else "lower"
    return f"{what}: {side} than {names[1]} ({a.mean:.3g} vs {b.mean:.3g}) beyond the 95% intervals"


def first_reaching(steps: Sequence[int], values: Sequence[float], target: float) -> int | None:
    """The first step whose value is >= `target` (None if none is)."""
    return next((step for step, value in zip(steps, values) if value >= target), None)
