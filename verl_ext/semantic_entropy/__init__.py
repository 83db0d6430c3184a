"""Offline semantic-entropy scoring (SENT's data level).

Pure functions (no Ray, no Hydra):

- ``cluster_answers(responses, *, unparseable="singleton") -> list[int]``
- ``semantic_entropy(cluster_ids, seq_logprobs=None) -> float`` (``entropy.py``, both readings of the weighted form)
- ``extract_answer(response) -> str | None``

The scoring job: ``python -m verl_ext.semantic_entropy`` or ``run.run_job(cfg)``, one file per purpose:
``config.py`` (``ScoringConfig``: every knob), ``rows.py`` (input rows), ``shards.py`` (shard planning, atomic writes,
settings fingerprint), ``job.py`` (scoring shards, merging), ``parallel.py`` (process and Ray launchers),
``run.py`` (``run_job``: one engine or several), ``summary.py`` (summary.json and the SE histogram), ``backends.py``
(vLLM in-process or an OpenAI-compatible server).
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
