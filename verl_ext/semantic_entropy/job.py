"""The offline scoring job: verl parquet in, the same rows with ``extra_info.semantic_entropy`` (and companions) out.

Layout of ``output_dir``::

    shards/<file>-<chunk>.parquet        scored rows of one shard        (written atomically)
    shards/<file>-<chunk>.audit.parquet  per-sample audit of one shard   (optional, atomically)
    shards/<file>-<chunk>.done.json      bad rows of the shard; written last: the shard's completion marker
    scored.parquet                       all shards concatenated in input order
    audit.parquet, summary.json, se_hist.png

Re-running skips shards with a completion marker (``shards.py``); since each prompt's samples use their own seed
(``sampling.seed`` + the row's position), a shard that is re-done after a kill produces exactly what the uninterrupted
run would have produced. Settings: ``ScoringConfig`` (``config.py``); several engines: ``parallel.py``; the summary
and histogram: ``summary.py``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .backends import build_backend, load_tokenizer, render_chat
from .clustering import MathVerifyPool, cluster_prompts
from .config import ScoringConfig
from .entropy import sample_log_likelihoods, semantic_entropy
from .rows import BadInputError, validate_row
from .shards import Shard, atomic_write_bytes, atomic_write_table, check_fingerprint, plan_shards
from .summary import summarize

log = logging.getLogger("verl_ext.semantic_entropy")

__all__ = ["BadInputError", "JobResult", "ScoringConfig", "ScoringJob", "prompt_stats", "row_seed"]

SE_FIELDS = [
    ("semantic_entropy", pa.float64()),
    ("se_flavour", pa.string()),
    ("se_discrete", pa.float64()),
    ("se_weighted", pa.float64()),
    ("se_num_clusters", pa.int64()),
    ("se_majority_answer", pa.string()),
    ("se_pass_rate", pa.float64()),
    ("se_num_samples", pa.int64()),
    ("se_num_unparseable", pa.int64()),
]

AUDIT_SCHEMA = pa.schema(
    [
        ("file_index", pa.int64()),
        ("row_index", pa.int64()),
        ("sample_index", pa.int64()),
        ("response", pa.string()),
        ("answer", pa.string()),
        ("cluster_id", pa.int64()),
        ("correct", pa.bool_()),
        ("cum_logprob", pa.float64()),
        ("num_tokens", pa.int64()),
    ]
)


@dataclass
class JobResult:
    output_dir: str
    scored_path: str | None
    summary: dict[str, Any] = field(default_factory=dict)
    shards_done: int = 0
    shards_skipped: int = 0


def row_seed(base_seed: int, file_index: int, row_index: int) -> int:
    return (int(base_seed) * 1_000_003 + file_index * 1_000_000_007 + row_index) % (2**31 - 1)


def prompt_stats(samples, clustering, cfg: ScoringConfig) -> dict:
    """The SE fields of one prompt from its samples and their clustering (``cluster_ids``, ``answers``, ``correct``,
    ``unparseable`` per sample). ``se_weighted`` uses the same sample likelihood as the weighted flavour
    (``cfg.length_normalized``), so the companion column means what ``se_flavour`` says the weighted flavour means."""
    ids = clustering.cluster_ids
    log_liks = sample_log_likelihoods(
        [s.cum_logprob for s in samples], [s.num_tokens for s in samples], length_normalized=cfg.length_normalized
    )
    weighted = semantic_entropy(ids, log_liks) if log_liks is not None else None
    discrete = semantic_entropy(ids)
    if cfg.entropy == "weighted" and weighted is None:
        raise RuntimeError("entropy=weighted needs per-sample log-probs, which the backend did not return")
    # majority answer: the largest cluster of parseable answers (ties: first to appear)
    sizes: dict[int, int] = {}
    first: dict[int, int] = {}
    for j, (cid, bad) in enumerate(zip(ids, clustering.unparseable)):
        if not bad:
            sizes[cid] = sizes.get(cid, 0) + 1
            first.setdefault(cid, j)
    majority = None
    if sizes:
        best = max(sizes, key=lambda c: (sizes[c], -first[c]))
        majority = clustering.answers[first[best]]
    m = len(ids)
    return {
        "semantic_entropy": weighted if cfg.entropy == "weighted" else discrete,
        "se_flavour": cfg.se_flavour,
        "se_discrete": discrete,
        "se_weighted": weighted,
        "se_num_clusters": len(set(ids)),
        "se_majority_answer": majority,
        "se_pass_rate": (sum(clustering.correct) / m) if m else 0.0,
        "se_num_samples": m,
        "se_num_unparseable": int(sum(clustering.unparseable)),
    }


def attach_se_fields(table: pa.Table, stats: list[dict]) -> pa.Table:
    """Input rows unchanged, with the SE fields added to (or replaced in) the ``extra_info`` struct."""
    new_names = {n for n, _ in SE_FIELDS}
    if "extra_info" in table.column_names:
        old_type = table.schema.field("extra_info").type
        old_fields = [f for f in old_type if f.name not in new_names] if pa.types.is_struct(old_type) else []
        old_vals = table.column("extra_info").to_pylist()
    else:
        old_fields, old_vals = [], [None] * table.num_rows
    st = pa.struct(old_fields + [pa.field(n, t) for n, t in SE_FIELDS])
    vals = []
    for old, s in zip(old_vals, stats):
        d = {f.name: (old or {}).get(f.name) for f in old_fields}
        d.update(s)
        vals.append(d)
    arr = pa.array(vals, type=st)
    if "extra_info" in table.column_names:
        return table.set_column(table.column_names.index("extra_info"), "extra_info", arr)
    return table.append_column("extra_info", arr)


class ScoringJob:
    """One process's part of the job (its rank's shards), and the merge on rank 0."""

    def __init__(self, cfg: ScoringConfig | Any, backend=None):
        self.cfg = ScoringConfig.from_config(cfg)
        self.out = Path(self.cfg.output_dir)
        self.shard_dir = self.out / "shards"
        self._backend = backend
        self._owns_backend = backend is None
        self._tokenizer = None
        self._pool: MathVerifyPool | None = None
        self._table_cache: tuple[str, pa.Table] | None = None

    # ------------------------------------------------------------------ lazily built heavy parts
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.cfg.model.tokenizer, self.cfg.model.trust_remote_code)
        return self._tokenizer

    @property
    def backend(self):
        if self._backend is None:
            self._backend = build_backend(self.cfg, seed=self.cfg.sampling.seed)
        return self._backend

    @property
    def pool(self) -> MathVerifyPool:
        if self._pool is None:
            self._pool = MathVerifyPool(num_workers=self.cfg.clustering.num_workers, timeout_s=self.cfg.clustering.timeout_s)
        return self._pool

    def render(self, messages: list[dict]) -> list[int]:
        """Chat-template rendering as verl's agent loop does it for training prompts."""
        return render_chat(self.tokenizer, messages, self.cfg.model.apply_chat_template_kwargs)

    def _read(self, path: str) -> pa.Table:
        if self._table_cache is None or self._table_cache[0] != path:
            try:
                self._table_cache = (path, pq.read_table(path))
            except Exception as e:  # noqa: BLE001
                raise BadInputError(f"{path}: cannot read the file as parquet: {type(e).__name__}: {e}") from e
        return self._table_cache[1]

    # ------------------------------------------------------------------ one shard
    def score_shard(self, shard: Shard) -> dict:
        table = self._read(shard.path).slice(shard.start, shard.stop - shard.start)
        rows = table.to_pylist()
        good, msgs, gts, bad = [], [], [], []
        for k, row in enumerate(rows):
            row_index = shard.start + k
            try:
                m, gt = validate_row(row, self.cfg.prompt_key)
                ids = self.render(m)
                if not ids:
                    raise ValueError("prompt renders to zero tokens")
            except Exception as e:  # noqa: BLE001
                msg = f"{shard.path}: row {row_index}: {e}"
                if not self.cfg.skip_bad_rows:
                    raise BadInputError(msg + " (set skip_bad_rows=true to skip and count bad rows)") from e
                bad.append({"file": shard.path, "row": row_index, "error": str(e)})
                continue
            good.append(k)
            msgs.append(ids)
            gts.append(gt)
        seeds = [row_seed(self.cfg.sampling.seed, shard.file_index, shard.start + k) for k in good]
        samples = self.backend.generate(msgs, self.cfg.sampling, seeds) if good else []
        clusterings = cluster_prompts(
            [([s.text for s in ss], gt) for ss, gt in zip(samples, gts)], unparseable=self.cfg.clustering.unparseable,
            pool=self.pool, answer_fallback=self.cfg.clustering.answer_fallback,
        )
        stats, audit = [], []
        for k, ss, cl in zip(good, samples, clusterings):
            stats.append(prompt_stats(ss, cl, self.cfg))
            for j, (s, cid) in enumerate(zip(ss, cl.cluster_ids)):
                audit.append(
                    {
                        "file_index": shard.file_index,
                        "row_index": shard.start + k,
                        "sample_index": j,
                        "response": s.text,
                        "answer": cl.answers[j],
                        "cluster_id": cid,
                        "correct": cl.correct[j],
                        "cum_logprob": s.cum_logprob,
                        "num_tokens": s.num_tokens,
                    }
                )
        out = attach_se_fields(table.take(pa.array(good, pa.int64())) if good else table.slice(0, 0), stats)
        base = self.shard_dir / shard.name
        if self.cfg.write_audit:
            atomic_write_table(base.with_suffix(".audit.parquet"), pa.Table.from_pylist(audit, schema=AUDIT_SCHEMA))
        atomic_write_table(base.with_suffix(".parquet"), out)
        meta = {"shard": shard.name, "file": shard.path, "start": shard.start, "stop": shard.stop, "scored": len(good), "bad_rows": bad}
        atomic_write_bytes(base.with_suffix(".done.json"), json.dumps(meta, indent=1).encode())
        return meta

    # ------------------------------------------------------------------ whole job
    def run(self) -> JobResult:
        t0 = time.time()
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.shard_dir.glob(".*.tmp"):  # leftovers of a killed run
            stale.unlink(missing_ok=True)
        check_fingerprint(self.cfg)
        shards, bad_files = plan_shards(self.cfg.input_files, self.cfg.shard_size, self.cfg.skip_bad_rows)
        mine = [s for i, s in enumerate(shards) if i % self.cfg.world_size == self.cfg.rank]
        todo = [s for s in mine if not (self.shard_dir / s.name).with_suffix(".done.json").exists()]
        result = JobResult(str(self.out), None, shards_skipped=len(mine) - len(todo))
        if result.shards_skipped:
            log.info("resuming: %d of %d shards already done", result.shards_skipped, len(mine))
        try:
            if todo:  # start the heavy parts before the progress bar so prompts/s measures scoring only
                _ = self.pool, self.tokenizer, self.backend
            from tqdm import tqdm

            bar = tqdm(total=sum(s.stop - s.start for s in todo), unit="prompt", disable=not self.cfg.progress)
            for s in todo:
                meta = self.score_shard(s)
                result.shards_done += 1
                bar.update(s.stop - s.start)
                if meta["bad_rows"]:
                    bar.write(f"shard {s.name}: skipped {len(meta['bad_rows'])} bad rows")
            bar.close()
        finally:
            self.close()
        gen_wall = time.time() - t0
        missing = [s.name for s in shards if not (self.shard_dir / s.name).with_suffix(".done.json").exists()]
        if missing:
            log.warning("%d shards (of other ranks) not finished yet; rerun with rank=0 (or merge_only=true) after they are", len(missing))
            return result
        if self.cfg.rank == 0 or self.cfg.merge_only:
            result.scored_path, result.summary = self.merge(shards, bad_files, gen_wall, len(todo))
        return result

    def merge(self, shards: list[Shard], bad_files: list[dict], wall_s: float, n_scored_now: int):
        tables, audits, bad_rows = [], [], []
        for s in shards:
            base = self.shard_dir / s.name
            meta = json.loads(base.with_suffix(".done.json").read_text())
            bad_rows.extend(meta["bad_rows"])
            tables.append(pq.read_table(base.with_suffix(".parquet")))
            if base.with_suffix(".audit.parquet").exists():
                audits.append(pq.read_table(base.with_suffix(".audit.parquet")))
        scored = pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})
        scored_path = self.out / "scored.parquet"
        atomic_write_table(scored_path, scored)
        if audits:
            atomic_write_table(self.out / "audit.parquet", pa.concat_tables(audits))
        summary = summarize(scored, bad_rows, bad_files, self.out / "se_hist.png", self.cfg.summary.histogram_bins,
                            self.cfg.summary.stages)
        summary["se_weighted_length_normalized"] = self.cfg.length_normalized  # what se_weighted means, any flavour
        summary["wall_s_this_run"] = round(wall_s, 3)
        summary["shards"] = len(shards)
        summary["shards_scored_this_run"] = n_scored_now
        summary["math_verify_timeouts_this_run"] = self._pool.timeouts if self._pool else 0
        atomic_write_bytes(self.out / "summary.json", json.dumps(summary, indent=1).encode())
        return str(scored_path), summary

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        if self._owns_backend and self._backend is not None:
            self._backend.close()
            self._backend = None
