"""Per-step training curves from the metrics verl logs (`metrics.jsonl` of `recipe.drivers.launch.train`)."""

from __future__ import annotations

from pathlib import Path

# (panel title, [(metric as verl logs it, line label)])
PANELS = [
    ("mean reward", [("critic/score/mean", "reward")]),
    ("token entropy (old policy)", [("actor/entropy", "mean"), ("sent/entropy_p10", "p10"), ("sent/entropy_p50", "p50"),
                                    ("sent/entropy_p90", "p90")]),
    ("semantic entropy of the rollout groups", [("semantic_entropy/mean", "mean"), ("semantic_entropy/p50", "p50")]),
    ("penalised fraction of tokens", [("sent/penalised_frac", "penalised")]),
    ("KL term added to the loss", [("actor/sent/kl_term", "actor/sent/kl_term")]),
    ("curriculum stage", [("curriculum/stage", "stage")]),
]


def step_series(entries: list[dict], metric: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one metric over the training steps that logged it."""
    points = [(entry["step"], entry["data"][metric]) for entry in entries
              if metric in entry["data"] and "training/global_step" in entry["data"]]
    return [step for step, _ in points], [float(value) for _, value in points]


def stage_starts(entries: list[dict]) -> list[int]:
    """Steps at which the curriculum moved to a new stage (`curriculum/stage` changed from the step before)."""
    steps, stages = step_series(entries, "curriculum/stage")
    return [step for step, before, now in zip(steps[1:], stages, stages[1:]) if now != before]


def _panels(count: int, width: float = 7):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(count, 1, figsize=(width, 2.1 * count), sharex=True, squeeze=False)
    return fig, list(axes[:, 0])


def _save(fig, axes, path: str | Path, title: str) -> Path:
    import matplotlib.pyplot as plt

    axes[-1].set_xlabel("training step")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def band(runs: list[list[dict]], metric: str) -> tuple[list[int], list[float], list[float], list[float]]:
    """(steps, mean, min, max) of one metric across runs (seeds), at every step any of them logged it."""
    by_step: dict[int, list[float]] = {}
    for entries in runs:
        for step, value in zip(*step_series(entries, metric)):
            by_step.setdefault(step, []).append(value)
    steps = sorted(by_step)
    return (steps, [sum(by_step[s]) / len(by_step[s]) for s in steps], [min(by_step[s]) for s in steps],
            [max(by_step[s]) for s in steps])


def plot_variant_curves(runs: dict[str, dict[int, list[dict]]], panels: list[tuple[str, str]], path: str | Path,
                        title: str = "") -> Path:
    """Variants on shared panels: `runs` = {variant: {seed: entries}}, `panels` = [(title, metric)]; per panel and
    variant the mean across seeds as a line and the seeds' min-max as a band; dotted vertical lines in the variant's
    colour where a seed's curriculum moved to the next stage."""
    fig, axes = _panels(len(panels), width=8)
    colours = {name: f"C{i % 10}" for i, name in enumerate(runs)}
    for ax, (panel, metric) in zip(axes, panels):
        drawn = False
        for name, seeds in runs.items():
            logged = [entries for entries in seeds.values() if step_series(entries, metric)[0]]
            steps, mean, low, high = band(logged, metric)
            if steps:
                ax.plot(steps, mean, marker="o", markersize=3, color=colours[name],
                        label=f"{name} (mean of {len(logged)} seed{'s' if len(logged) != 1 else ''})")
                if len(logged) > 1:
                    ax.fill_between(steps, low, high, color=colours[name], alpha=0.2, linewidth=0)
                drawn = True
            for step in sorted({start for entries in seeds.values() for start in stage_starts(entries)}):
                ax.axvline(step - 0.5, color=colours[name], linestyle=":", alpha=0.6)
        if drawn:
            ax.legend(fontsize=6, ncol=3)
        else:
            ax.text(0.5, 0.5, "not logged by these runs", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"{panel} ({metric})", fontsize=9)
        ax.grid(alpha=0.3)
    return _save(fig, axes, path, title)


def plot_dose_response(points: dict[str, list[tuple]], path: str | Path, accuracy: str,
                       reference: dict[str, tuple] | None = None) -> Path:
    """The lab's dose-response: a column per knob, its collapse ratio (token entropy of the last steps / step 1) on
    top and held-out accuracy (%) below, at each value in the given order. `points` = {knob: [(value, ratio,
    accuracy)]}, each an `Interval` (mean over seeds and its 95% interval, drawn as an error bar) or None;
    `reference` = {name: (ratio, accuracy)}: a horizontal line with its interval as a band (e.g. grpo)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    knobs = list(points)
    fig, axes = plt.subplots(2, max(len(knobs), 1), figsize=(3.6 * max(len(knobs), 1), 5.4), squeeze=False)
    rows = [("token entropy last / step 1", 1), (f"held-out {accuracy} (%)", 2)]
    for column, knob in enumerate(knobs):
        for row, (label, index) in enumerate(rows):
            ax = axes[row][column]
            for n, (ref_name, values) in enumerate((reference or {}).items()):
                ref = values[index - 1]
                if ref is None:
                    continue
                ax.axhline(ref.mean, color=f"C{3 + n}", linestyle="--", linewidth=1, label=f"{ref_name} (n={ref.n})")
                if ref.low is not None:
                    ax.axhspan(ref.low, ref.high, color=f"C{3 + n}", alpha=0.15, linewidth=0)
            for x, entry in enumerate(points[knob]):
                interval = entry[index]
                if interval is None:
                    continue
                error = None if interval.low is None else [[interval.mean - interval.low],
                                                           [interval.high - interval.mean]]
                ax.errorbar([x], [interval.mean], yerr=error, fmt="o", color="C0", capsize=4)
                ax.annotate(f"n={interval.n}", (x, interval.mean), textcoords="offset points", xytext=(6, -3),
                            fontsize=6)
            ax.set_xticks(range(len(points[knob])), [str(entry[0]) for entry in points[knob]])
            ax.set_xlim(-0.5, len(points[knob]) - 0.5)
            means = [entry[index].mean for entry in points[knob] if entry[index] is not None and entry[index].mean > 0]
            if row == 0 and means and max(means) > 20 * min(means):  # a blown-up point would flatten the others
                ax.set_yscale("log")
            ax.set_ylabel(label, fontsize=8)
            ax.set_title(knob if row == 0 else "", fontsize=9)
            ax.set_xlabel(knob if row == 1 else "")
            ax.grid(alpha=0.3)
            if reference and column == 0:
                ax.legend(fontsize=7)
    fig.suptitle("dose-response: mean over seeds, 95% interval", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _draw_panel(ax, panel: str, lines: list[tuple[str, str]], entries: list[dict]) -> None:
    """One PANELS entry of one run: its metrics against the step, dotted lines where the curriculum's stage moved."""
    drawn = False
    for metric, label in lines:
        steps, values = step_series(entries, metric)
        if steps:
            ax.plot(steps, values, marker="o", markersize=3, label=label)
            drawn = True
    for step in stage_starts(entries):
        ax.axvline(step - 0.5, color="grey", linestyle=":", alpha=0.6)
    ax.ticklabel_format(axis="y", useOffset=False)  # a share pinned at 0.8 reads as 0.8, not as 1e-4 + 8e-1
    if "fraction" in panel:
        ax.set_ylim(0, 1.05)
    if not drawn:
        ax.text(0.5, 0.5, "not logged in this run", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(panel, fontsize=9)
    if len(lines) > 1 and drawn:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def plot_demo(facts: dict, entries: list[dict], path: str | Path, title: str = "") -> Path:
    """The demo's figure: on the left SE and pass rate per difficulty level, the curriculum's stages and held-out
    accuracy before and after (95% intervals); on the right the training curves of PANELS."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(12, 2.0 * len(PANELS)))
    grid = fig.add_gridspec(len(PANELS), 2)
    left = [fig.add_subplot(grid[2 * i : 2 * i + 2, 0]) for i in range(len(PANELS) // 2)]

    ax = left[0]
    levels = facts["levels"]
    ax.bar([row["level"] for row in levels], [row["se"] for row in levels], color="C0", label="mean SE")
    ax.set_ylabel("mean SE (nats)")
    twin = ax.twinx()
    twin.plot([row["level"] for row in levels], [row["pass_rate"] for row in levels], "o-", color="C3",
              label="pass rate")
    twin.set_ylim(0, 1)
    twin.set_ylabel("pass rate", color="C3")
    corr = facts["corr"]
    ax.set_title(f"semantic entropy by difficulty level (Spearman corr(SE, pass) "
                 f"{'n/a' if corr is None else f'{corr:.2f}'})", fontsize=9)
    ax.set_xlabel("level")

    ax = left[1]
    stages = facts["stages"]
    for stage in stages:
        ax.barh(stage["stage"], stage["se_max"] - stage["se_min"], left=stage["se_min"], height=0.6, color="C2")
        ax.text(stage["se_max"], stage["stage"], f"  {stage['rows']} prompts", va="center", fontsize=7)
    ax.set_yticks([stage["stage"] for stage in stages])
    ax.invert_yaxis()
    ax.set_xlabel("semantic entropy of the stage's prompts (nats)")
    ax.set_ylabel("stage (trained in this order)")
    ax.set_title("curriculum: stages from low to high SE", fontsize=9)

    ax = left[2]
    held = facts.get("heldout")
    if held:
        bars = [("initial", held["before"]), (f"after {len(facts['training'])} steps", held["after"])]
        for i, (label, interval) in enumerate(bars):
            ax.bar(i, 100 * interval.mean, color=f"C{i}", label=label)
            ax.errorbar(i, 100 * interval.mean, yerr=[[100 * (interval.mean - interval.low)],
                                                      [100 * (interval.high - interval.mean)]], color="k", capsize=6)
        ax.set_xticks(range(len(bars)), [label for label, _ in bars])
        ax.set_ylabel("held-out accuracy (%)")
        ax.set_title(f"held-out accuracy, {held['problems']} problems, 95% intervals (change "
                     f"{held['change'].format('+.1f', 100)} points)", fontsize=9)
    else:
        ax.text(0.5, 0.5, "held-out accuracy: measured on the toy reasoner", ha="center", va="center",
                transform=ax.transAxes)
    for ax in left:
        ax.grid(alpha=0.3)

    right = [fig.add_subplot(grid[i, 1]) for i in range(len(PANELS))]
    for ax, (panel, lines) in zip(right, PANELS):
        _draw_panel(ax, panel, lines, entries)
    return _save(fig, right, path, title)
