"""Where a training step's time goes: verl's `timing_s/*` phases of `main_sent machine=cpu`, the run's start-up, and
the CPU seconds each process of the run uses per step.

- `--model tiny` (default): the tiny random Qwen2 at 16 prompts x 8 answers, 64 new tokens (issue 16's profile
  size), one optimizer step per training step, on the bundled set.
- `--model toy`: the toy lab's `grpo` run (`runs.REGIMES["toy"]`, `lab_config.VARIANTS["grpo"]`, seed 0): the
  shipped toy reasoner at 32 prompts x 8 answers, 64 new tokens, two optimizer steps per training step, on the
  toy task's train split.

Each `--config NAME[:override,override...]` is one run with the shared sizes plus its overrides; the runs are
repeated `--rounds` times, alternating, so that machine load falls on all of them alike. Step 1 includes the
workers' warm-up and is left out; the table shows the median over the remaining steps of all rounds, with min-max.
Start-up is the time from launch to the start of step 1 (step 1 logged, less its `timing_s/step`). CPU seconds per
step: every process on the machine sampled with psutil (run it on an idle machine), from the end of step 2 to the
end of the last step, by process title (`ray::WorkerDict`, `VLLM::Worker`, ...).

    python -m bench.bench_step_profile --model toy --config base --steps 6 --rounds 2 [--write --block NAME]
    python -m bench.bench_step_profile --config base --config 'seqs:actor_rollout_ref.rollout.max_num_seqs=128'
    python -m bench.bench_step_profile --model toy --config before --config after --code before=/tmp/old --rounds 2
    python -m bench.bench_step_profile --from-json a.json b.json --write   # tables of earlier runs, one block

A sampling profile of the same run (where the CPU seconds go inside each process), e.g. with py-spy:
`py-spy record --subprocesses --rate 20 --format raw -o prof.txt -- python -m recipe.sent.main_sent ...`, or
`py-spy record -p PID --idle --duration 30` on each worker once step 2 is logged.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import tempfile
import threading
import time
from pathlib import Path

import psutil

from bench.results import write_section
from bench.scored_data import scored_demo_data
from recipe.drivers.curves import step_series
from recipe.drivers.launch import ROOT, train
from recipe.drivers.same_run import NOT_SEEDED
from recipe.drivers.runs import tiny_model_dir, training_overrides

PROMPTS, ANSWERS, TOKENS = 16, 8, 64
TOY_PROMPTS = 32  # the toy regime's (runs.REGIMES["toy"]): 32 x 8, mini-batches of 16
# phases in the order verl runs them; "other" is the rest of timing_s/step
PHASES = ("timing_s/gen", "timing_s/reward", "timing_s/old_log_prob", "timing_s/ref", "timing_s/adv",
          "timing_s/update_actor", "timing_s/update_weights", "timing_s/semantic_entropy")


def profile_overrides(model: Path, data: Path, out: Path, steps: int, preset: str) -> list[str]:
    """The demo's run (`runs.training_overrides`) at the profile's size: 16 prompts x 8 answers, one optimizer step."""
    return [*training_overrides(model, data, out, steps, "cpu", preset=preset),
            f"data.train_batch_size={PROMPTS}", f"actor_rollout_ref.rollout.n={ANSWERS}",
            f"data.max_response_length={TOKENS}", f"actor_rollout_ref.actor.ppo_mini_batch_size={PROMPTS}"]


def toy_overrides(model: Path, data: Path, out: Path, steps: int, preset: str, regime: str = "toy") -> list[str]:
    """The toy lab's `grpo` run (`preset=sent`: `sent_tokens_only`) on seed 0 in `regime`, as `recipe.drivers.lab`
    trains it, without checkpoints."""
    from recipe.drivers.lab_config import VARIANTS
    from recipe.drivers.runs import REGIMES, seed_overrides

    variant = VARIANTS["grpo"]
    from verl_ext.toy_task import DATA_SOURCE

    return [*training_overrides(model, data, out, steps, "cpu", preset=preset, data_source=DATA_SOURCE),
            *seed_overrides(0), *REGIMES[regime].overrides, *variant.overrides]


def updates_per_step(regime: str) -> int:
    """Optimizer steps a training step in a toy regime: its prompts over its mini-batch."""
    from recipe.drivers.runs import REGIMES

    mini = next(int(o.split("=")[1]) for o in REGIMES[regime].overrides
                if o.startswith("actor_rollout_ref.actor.ppo_mini_batch_size="))
    return TOY_PROMPTS // mini


def toy_data(path: Path) -> Path:
    """The toy lab's train split (`toy_task.split_rows` at the lab's defaults) with a synthetic semantic-entropy
    column (level + a small distinct offset; `grpo` shuffles, so the values are never read)."""
    import pandas as pd

    from recipe.drivers.lab_config import LabConfig
    from verl_ext import toy_task

    cfg = LabConfig(model="toy")
    train_rows, _ = toy_task.split_rows({level: cfg.toy_train_per_level for level in toy_task.TRAIN_LEVELS},
                                        {level: cfg.toy_heldout_per_level for level in toy_task.LEVELS}, seed=0)
    for index, row in enumerate(train_rows):
        row["extra_info"]["semantic_entropy"] = float(row["extra_info"]["level"]) + index * 1e-3
    pd.DataFrame(train_rows).to_parquet(path)
    return path


class CpuSampler:
    """CPU seconds (user + system) of every process on the machine but this one, by process title, every 0.5 s."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, dict[int, tuple[str, float]]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "CpuSampler":
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            snap: dict[int, tuple[str, float]] = {}
            for proc in psutil.process_iter(["name", "cmdline", "cpu_times"]):
                if proc.pid == me or proc.info["cpu_times"] is None:
                    continue
                times = proc.info["cpu_times"]
                snap[proc.pid] = (process_title(proc.info["name"], proc.info["cmdline"]), times.user + times.system)
            self.samples.append((time.time(), snap))
            self._stop.wait(0.5)

    def between(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds by title used between two times (a process that started meanwhile counts from zero)."""
        def at(t: float) -> dict[int, tuple[str, float]]:
            return min(self.samples, key=lambda sample: abs(sample[0] - t))[1] if self.samples else {}

        first, last = at(start), at(end)
        used: dict[str, float] = {}
        for pid, (title, cpu) in last.items():
            used[title] = used.get(title, 0.0) + cpu - (first[pid][1] if pid in first else 0.0)
        return used


def process_title(name: str | None, cmdline: list[str] | None) -> str:
    """`ray::WorkerDict`, `VLLM::Worker`, `raylet`, ... (Ray and vLLM retitle their processes); other Python
    processes by their module."""
    line = " ".join(cmdline or [])
    if line.startswith(("ray::", "VLLM::")):
        return line.split()[0].split(".")[0]  # ray::WorkerDict.actor_rollout_ref_update_actor -> ray::WorkerDict
    for module in re.findall(r"(?:-m |/)([\w.]+?)(?:\.py)?(?: |$)", line):
        if module.startswith(("recipe.", "ray", "bench")) or module in ("dashboard", "log_monitor", "agent"):
            return module.rsplit("/", 1)[-1]
    return name or "?"


def settle(below: float = 1.5, wait_s: float = 60.0) -> float:
    """Wait (at most `wait_s`) for the 1-min load average to fall below `below` (the previous run's processes exit
    and their start-up storm decays); the load average then, what the table reports as the machine's load."""
    deadline = time.time() + wait_s
    while os.getloadavg()[0] >= below and time.time() < deadline:
        time.sleep(5)
    return os.getloadavg()[0]


def run_config(name: str, extra: list[str], model: Path, data: Path, tmp: Path, steps: int, preset: str,
               toy: bool = False, code: Path | None = None, regime: str = "toy") -> dict:
    out = tmp / f"{re.sub(r'[^A-Za-z0-9_.+-]', '_', name)}-{time.time_ns()}"  # the path goes into Hydra overrides
    load = settle()
    started = time.time()
    logged: dict[int, float] = {}
    overrides = (toy_overrides(model, data, out, steps, preset, regime) if toy
                 else profile_overrides(model, data, out, steps, preset))
    with CpuSampler() as sampler:
        entries = train([*overrides, *extra], out, timeout_s=1800, total_steps=steps, echo=lambda _: None,
                        on_step=lambda step, _: logged.setdefault(step, time.time()),
                        root=code or ROOT).metrics()
    timings: dict[str, list[float]] = {}
    for key in {k for entry in entries for k in entry["data"] if k.startswith("timing_s/")}:
        s, values = step_series(entries, key)
        timings[key] = [v for step, v in zip(s, values) if step > 1]
    first = next(entry["data"] for entry in entries if entry["step"] == 1)
    last = max(logged)
    cpu = {title: used / (last - 2) for title, used in sampler.between(logged[2], logged[last]).items()}
    return {"name": name, "overrides": extra, "code": str(code) if code else None, "timings": timings,
            "wall_s": time.time() - started,
            "load": load, "startup_s": logged[1] - first["timing_s/step"] - started,
            "step1_s": first["timing_s/step"], "cpu_per_step": cpu,
            "response_length": statistics.median(step_series(entries, "response_length/mean")[1]),
            "step1": computed_metrics(first)}


# what a step computes, as opposed to how long it takes: the step-1 check compares these across columns
STEP1_ROUND_OFF = 1e-4  # relative: fp32 sums in another order stay far below it
NOT_COMPUTED = (*NOT_SEEDED, "training/global_step", "training/epoch")  # what a seed fixes, less the counters


def computed_metrics(data: dict) -> dict[str, float]:
    """A logged step's numeric metrics, less timings and throughput."""
    return {k: float(v) for k, v in data.items()
            if isinstance(v, (int, float)) and not k.startswith(NOT_COMPUTED)}


def step1_check(merged: dict[str, dict]) -> list[str]:
    """Step 1's rollouts come from the same initial model and, with per-answer seeds, are the same tokens in every
    column; so a change that only moves time leaves step 1's metrics equal up to float round-off. One line per
    column: the largest relative difference from the first column's first round, and where it is."""
    names = list(merged)
    reference = merged[names[0]]["step1"][0] if merged[names[0]]["step1"] else None
    if reference is None:
        return []
    lines = ["", "Step 1's metrics against the first column's first round (every logged metric but timings, "
             "throughput and memory; the same sampled tokens give round-off only):", ""]
    for name in names:
        for k, run in enumerate(merged[name]["step1"]):
            diffs = {key: abs(run[key] - value) / max(abs(value), 1e-8)
                     for key, value in computed_metrics(reference).items() if key in run}
            beyond = sorted(key for key, diff in diffs.items() if diff > STEP1_ROUND_OFF)
            same_tokens = run.get("response_length/mean") == reference.get("response_length/mean")
            lines.append(f"- {name} round {k + 1}: {sum(d == 0 for d in diffs.values())} of {len(diffs)} equal "
                         f"bitwise, largest relative difference {max(diffs.values()):.1e}; response lengths "
                         f"{'equal' if same_tokens else 'differ'}; beyond {STEP1_ROUND_OFF:g}: "
                         + (", ".join(f"{key} {diffs[key]:.1e}" for key in beyond) or "none"))
    return lines


def merge_runs(runs: list[dict]) -> dict[str, dict]:
    merged: dict[str, dict] = {}
    for run in runs:
        entry = merged.setdefault(run["name"], {"overrides": run["overrides"], "code": run.get("code"), "timings": {},
                                                "loads": [], "startup_s": [], "step1_s": [], "response_length": [],
                                                "cpu_per_step": {}, "cpu_total": [], "step1": []})
        entry["loads"].append(run["load"])
        if run.get("step1"):
            entry["step1"].append(run["step1"])
        for key, values in run["timings"].items():
            entry["timings"].setdefault(key, []).extend(values)
        for key in ("startup_s", "step1_s", "response_length"):
            if key in run:
                entry[key].append(run[key])
        for title, seconds in run.get("cpu_per_step", {}).items():
            entry["cpu_per_step"].setdefault(title, []).append(seconds)
        if run.get("cpu_per_step"):
            entry["cpu_total"].append(sum(run["cpu_per_step"].values()))
    return merged


def _cell(values: list[float] | None) -> str:
    if not values:
        return "–"
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def _ratio(timings: dict[str, list[float]], part: str, whole: str) -> str:
    """Median (min-max) over steps of part / whole, in percent."""
    if not timings.get(part):
        return "–"
    ratios = [100 * p / w for p, w in zip(timings[part], timings[whole])]
    return f"{statistics.median(ratios):.2f}% ({min(ratios):.2f}-{max(ratios):.2f}%)"


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def table(merged: dict[str, dict], steps: int, preset: str, model: str = "tiny", cpu_rows: int = 10,
          regime: str = "toy") -> str:
    names = list(merged)
    base = statistics.median(merged[names[0]]["timings"]["timing_s/step"])
    prompts = TOY_PROMPTS if model == "toy" else PROMPTS
    updates = (f"{updates_per_step(regime)} optimizer steps (regime {regime})" if model == "toy"
               else "one optimizer step")
    lines = [f"Machine: {cpu_name()}, {os.cpu_count()} cores, CPU only (1-min load average as each run started: "
             f"{', '.join(f'{x:.1f}' for m in merged.values() for x in m['loads'])}); `preset={preset}`, "
             f"{model} model, "
             f"{prompts} prompts x {ANSWERS} answers, {TOKENS} new tokens, {updates} a step; seconds, median (min-max) "
             f"over steps 2..{steps} of every round; start-up and step 1 over rounds.", "",
             "| phase | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for key, label in (("startup_s", "start-up (launch to step 1)"), ("step1_s", "step 1")):
        if any(merged[n][key] for n in names):
            lines.append(f"| {label} | " + " | ".join(_cell(merged[n][key]) for n in names) + " |")
    for key in ("timing_s/step", *PHASES):
        if any(merged[n]["timings"].get(key) for n in names):
            lines.append(f"| {key} | " + " | ".join(_cell(merged[n]["timings"].get(key)) for n in names) + " |")
    if any(merged[n]["response_length"] for n in names):
        lines.append("| response length (tokens, median of steps) | " + " | ".join(
            _cell(merged[n]["response_length"]) for n in names) + " |")
    lines.append("| timing_s/semantic_entropy / timing_s/step | " + " | ".join(
        _ratio(merged[n]["timings"], "timing_s/semantic_entropy", "timing_s/step") for n in names) + " |")
    lines.append("| step vs first column | " + " | ".join(
        f"{statistics.median(merged[n]['timings']['timing_s/step']) / base:.2f}x" for n in names) + " |")
    if any(merged[n]["cpu_per_step"] for n in names):
        totals = {n: statistics.median(merged[n]["cpu_total"]) for n in names if merged[n]["cpu_total"]}
        lines += ["", "CPU seconds per step by process (median over rounds, steps 3..last; the machine has "
                  f"{os.cpu_count()} cores, so a step of T seconds has {os.cpu_count()}T to give):", "",
                  "| process | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names),
                  "| all | " + " | ".join(f"{totals[n]:.2f}" if n in totals else "–" for n in names) + " |"]
        first = merged[names[0]]["cpu_per_step"] or merged[next(n for n in names if merged[n]["cpu_per_step"])][
            "cpu_per_step"]
        for title in sorted(first, key=lambda t: -statistics.median(first[t]))[:cpu_rows]:
            lines.append(f"| {title} | " + " | ".join(
                f"{statistics.median(merged[n]['cpu_per_step'][title]):.2f}" if title in merged[n]["cpu_per_step"]
                else "–" for n in names) + " |")
    lines += step1_check(merged)
    lines += ["", "Overrides per column:", ""]
    lines += [f"- {n}: `{' '.join(merged[n]['overrides']) or '(none)'}`"
              + (f", code of {merged[n]['code']}" if merged[n].get("code") else "") for n in names]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", default=[], help="NAME[:override,override,...]")
    parser.add_argument("--model", choices=("tiny", "toy"), default="tiny")
    parser.add_argument("--code", action="append", default=[],
                        help="NAME=DIR: config NAME trains with the checkout in DIR (e.g. `git worktree add` of the "
                             "commit before a change)")
    parser.add_argument("--preset", default="grpo", help="grpo, or sent (the lab's sent_tokens_only with --model toy)")
    parser.add_argument("--regime", default="toy", help="--model toy: the lab regime (runs.REGIMES)")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", help="also write the raw timings here")
    parser.add_argument("--from-json", nargs="*", default=[], help="tables of earlier --json files instead of runs")
    parser.add_argument("--block", default="step_profile", help="RESULTS.md block name for --write")
    parser.add_argument("--write", action="store_true", help="rewrite the block in bench/RESULTS.md")
    args = parser.parse_args()
    runs: list[dict] = []
    for path in args.from_json:
        runs += json.loads(Path(path).read_text())["runs"]
    if args.config:
        toy = args.model == "toy"
        if toy:
            from verl_ext.toy_model import toy_model_dir

            model = toy_model_dir(Path(".cache/models").resolve())
        else:
            model = tiny_model_dir(Path(".cache/models").resolve())
        configs = [(spec.split(":", 1)[0], [o for o in spec.split(":", 1)[1].split(",") if o] if ":" in spec else [])
                   for spec in args.config]
        code = {name: Path(where).resolve() for name, where in (pair.split("=", 1) for pair in args.code)}
        with tempfile.TemporaryDirectory() as tmp:
            data = (toy_data if toy else scored_demo_data)(Path(tmp) / "train.parquet")
            for round_index in range(args.rounds):
                for name, extra in configs:
                    print(f"{name} (round {round_index + 1}/{args.rounds})", flush=True)
                    runs.append(run_config(name, extra, model, data, Path(tmp), args.steps, args.preset, toy,
                                           code.get(name), args.regime))
                    if args.json:
                        Path(args.json).write_text(json.dumps({"runs": runs}, indent=1))
    body = table(merge_runs(runs), args.steps, args.preset, args.model, regime=args.regime)
    print(body)
    if args.write:
        write_section(args.block, body)


if __name__ == "__main__":
    main()
