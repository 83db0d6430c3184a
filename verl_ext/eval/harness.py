"""The evaluation run: k samples per problem, verified by math-verify, pass@k / avg@k per benchmark.

Layout of `output_dir`::

    <benchmark>.json   per-problem results of one benchmark (written atomically; the unit of resume)
    results.json       every benchmark's metrics, response lengths and truncation share, plus the settings
    results.md         the paper-style tables (compare runs with `python -m verl_ext.eval.report a.json b.json`)
    pass_at_k.png      pass@k against k per benchmark

A benchmark whose `<benchmark>.json` exists with the same settings is not generated again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from verl_ext.eval.config import EvalConfig
from verl_ext.eval.metrics import benchmark_metrics
from verl_ext.eval.report import plot_pass_at_k, render_report
from verl_ext.semantic_entropy.backends import build_backend, load_tokenizer, render_chat
from verl_ext.semantic_entropy.clustering import MathVerifyPool, cluster_prompts
from verl_ext.semantic_entropy.rows import BadInputError, validate_row
from verl_ext.semantic_entropy.shards import atomic_write_bytes

log = logging.getLogger("verl_ext.eval")


@dataclass
class EvalSettings:
    """What makes two runs' results comparable; stored with every result and checked on resume."""

    model: str
    samples: int
    temperature: float
    top_p: float
    top_k: int
    max_tokens: int
    seed: int
    max_problems: int | None
    ks: list[int] = field(default_factory=list)
    answer_fallback: str = "none"

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


class EvalRun:
    def __init__(self, cfg: EvalConfig | Any, backend=None):
        """``cfg``: an ``EvalConfig``, or a Hydra ``DictConfig`` / nested mapping of its fields."""
        self.cfg = cfg = EvalConfig.from_config(cfg)
        self.run_name = cfg.run_name or Path(cfg.model.path).name
        self.out = Path(cfg.output_dir or Path("runs/eval") / self.run_name)
        self.benchmarks = list(cfg.benchmarks)
        self.settings = EvalSettings(
            model=cfg.model.path,
            samples=cfg.sampling.n,
            temperature=cfg.sampling.temperature,
            top_p=cfg.sampling.top_p,
            top_k=cfg.sampling.top_k,
            max_tokens=cfg.sampling.max_tokens,
            seed=cfg.sampling.seed,
            max_problems=cfg.max_problems,
            ks=list(cfg.ks),
            answer_fallback=cfg.verify.answer_fallback,
        )
        self._backend = backend
        self._owns_backend = backend is None
        self._tokenizer = None
        self._pool: MathVerifyPool | None = None

    # ------------------------------------------------------------------ inputs
    def benchmark_file(self, bench: str) -> Path:
        path = Path(self.cfg.files[bench]) if bench in self.cfg.files else Path(self.cfg.data_dir) / f"{bench}.parquet"
        if not path.exists():
            raise FileNotFoundError(
                f"benchmark {bench!r}: file {path} not found (prepare it with `python scripts/prepare_data.py`, "
                f"or point at it with files.{bench}=PATH)"
            )
        return path

    def load_problems(self, bench: str) -> list[tuple[list[dict], str]]:
        path = self.benchmark_file(bench)
        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as err:  # noqa: BLE001
            raise BadInputError(f"{path}: cannot read the file as parquet: {type(err).__name__}: {err}") from err
        if self.settings.max_problems is not None:
            rows = rows[: self.settings.max_problems]
        problems = []
        for index, row in enumerate(rows):
            try:
                problems.append(validate_row(row, self.cfg.prompt_key))
            except Exception as err:  # noqa: BLE001
                raise BadInputError(f"{path}: row {index}: {err}") from err
        if not problems:
            raise BadInputError(f"{path}: no problems")
        return problems

    # ------------------------------------------------------------------ heavy parts, built on first use
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.cfg.model.tokenizer, self.cfg.model.trust_remote_code)
        return self._tokenizer

    @property
    def backend(self):
        if self._backend is None:
            self._backend = build_backend(self.cfg, seed=self.settings.seed)
        return self._backend

    @property
    def pool(self) -> MathVerifyPool:
        if self._pool is None:
            self._pool = MathVerifyPool(num_workers=self.cfg.verify.num_workers, timeout_s=self.cfg.verify.timeout_s)
        return self._pool

    def render(self, messages: list[dict]) -> list[int]:
        return render_chat(self.tokenizer, messages, self.cfg.model.apply_chat_template_kwargs)

    # ------------------------------------------------------------------ one benchmark
    def evaluate(self, bench: str) -> dict[str, Any]:
        result_path = self.out / f"{bench}.json"
        if result_path.exists():
            done = json.loads(result_path.read_text())
            if done.get("fingerprint") == self.settings.fingerprint():
                log.info("%s: already evaluated with these settings (%s), skipping", bench, result_path)
                return done
            log.warning("%s: %s has other settings; evaluating again", bench, result_path)
        problems = self.load_problems(bench)
        started = time.time()
        prompts = [self.render(messages) for messages, _ in problems]
        seeds = [_problem_seed(self.settings.seed, bench, i) for i in range(len(problems))]
        samples = self.backend.generate(prompts, self.cfg.sampling, seeds)
        verdicts = cluster_prompts([([s.text for s in ss], gt) for ss, (_, gt) in zip(samples, problems)],
                                   pool=self.pool, answer_fallback=self.settings.answer_fallback)
        per_problem = [
            {
                "index": i,
                "ground_truth": gt,
                "answers": v.answers,
                "correct": [bool(c) for c in v.correct],
                "response_tokens": [s.num_tokens for s in ss],
            }
            for i, ((_, gt), ss, v) in enumerate(zip(problems, samples, verdicts))
        ]
        tokens = [n for p in per_problem for n in p["response_tokens"]]
        result = {
            "benchmark": bench,
            "file": str(self.benchmark_file(bench)),
            "fingerprint": self.settings.fingerprint(),
            "settings": asdict(self.settings),
            "num_problems": len(problems),
            "metrics": benchmark_metrics([p["correct"] for p in per_problem], self.settings.ks),
            "mean_response_tokens": sum(tokens) / len(tokens),
            "truncated_frac": sum(n >= self.settings.max_tokens for n in tokens) / len(tokens),
            "wall_s": round(time.time() - started, 3),
            "problems": per_problem,
        }
        atomic_write_bytes(result_path, json.dumps(result, indent=1).encode())
        return result

    # ------------------------------------------------------------------ whole run
    def run(self) -> Path:
        from tqdm import tqdm

        self.cfg.model.check_paths(weights=self.cfg.backend == "vllm" and self._owns_backend)
        self.out.mkdir(parents=True, exist_ok=True)
        for bench in self.benchmarks:  # fail before any generation when a file is missing
            self.benchmark_file(bench)
        results = {}
        try:
            bar = tqdm(self.benchmarks, unit="benchmark", disable=not self.cfg.progress)
            for bench in bar:
                bar.set_description(bench)
                result = self.evaluate(bench)
                results[bench] = {k: result[k] for k in ("num_problems", "metrics", "mean_response_tokens",
                                                         "truncated_frac", "file")}
                bar.write(f"{bench}: " + ", ".join(f"{k}={v:.2f}" for k, v in result["metrics"].items()))
        finally:
            self.close()
        summary = {"run": self.run_name, "settings": asdict(self.settings), "benchmarks": results}
        summary_path = self.out / "results.json"
        atomic_write_bytes(summary_path, json.dumps(summary, indent=1).encode())
        atomic_write_bytes(self.out / "results.md", render_report([summary_path], self.cfg.paper_column_names).encode())
        plot_pass_at_k([summary_path], self.out / "pass_at_k.png")
        return summary_path

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._owns_backend and self._backend is not None:
            self._backend.close()
            self._backend = None


def _problem_seed(base: int, bench: str, index: int) -> int:
    digest = hashlib.sha256(f"{base}/{bench}/{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF
