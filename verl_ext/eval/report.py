"""Markdown tables laid out like the paper's Tables I and II: benchmark x k rows, one column per run, the paper's
published 1.5B numbers as reference columns, and an average row over the rows shown.

    python -m verl_ext.eval.report runs/a/results.json runs/b/results.json --paper "GRPO,w/ SENT" -o table.md
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from verl_ext.eval.paper_tables import BENCHMARKS, METHODS, paper_column

BENCHMARK_TITLES = {"aime24": "AIME24", "aime25": "AIME25", "amc23": "AMC23", "math500": "MATH500",
                    "olympiadbench": "OlympiadBench", "minerva": "Minerva"}


def render_table(
    runs: Mapping[str, Mapping[str, float]], metric: str, *, paper_methods: Sequence[str] = ()
) -> str:
    """`runs` maps a column name to {"aime24/pass@8": 63.3, ...}; `metric` is "pass" or "avg"."""
    for method in paper_methods:
        if method not in METHODS:
            raise ValueError(f"unknown paper column {method!r}; choose from {', '.join(METHODS)}")
    columns = {name: dict(values) for name, values in runs.items()}
    columns.update({f"paper: {m}": paper_column(metric, m) for m in paper_methods})
    rows = sorted(
        {tuple(key.split("/")) for values in runs.values() for key in values if key.split("/")[1].startswith(metric)},
        key=lambda row: (_bench_order(row[0]), int(row[1].split("@")[1])),
    )
    title = {"pass": "Pass@k", "avg": "Avg@k"}[metric]
    lines = [f"| {title} | k | " + " | ".join(columns) + " |", "|---|---:|" + "---:|" * len(columns)]
    for bench, key in rows:
        cells = [_cell(values.get(f"{bench}/{key}")) for values in columns.values()]
        lines.append(f"| {BENCHMARK_TITLES.get(bench, bench)} | {key.split('@')[1]} | " + " | ".join(cells) + " |")
    averages = []
    for values in columns.values():
        picked = [values.get(f"{bench}/{key}") for bench, key in rows]
        averages.append(_cell(sum(picked) / len(picked)) if rows and None not in picked else "–")
    lines.append("| **Avg.** | | " + " | ".join(averages) + " |")
    return "\n".join(lines)


def render_lengths(runs: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """Mean response length and truncated share per benchmark (`runs`: name -> bench -> stats)."""
    lines = ["| run | benchmark | mean response tokens | truncated |", "|---|---|---:|---:|"]
    for name, benches in runs.items():
        for bench in sorted(benches, key=_bench_order):
            stats = benches[bench]
            lines.append(f"| {name} | {BENCHMARK_TITLES.get(bench, bench)} | {stats['mean_response_tokens']:.0f} | "
                         f"{100 * stats['truncated_frac']:.1f}% |")
    return "\n".join(lines)


def load_run(path: str | Path) -> tuple[str, dict[str, float], dict[str, dict[str, float]]]:
    """(run name, flat metrics, per-benchmark length stats) from a harness `results.json`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read evaluation results {path}: {err}") from err
    flat, lengths = {}, {}
    for bench, result in data["benchmarks"].items():
        flat.update({f"{bench}/{key}": value for key, value in result["metrics"].items()})
        lengths[bench] = {k: result[k] for k in ("mean_response_tokens", "truncated_frac")}
    return data["run"], flat, lengths


def render_report(paths: Sequence[str | Path], paper_methods: Sequence[str] = ()) -> str:
    runs, lengths = {}, {}
    for path in paths:
        name, flat, stats = load_run(path)
        runs[name], lengths[name] = flat, stats
    return "\n\n".join([
        "### Pass@k (%)", render_table(runs, "pass", paper_methods=paper_methods),
        "### Avg@k (%)", render_table(runs, "avg", paper_methods=paper_methods),
        "### Response length", render_lengths(lengths),
    ]) + "\n"


def plot_pass_at_k(paths: Sequence[str | Path], png: str | Path) -> Path:
    """pass@k against k, one panel per benchmark, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [load_run(path)[:2] for path in paths]
    benches = sorted({key.split("/")[0] for _, flat in runs for key in flat}, key=_bench_order)
    fig, axes = plt.subplots(1, len(benches), figsize=(3.2 * len(benches), 3.0), squeeze=False)
    for ax, bench in zip(axes[0], benches):
        for name, flat in runs:
            points = sorted((int(key.split("@")[1]), value) for key, value in flat.items()
                            if key.startswith(f"{bench}/pass@"))
            if points:
                ax.plot([k for k, _ in points], [v for _, v in points], marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_title(BENCHMARK_TITLES.get(bench, bench))
        ax.set_xlabel("k")
    axes[0][0].set_ylabel("pass@k (%)")
    axes[0][-1].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return Path(png)


def _cell(value) -> str:
    return "–" if value is None else f"{value:.2f}"


def _bench_order(bench: str) -> int:
    return BENCHMARKS.index(bench) if bench in BENCHMARKS else len(BENCHMARKS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", help="results.json files written by python -m verl_ext.eval")
    parser.add_argument("--paper", default="", help=f"comma-separated paper columns: {', '.join(METHODS)}")
    parser.add_argument("-o", "--output", help="write the Markdown here (default: print)")
    parser.add_argument("--plot", help="also write a pass@k-vs-k plot (PNG) here")
    args = parser.parse_args()
    methods = [m.strip() for m in args.paper.split(",") if m.strip()]
    text = render_report(args.results, methods)
    if args.output:
        Path(args.output).write_text(text)
    if args.plot:
        plot_pass_at_k(args.results, args.plot)
    print(text)


if __name__ == "__main__":
    main()
