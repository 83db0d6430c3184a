"""The held-out side of a run, shared by the demo and the lab: a checkpoint merged into a Hugging Face folder (verl's
model merger at the trained dtype, `recipe.drivers.hf_merge`), the eval harness (`verl_ext.eval`) on a held-out split,
and its per-problem scores for intervals."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from recipe.drivers.runs import MAX_MODEL_LEN

ROOT = Path(__file__).resolve().parents[2]
BENCHMARK = "heldout"  # the held-out split's name in the eval harness's results
MERGE_TIMEOUT_S = 900
EVAL_TIMEOUT_S = 3600


def last_checkpoint(checkpoints: Path) -> int:
    marker = checkpoints / "latest_checkpointed_iteration.txt"
    return int(marker.read_text().strip()) if marker.exists() else 0


def merge(checkpoints: Path, step: int, target: Path) -> Path:
    """The actor checkpoint of `step` as a Hugging Face folder (verl's model merger without its bf16 cast, so the
    folder holds the trained weights: `recipe.drivers.hf_merge`); atomic by rename."""
    if (target / "config.json").exists():
        return target
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    command = [sys.executable, "-m", "recipe.drivers.hf_merge",
               "--local_dir", str(checkpoints / f"global_step_{step}" / "actor"), "--target_dir", str(partial)]
    run_logged(command, target.parent / "merge.log", MERGE_TIMEOUT_S)
    partial.rename(target)
    return target


def evaluate(model: Path, tokenizer: Path, eval_file: Path, out: Path, name: str, *, samples: int, ks: list[int],
             max_tokens: int, seed: int, data_source: str) -> dict:
    """The eval harness on the held-out set: `samples` answers a problem (temperature 1, sampling with `seed`), pass@k
    and avg@k for `ks`, graded as `data_source`'s grader grades (`verl_ext.grading`); returns its results.json (it
    skips what it already evaluated)."""
    from verl_ext.grading import grader_for

    command = [
        sys.executable, "-m", "verl_ext.eval", f"model.path={model}", f"model.tokenizer_path={tokenizer}",
        f"run_name={name}", f"output_dir={out}", f"+files.{BENCHMARK}={eval_file}", f"benchmarks=[{BENCHMARK}]",
        f"sampling.n={samples}", f"ks=[{','.join(map(str, ks))}]", f"sampling.max_tokens={max_tokens}",
        f"sampling.seed={seed}", "sampling.top_p=1.0", "sampling.top_k=-1", "vllm.dtype=float32",
        "vllm.enforce_eager=true",
        f"vllm.max_model_len={MAX_MODEL_LEN}", "verify.num_workers=1", "paper_columns=", "progress=false",
        # the final answer as the training reward, the scoring job and the per-step semantic entropy read it
        f"verify.answer_fallback={grader_for(data_source).answer_fallback}",
    ]
    run_logged(command, out.parent / "eval.log", EVAL_TIMEOUT_S)
    return json.loads((out / "results.json").read_text())


def run_logged(command: list[str], log: Path, timeout_s: float) -> None:
    """A child in our process group (killed with its caller), console to `log`; on failure a RuntimeError, log tail."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        fh.write(" ".join(command) + "\n\n")
        fh.flush()
        done = subprocess.run(command, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout_s,
                              check=False)
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"{command[2]} exited with {done.returncode}; log: {log}\n{tail}")


def heldout_scores(eval_dir: Path, ks: list[int]) -> dict[str, list[float]] | None:
    """Per held-out problem (in the eval file's order), avg@k and pass@k as fractions, from the harness's
    `<eval>/heldout.json`; None when the run was not evaluated."""
    from verl_ext.eval.metrics import avg_at_k, pass_at_k

    path = eval_dir / f"{BENCHMARK}.json"
    if not path.exists():
        return None
    problems = sorted(json.loads(path.read_text())["problems"], key=lambda p: p["index"])
    scores: dict[str, list[float]] = {}
    for k in ks:
        scores[f"avg@{k}"] = [avg_at_k(p["correct"], k) for p in problems]
        scores[f"pass@{k}"] = [pass_at_k(len(p["correct"]), sum(p["correct"]), k) for p in problems]
    return scores


def eval_answer_fallback(eval_dir: Path) -> str | None:
    """What the evaluation in `eval_dir` read when a response had no final answer (`settings.answer_fallback` of its
    `heldout.json`: none, or last_number before the toy task's strict grader); None when not evaluated."""
    path = eval_dir / f"{BENCHMARK}.json"
    return json.loads(path.read_text()).get("settings", {}).get("answer_fallback") if path.exists() else None


def format_failures(eval_dir: Path) -> float | None:
    """The share of a run's held-out answers its grader could not read (no final answer it accepts: for the strict
    toy grader, no well-formed ``\\boxed{}`` or ``Answer:`` line), from the harness's `<eval>/heldout.json`; None when
    the run was not evaluated."""
    path = eval_dir / f"{BENCHMARK}.json"
    if not path.exists():
        return None
    problems = json.loads(path.read_text())["problems"]
    if any("answers" not in problem for problem in problems):  # an eval file that did not record its answers
        return None
    answers = [answer for problem in problems for answer in problem["answers"]]
    return sum(answer is None for answer in answers) / len(answers) if answers else None

