"""Semantic entropy (natural log) from cluster assignments (pure function)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def semantic_entropy(cluster_ids: Sequence[int], seq_logprobs: Sequence[float] | None = None) -> float:
    """Semantic entropy in nats.

    - ``seq_logprobs=None`` (discrete, the default): ``p_k = |C_k| / M``.
    - with ``seq_logprobs`` (likelihood-weighted, Kuhn et al.): a cluster's mass is the sum of its sequences'
      probabilities, ``log P(C_k) = logsumexp_{o in C_k} log p(o)``, normalised over the sample; computed in log
      space so long sequences (log-probs of -1e4) do not underflow.

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
