"""bench/RESULTS.md block `lab`: seconds per training step of every variant of a finished SENT lab against `grpo`,
read from `<out>/<variant>/seed<k>/metrics.jsonl` (a lab before seeds: `<out>/<variant>/metrics.jsonl`). The lab trains
its runs one after another on the same machine, with the same data, seeds and sizes, so `grpo` is the baseline
measured in the same run. Each phase is a variant's mean over its seeds of each seed's mean, with the range across
seeds for s/step. Step 1 includes the workers' warm-up and is left out, as in the lab's report.

    python -m bench.lab_step_time [runs/lab] [--write] [--block lab_toy]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from bench.results import write_section
from recipe.drivers.curves import step_series
from recipe.drivers.lab_report import after_warm_up
from recipe.drivers.lab_config import VARIANTS
from recipe.drivers.launch import read_metrics

PHASES = ("timing_s/step", "timing_s/gen", "timing_s/adv", "timing_s/update_actor")
LENGTH = "response_length/mean"


def variant_timings(metrics_file: Path) -> dict[str, float]:
    """Mean of each phase and of the response length after the warm-up step; `steps`: how many steps that is."""
    entries = read_metrics(metrics_file)
    out: dict[str, float] = {}
    for key in (*PHASES, LENGTH):
        values = after_warm_up(step_series(entries, key)[1])
        if values:
            out[key] = statistics.fmean(values)
        if key == "timing_s/step":
            out["steps"] = len(values)
    return out


def seed_metrics(out: Path, name: str) -> list[Path]:
    """A variant's metrics files: one per seed, or the single file of a lab from before seeds."""
    files = sorted((out / name).glob("seed*/metrics.jsonl"))
    legacy = out / name / "metrics.jsonl"
    return files or ([legacy] if legacy.exists() else [])


def across_seeds(per_seed: list[dict[str, float]]) -> dict[str, float]:
    """Mean over seeds of each key (a seed without it is left out); `steps` summed; `step_min`/`step_max`."""
    out: dict[str, float] = {}
    for key in (*PHASES, LENGTH):
        values = [t[key] for t in per_seed if key in t]
        if values:
            out[key] = statistics.fmean(values)
    steps = [t["timing_s/step"] for t in per_seed if "timing_s/step" in t]
    out.update(steps=sum(t.get("steps", 0) for t in per_seed), seeds=len(steps),
               step_min=min(steps, default=float("nan")), step_max=max(steps, default=float("nan")))
    return out


def lab_table(out: Path) -> str:
    files = {name: seed_metrics(out, name) for name in VARIANTS}
    names = [name for name in VARIANTS if files[name]]
    if "grpo" not in names:
        raise SystemExit(f"{out}: no grpo/seed*/metrics.jsonl, the baseline of every ratio")
    timings = {name: across_seeds([variant_timings(f) for f in files[name]]) for name in names}
    base = timings["grpo"]["timing_s/step"]
    rows = [("| variant | s/step | range over seeds | ratio vs grpo | generation | advantage (+ selection) | "
             "actor update | response tokens (mean) | seeds | steps averaged |"),
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in names:
        t = timings[name]
        rows.append(f"| {name} | {t['timing_s/step']:.2f} | {t['step_min']:.2f}-{t['step_max']:.2f} | "
                    f"{t['timing_s/step'] / base:.3f}x | "
                    f"{t.get('timing_s/gen', float('nan')):.2f} | {t.get('timing_s/adv', float('nan')):.3f} | "
                    f"{t.get('timing_s/update_actor', float('nan')):.2f} | {t.get(LENGTH, float('nan')):.1f} | "
                    f"{t['seeds']} | {t['steps']} |")
    report = out / "report.md"
    header = [line for line in report.read_text().splitlines() if line.startswith(("Command:", "Machine:", "Wall"))] \
        if report.exists() else []
    sent = timings.get("sent", {}).get("timing_s/step")
    summary = f"SENT vs GRPO per step in this lab: {sent / base:.3f}x." if sent else "No sent variant in this lab."
    return "\n\n".join([*header, "\n".join(rows), summary])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", default="runs/lab", help="the lab's output folder")
    parser.add_argument("--write", action="store_true", help="rewrite the --block block of bench/RESULTS.md")
    parser.add_argument("--block", default="lab", help="which block: lab (the SmolLM2 lab), lab_toy (model=toy)")
    args = parser.parse_args()
    table = lab_table(Path(args.out))
    print(table)
    if args.write:
        write_section(args.block, table)


if __name__ == "__main__":
    main()
