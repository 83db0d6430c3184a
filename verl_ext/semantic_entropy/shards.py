"""The scoring job's units of work on disk: shard planning, atomic writes, and the settings fingerprint.

A shard is a contiguous block of ``shard_size`` rows of one input file, named ``<file>-<first row>``. Every file of
``output_dir`` is written atomically (temporary file, fsync, rename), so a kill never leaves a half-written shard
that a resume would trust; ``job_fingerprint.json`` pins the settings every shard of one ``output_dir`` was scored
with.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .config import ScoringConfig
from .rows import BadInputError

log = logging.getLogger("verl_ext.semantic_entropy")


@dataclass
class Shard:
    file_index: int
    path: str
    start: int
    stop: int

    @property
    def name(self) -> str:
        return f"{self.file_index:04d}-{self.start:012d}"


def plan_shards(files: list[str], shard_size: int, skip_bad_rows: bool) -> tuple[list[Shard], list[dict]]:
    """All shards of all input files, in input order; unreadable files raise or are reported."""
    shards, bad_files = [], []
    for fi, path in enumerate(files):
        try:
            n = pq.ParquetFile(path).metadata.num_rows
        except Exception as e:  # noqa: BLE001
            msg = f"{path}: cannot read the file as parquet: {type(e).__name__}: {e}"
            if not skip_bad_rows:
                raise BadInputError(msg) from e
            log.warning("skipping unreadable file (skip_bad_rows=true): %s", msg)
            bad_files.append({"file": path, "error": msg})
            continue
        for start in range(0, n, shard_size):
            shards.append(Shard(fi, path, start, min(n, start + shard_size)))
    return shards, bad_files


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_table(path: Path, table: pa.Table) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


def fingerprint(cfg: ScoringConfig) -> dict:
    """Everything that changes the scores; shards of one output_dir must all come from the same values."""
    return {
        "input_files": [os.path.abspath(f) for f in cfg.input_files],
        "model": str(cfg.model.path),
        "tokenizer": str(cfg.model.tokenizer_path),
        "apply_chat_template_kwargs": dict(cfg.model.apply_chat_template_kwargs),
        "prompt_key": cfg.prompt_key,
        "sampling": vars(cfg.sampling),
        "unparseable": cfg.clustering.unparseable,
        "answer_fallback": cfg.clustering.answer_fallback,
        "entropy": cfg.entropy,
        "length_normalized": cfg.length_normalized,
        "shard_size": cfg.shard_size,
    }


def check_fingerprint(cfg: ScoringConfig) -> None:
    """Pin the settings on the first run; refuse to mix shards of other settings into ``output_dir`` later."""
    out = Path(cfg.output_dir)
    path = out / "job_fingerprint.json"
    mine = json.loads(json.dumps(fingerprint(cfg)))
    if path.exists():
        old = json.loads(path.read_text())
        diff = sorted(k for k in set(old) | set(mine) if old.get(k) != mine.get(k))
        if diff:
            raise BadInputError(
                f"{out} holds shards scored with different settings ({', '.join(diff)}); use a new "
                f"output_dir, or delete {path} and {out / 'shards'} to start over"
            )
    else:
        atomic_write_bytes(path, json.dumps(mine, indent=1).encode())
