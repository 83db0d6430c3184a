"""Per-step training curves from the metrics verl logs (`metrics.jsonl` of `recipe.sent.launch.train`)."""

from __future__ import annotations

from pathlib import Path

# (panel title, [(metric as verl logs it, line label)])
PANELS = [
    ("mean reward", [("critic/score/mean", "reward")]),
    ("token entropy (old policy)", [("sent/entropy_p10", "p10"), ("sent/entropy_p50", "p50"),
                                    ("sent/entropy_p90", "p90")]),
    ("penalised fraction of tokens", [("sent/penalised_frac", "penalised")]),
    ("KL term added to the loss", [("actor/sent/kl_term", "actor/sent/kl_term")]),
    ("curriculum stage", [("curriculum/stage", "stage")]),
]


def step_series(entries: list[dict], metric: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one metric over the training steps that logged it."""
    points = [(entry["step"], entry["data"][metric]) for entry in entries
              if metric in entry["data"] and "training/global_step" in entry["data"]]
    return [step for step, _ in points], [float(value) for _, value in points]


def plot_training_curves(entries: list[dict], path: str | Path, title: str = "") -> Path:
    """One panel per entry of PANELS (a panel whose metrics were never logged says so) -> PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(PANELS), 1, figsize=(7, 2.1 * len(PANELS)), sharex=True)
    for ax, (panel, lines) in zip(axes, PANELS):
        drawn = False
        for metric, label in lines:
            steps, values = step_series(entries, metric)
            if steps:
                ax.plot(steps, values, marker="o", markersize=3, label=label)
                drawn = True
        if not drawn:
            ax.text(0.5, 0.5, "not logged in this run", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(panel, fontsize=9)
        if len(lines) > 1 and drawn:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("training step")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
