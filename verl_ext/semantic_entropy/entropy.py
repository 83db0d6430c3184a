"""Semantic entropy (natural log) from cluster assignments, and the sample likelihoods of its weighted flavour.

Two readings of the weighted formula (Kuhn et al. 2023; Farquhar et al. 2024; SENT's definition of SE)::

    SE(x) = -sum_C p(C|x) log p(C|x),    p(C|x) = sum_{s in C} p(s|x) / sum_{s'} p(s'|x)

differ only in what ``p(s|x)`` of a sampled answer ``s`` is:

- **sequence likelihood** (the formula read literally): ``p(s|x) = prod_t p(s_t | s_<t, x)``, i.e. the exponential of
  the sum of token log-probs. Answers of different lengths then differ by many orders of magnitude (a chain of
  thought 100 tokens longer at -0.3 nats per token is e^-30 times less likely), so one short answer carries all the
  mass and SE is about 0 whatever the clusters look like (the demo measured 9e-13 for 5 clusters of 8 answers).
- **length-normalised likelihood** (Farquhar et al. 2024's reference implementation, github.com/jlko/
  semantic_uncertainty, ``compute_uncertainty_measures.py``: ``log_liks_agg = [np.mean(log_lik) for log_lik in
  log_liks]`` before ``logsumexp_by_id(..., agg="sum_normalized")`` and ``predictive_entropy_rao``): ``log p(s|x)`` = the mean token log-prob, i.e. the geometric mean of the token
  probabilities, so answers are compared per token and the length stops deciding.

``sample_log_likelihoods`` computes either reading; the scoring job's ``length_normalized`` (default true) picks one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def sample_log_likelihoods(
    cum_logprobs: Sequence[float | None], num_tokens: Sequence[int], *, length_normalized: bool
) -> list[float] | None:
    """``log p(s|x)`` of each sample for the weighted SE: the sequence log-prob (``length_normalized=False``) or the
    mean token log-prob (``True``; an empty sample counts as one token). None when a log-prob is missing."""
    if any(lp is None for lp in cum_logprobs):
        return None
    if not length_normalized:
        return [float(lp) for lp in cum_logprobs]
    return [float(lp) / max(1, int(n)) for lp, n in zip(cum_logprobs, num_tokens)]


def semantic_entropy(cluster_ids: Sequence[int], seq_logprobs: Sequence[float] | None = None) -> float:
    """Semantic entropy in nats.

    - ``seq_logprobs=None`` (discrete, the default): ``p_k = |C_k| / M``.
    - with ``seq_logprobs`` (likelihood-weighted, Kuhn et al.): a cluster's mass is the sum of its samples'
      likelihoods, ``log P(C_k) = logsumexp_{s in C_k} log p(s)``, normalised over the sample; computed in log
      space so long sequences (log-probs of -1e4) do not underflow. Which ``log p(s)`` to pass (sequence or mean token
      log-prob) is the choice the module docstring describes: see ``sample_log_likelihoods``.

    ``H = -sum_k p_k log p_k``. An empty sample has entropy 0.
    """
    ids = list(cluster_ids)
    if not ids:
        return 0.0
    if seq_logprobs is None:
        counts: dict[int, int] = {}
        for c in ids:
            counts[c] = counts.get(c, 0) + 1
        m = len(ids)
        return float(-sum((n / m) * math.log(n / m) for n in counts.values()))
    lps = [float(x) for x in seq_logprobs]
    if len(lps) != len(ids):
        raise ValueError(f"seq_logprobs has {len(lps)} entries for {len(ids)} cluster ids")
    if any(math.isnan(x) for x in lps):
        raise ValueError("seq_logprobs contains NaN")
    members: dict[int, list[float]] = {}
    for c, lp in zip(ids, lps):
        members.setdefault(c, []).append(lp)
    cluster_lp = [_logsumexp(v) for v in members.values()]
    total = _logsumexp(cluster_lp)
    if total == -math.inf:  # every sequence has probability 0: fall back to counts
        return semantic_entropy(ids)
    h = 0.0
    for lp in cluster_lp:
        logp = lp - total
        if logp > -math.inf:
            h -= math.exp(logp) * logp
    return float(max(h, 0.0))


def _logsumexp(values: Sequence[float]) -> float:
    mx = max(values)
    if mx == -math.inf:
        return -math.inf
    return mx + math.log(sum(math.exp(v - mx) for v in values))
