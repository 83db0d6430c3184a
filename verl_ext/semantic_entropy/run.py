"""`run_job`: the scoring job on one engine (`job.ScoringJob`) or on several (`parallel`). It sits apart from both so
that neither imports the other's caller: `parallel` builds on `job`, and this module on the two."""

from __future__ import annotations

from typing import Any

from .config import ScoringConfig
from .job import JobResult, ScoringJob
from .parallel import run_data_parallel, run_ray_data_parallel

__all__ = ["run_job"]


def run_job(cfg: ScoringConfig | Any, backend=None) -> JobResult:
    """Run (or resume) the scoring job described by ``cfg``: a ``ScoringConfig``, or a Hydra ``DictConfig`` / plain
    nested mapping of its fields (validated into one; a misspelt key is an error naming it).

    ``data_parallel_size > 1`` (with ``world_size=1``): one engine per GPU group, launched by ``parallel.py``
    (``data_parallel_backend``), then merged here.
    """
    cfg = ScoringConfig.from_config(cfg)
    if not cfg.merge_only:
        cfg.model.check_paths(weights=cfg.backend == "vllm" and backend is None)
    if cfg.data_parallel_size > 1 and cfg.world_size == 1 and backend is None:
        return run_ray_data_parallel(cfg) if cfg.data_parallel_backend == "ray" else run_data_parallel(cfg)
    return ScoringJob(cfg, backend=backend).run()
