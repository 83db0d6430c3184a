"""Semantic entropy of a training step's rollout groups (the n answers sampled for each prompt), the paper's
data-level uncertainty measured as training goes, with no extra generation.

The answers are clustered by the scoring job's own code path (``clustering.cluster_prompts``: the same answer
extraction, buckets and symmetric math-verify equivalence, in a ``MathVerifyPool`` with its per-call deadline) and
each group's discrete semantic entropy (``entropy.semantic_entropy``: cluster shares of the n answers) is summarised:

- ``mean``, ``p50``: mean and median over the step's groups, in nats;
- ``agree_frac``: share of groups whose answers all fall in one cluster (SE = 0; a group with an unparseable answer
  agrees only under ``unparseable="shared"`` with every answer unparseable).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from .clustering import MathVerifyPool, cluster_prompts
from .entropy import semantic_entropy


def group_responses(uids: Sequence[str], responses: Sequence[str]) -> list[list[str]]:
    """The responses of each prompt (same ``uid``), groups in order of first appearance."""
    if len(uids) != len(responses):
        raise ValueError(f"{len(uids)} uids for {len(responses)} responses")
    groups: dict[str, list[str]] = {}
    for uid, response in zip(uids, responses):
        groups.setdefault(uid, []).append(response)
    return list(groups.values())


def group_entropies(groups: Sequence[Sequence[str]], *, pool: MathVerifyPool | None = None,
                    unparseable: str = "singleton", answer_fallback: str = "none") -> list[tuple[float, bool]]:
    """(semantic entropy in nats, all answers in one cluster) per group."""
    clusterings = cluster_prompts([(list(group), None) for group in groups], unparseable=unparseable, pool=pool,
                                  answer_fallback=answer_fallback)
    return [(semantic_entropy(c.cluster_ids), len(set(c.cluster_ids)) == 1) for c in clusterings]


def summarize(per_group: Sequence[tuple[float, bool]]) -> dict[str, float]:
    """``mean``, ``p50`` and ``agree_frac`` of ``group_entropies``' output (the module docstring); empty for none."""
    if not per_group:
        return {}
    entropies = [se for se, _ in per_group]
    return {"mean": statistics.fmean(entropies), "p50": statistics.median(entropies),
            "agree_frac": sum(agree for _, agree in per_group) / len(per_group)}


def rollout_se_stats(groups: Sequence[Sequence[str]], *, pool: MathVerifyPool | None = None,
                     unparseable: str = "singleton", answer_fallback: str = "none") -> dict[str, float]:
    """``summarize`` of the non-empty groups' semantic entropies."""
    groups = [group for group in groups if len(group) > 0]
    if not groups:
        return {}
    return summarize(group_entropies(groups, pool=pool, unparseable=unparseable, answer_fallback=answer_fallback))
