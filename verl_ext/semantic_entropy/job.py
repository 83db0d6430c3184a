"""The offline scoring job: verl parquet in, the same rows with ``extra_info.semantic_entropy`` (and companions) out.

Layout of ``output_dir``::

    shards/<file>-<chunk>.parquet        scored rows of one shard        (written atomically)
    shards/<file>-<chunk>.audit.parquet  per-sample audit of one shard   (optional, atomically)
    shards/<file>-<chunk>.done.json      bad rows of the shard; written last: the shard's completion marker
    scored.parquet                       all shards concatenated in input order
    audit.parquet, summary.json, se_hist.png

A shard is a contiguous block of ``shard_size`` rows of one input file. Re-running skips shards with a completion
marker; since each prompt's samples use their own seed (``sampling.seed`` + the row's position), a shard that is
re-done after a kill produces exactly what the uninterrupted run would have produced.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .backends import SamplingSettings, build_backend, load_tokenizer, render_chat
from .clustering import MathVerifyPool, cluster_prompts
from .entropy import semantic_entropy

log = logging.getLogger("verl_ext.semantic_entropy")

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
FLAVOURS = ("discrete", "weighted")


class BadInputError(ValueError):
    """A bad input row or file; the message names the file and the row."""


@dataclass
class Shard:
    file_index: int
    path: str
    start: int
    stop: int

    @property
    def name(self) -> str:
        return f"{self.file_index:04d}-{self.start:012d}"


@dataclass
class JobResult:
    output_dir: str
    scored_path: str | None
    summary: dict[str, Any] = field(default_factory=dict)
    shards_done: int = 0
    shards_skipped: int = 0


# ---------------------------------------------------------------------------------------------------------- helpers
def _get(cfg: Any, dotted: str, default: Any = None) -> Any:
    cur = cfg
    for part in dotted.split("."):
        if cur is None:
            return default
        try:
            cur = cur[part] if part in cur else None
        except TypeError:
            cur = getattr(cur, part, None)
    return default if cur is None else cur


def _to_plain(obj: Any) -> Any:
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(obj, DictConfig | ListConfig):
            return OmegaConf.to_container(obj, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return obj


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


def _input_files(cfg) -> list[str]:
    files = _to_plain(_get(cfg, "input_files"))
    if files is None or files == "???":
        raise BadInputError("input_files is required (a parquet path or a list of them)")
    if isinstance(files, str):
        files = [files]
    return [str(f) for f in files]


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


def validate_row(row: dict, prompt_key: str) -> tuple[list[dict], str]:
    """(messages, ground_truth) of a verl-format row, or ValueError with the reason."""
    msgs = row.get(prompt_key)
    if msgs is None or (hasattr(msgs, "__len__") and len(msgs) == 0):
        raise ValueError(f"empty or missing prompt column {prompt_key!r}")
    if isinstance(msgs, str):
        msgs = [{"role": "user", "content": msgs}]
    msgs = list(msgs)
    for m in msgs:
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"prompt is not a list of chat messages ({{role, content}}): {str(m)[:80]!r}")
    if not any(isinstance(m.get("content"), str) and m["content"].strip() for m in msgs):
        raise ValueError("prompt has no non-empty message content")
    rm = row.get("reward_model")
    gt = rm.get("ground_truth") if isinstance(rm, dict) else None
    if gt is None or (isinstance(gt, str) and not gt.strip()):
        raise ValueError("missing reward_model.ground_truth")
    return msgs, str(gt)


def row_seed(base_seed: int, file_index: int, row_index: int) -> int:
    return (int(base_seed) * 1_000_003 + file_index * 1_000_000_007 + row_index) % (2**31 - 1)


# ------------------------------------------------------------------------------------------------------ the job
class ScoringJob:
    def __init__(self, cfg, backend=None):
        self.cfg = cfg
        self.out = Path(str(_get(cfg, "output_dir")))
        self.shard_dir = self.out / "shards"
        self.files = _input_files(cfg)
        self.shard_size = int(_get(cfg, "shard_size", 512))
        self.skip_bad_rows = bool(_get(cfg, "skip_bad_rows", False))
        self.prompt_key = str(_get(cfg, "prompt_key", "prompt"))
        self.flavour = str(_get(cfg, "entropy", "discrete"))
        if self.flavour not in FLAVOURS:
            raise ValueError(f"entropy must be one of {FLAVOURS}, got {self.flavour!r}")
        self.length_normalized = bool(_get(cfg, "length_normalized", False))
        self.unparseable = str(_get(cfg, "clustering.unparseable", "singleton"))
        self.answer_fallback = str(_get(cfg, "clustering.answer_fallback", "none"))
        self.world_size = int(_get(cfg, "world_size", 1))
        self.rank = int(_get(cfg, "rank", 0))
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank={self.rank} must be in [0, world_size={self.world_size})")
        self.sampling = SamplingSettings(
            n=int(_get(cfg, "sampling.n", 8)),
            temperature=float(_get(cfg, "sampling.temperature", 1.0)),
            top_p=float(_get(cfg, "sampling.top_p", 1.0)),
            top_k=int(_get(cfg, "sampling.top_k", -1)),
            max_tokens=int(_get(cfg, "sampling.max_tokens", 2048)),
            seed=int(_get(cfg, "sampling.seed", 0)),
        )
        self._backend = backend
        self._owns_backend = backend is None
        self._tokenizer = None
        self._pool: MathVerifyPool | None = None
        self._table_cache: tuple[str, pa.Table] | None = None

    # ------------------------------------------------------------------ lazily built heavy parts
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            path = _get(self.cfg, "model.tokenizer_path") or _get(self.cfg, "model.path")
            self._tokenizer = load_tokenizer(path, bool(_get(self.cfg, "model.trust_remote_code", False)))
        return self._tokenizer

    @property
    def backend(self):
        if self._backend is None:
            self._backend = build_backend(self.cfg, seed=self.sampling.seed)
        return self._backend

    @property
    def pool(self) -> MathVerifyPool:
        if self._pool is None:
            self._pool = MathVerifyPool(
                num_workers=int(_get(self.cfg, "clustering.num_workers", 2)),
                timeout_s=float(_get(self.cfg, "clustering.timeout_s", 5.0)),
            )
        return self._pool

    def render(self, messages: list[dict]) -> list[int]:
        """Chat-template rendering as verl's agent loop does it for training prompts."""
        return render_chat(self.tokenizer, messages, _to_plain(_get(self.cfg, "model.apply_chat_template_kwargs", {})))

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
                m, gt = validate_row(row, self.prompt_key)
                ids = self.render(m)
                if not ids:
                    raise ValueError("prompt renders to zero tokens")
            except Exception as e:  # noqa: BLE001
                msg = f"{shard.path}: row {row_index}: {e}"
                if not self.skip_bad_rows:
                    raise BadInputError(msg + " (set skip_bad_rows=true to skip and count bad rows)") from e
                bad.append({"file": shard.path, "row": row_index, "error": str(e)})
                continue
            good.append(k)
            msgs.append(ids)
            gts.append(gt)
        seeds = [row_seed(self.sampling.seed, shard.file_index, shard.start + k) for k in good]
        samples = self.backend.generate(msgs, self.sampling, seeds) if good else []
        delay = float(_get(self.cfg, "debug.sleep_after_generate_s", 0) or 0)
        if delay:
            time.sleep(delay)  # test hook: widens the window in which a kill lands mid-shard
        clusterings = cluster_prompts(
            [([s.text for s in ss], gt) for ss, gt in zip(samples, gts)], unparseable=self.unparseable, pool=self.pool,
            answer_fallback=self.answer_fallback,
        )
        stats, audit = [], []
        for k, ss, cl in zip(good, samples, clusterings):
            stats.append(self._prompt_stats(ss, cl))
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
        out = self._attach(table.take(pa.array(good, pa.int64())) if good else table.slice(0, 0), stats)
        base = self.shard_dir / shard.name
        if _get(self.cfg, "write_audit", True):
            atomic_write_table(base.with_suffix(".audit.parquet"), pa.Table.from_pylist(audit, schema=AUDIT_SCHEMA))
        atomic_write_table(base.with_suffix(".parquet"), out)
        meta = {"shard": shard.name, "file": shard.path, "start": shard.start, "stop": shard.stop, "scored": len(good), "bad_rows": bad}
        atomic_write_bytes(base.with_suffix(".done.json"), json.dumps(meta, indent=1).encode())
        return meta

    def _prompt_stats(self, samples, cl) -> dict:
        ids = cl.cluster_ids
        lps = [s.cum_logprob for s in samples]
        weighted = None
        if all(lp is not None for lp in lps):
            if self.length_normalized:
                lps = [lp / max(1, s.num_tokens) for lp, s in zip(lps, samples)]
            weighted = semantic_entropy(ids, lps)
        discrete = semantic_entropy(ids)
        if self.flavour == "weighted" and weighted is None:
            raise RuntimeError("entropy=weighted needs per-sample log-probs, which the backend did not return")
        # majority answer: the largest cluster of parseable answers (ties: first to appear)
        sizes: dict[int, int] = {}
        first: dict[int, int] = {}
        for j, (cid, bad) in enumerate(zip(ids, cl.unparseable)):
            if not bad:
                sizes[cid] = sizes.get(cid, 0) + 1
                first.setdefault(cid, j)
        majority = None
        if sizes:
            best = max(sizes, key=lambda c: (sizes[c], -first[c]))
            majority = cl.answers[first[best]]
        m = len(ids)
        return {
            "semantic_entropy": weighted if self.flavour == "weighted" else discrete,
            "se_flavour": self.flavour + ("_length_normalized" if self.flavour == "weighted" and self.length_normalized else ""),
            "se_discrete": discrete,
            "se_weighted": weighted,
            "se_num_clusters": len(set(ids)),
            "se_majority_answer": majority,
            "se_pass_rate": (sum(cl.correct) / m) if m else 0.0,
            "se_num_samples": m,
            "se_num_unparseable": int(sum(cl.unparseable)),
        }

    @staticmethod
    def _attach(table: pa.Table, stats: list[dict]) -> pa.Table:
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

    # ------------------------------------------------------------------ whole job
    def run(self) -> JobResult:
        t0 = time.time()
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.shard_dir.glob(".*.tmp"):  # leftovers of a killed run
            stale.unlink(missing_ok=True)
        self._check_fingerprint()
        shards, bad_files = plan_shards(self.files, self.shard_size, self.skip_bad_rows)
        mine = [s for i, s in enumerate(shards) if i % self.world_size == self.rank]
        todo = [s for s in mine if not (self.shard_dir / s.name).with_suffix(".done.json").exists()]
        result = JobResult(str(self.out), None, shards_skipped=len(mine) - len(todo))
        if result.shards_skipped:
            log.info("resuming: %d of %d shards already done", result.shards_skipped, len(mine))
        try:
            if todo:  # start the heavy parts before the progress bar so prompts/s measures scoring only
                _ = self.pool, self.tokenizer, self.backend
            from tqdm import tqdm

            bar = tqdm(total=sum(s.stop - s.start for s in todo), unit="prompt", disable=not _get(self.cfg, "progress", True))
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
        if self.rank == 0 or bool(_get(self.cfg, "merge_only", False)):
            result.scored_path, result.summary = self.merge(shards, bad_files, gen_wall, len(todo))
        return result

    def fingerprint(self) -> dict:
        """Everything that changes the scores; shards of one output_dir must all come from the same values."""
        return {
            "input_files": [os.path.abspath(f) for f in self.files],
            "model": str(_get(self.cfg, "model.path")),
            "tokenizer": str(_get(self.cfg, "model.tokenizer_path")),
            "apply_chat_template_kwargs": _to_plain(_get(self.cfg, "model.apply_chat_template_kwargs", {})) or {},
            "prompt_key": self.prompt_key,
            "sampling": vars(self.sampling),
            "unparseable": self.unparseable,
            "answer_fallback": self.answer_fallback,
            "entropy": self.flavour,
            "length_normalized": self.length_normalized,
            "shard_size": self.shard_size,
        }

    def _check_fingerprint(self) -> None:
        path = self.out / "job_fingerprint.json"
        mine = json.loads(json.dumps(self.fingerprint()))
        if path.exists():
            old = json.loads(path.read_text())
            diff = sorted(k for k in set(old) | set(mine) if old.get(k) != mine.get(k))
            if diff:
                raise BadInputError(
                    f"{self.out} holds shards scored with different settings ({', '.join(diff)}); use a new "
                    f"output_dir, or delete {path} and {self.shard_dir} to start over"
                )
        else:
            atomic_write_bytes(path, json.dumps(mine, indent=1).encode())

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
        summary = summarize(scored, bad_rows, bad_files, self.out / "se_hist.png", int(_get(self.cfg, "summary.histogram_bins", 20)))
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


def summarize(scored: pa.Table, bad_rows: list[dict], bad_files: list[dict], png: Path, bins: int = 20) -> dict:
    """Counts, SE percentiles, SE histogram (PNG) and the SE vs pass-rate correlation."""
    info = scored.column("extra_info").to_pylist() if scored.num_rows else []
    se = np.array([d["semantic_entropy"] for d in info], dtype=float)
    pr = np.array([d["se_pass_rate"] for d in info], dtype=float)
    summary: dict[str, Any] = {
        "rows_scored": int(scored.num_rows),
        "bad_rows": len(bad_rows),
        "bad_rows_first": bad_rows[:20],
        "bad_files": bad_files,
        "entropy_flavour": info[0]["se_flavour"] if info else None,
    }
    if len(se):
        qs = [0, 10, 25, 50, 75, 90, 100]
        summary["se_mean"] = float(se.mean())
        summary["se_percentiles"] = {f"p{q}": float(v) for q, v in zip(qs, np.percentile(se, qs))}
        summary["pass_rate_mean"] = float(pr.mean())
        summary["se_zero_fraction"] = float((se <= 1e-12).mean())
        summary["corr_se_pass_rate_pearson"] = _corr(se, pr)
        summary["corr_se_pass_rate_spearman"] = _corr(_rank(se), _rank(pr))
    _histogram(se, png, bins)
    summary["histogram_png"] = str(png)
    return summary


def _rank(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank)."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=float)
    xs = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0
        i = j + 1
    return ranks


def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return None  # undefined when either side is constant
    return float(np.corrcoef(a, b)[0, 1])


def _histogram(se: np.ndarray, png: Path, bins: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(se, bins=bins, color="#4477aa", edgecolor="white")
    ax.set_xlabel("semantic entropy (nats)")
    ax.set_ylabel("prompts")
    ax.set_title(f"Semantic entropy, {len(se)} prompts")
    fig.tight_layout()
    tmp = png.with_name("." + png.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, png)


def run_job(cfg, backend=None) -> JobResult:
    """Run (or resume) the scoring job described by ``cfg`` (a DictConfig or a plain dict).

    ``data_parallel_size > 1`` (with ``world_size=1``): launch one job process per GPU group on this node (see
    ``run_data_parallel``), then merge.
    """
    if int(_get(cfg, "data_parallel_size", 1)) > 1 and int(_get(cfg, "world_size", 1)) == 1 and backend is None:
        launcher = str(_get(cfg, "data_parallel_backend", "process"))
        if launcher == "ray":
            return run_ray_data_parallel(cfg)
        if launcher != "process":
            raise ValueError(f"data_parallel_backend must be 'process' or 'ray', got {launcher!r}")
        return run_data_parallel(cfg)
    return ScoringJob(cfg, backend=backend).run()


def _score_rank(child: dict) -> int:
    """One data-parallel rank (a Ray task): score this rank's shards; returns how many it scored."""
    return ScoringJob(child).run().shards_done


def run_ray_data_parallel(cfg) -> JobResult:
    """One engine per GPU group anywhere in a Ray cluster, across nodes: ``data_parallel_size`` Ray tasks, each
    holding ``vllm.tensor_parallel_size`` GPUs (Ray sets their ``CUDA_VISIBLE_DEVICES``) and scoring shards
    ``j % dp == i``; the driver merges. Connects to ``ray.address`` (``auto`` for a cluster started with
    ``ray start``) or starts a local Ray. ``output_dir`` must be on a filesystem every node sees; a failed rank
    loses nothing already scored (rerun to resume)."""
    import copy

    import ray

    plain = copy.deepcopy(_to_plain(cfg))
    dp = int(plain.get("data_parallel_size", 1))
    tp = int((plain.get("vllm") or {}).get("tensor_parallel_size") or 1)
    started = not ray.is_initialized()
    if started:
        ray.init(address=(plain.get("ray") or {}).get("address"), include_dashboard=False, log_to_driver=False)
    try:
        uses_gpus = plain.get("backend", "vllm") == "vllm" and ray.cluster_resources().get("GPU", 0) >= tp
        task = ray.remote(num_cpus=1, num_gpus=tp if uses_gpus else 0)(_score_rank)
        refs = [task.remote(dict(plain, data_parallel_size=1, world_size=dp, rank=i)) for i in range(dp)]
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
    return ScoringJob(dict(plain, data_parallel_size=1, world_size=1, rank=0)).run()  # all shards done: merge only


def run_data_parallel(cfg) -> JobResult:
    """One engine per GPU group on this node: ``data_parallel_size`` child processes, child ``i`` sees GPUs
    ``[i*tp, (i+1)*tp)`` of ``CUDA_VISIBLE_DEVICES`` (``tp = vllm.tensor_parallel_size``) and scores shards
    ``j % dp == i``; the parent merges. Across nodes use ``world_size``/``rank`` (e.g. a Slurm array) instead."""
    import copy
    import subprocess
    import sys

    plain = copy.deepcopy(_to_plain(cfg))
    dp = int(plain.get("data_parallel_size", 1))
    tp = int((plain.get("vllm") or {}).get("tensor_parallel_size") or 1)
    out = Path(str(plain["output_dir"]))
    (out / "logs").mkdir(parents=True, exist_ok=True)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = [g for g in visible.split(",") if g] if visible else [str(i) for i in range(dp * tp)]
    procs = []
    for i in range(dp):
        child = dict(plain, data_parallel_size=1, world_size=dp, rank=i)
        cfg_path = out / "logs" / f"rank{i}.json"
        atomic_write_bytes(cfg_path, json.dumps(child).encode())
        env = dict(os.environ)
        pkg_root = str(Path(__file__).resolve().parents[2])  # so the child imports this very package
        env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        group = gpus[i * tp : (i + 1) * tp]
        if len(group) == tp:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(group)
        log_f = open(out / "logs" / f"rank{i}.log", "wb")  # noqa: SIM115 - closed below
        procs.append((i, subprocess.Popen([sys.executable, "-m", "verl_ext.semantic_entropy.job", str(cfg_path)], env=env, stdout=log_f, stderr=subprocess.STDOUT), log_f))
    failed = []
    for i, p, log_f in procs:
        rc = p.wait()
        log_f.close()
        if rc != 0:
            tail = (out / "logs" / f"rank{i}.log").read_text(errors="replace")[-2000:]
            failed.append(f"rank {i} exited with {rc}; log tail:\n{tail}")
    if failed:
        raise RuntimeError("data-parallel scoring failed (finished shards are kept; rerun to resume):\n" + "\n".join(failed))
    return ScoringJob(dict(plain, data_parallel_size=1, world_size=1, rank=0)).run()  # all shards done: merge only


if __name__ == "__main__":  # child entry point of run_data_parallel
    import sys

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ScoringJob(json.loads(Path(sys.argv[1]).read_text())).run()
