"""Scoring-job overhead: wall time of the whole job (read, chat-template rendering, generation, answer extraction,
clustering, SE, atomic shard writes, merge, summary + PNG) vs a bare ``vllm.LLM.generate`` on the same prompts with
the same sampling settings (n, temperature, top_p, max_tokens, per-prompt seeds, logprobs=0), same engine instance.
Target: <= 1.1x. Uses a tiny random Qwen2 (vLLM-CPU here; any GPU model via --model).

    VLLM_CPU_KVCACHE_SPACE=1 python -m bench.bench_scoring_overhead [--prompts 64] [--n 8] [--max-tokens 256] [--write]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench.results import write_section
from verl_ext.tiny_model import build_tiny_model


def main(argv=None) -> str:
    p = argparse.ArgumentParser()
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model", default=None, help="HF model dir (default: a tiny random Qwen2 built on the fly)")
    p.add_argument("--write", action="store_true")
    a = p.parse_args(argv)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

    import pandas as pd
    from transformers import AutoTokenizer
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from verl_ext.semantic_entropy.backends import VLLMBackend
    from verl_ext.semantic_entropy.job import row_seed
    from verl_ext.semantic_entropy.run import run_job

    work = Path(tempfile.mkdtemp(prefix="bench_se_"))
    model = a.model
    if model is None:
        model = str(work / "tiny")
        build_tiny_model(Path(model))
    rows = [
        {
            "data_source": "math_dapo",
            "prompt": [{"role": "user", "content": f"Compute {i} * {i + 3} - {i}. End with 'Answer: <number>'."}],
            "ability": "MATH",
            "reward_model": {"style": "rule", "ground_truth": str(i * (i + 3) - i)},
            "extra_info": {"split": "train", "index": i},
        }
        for i in range(a.prompts)
    ]
    inp = work / "in.parquet"
    pd.DataFrame(rows).to_parquet(inp)

    engine = {"dtype": "float32", "enforce_eager": True, "max_model_len": 1024, "seed": 0}
    backend = VLLMBackend(model, engine_kwargs=engine)
    llm = backend.llm
    tok = AutoTokenizer.from_pretrained(model)
    ids = [
        tok.encode(tok.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False), add_special_tokens=False)
        for r in rows
    ]
    params = [
        SamplingParams(n=a.n, temperature=1.0, top_p=1.0, max_tokens=a.max_tokens, seed=row_seed(0, 0, i), logprobs=0)
        for i in range(a.prompts)
    ]
    llm.generate([TokensPrompt(prompt_token_ids=x) for x in ids[:4]], params[:4], use_tqdm=False)  # warm-up

    def raw() -> tuple[float, int]:
        t0 = time.perf_counter()
        outs = llm.generate([TokensPrompt(prompt_token_ids=x) for x in ids], params, use_tqdm=False)
        return time.perf_counter() - t0, sum(len(o.token_ids) for out in outs for o in out.outputs)

    def job(k: int) -> float:
        out = work / f"out{k}"
        cfg = {
            "input_files": [str(inp)], "output_dir": str(out), "model": {"path": model}, "backend": "vllm",
            "sampling": {"n": a.n, "max_tokens": a.max_tokens, "seed": 0, "temperature": 1.0, "top_p": 1.0},
            "clustering": {"num_workers": 1}, "shard_size": a.prompts, "progress": False,
        }
        t0 = time.perf_counter()
        run_job(cfg, backend=backend)
        return time.perf_counter() - t0

    t_raw, t_job, toks = [], [], 0
    for k in range(a.repeats):
        if k % 2 == 0:  # alternate the order so neither side always runs on a warmer machine
            t, toks = raw()
            t_raw.append(t)
            t_job.append(job(k))
        else:
            t_job.append(job(k))
            t, toks = raw()
            t_raw.append(t)
    r, j = statistics.median(t_raw), statistics.median(t_job)
    table = "\n".join(
        [
            f"Machine: {platform.machine()}, {os.cpu_count()} cores, vLLM-CPU; model: {'tiny random Qwen2 (0.35 M params)' if a.model is None else a.model}; "
            f"{a.prompts} prompts x n={a.n}, max_tokens={a.max_tokens} ({toks} generated tokens per run); "
            f"median of {a.repeats} alternating runs on one engine (engine start-up excluded from both).",
            "",
            "| What | Wall (s) | Ratio |",
            "|---|---|---|",
            f"| bare `LLM.generate` (same prompts, n, seeds, logprobs=0) | {r:.2f} | 1.00x |",
            f"| scoring job (`run_job`, one shard, 1 math-verify worker) | {j:.2f} | {j / r:.2f}x |",
        ]
    )
    print(table)
    if a.write:
        write_section("overhead", table)
    backend.close()
    shutil.rmtree(work, ignore_errors=True)
    return table


if __name__ == "__main__":
    main()
