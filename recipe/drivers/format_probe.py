"""p(`{` | `\\boxed`): whether a toy model still opens its boxed answer, teacher-forced on a fixed set of contexts.

    python -m recipe.drivers.format_probe <run dir | checkpoints dir | .../global_step_N/actor | HF folder> ...
        [--json out.json] [--per-level 72] [--seed 0]
    python -m recipe.drivers.format_probe --screen <run> ... [--json screen.json]   # one row a run (`screen`)

Issue 28, section 3. A toy lab run (docs/lab/toy/lr5e-4/, `kl_cov` seed 2) ended writing ``\\boxed232}`` for
``\\boxed{33}``: after the ``\\boxed`` token its final model put 0.0003 on ``{``. This module measures that probability
on any model of the toy reasoner, per checkpoint of a run, so that one can see when a run loses the token.

The contexts (`contexts`) are fixed and need no sampling: the lab's held-out problems (`toy_task.split_rows` with the
lab's defaults: `LabConfig.toy_heldout_per_level` = 72 a level at k = 2..8, data seed 0, 504 problems), each as the
rollout sees it (the model's chat template around the question, `add_generation_prompt`) followed by the toy task's
own reference solution (`toy_task.solution`: the right partial sums) cut right after ``\\boxed``. So every context is
a well-formed response up to the box, and the next token should be ``{``. The probability is read from one forward
pass per context (fp32, CPU, transformers; prompt and response tokenized apart, as verl's rollout builds them).

A run folder's checkpoints (`<run>/checkpoints/global_step_N/actor`, verl's FSDP shards) are merged one at a time
into a temporary Hugging Face folder by `recipe.drivers.hf_merge` (verl's merger at the trained dtype, the merge the
lab evaluates), which `recipe.drivers.merge_check` shows equal to the actor that saved it. Per model: the mean, the
median, the minimum and the share of contexts with p < 0.5 (`LOW`), and per level the mean; for a run folder also
each step's train reward (`critic/score/mean` of its `metrics.jsonl`) and, where the run dumped its rollouts
(`trainer.rollout_data_dir` = `<run>/rollouts`), the share of that step's responses whose first ``\\boxed`` is not
followed by ``{``.

The mean is pulled by a few contexts: the initial model puts 0.9999 on ``{`` by median but 0.95 by mean at the
untrained level 8 (0.035 at its lowest context), and the committed `kl_cov` seed 2 model 0.008 by median, 0.059 by
mean.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

BOX = "\\boxed"
BRACE = "{"
LOW = 0.5  # a context "lost" the brace when p({) is below this
# the screen's threshold, fixed before it ran (docs/lab/toy/lr5e-4/format_probe/screen_plan.md): the initial model
# writes no readable answer in 0.25-0.4% of held-out answers, the committed lab's drifted runs 3.6% to all but all
DRIFT = 0.02
SCREEN_AFTER = 2  # rollouts of steps 1-2 are left out: one malformed answer there is a dip the runs recovered from
STEP_DIR = re.compile(r"^global_step_(\d+)$")


@dataclass(frozen=True)
class Context:
    """One probe context: a held-out toy problem and its reference solution cut right after ``\\boxed``."""

    level: int
    question: str
    prefix: str  # the response up to and including \boxed


def lab_heldout_per_level() -> int:
    """The lab's held-out problems per level (`LabConfig.toy_heldout_per_level`'s default), named once there."""
    from recipe.drivers.lab_config import LabConfig

    return LabConfig.__dataclass_fields__["toy_heldout_per_level"].default


def lab_train_per_level() -> int:
    from recipe.drivers.lab_config import LabConfig

    return LabConfig.__dataclass_fields__["toy_train_per_level"].default


def solution_prefix(numbers: tuple[int, ...]) -> str:
    """The toy task's reference solution of `numbers` cut right after its (only) ``\\boxed``."""
    from verl_ext import toy_task

    text = toy_task.solution(numbers)
    if text.count(BOX) != 1 or BOX + BRACE not in text:
        raise ValueError(f"the reference solution of {numbers} has no single well-formed box: {text!r}")
    return text[: text.index(BOX) + len(BOX)]


def contexts(per_level: int | None = None, seed: int = 0) -> list[Context]:
    """The lab's held-out toy problems (`toy_task.split_rows(..., seed)`, `per_level` at every level of
    `toy_task.LEVELS`; default the lab's), in the split's order, each with its solution prefix."""
    from verl_ext import toy_task

    per_level = lab_heldout_per_level() if per_level is None else per_level
    _, held_out = toy_task.split_rows({level: lab_train_per_level() for level in toy_task.TRAIN_LEVELS},
                                      {level: per_level for level in toy_task.LEVELS}, seed=seed)
    out = []
    for row in held_out:
        question = row["prompt"][0]["content"]
        out.append(Context(row["extra_info"]["level"], question, solution_prefix(toy_task.numbers_of(question))))
    return out


def encode(tokenizer, context: Context) -> list[int]:
    """The token ids of `context` as a rollout holds them: the chat-templated prompt (generation prompt added), then
    the response prefix tokenized on its own; it must end in the ``\\boxed`` token, which ``{`` follows as a token of
    its own (checked: the prefix and ``{`` tokenized together give the same ids plus ``{``'s)."""
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": context.question}],
                                           add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(context.prefix, add_special_tokens=False)["input_ids"]
    with_brace = tokenizer(context.prefix + BRACE, add_special_tokens=False)["input_ids"]
    if with_brace != response_ids + [brace_id(tokenizer)]:
        raise ValueError(f"{BRACE!r} after {context.prefix[-12:]!r} is not one token of its own for this tokenizer")
    return prompt_ids + response_ids


def brace_id(tokenizer) -> int:
    ids = tokenizer(BRACE, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"{BRACE!r} is {len(ids)} tokens for this tokenizer")
    return ids[0]


def brace_probabilities(model, tokenizer, items: list[Context], batch_size: int = 64) -> list[float]:
    """p(``{`` | context) for each context: one fp32 forward, right-padded batches, the next-token distribution at
    each context's last token."""
    import torch

    target = brace_id(tokenizer)
    sequences = [encode(tokenizer, item) for item in items]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[float] = []
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        with torch.no_grad():
            for start in range(0, len(sequences), batch_size):
                batch = sequences[start:start + batch_size]
                width = max(map(len, batch))
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, seq in enumerate(batch):
                    ids[row, :len(seq)] = torch.tensor(seq)
                    mask[row, :len(seq)] = 1
                logits = model(input_ids=ids, attention_mask=mask).logits.float()
                last = torch.tensor([len(seq) - 1 for seq in batch])
                probs = torch.softmax(logits[torch.arange(len(batch)), last], dim=-1)[:, target]
                out.extend(probs.tolist())
    finally:
        torch.set_float32_matmul_precision(precision)
    return out


def summarise(probs: list[float], items: list[Context]) -> dict:
    """mean, median, min, the share below LOW, the count, and the mean per level."""
    import statistics

    levels: dict[int, list[float]] = {}
    for p, item in zip(probs, items):
        levels.setdefault(item.level, []).append(p)
    return {"mean": sum(probs) / len(probs), "median": statistics.median(probs), "min": min(probs),
            "share_below_0.5": sum(p < LOW for p in probs) / len(probs), "n": len(probs),
            "mean_by_level": {str(level): sum(ps) / len(ps) for level, ps in sorted(levels.items())}}


def probe_hf(folder: Path, items: list[Context]) -> dict:
    """The summary of a Hugging Face folder (its weights loaded in fp32, its own tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="sdpa")
    model.eval()
    return summarise(brace_probabilities(model, AutoTokenizer.from_pretrained(folder), items), items)


def probe_actor(actor: Path, items: list[Context]) -> dict:
    """The summary of an actor checkpoint, merged into a temporary folder by `hf_merge` (the merge the lab evaluates)."""
    from recipe.drivers.hf_merge import merge

    with tempfile.TemporaryDirectory(prefix="format-probe-") as tmp:
        with contextlib.redirect_stdout(sys.stderr):  # verl's merger prints its progress
            return probe_hf(merge(actor, Path(tmp) / "hf"), items)


# ------------------------------------------------------------------------------------------------ inputs
def checkpoint_steps(checkpoints: Path) -> list[tuple[int, Path]]:
    """(step, actor folder) of every `global_step_N/actor` under `checkpoints`, by step."""
    found = []
    for path in Path(checkpoints).iterdir() if Path(checkpoints).is_dir() else []:
        match = STEP_DIR.match(path.name)
        if match and (path / "actor" / "fsdp_config.json").is_file():
            found.append((int(match.group(1)), path / "actor"))
    return sorted(found)


def resolve(path: Path) -> tuple[str, Path | None, list[tuple[int | None, Path]]]:
    """(kind, run folder or None, [(step, model path)]) of a CLI argument: an HF folder (config.json), an actor
    checkpoint (fsdp_config.json), a checkpoints folder (global_step_N/) or a run folder (checkpoints/ in it)."""
    path = Path(path)
    if (path / "fsdp_config.json").is_file():
        match = STEP_DIR.match(path.parent.name)
        return "actor", None, [(int(match.group(1)) if match else None, path)]
    if (path / "config.json").is_file():
        return "hf", None, [(None, path)]
    if checkpoint_steps(path):
        return "checkpoints", path.parent, list(checkpoint_steps(path))
    if checkpoint_steps(path / "checkpoints"):
        return "run", path, list(checkpoint_steps(path / "checkpoints"))
    raise FileNotFoundError(f"{path}: neither a Hugging Face folder, an actor checkpoint, nor a run or checkpoints "
                            "folder with global_step_N/actor in it")


def train_rewards(run: Path | None) -> dict[int, float]:
    """step -> critic/score/mean of the run's metrics.jsonl (the last line of a step wins: a resumed run's redo)."""
    if run is None or not (run / "metrics.jsonl").is_file():
        return {}
    from recipe.drivers.same_run import logged_steps

    return {step: data["critic/score/mean"] for step, data in logged_steps(run / "metrics.jsonl").items()
            if "critic/score/mean" in data}


def malformed_share(run: Path | None, step: int | None) -> float | None:
    """The share of step `step`'s dumped responses (`<run>/rollouts/<step>.jsonl`) that write ``\\boxed`` not followed
    by ``{`` (of those that write ``\\boxed`` at all); None without a dump."""
    if run is None or step is None:
        return None
    path = run / "rollouts" / f"{step}.jsonl"
    if not path.is_file():
        return None
    boxed = [row["output"] for row in map(json.loads, filter(str.strip, path.read_text().splitlines()))
             if BOX in row["output"]]
    if not boxed:
        return None
    return sum(not text[text.index(BOX) + len(BOX):].startswith(BRACE) for text in boxed) / len(boxed)


def probe(paths: list[Path], per_level: int | None = None, seed: int = 0, log=print) -> dict:
    """Every model of `paths` (see `resolve`) on the same contexts; the JSON document the CLI writes."""
    items = contexts(per_level, seed)
    models = []
    for path in paths:
        kind, run, entries = resolve(path)
        rewards = train_rewards(run)
        for step, model in entries:
            summary = probe_hf(model, items) if kind == "hf" else probe_actor(model, items)
            row = {"path": str(path), "kind": kind, "step": step, **summary}
            if step in rewards:
                row["train_reward"] = rewards[step]
            share = malformed_share(run, step)
            if share is not None:
                row["rollouts_malformed_box"] = share
            models.append(row)
            log(format_row(row))
    levels = sorted({item.level for item in items})
    return {"what": f"p({BRACE!r} | context ending in {BOX!r}), teacher-forced, fp32: the toy lab's held-out problems "
                    "(toy_task.split_rows, data seed %d, %d a level at k = %s) in the chat template, each followed by "
                    "its reference solution (toy_task.solution) cut right after \\boxed" % (
                        seed, len(items) // len(levels), ",".join(map(str, levels))),
            "contexts": len(items), "low": LOW, "models": models}


def screen(run: Path, probe_last: bool = True, items: list[Context] | None = None) -> dict:
    """One run of the lenient-grader screen (`--screen`): the share of its final model's held-out answers with no
    readable final answer (`heldout.format_failures` of `<run>/eval`), the malformed-box share of each dumped step's
    rollouts (`malformed_share`), p(`{`) of its last checkpoint, and whether it shows the drift: either share above
    `DRIFT` (rollouts after step `SCREEN_AFTER`)."""
    from recipe.drivers.heldout import format_failures

    run = Path(run)
    steps = sorted(int(path.stem) for path in (run / "rollouts").glob("*.jsonl") if path.stem.isdigit())
    rollouts = {step: share for step in steps if (share := malformed_share(run, step)) is not None}
    late = {step: share for step, share in rollouts.items() if step > SCREEN_AFTER}
    worst = max(late, key=late.get) if late else None
    heldout = format_failures(run / "eval")
    row = {"run": str(run), "heldout_format_failures": heldout, "rollouts_malformed_box": rollouts,
           "worst_step_after_%d" % SCREEN_AFTER: worst, "worst_share": late.get(worst),
           "drift": bool((heldout is not None and heldout > DRIFT) or (worst is not None and late[worst] > DRIFT))}
    checkpoints = checkpoint_steps(run / "checkpoints")
    if probe_last and checkpoints:
        step, actor = checkpoints[-1]
        row["last_checkpoint"] = {"step": step, **probe_actor(actor, items or contexts())}
    return row


def screen_table(rows: list[dict]) -> str:
    """A markdown table of `screen` rows."""
    def share(value):
        return "" if value is None else f"{100 * value:.2f}%"

    lines = [f"| run | held-out answers unreadable | malformed boxes in rollouts, worst step > {SCREEN_AFTER} | "
             "last checkpoint: mean p({) | share p < 0.5 | lowest level's mean | drift |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        last = row.get("last_checkpoint")
        worst = "" if row["worst_share"] is None else \
            f"{share(row['worst_share'])} (step {row['worst_step_after_%d' % SCREEN_AFTER]})"
        mean = "" if last is None else f"{last['mean']:.4f} (step {last['step']})"
        low = "" if last is None else f"{last['share_below_0.5']:.3f}"
        level = "" if last is None else "{1:.4f} (k = {0})".format(*min(last["mean_by_level"].items(),
                                                                       key=lambda item: item[1]))
        lines.append(f"| {row['run']} | {share(row['heldout_format_failures'])} | {worst} | {mean} | {low} | {level} | "
                     f"{'yes' if row['drift'] else 'no'} |")
    return "\n".join(lines)


def write_rollouts(path: Path, tokenizer, items: list[Context]) -> Path:
    """The contexts as a rollout dump (`trainer.rollout_data_dir`'s `input` / `output` rows) for
    `recipe.drivers.merge_check --rollouts`: the chat-templated prompt and the whole reference solution, so the
    compared response tokens include ``{`` after ``\\boxed``."""
    from verl_ext import toy_task

    rows = []
    for item in items:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": item.question}],
                                               add_generation_prompt=True, tokenize=False)
        rows.append({"input": prompt, "output": toy_task.solution(toy_task.numbers_of(item.question)),
                     "level": item.level})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def format_row(row: dict) -> str:
    step = "-" if row["step"] is None else str(row["step"])
    extra = "" if "train_reward" not in row else f"  reward {row['train_reward']:+.3f}"
    if "rollouts_malformed_box" in row:
        extra += f"  malformed in rollouts {row['rollouts_malformed_box']:.3f}"
    return (f"{row['path']}  step {step:>3}  mean {row['mean']:.4f}  median {row['median']:.4f}  min {row['min']:.4f}  "
            f"p<0.5 {row['share_below_0.5']:.3f}{extra}")


def table(result: dict) -> str:
    """A markdown table of `probe`'s result."""
    lines = ["| model | step | mean p({) | median | min | share p < 0.5 | train reward |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for row in result["models"]:
        reward = f"{row['train_reward']:+.3f}" if "train_reward" in row else ""
        step = "" if row["step"] is None else str(row["step"])
        lines.append(f"| {row['path']} | {step} | {row['mean']:.4f} | {row['median']:.4f} | {row['min']:.4f} | "
                     f"{row['share_below_0.5']:.3f} | {reward} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", type=Path, nargs="+",
                        help="run folders, checkpoints folders, actor checkpoints or Hugging Face folders")
    parser.add_argument("--json", type=Path, default=None, help="write the per-model results here")
    parser.add_argument("--per-level", type=int, default=None,
                        help="held-out problems per level (default: the lab's toy_heldout_per_level)")
    parser.add_argument("--seed", type=int, default=0, help="the lab's data seed (toy_task.split_rows)")
    parser.add_argument("--rollouts-out", type=Path, default=None,
                        help="also write the contexts with their whole reference solutions as a rollout dump, for "
                             "recipe.drivers.merge_check --rollouts (tokenized with the first model's tokenizer)")
    parser.add_argument("--screen", action="store_true",
                        help="the paths are run folders: one row each, held-out and rollout format failures, p({) of "
                             f"the last checkpoint, and whether it shows the drift (a share above {DRIFT:.0%})")
    args = parser.parse_args(argv)
    if args.screen:
        items = contexts(args.per_level, args.seed)
        rows = [screen(path, items=items) for path in args.paths]
        print(screen_table(rows))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"threshold": DRIFT, "after_step": SCREEN_AFTER, "runs": rows}, indent=1)
                                 + "\n")
        return 0
    try:
        if args.rollouts_out:
            from transformers import AutoTokenizer

            kind, _, entries = resolve(args.paths[0])
            first = entries[0][1] if kind == "hf" else entries[0][1] / "huggingface"
            write_rollouts(args.rollouts_out, AutoTokenizer.from_pretrained(first), contexts(args.per_level, args.seed))
        result = probe(args.paths, args.per_level, args.seed, log=lambda line: print(line, file=sys.stderr, flush=True))
    except FileNotFoundError as error:
        print(f"format_probe: {error}", file=sys.stderr)
        return 2
    print(table(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
