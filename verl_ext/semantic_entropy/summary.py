"""What a scored data set looks like: counts, SE percentiles, SE vs pass rate, and the SE histogram.

``summary.json`` holds the numbers; ``se_hist.png`` draws the SE histogram with the pass rate per SE bin on a second
axis (so "low SE = easy" can be read off it) and the stage boundaries of the curriculum that will be built from these
scores (``summary.stages``, set as ``data.curriculum`` will be).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from verl_ext.curriculum import StagesConfig, describe_stages


def summarize(scored: pa.Table, bad_rows: list[dict], bad_files: list[dict], png: Path, bins: int = 20,
              stages: StagesConfig | None = None) -> dict:
    """Counts, SE percentiles, SE vs pass-rate correlation, the histogram (data and PNG) and the curriculum stages."""
    info = scored.column("extra_info").to_pylist() if scored.num_rows else []
    se = np.array([d["semantic_entropy"] for d in info], dtype=float)
    pr = np.array([d["se_pass_rate"] for d in info], dtype=float)
    summary: dict[str, Any] = {
        "rows_scored": int(scored.num_rows),
        "bad_rows": len(bad_rows),
        "bad_rows_first": bad_rows[:20],
        "bad_files": bad_files,
        "entropy_flavour": info[0]["se_flavour"] if info else None,
    }
    hist = histogram_with_pass_rate(se, pr, bins)
    stage_rows = describe_stages(se.tolist(), stages or StagesConfig()) if len(se) else []
    if len(se):
        qs = [0, 10, 25, 50, 75, 90, 100]
        summary["se_mean"] = float(se.mean())
        summary["se_percentiles"] = {f"p{q}": float(v) for q, v in zip(qs, np.percentile(se, qs))}
        summary["pass_rate_mean"] = float(pr.mean())
        summary["se_zero_fraction"] = float((se <= 1e-12).mean())
        summary["corr_se_pass_rate_pearson"] = _corr(se, pr)
        summary["corr_se_pass_rate_spearman"] = _corr(_rank(se), _rank(pr))
        summary["se_histogram"] = hist
        summary["curriculum_stages"] = stage_rows
    _plot(se, hist, stage_boundaries(stage_rows), png)
    summary["histogram_png"] = str(png)
    return summary


def histogram_with_pass_rate(se: np.ndarray, pass_rate: np.ndarray, bins: int) -> dict:
    """Bin ``edges``, prompt ``counts`` and the mean ``pass_rate`` of each bin (None for an empty bin)."""
    if not len(se):
        return {"edges": [], "counts": [], "pass_rate": []}
    counts, edges = np.histogram(se, bins=bins)
    which = np.clip(np.searchsorted(edges, se, side="right") - 1, 0, len(counts) - 1)  # np.histogram's bins
    means = [float(pass_rate[which == b].mean()) if counts[b] else None for b in range(len(counts))]
    return {"edges": edges.tolist(), "counts": counts.tolist(), "pass_rate": means}


def stage_boundaries(stage_rows: list[dict]) -> list[float]:
    """Where one non-empty stage ends and the next begins: midway between its highest SE and the next one's lowest."""
    filled = [s for s in stage_rows if s["rows"]]
    return [(a["se_max"] + b["se_min"]) / 2 for a, b in zip(filled, filled[1:])]


def _rank(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank)."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=float)
    xs = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0
        i = j + 1
    return ranks


def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return None  # undefined when either side is constant
    return float(np.corrcoef(a, b)[0, 1])


def _plot(se: np.ndarray, hist: dict, boundaries: list[float], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if hist["counts"]:
        edges = np.asarray(hist["edges"])
        ax.bar(edges[:-1], hist["counts"], width=np.diff(edges), align="edge", color="#4477aa", edgecolor="white",
               label="prompts")
        centres = (edges[:-1] + edges[1:]) / 2
        filled = [(c, p) for c, p in zip(centres, hist["pass_rate"]) if p is not None]
        rate_ax = ax.twinx()
        rate_ax.plot([c for c, _ in filled], [p for _, p in filled], "o-", color="#cc6677", label="pass rate")
        rate_ax.set_ylim(-0.03, 1.03)
        rate_ax.set_ylabel("mean pass rate in the bin", color="#cc6677")
        for k, x in enumerate(boundaries):
            ax.axvline(x, color="#222222", linestyle="--", linewidth=1)
            ax.annotate(f"stage {k + 1} | {k + 2}", (x, 1), xycoords=("data", "axes fraction"), xytext=(-2, -4),
                        textcoords="offset points", rotation=90, va="top", ha="right", fontsize=8)
    ax.set_xlabel("semantic entropy (nats)")
    ax.set_ylabel("prompts")
    ax.set_title(f"Semantic entropy, {len(se)} prompts")
    fig.tight_layout()
    tmp = png.with_name("." + png.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, png)
