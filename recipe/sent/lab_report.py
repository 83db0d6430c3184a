"""The lab's report (`report.md`, a row per variant and the initial model) and `curves.png`, from what the variants
left in the lab's output folder (`<variant>/metrics.jsonl`, `eval/results.json`, `done.json`, `failed.json`)."""

from __future__ import annotations

import json
from pathlib import Path

from recipe.sent.lab_config import VARIANTS

BENCHMARK = "heldout"  # the held-out split's name in the eval harness's results

# curves.png: (panel title, metric); lab/* are derived per step by `derived_metrics`
CURVE_PANELS = [
    ("token entropy p50 (old policy)", "lab/entropy_p50"),
    ("token entropy, mean", "actor/entropy"),
    ("semantic entropy of the rollout groups, mean", "semantic_entropy/mean"),
    ("share of prompts whose answers all agree", "semantic_entropy/agree_frac"),
    ("train reward (mean)", "critic/score/mean"),
    ("penalised fraction of tokens", "lab/penalised_frac"),
    ("KL term added to the loss", "lab/kl_term"),
]


def derived_metrics(entries: list[dict]) -> list[dict]:
    """Each step's data plus lab/* series that read the same across variants: the token-entropy p50 and penalised
    fraction from whichever scope logged them, and the KL added to the loss (SENT's term + kl_coef * uniform KL)."""
    out = []
    for entry in entries:
        data = dict(entry["data"])
        for lab_key, sources in (("lab/entropy_p50", ("sent/entropy_p50", "actor/sent/entropy_p50")),
                                 ("lab/penalised_frac", ("sent/penalised_frac", "actor/sent/penalised_frac"))):
            found = [data[key] for key in sources if key in data]
            if found:
                data[lab_key] = found[0]
        parts = [data.get("actor/sent/kl_term")]
        if "actor/kl_loss" in data and "actor/kl_coef" in data:
            parts.append(data["actor/kl_coef"] * data["actor/kl_loss"])
        if any(part is not None for part in parts):
            data["lab/kl_term"] = sum(part for part in parts if part is not None)
        out.append({**entry, "data": data})
    return out


def after_warm_up(values: list[float]) -> list[float]:
    """A run's per-step values without step 1, which includes the workers' warm-up (unless it is the only one)."""
    return values[1:] or values


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)


def variant_summary(entries: list[dict], last_steps: int) -> dict:
    from recipe.sent.curves import step_series

    def series(metric: str) -> list[float]:
        return step_series(entries, metric)[1]

    entropy, p50 = series("actor/entropy"), series("lab/entropy_p50")
    semantic, agree = series("semantic_entropy/mean"), series("semantic_entropy/agree_frac")
    step_times = series("timing_s/step")
    return {
        "steps": len(series("critic/score/mean")),
        "entropy": (entropy[0], entropy[-1]) if entropy else None,
        "entropy_p50": (p50[0], p50[-1]) if p50 else None,
        "semantic_entropy": (semantic[0], semantic[-1]) if semantic else None,
        "agree_frac": (agree[0], agree[-1]) if agree else None,
        "reward": _mean(series("critic/score/mean")[-last_steps:]),
        "clipfrac": _mean(series("actor/pg_clipfrac")),
        "penalised": _mean(series("lab/penalised_frac")),
        "kl_term": _mean(series("lab/kl_term")),
        "s_per_step": _mean(after_warm_up(step_times)),
    }


def _start_end(pair: tuple[float, float] | None) -> str:
    if pair is None:
        return "–"
    start, end = pair
    change = f" ({(end - start) / abs(start):+.0%})" if start else ""
    return f"{start:.3f} → {end:.3f}{change}"


def build_report(out: Path, names: list[str], ks: list[int], last_steps: int, command: str = "",
                 run_info: tuple[str, ...] = ()) -> Path:
    """report.md (a row per variant and the baseline) and curves.png from what the variants left in `out`;
    `run_info`: lines on the machine and the wall time, written under the command."""
    from recipe.sent.curves import plot_variant_curves
    from recipe.sent.launch import read_metrics

    runs = {name: derived_metrics(read_metrics(out / name / "metrics.jsonl")) for name in names}
    summaries = {name: variant_summary(entries, last_steps) for name, entries in runs.items()}
    grpo_speed = summaries.get("grpo", {}).get("s_per_step")
    eval_cols = [f"avg@{k}" for k in ks] + [f"pass@{k}" for k in ks]
    header = ["variant", "status", "steps", "token entropy, mean: start → end", "entropy p50: start → end",
              "semantic entropy, mean: start → end", "all agree: start → end",
              f"train reward (last {last_steps})", *[f"held-out {c}" for c in eval_cols], "clip frac",
              "penalised frac", "KL term", "s/step", "× grpo", "wall min"]
    rows = []
    baseline = _read_eval(out / "baseline" / "eval")
    rows.append(["initial model", "baseline" if baseline else "not evaluated", "0", "–", "–", "–", "–", "–",
                 *[_fmt((baseline or {}).get(c), ".1f") for c in eval_cols], "–", "–", "–", "–", "–", "–"])
    for name in names:
        failed, done = out / name / "failed.json", out / name / "done.json"
        if failed.exists():
            error = json.loads(failed.read_text())["error"].splitlines()[0].replace("|", "\\|")[:200]
            status = f"failed: {error}"
        else:
            status = "done" if done.exists() else "not finished"
        marker = json.loads(done.read_text()) if done.exists() else {}
        wall = _fmt(marker["wall_s"] / 60, ".1f") if "wall_s" in marker else "–"
        wall += " (resumed)" if marker.get("resumed") else ""
        s, evaluated = summaries[name], _read_eval(out / name / "eval") or {}
        ratio = s["s_per_step"] / grpo_speed if s["s_per_step"] and grpo_speed else None
        rows.append([name, status, str(s["steps"]), _start_end(s["entropy"]), _start_end(s["entropy_p50"]),
                     _start_end(s["semantic_entropy"]), _start_end(s["agree_frac"]),
                     _fmt(s["reward"]), *[_fmt(evaluated.get(c), ".1f") for c in eval_cols], _fmt(s["clipfrac"]),
                     _fmt(s["penalised"]), _fmt(s["kl_term"], ".2e"), _fmt(s["s_per_step"], ".1f"),
                     _fmt(ratio, ".2f"), wall])
    lines = ["# SENT lab", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [*run_info, ""] if run_info else []
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    notes = ("Held-out: avg@k and pass@k in percent on problems that never trained. Token entropy: "
             "`actor/entropy` (mean over response tokens), p50: `sent/entropy_p50` (SENT's step selection). "
             "Semantic entropy: `semantic_entropy/mean`, the mean over a step's prompts of the entropy of its n "
             "answers' math-verify clusters (the scoring job's clustering, in nats); all agree: "
             "`semantic_entropy/agree_frac`, the share of prompts whose answers form one cluster. "
             "KL term: `actor/sent/kl_term` + `actor/kl_coef` x `actor/kl_loss` (KL-Cov's penalty sits inside "
             "its policy loss and is not counted). s/step: `timing_s/step` without the first step. wall min: training, "
             "merge and evaluation of the variant in the invocation that finished it (resumed: the part after the resume).")
    lines += ["", notes, "", "| variant | preset | overrides | what |", "|---|---|---|---|"]
    lines += [f"| {name} | {VARIANTS[name].preset} | `{' '.join(VARIANTS[name].overrides)}` | {VARIANTS[name].what} |"
              for name in names]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    plot_variant_curves(runs, CURVE_PANELS, out / "curves.png", title="SENT lab (dotted: curriculum stage starts)")
    return report


def _read_eval(eval_dir: Path) -> dict | None:
    results = eval_dir / "results.json"
    if not results.exists():
        return None
    return json.loads(results.read_text())["benchmarks"][BENCHMARK]["metrics"]
