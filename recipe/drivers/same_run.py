"""Are two trainings the same run? Every metric of every logged step compared bitwise, except what a seed does not
fix (`NOT_SEEDED`): `python -m recipe.drivers.same_run RUN_A RUN_B` (run folders or their `metrics.jsonl[.gz]`).

It prints the steps that differ, each with how many metrics and which, or that the two are equal at every step;
it exits 1 when they differ. docs/lab.md, Reproducibility, says what a seed fixes on the CPU.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

# what a seed does not fix: wall-clock times and what is derived from them (throughput, MFU), and the processes'
# memory (`actor/perf/cpu_memory_used_gb`: 8.64 vs 10.34 GB in two runs of the same command on a busy machine)
NOT_SEEDED = ("timing_s/", "timing_per_token_ms/", "perf/", "actor/perf/", "agent_loop/generate_sequences/",
              "agent_loop/slowest/", "agent_loop/tool_calls/", "agent_loop/compute_score/")


def metrics_file(path: Path) -> Path:
    """A run folder's metrics (the lab's archive keeps them gzipped), or the file itself."""
    if path.is_dir():
        for name in ("metrics.jsonl", "metrics.jsonl.gz"):
            if (path / name).exists():
                return path / name
        raise FileNotFoundError(f"{path}: no metrics.jsonl or metrics.jsonl.gz")
    return path


def logged_steps(path: Path) -> dict[int, dict]:
    """step -> every metric verl's file logger wrote for it (`{"step": N, "data": {...}}` a line)."""
    file = metrics_file(path)
    text = gzip.decompress(file.read_bytes()).decode() if file.suffix == ".gz" else file.read_text()
    steps: dict[int, dict] = {}
    for row, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            steps.setdefault(int(entry["step"]), {}).update(entry["data"])
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{file}: line {row} is not a logged step ({error})") from None
    return steps


def metric_differences(first: dict[int, dict], second: dict[int, dict]) -> list[str]:
    """Every logged metric of every step (validation's step 0 included) equal bitwise, except NOT_SEEDED; one line
    per step that differs."""
    if sorted(first) != sorted(second):
        return [f"logged steps {sorted(first)} vs {sorted(second)}"]
    problems = []
    for step in sorted(first):
        a, b = first[step], second[step]
        keys = sorted(key for key in set(a) | set(b) if not key.startswith(NOT_SEEDED))
        differ = {key: (a.get(key), b.get(key)) for key in keys if a.get(key) != b.get(key)}
        if differ:
            problems.append(f"step {step}: {len(differ)} of {len(keys)} metrics differ, e.g. "
                            f"{dict(list(sorted(differ.items()))[:6])}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    args = parser.parse_args(argv)
    first, second = logged_steps(args.first), logged_steps(args.second)
    problems = metric_differences(first, second)
    if problems:
        print("\n".join(problems))
        return 1
    counted = sum(len([k for k in data if not k.startswith(NOT_SEEDED)]) for data in first.values())
    print(f"the same run: {len(first)} steps ({min(first)}..{max(first)}), {counted} metrics, equal bitwise")
    return 0


if __name__ == "__main__":
    sys.exit(main())
