"""Where a training step's time goes: verl's `timing_s/*` phases of `main_sent machine=cpu` with the tiny model at
16 prompts x 8 answers, 64 new tokens (issue 16's profile size), one optimizer step per training step.

Each `--config NAME[:override,override...]` is one run with the shared sizes plus its overrides; the runs are
repeated `--rounds` times, alternating, so that machine load falls on all of them alike. Step 1 includes the
workers' warm-up and is left out; the table shows the median over the remaining steps of all rounds, with min-max.

    python -m bench.bench_step_profile --config base --steps 6 [--write]
    python -m bench.bench_step_profile --config base --config 'seqs:actor_rollout_ref.rollout.max_num_seqs=128'
    python -m bench.bench_step_profile --from-json a.json b.json --write   # tables of earlier runs, one block
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import tempfile
import time
from pathlib import Path

from bench.results import write_section
from bench.scored_data import scored_demo_data
from recipe.drivers.curves import step_series
from recipe.drivers.launch import train
from recipe.drivers.runs import tiny_model_dir, training_overrides

PROMPTS, ANSWERS, TOKENS = 16, 8, 64
# phases in the order verl runs them; "other" is the rest of timing_s/step
PHASES = ("timing_s/gen", "timing_s/reward", "timing_s/old_log_prob", "timing_s/ref", "timing_s/adv",
          "timing_s/update_actor", "timing_s/update_weights", "timing_s/semantic_entropy")


def profile_overrides(model: Path, data: Path, out: Path, steps: int, preset: str) -> list[str]:
    """The demo's run (`runs.training_overrides`) at the profile's size: 16 prompts x 8 answers, one optimizer step."""
    return [*training_overrides(model, data, out, steps, "cpu", preset=preset),
            f"data.train_batch_size={PROMPTS}", f"actor_rollout_ref.rollout.n={ANSWERS}",
            f"data.max_response_length={TOKENS}", f"actor_rollout_ref.actor.ppo_mini_batch_size={PROMPTS}"]


def run_config(name: str, extra: list[str], model: Path, data: Path, tmp: Path, steps: int, preset: str) -> dict:
    out = tmp / f"{re.sub(r'[^A-Za-z0-9_.+-]', '_', name)}-{time.time_ns()}"  # the path goes into Hydra overrides
    started = time.time()
    entries = train([*profile_overrides(model, data, out, steps, preset), *extra], out, timeout_s=1800,
                    total_steps=steps, echo=lambda _: None).metrics()
    timings: dict[str, list[float]] = {}
    for key in {k for entry in entries for k in entry["data"] if k.startswith("timing_s/")}:
        s, values = step_series(entries, key)
        timings[key] = [v for step, v in zip(s, values) if step > 1]
    return {"name": name, "overrides": extra, "timings": timings, "wall_s": time.time() - started,
            "load": os.getloadavg()[0]}


def merge_runs(runs: list[dict]) -> dict[str, dict]:
    merged: dict[str, dict] = {}
    for run in runs:
        entry = merged.setdefault(run["name"], {"overrides": run["overrides"], "timings": {}, "loads": []})
        entry["loads"].append(run["load"])
        for key, values in run["timings"].items():
            entry["timings"].setdefault(key, []).extend(values)
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


def table(merged: dict[str, dict], steps: int, preset: str) -> str:
    names = list(merged)
    base = statistics.median(merged[names[0]]["timings"]["timing_s/step"])
    lines = [f"Machine: {platform.machine()}, {os.cpu_count()} cores, CPU only, shared with other jobs (1-min load "
             f"average at the end of each run: {', '.join(f'{x:.1f}' for m in merged.values() for x in m['loads'])}); "
             f"`preset={preset}`, tiny model, {PROMPTS} prompts x {ANSWERS} answers, {TOKENS} new tokens; seconds, "
             f"median (min-max) over steps 2..{steps} of every round.", "",
             "| phase | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for key in ("timing_s/step", *PHASES):
        if any(merged[n]["timings"].get(key) for n in names):
            lines.append(f"| {key} | " + " | ".join(_cell(merged[n]["timings"].get(key)) for n in names) + " |")
    lines.append("| timing_s/semantic_entropy / timing_s/step | " + " | ".join(
        _ratio(merged[n]["timings"], "timing_s/semantic_entropy", "timing_s/step") for n in names) + " |")
    lines.append("| step vs first column | " + " | ".join(
        f"{statistics.median(merged[n]['timings']['timing_s/step']) / base:.2f}x" for n in names) + " |")
    lines += ["", "Overrides per column:", ""]
    lines += [f"- {n}: `{' '.join(merged[n]['overrides']) or '(none)'}`" for n in names]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", default=[], help="NAME[:override,override,...]")
    parser.add_argument("--preset", default="grpo")
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
        model = tiny_model_dir(Path(".cache/models").resolve())
        configs = [(spec.split(":", 1)[0], [o for o in spec.split(":", 1)[1].split(",") if o] if ":" in spec else [])
                   for spec in args.config]
        with tempfile.TemporaryDirectory() as tmp:
            data = scored_demo_data(Path(tmp) / "train.parquet")
            for round_index in range(args.rounds):
                for name, extra in configs:
                    print(f"{name} (round {round_index + 1}/{args.rounds})", flush=True)
                    runs.append(run_config(name, extra, model, data, Path(tmp), args.steps, args.preset))
                    if args.json:
                        Path(args.json).write_text(json.dumps({"runs": runs}, indent=1))
    body = table(merge_runs(runs), args.steps, args.preset)
    print(body)
    if args.write:
        write_section(args.block, body)


if __name__ == "__main__":
    main()
