"""bench/RESULTS.md block `lab`: seconds per training step of every variant of a finished SENT lab against `grpo`,
read from `<out>/<variant>/metrics.jsonl` (the lab trains its variants one after another on the same machine, with
the same data, seeds and sizes, so `grpo` is the baseline measured in the same run). Step 1 includes the workers'
warm-up and is left out, as in the lab's report.

    python -m bench.lab_step_time [runs/lab] [--write]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from bench.results import write_section
from recipe.sent.curves import step_series
from recipe.sent.lab_report import after_warm_up
from recipe.sent.lab_config import VARIANTS
from recipe.sent.launch import read_metrics

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


def lab_table(out: Path) -> str:
    names = [name for name in VARIANTS if (out / name / "metrics.jsonl").exists()]
    if "grpo" not in names:
        raise SystemExit(f"{out}: no grpo/metrics.jsonl, the baseline of every ratio")
    timings = {name: variant_timings(out / name / "metrics.jsonl") for name in names}
    base = timings["grpo"]["timing_s/step"]
    rows = [("| variant | s/step | ratio vs grpo | generation | advantage (+ selection) | actor update | "
             "response tokens (mean) | steps averaged |"), "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name in names:
        t = timings[name]
        rows.append(f"| {name} | {t['timing_s/step']:.2f} | {t['timing_s/step'] / base:.3f}x | "
                    f"{t.get('timing_s/gen', float('nan')):.2f} | {t.get('timing_s/adv', float('nan')):.3f} | "
                    f"{t.get('timing_s/update_actor', float('nan')):.2f} | {t.get(LENGTH, float('nan')):.1f} | "
                    f"{t['steps']} |")
    report = out / "report.md"
    header = [line for line in report.read_text().splitlines() if line.startswith(("Command:", "Machine:", "Wall"))] \
        if report.exists() else []
    sent = timings.get("sent", {}).get("timing_s/step")
    summary = f"SENT vs GRPO per step in this lab: {sent / base:.3f}x." if sent else "No sent variant in this lab."
    return "\n\n".join([*header, "\n".join(rows), summary])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", default="runs/lab", help="the lab's output folder")
    parser.add_argument("--write", action="store_true", help="rewrite the `lab` block of bench/RESULTS.md")
    args = parser.parse_args()
    table = lab_table(Path(args.out))
    print(table)
    if args.write:
        write_section("lab", table)


if __name__ == "__main__":
    main()
