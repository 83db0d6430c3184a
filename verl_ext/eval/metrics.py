"""Evaluation metrics: unbiased pass@k (Chen et al. 2021, "Evaluating Large Language Models Trained on Code")
and avg@k, per problem and per benchmark."""

from __future__ import annotations

from collections.abc import Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of P(at least one of k samples is correct) from n samples of which c are correct:
    1 - C(n - c, k) / C(n, k), computed as a stable product (no huge binomials)."""
    for name, value in (("n", n), ("c", c), ("k", k)):
        if int(value) != value:
            raise ValueError(f"pass_at_k: {name} must be an integer, got {value!r}")
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def avg_at_k(correct: Sequence[bool], k: int) -> float:
    """Mean accuracy of the first k samples of one problem (what running with n = k reports as avg@k)."""
    if not 1 <= k <= len(correct):
        raise ValueError(f"avg_at_k: need 1 <= k <= {len(correct)} samples, got k={k}")
    return sum(bool(x) for x in correct[:k]) / k


def benchmark_metrics(per_problem_correct: Sequence[Sequence[bool]], ks: Sequence[int]) -> dict[str, float]:
    """`pass@k` and `avg@k` in percent, averaged over problems, for every k not above the sample count."""
    if not per_problem_correct:
        raise ValueError("benchmark_metrics: no problems")
    n = min(len(c) for c in per_problem_correct)
    out: dict[str, float] = {}
    for k in ks:
        if k > n:
            continue
        out[f"pass@{k}"] = 100.0 * sum(pass_at_k(n, sum(map(bool, c[:n])), k) for c in per_problem_correct) / len(
            per_problem_correct
        )
        out[f"avg@{k}"] = 100.0 * sum(avg_at_k(c, k) for c in per_problem_correct) / len(per_problem_correct)
    return out
