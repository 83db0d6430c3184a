"""Several engines for one scoring job: child processes on this node, or Ray tasks across a cluster's nodes.

Both give rank ``i`` of ``data_parallel_size`` the shards ``j % dp == i`` (the ``world_size``/``rank`` split of
``ScoringJob``) and merge on the caller once all ranks are done. Each rank receives the typed ``ScoringConfig``
(with its ``world_size``/``rank`` filled in): pickled by Ray, or as JSON in ``output_dir/logs/rank<i>.json`` for a
child process (``python -m verl_ext.semantic_entropy.parallel <that file>``). A failed rank loses nothing already
scored: rerun to resume.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
from pathlib import Path

from .config import ScoringConfig
from .job import JobResult, ScoringJob
from .shards import atomic_write_bytes


def rank_config(cfg: ScoringConfig, rank: int) -> ScoringConfig:
    """What rank ``rank`` of ``cfg.data_parallel_size`` runs: the job as one of ``world_size`` ranks."""
    return dataclasses.replace(cfg, data_parallel_size=1, world_size=cfg.data_parallel_size, rank=rank)


def merge_config(cfg: ScoringConfig) -> ScoringConfig:
    """The job on one rank: every shard is done, so running it only merges."""
    return dataclasses.replace(cfg, data_parallel_size=1, world_size=1, rank=0)


def _score_rank(cfg: ScoringConfig) -> int:
    """One data-parallel rank (a Ray task): score this rank's shards; returns how many it scored."""
    return ScoringJob(cfg).run().shards_done


def run_ray_data_parallel(cfg: ScoringConfig) -> JobResult:
    """One engine per GPU group anywhere in a Ray cluster, across nodes: ``data_parallel_size`` Ray tasks, each
    holding ``vllm.tensor_parallel_size`` GPUs (Ray sets their ``CUDA_VISIBLE_DEVICES``) and scoring shards
    ``j % dp == i``; the driver merges. Connects to ``ray.address`` (``auto`` for a cluster started with
    ``ray start``) or starts a local Ray. ``output_dir`` must be on a filesystem every node sees."""
    import ray

    dp, tp = cfg.data_parallel_size, cfg.vllm.tensor_parallel_size
    started = not ray.is_initialized()
    if started:
        ray.init(address=cfg.ray.address, include_dashboard=False, log_to_driver=False)
    try:
        uses_gpus = cfg.backend == "vllm" and ray.cluster_resources().get("GPU", 0) >= tp
        task = ray.remote(num_cpus=1, num_gpus=tp if uses_gpus else 0)(_score_rank)
        refs = [task.remote(rank_config(cfg, i)) for i in range(dp)]
        failed = []
        for i, ref in enumerate(refs):
            try:
                ray.get(ref)
            except Exception as err:  # noqa: BLE001 - report every rank, then fail
                failed.append(f"rank {i}: {type(err).__name__}: {err}")
    finally:
        if started:
            ray.shutdown()
    if failed:
        raise RuntimeError("data-parallel scoring failed (finished shards are kept; rerun to resume):\n" + "\n".join(failed))
    return ScoringJob(merge_config(cfg)).run()


def run_data_parallel(cfg: ScoringConfig) -> JobResult:
    """One engine per GPU group on this node: ``data_parallel_size`` child processes, child ``i`` sees GPUs
    ``[i*tp, (i+1)*tp)`` of ``CUDA_VISIBLE_DEVICES`` (``tp = vllm.tensor_parallel_size``) and scores shards
    ``j % dp == i``; the parent merges. Across nodes use ``world_size``/``rank`` (e.g. a Slurm array) instead."""
    dp, tp = cfg.data_parallel_size, cfg.vllm.tensor_parallel_size
    logs = Path(cfg.output_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = [g for g in visible.split(",") if g] if visible else [str(i) for i in range(dp * tp)]
    procs = []
    for i in range(dp):
        cfg_path = logs / f"rank{i}.json"
        atomic_write_bytes(cfg_path, rank_config(cfg, i).to_json().encode())
        env = dict(os.environ)
        pkg_root = str(Path(__file__).resolve().parents[2])  # so the child imports this very package
        env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        group = gpus[i * tp : (i + 1) * tp]
        if len(group) == tp:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(group)
        log_f = open(logs / f"rank{i}.log", "wb")  # noqa: SIM115 - closed below
        cmd = [sys.executable, "-m", "verl_ext.semantic_entropy.parallel", str(cfg_path)]
        procs.append((i, subprocess.Popen(cmd, env=env, stdout=log_f, stderr=subprocess.STDOUT), log_f))
    failed = []
    for i, p, log_f in procs:
        rc = p.wait()
        log_f.close()
        if rc != 0:
            tail = (logs / f"rank{i}.log").read_text(errors="replace")[-2000:]
            failed.append(f"rank {i} exited with {rc}; log tail:\n{tail}")
    if failed:
        raise RuntimeError("data-parallel scoring failed (finished shards are kept; rerun to resume):\n" + "\n".join(failed))
    return ScoringJob(merge_config(cfg)).run()


if __name__ == "__main__":  # child entry point of run_data_parallel
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ScoringJob(ScoringConfig.from_json(Path(sys.argv[1]).read_text())).run()
