"""Seconds per training step of `preset=grpo` vs `preset=sent` through verl's real loop on this machine
(`machine=cpu`), both in the same run, alternating so that machine load falls on both alike.

SENT adds its step selection (in `timing_s/adv`) and its KL term (in `timing_s/update_actor`) to what GRPO does;
both presets compute reference log-probs (GRPO for its uniform KL, SENT for its token KL). Step 1 includes one-time
warm-up and is left out.

    python -m bench.bench_train_step [--model smollm2|tiny] [--steps 6] [--rounds 1] [--write]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
from pathlib import Path

from bench.results import write_section
from bench.scored_data import scored_demo_data
from recipe.drivers.curves import step_series
from recipe.drivers.runs import smollm2_hf_dir, tiny_model_dir, training_overrides
from recipe.drivers.launch import train

PRESETS = ("grpo", "sent")
TIMINGS = ("timing_s/step", "timing_s/gen", "timing_s/adv", "timing_s/update_actor")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("smollm2", "tiny"), default="smollm2")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=1, help="grpo, sent pairs")
    parser.add_argument("--write", action="store_true", help="rewrite this benchmark's block in bench/RESULTS.md")
    args = parser.parse_args()
    cache = Path(".cache/models").resolve()
    model = smollm2_hf_dir(cache) if args.model == "smollm2" else tiny_model_dir(cache)
    times: dict[str, dict[str, list[float]]] = {preset: {key: [] for key in TIMINGS} for preset in PRESETS}
    with tempfile.TemporaryDirectory() as tmp:
        data = scored_demo_data(Path(tmp) / "train.parquet")
        for round_index in range(args.rounds):
            for preset in PRESETS:
                out = Path(tmp) / f"{preset}{round_index}"
                overrides = [o.replace("preset=sent", f"preset={preset}")
                             for o in training_overrides(model, data, out, args.steps, "cpu")]
                print(f"{preset} (round {round_index + 1}/{args.rounds})", flush=True)
                entries = train(overrides, out, timeout_s=3600, total_steps=args.steps).metrics()
                for key in TIMINGS:
                    steps, values = step_series(entries, key)
                    times[preset][key] += [v for s, v in zip(steps, values) if s > 1]
    medians = {p: {k: statistics.median(v) for k, v in t.items()} for p, t in times.items()}
    ratio = medians["sent"]["timing_s/step"] / medians["grpo"]["timing_s/step"]
    lines = [
        f"Machine: {platform.machine()}, CPU only, `machine=cpu`; model {args.model}; 4 prompts x 4 answers (the demo's sizes), 64 "
        f"response tokens, one optimizer step per training step; median over steps 2..{args.steps} of "
        f"{args.rounds} run(s) per preset, run alternately.",
        "",
        "| preset | s/step | generation | advantage (+ SENT selection) | actor update | ratio vs grpo |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for preset in PRESETS:
        m = medians[preset]
        lines.append(f"| {preset} | {m['timing_s/step']:.2f} | {m['timing_s/gen']:.2f} | {m['timing_s/adv']:.3f} | "
                     f"{m['timing_s/update_actor']:.2f} | {m['timing_s/step'] / medians['grpo']['timing_s/step']:.3f}x |")
    extra = medians["sent"]["timing_s/adv"] - medians["grpo"]["timing_s/adv"]
    lines += ["", f"SENT vs GRPO per step: {ratio:.3f}x; the step selection adds {extra * 1000:.0f} ms to the "
              f"advantage phase ({extra / medians['grpo']['timing_s/step']:.1%} of a GRPO step)."]
    body = "\n".join(lines)
    print(body)
    if args.write:
        write_section("train_step", body)


if __name__ == "__main__":
    main()
