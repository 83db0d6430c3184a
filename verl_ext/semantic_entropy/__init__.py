"""Offline semantic-entropy scoring (SENT's data level).

Pure functions (no Ray, no Hydra):

- ``cluster_answers(responses, *, unparseable="singleton") -> list[int]``
- ``semantic_entropy(cluster_ids, seq_logprobs=None) -> float``
- ``extract_answer(response) -> str | None``

The scoring job: ``python -m verl_ext.semantic_entropy`` (config ``configs/score_semantic_entropy.yaml``).
"""

from .answers import extract_answer, normalize_key
from .clustering import MathVerifyPool, cluster_answers, cluster_prompts
from .entropy import semantic_entropy

__all__ = [
    "MathVerifyPool",
    "cluster_answers",
    "cluster_prompts",
    "extract_answer",
    "normalize_key",
    "semantic_entropy",
]
