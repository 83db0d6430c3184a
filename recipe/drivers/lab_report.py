"""The lab's report (`report.md`, a row per variant and the initial model) and `curves.png`, from what each run left in
the lab's output folder (`<variant>/seed<k>/`: `metrics.jsonl`, `eval/heldout.json`, `done.json`, `failed.json`).

Every number that compares variants is a mean over seeds with its 95% interval (`verl_ext.stats`): a t-interval across
seeds, for held-out accuracy too (over each seed's mean over the held-out problems: seeds are what varies from one run
to the next; a bootstrap over problems and seeds left out the seed-to-seed spread and was narrower, e.g. 43.5-63.0
against 27.5-80.0 on 3 seeds); with one seed, or for the initial model, a bootstrap over problems. One sentence per
variant says which differences from grpo exceed the intervals; with a dose-response, `dose_response.png` draws the
collapse ratio and held-out avg@1 against each knob."""

from __future__ import annotations

import json
from pathlib import Path

from recipe.drivers.curves import plot_dose_response
from recipe.drivers.heldout import eval_answer_fallback, format_failures, heldout_scores
from recipe.drivers.lab_config import Variant
from verl_ext.stats import Interval, bootstrap_over_problems_and_seeds, first_reaching, in_words, seed_interval

COLLAPSED = 0.5  # a run's token entropy collapsed: its last steps' mean is at most this share of step 1's

# curves.png: (panel title, metric); lab/* are derived per step by `derived_metrics`
CURVE_PANELS = [
    ("token entropy p50 (old policy)", "lab/entropy_p50"),
    ("token entropy, mean", "actor/entropy"),
    ("semantic entropy of the rollout groups, mean", "semantic_entropy/mean"),
    ("share of prompts whose answers all agree", "semantic_entropy/agree_frac"),
    ("train reward (mean)", "critic/score/mean"),
    ("penalised fraction of tokens", "lab/penalised_frac"),
    ("KL term added to the loss", "lab/kl_term"),
    # token_sets/*: SENT's selection measured in every run (applied only under the SENT loss)
    ("mean token entropy, tokens SENT leaves free", "token_sets/free_entropy_mean"),
    ("mean token entropy, tokens SENT penalises", "token_sets/penalised_entropy_mean"),
    ("mean KL to the reference, tokens SENT leaves free", "token_sets/free_kl_ref_mean"),
    ("mean KL to the reference, tokens SENT penalises", "token_sets/penalised_kl_ref_mean"),
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


def _share(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"  # not evaluated, or its answers not recorded


def run_dir(out: Path, name: str, seed: int) -> Path:
    """Where one (variant, seed) run writes: metrics.jsonl, checkpoints/, hf/, eval/, done.json or failed.json."""
    return out / name / f"seed{seed}"


def run_summary(entries: list[dict], last_steps: int, reward_target: float) -> dict:
    """One run's numbers: step 1 and the mean of the last `last_steps` steps of each curve, the train reward's
    last steps, the steps and seconds until the train reward first reaches `reward_target`, seconds per step."""
    from recipe.drivers.curves import step_series

    def first_and_last(metric: str) -> tuple[float | None, float | None]:
        values = step_series(entries, metric)[1]
        return (values[0], _mean(values[-last_steps:])) if values else (None, None)

    steps, rewards = step_series(entries, "critic/score/mean")
    step_times = dict(zip(*step_series(entries, "timing_s/step")))
    reached = first_reaching(steps, rewards, reward_target)
    summary = {"steps": len(steps), "reward": _mean(rewards[-last_steps:]), "steps_to_target": reached,
               "seconds_to_target": (sum(t for s, t in step_times.items() if s <= reached)
                                     if reached is not None and step_times else None),
               "s_per_step": _mean(after_warm_up(list(step_times.values()))),
               "penalised": _mean(step_series(entries, "lab/penalised_frac")[1]),
               "kl_term": _mean(step_series(entries, "lab/kl_term")[1]),
               "clipfrac": _mean(step_series(entries, "actor/pg_clipfrac")[1])}
    for key, metric in (("entropy", "actor/entropy"), ("entropy_p50", "lab/entropy_p50"),
                        ("semantic_entropy", "semantic_entropy/mean"), ("agree_frac", "semantic_entropy/agree_frac"),
                        # where the collapse lives: SENT's selection, measured in every run (token_sets/*)
                        ("free_entropy", "token_sets/free_entropy_mean"),
                        ("penalised_entropy", "token_sets/penalised_entropy_mean"),
                        ("free_entropy_share", "token_sets/free_entropy_share"),
                        ("free_kl_share", "token_sets/free_kl_ref_share")):
        summary[f"{key}_first"], summary[f"{key}_last"] = first_and_last(metric)
    first, last = summary["entropy_first"], summary["entropy_last"]
    summary["entropy_ratio"] = last / first if first and last is not None else None  # <= COLLAPSED: collapsed
    return summary


def heldout_intervals(per_seed: list[dict[str, list[float]]], columns: list[str], problems: list[int] | None = None
                      ) -> dict[str, Interval]:
    """Each column's mean over problems and seeds; its interval a t-interval over the seeds' means (two seeds or
    more), else a bootstrap over problems; `problems`: only these indices."""
    out = {}
    for column in columns:
        table = [[scores[column][i] for i in (problems if problems is not None else range(len(scores[column])))]
                 for scores in per_seed]
        if table and table[0]:
            interval = (seed_interval([sum(row) / len(row) for row in table]) if len(table) > 1
                        else bootstrap_over_problems_and_seeds(table))
            # a t-interval of few seeds can pass 0 or 1 (the wider it is, the less the seeds agree); shown clipped
            out[column] = Interval(interval.mean, *(None if bound is None else min(max(bound, 0.0), 1.0)
                                                    for bound in (interval.low, interval.high)), interval.n)
    return out


def untrained_levels(out: Path) -> tuple[list[int], list[int]]:
    """(levels held out only, indices of the held-out problems at those levels) from the lab's data split."""
    import pandas as pd

    train_file, eval_file = out / "data" / "train.parquet", out / "data" / "eval.parquet"
    if not (train_file.exists() and eval_file.exists()):
        return [], []
    trained = {info.get("level") for info in pd.read_parquet(train_file, columns=["extra_info"])["extra_info"]}
    levels = [info.get("level") for info in pd.read_parquet(eval_file, columns=["extra_info"])["extra_info"]]
    new = sorted({level for level in levels if level not in trained and level is not None})
    return new, [i for i, level in enumerate(levels) if level in new]


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)


def _cell(interval: Interval | None, spec: str = ".3f", scale: float = 1.0) -> str:
    return "–" if interval is None else interval.format(spec, scale)


def _change(first: Interval | None, last: Interval | None) -> str:
    if first is None or last is None:
        return "–"
    change = f" ({(last.mean - first.mean) / abs(first.mean):+.0%})" if first.mean else ""
    return f"{first.format()} → {last.format()}{change}"


def _percent(interval: Interval | None) -> Interval | None:
    return None if interval is None else Interval(
        interval.mean * 100, *(None if x is None else x * 100 for x in (interval.low, interval.high)), interval.n)


def _status(out: Path, name: str, seeds: list[int]) -> str:
    failed = {seed: run_dir(out, name, seed) / "failed.json" for seed in seeds}
    failed = {seed: path for seed, path in failed.items() if path.exists()}
    if failed:
        errors = [f"seed {seed}: " + json.loads(path.read_text())["error"].splitlines()[0].replace("|", "\\|")[:200]
                  for seed, path in failed.items()]
        return "failed: " + "; ".join(errors)
    done = sum((run_dir(out, name, seed) / "done.json").exists() for seed in seeds)
    return "done" if done == len(seeds) else f"not finished ({done}/{len(seeds)} seeds done)"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(row) + " |" for row in rows]]


def build_report(out: Path, variants: dict[str, Variant], seeds: list[int], ks: list[int], last_steps: int,
                 reward_target: float, command: str = "", run_info: tuple[str, ...] = (),
                 dose: dict[str, list[tuple]] | None = None) -> Path:
    """report.md (training table, held-out table, one sentence per variant against grpo) and curves.png from what
    the runs left in `out`; `variants`: name -> Variant, in the report's order; `run_info`: lines on the machine and
    the wall time, written under the command; `dose` (`LabConfig.dose_points`): knob -> [(value, run name)], drawn in
    dose_response.png."""
    from recipe.drivers.curves import plot_variant_curves
    from recipe.drivers.launch import read_metrics

    names = list(variants)
    runs = {name: {seed: derived_metrics(read_metrics(run_dir(out, name, seed) / "metrics.jsonl")) for seed in seeds}
            for name in names}
    per_run = {name: {seed: run_summary(entries, last_steps, reward_target) for seed, entries in by_seed.items()
                      if entries} for name, by_seed in runs.items()}

    def across(name: str, key: str) -> Interval | None:
        return seed_interval([s[key] for s in per_run[name].values() if s[key] is not None])

    def collapsed(name: str) -> int:
        return sum(s["entropy_ratio"] is not None and s["entropy_ratio"] <= COLLAPSED for s in per_run[name].values())

    # seconds per step against grpo: the ratio on each seed both ran, then its interval across seeds
    grpo_runs = per_run.get("grpo", {})
    ratios = {name: seed_interval([s["s_per_step"] / grpo_runs[seed]["s_per_step"] for seed, s in by_seed.items()
                                   if s["s_per_step"] and grpo_runs.get(seed, {}).get("s_per_step")])
              for name, by_seed in per_run.items()}
    target = f"reward ≥ {reward_target:g}"
    header = ["variant", "status", "seeds", "steps", f"token entropy, mean: step 1 → last {last_steps}",
              f"entropy p50: step 1 → last {last_steps}", f"semantic entropy, mean: step 1 → last {last_steps}",
              f"all agree: step 1 → last {last_steps}",
              f"entropy of the tokens SENT leaves free: step 1 → last {last_steps}",
              f"entropy of the tokens SENT penalises: step 1 → last {last_steps}",
              f"free tokens' share of the entropy (last {last_steps})",
              f"free tokens' share of the KL to the reference (last {last_steps})",
              f"token entropy last {last_steps} / step 1 (seeds ≤ {COLLAPSED:g})", f"train reward (last {last_steps})",
              f"steps to {target}", f"seconds to {target}", "clip frac", "penalised frac", "KL term", "s/step",
              "× grpo", "wall min"]
    rows = []
    for name in names:
        markers = [json.loads(path.read_text()) for seed in seeds
                   if (path := run_dir(out, name, seed) / "done.json").exists()]
        wall = _fmt(sum(m["wall_s"] for m in markers) / 60, ".1f") if markers else "–"
        wall += " (resumed)" if any(m.get("resumed") for m in markers) else ""
        reached = sum(s["steps_to_target"] is not None for s in per_run[name].values())
        reach_note = f" ({reached}/{len(per_run[name])} reached)" if reached < len(per_run[name]) else ""
        steps = sorted({s["steps"] for s in per_run[name].values()})
        rows.append([name, _status(out, name, seeds), str(len(per_run[name])), "/".join(map(str, steps)) or "0",
                     *[_change(across(name, f"{key}_first"), across(name, f"{key}_last"))
                       for key in ("entropy", "entropy_p50", "semantic_entropy", "agree_frac", "free_entropy",
                                   "penalised_entropy")],
                     _cell(across(name, "free_entropy_share_last"), ".2f"),
                     _cell(across(name, "free_kl_share_last"), ".2f"),
                     _cell(across(name, "entropy_ratio"), ".2f") + f" ({collapsed(name)}/{len(per_run[name])})",
                     _cell(across(name, "reward")), _cell(across(name, "steps_to_target"), ".1f") + reach_note,
                     _cell(across(name, "seconds_to_target"), ".0f") + reach_note,
                     _cell(across(name, "clipfrac")), _cell(across(name, "penalised")),
                     _cell(across(name, "kl_term"), ".2e"), _cell(across(name, "s_per_step"), ".1f"),
                     _cell(ratios.get(name), ".2f"), wall])

    # held-out: per problem and seed, bootstrapped over both
    columns = [f"avg@{k}" for k in ks] + [f"pass@{k}" for k in ks]
    new_levels, new_problems = untrained_levels(out)
    new_columns = [f"avg@{ks[0]}", f"pass@{ks[-1]}"] if new_levels else []
    baseline = heldout_scores(out / "baseline" / "eval", ks)
    heldout: dict[str, tuple[dict, dict, int]] = {}
    for name in ["initial model", *names]:
        per_seed = [baseline] if name == "initial model" and baseline else [
            scores for seed in seeds if name != "initial model"
            and (scores := heldout_scores(run_dir(out, name, seed) / "eval", ks)) is not None]
        if per_seed:
            heldout[name] = (heldout_intervals(per_seed, columns),
                             heldout_intervals(per_seed, new_columns, new_problems) if new_levels else {},
                             len(per_seed))
    level_label = "level " + ", ".join(map(str, new_levels)) + " (never trained)"
    held_header = ["variant", "seeds", *[f"held-out {c}" for c in columns],
                   *[f"{level_label} {c}" for c in new_columns]]
    held_rows = []
    for name in ["initial model", *names]:
        if name not in heldout:
            held_rows.append([name, "0", *["–"] * (len(columns) + len(new_columns))])
            continue
        overall, new, count = heldout[name]
        held_rows.append([name, str(count), *[_cell(overall.get(c), ".1f", 100) for c in columns],
                          *[_cell(new.get(c), ".1f", 100) for c in new_columns]])

    # format failures: per run, held-out answers the grader could not read (a format that drifted shows here)
    evals = {"initial model": out / "baseline" / "eval",
             **{f"{name} seed {seed}": run_dir(out, name, seed) / "eval" for name in names for seed in seeds}}
    failures = [f"{label} {_share(format_failures(eval_dir))}" for label, eval_dir in evals.items()]
    # an evaluation from before the toy task's strict grader read a malformed box's last number: it counts only
    # answers with no number at all
    lenient = {label: fallback for label, eval_dir in evals.items()
               if (fallback := eval_answer_fallback(eval_dir)) not in (None, "none")}

    # in words: each variant against grpo
    sentences = []
    for name in names:
        if name == "grpo" or "grpo" not in per_run:
            continue
        pair = (name, "grpo")
        clauses = [in_words(f"token entropy (last {last_steps} steps)", across(name, "entropy_last"),
                            across("grpo", "entropy_last"), pair),
                   in_words(f"token entropy last {last_steps} / step 1", across(name, "entropy_ratio"),
                            across("grpo", "entropy_ratio"), pair),
                   in_words(f"semantic entropy (last {last_steps} steps)", across(name, "semantic_entropy_last"),
                            across("grpo", "semantic_entropy_last"), pair),
                   in_words(f"train reward (last {last_steps} steps)", across(name, "reward"),
                            across("grpo", "reward"), pair),
                   in_words(f"steps to {target}", across(name, "steps_to_target"),
                            across("grpo", "steps_to_target"), pair),
                   in_words("s/step", across(name, "s_per_step"), across("grpo", "s_per_step"), pair)]
        if name in heldout and "grpo" in heldout:
            for column in (f"avg@{ks[0]}", f"pass@{ks[-1]}"):
                clauses.append(in_words(f"held-out {column} (%)", _percent(heldout[name][0].get(column)),
                                        _percent(heldout["grpo"][0].get(column)), pair))
        sentences.append(f"- **{name} vs grpo**: " + "; ".join(clauses) + ".")

    lines = ["# SENT lab", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [*run_info, ""] if run_info else []
    lines += [f"Seeds: {', '.join(map(str, seeds))}. Each cell: the mean over seeds [95% interval], a Student-t "
              "interval across seeds (held-out accuracy: over each seed's mean; with one seed, and for the initial "
              "model, a bootstrap over problems).", ""]
    lines += _table(header, rows)
    lines += ["", *_table(held_header, held_rows)]
    lines += ["", "Format failures (held-out answers with no final answer the grader reads, per run): "
              + "; ".join(failures) + "."]
    if lenient:
        which = "every evaluation" if len(lenient) == len([e for e in evals.values() if e.exists()]) else \
            ", ".join(lenient)
        lines[-1] += (f" Read with the {'/'.join(sorted(set(lenient.values())))} fallback ({which}): a malformed "
                      "box still gave its last number, so these count only answers with no number at all.")
    if sentences:
        lines += ["", "Against grpo (a difference counts when the two 95% intervals do not overlap):", "", *sentences]
    notes = ("Held-out: avg@k and pass@k in percent on problems that never trained (the initial model: one "
             "evaluation, bootstrapped over problems). Token entropy: `actor/entropy` (mean over response tokens), "
             "p50: `sent/entropy_p50` (SENT's step selection); step 1 against the mean of the last steps; "
             f"last / step 1: their ratio per seed, and how many seeds collapsed (ratio ≤ {COLLAPSED:g}). "
             "Semantic entropy: `semantic_entropy/mean`, the mean over a step's prompts of the entropy of its n "
             "answers' math-verify clusters (the scoring job's clustering, in nats); all agree: "
             "`semantic_entropy/agree_frac`, the share of prompts whose answers form one cluster. "
             "Free / penalised tokens: SENT's selection of the step (its penalised set, the rest free), applied under "
             "SENT's loss and only measured under the others (`token_sets/*`): their mean old-policy entropy, and the "
             "free tokens' share of the step's summed entropy and of its summed KL to the reference. "
             f"Steps / seconds to {target}: the first step whose `critic/score/mean` (+1 right, -1 wrong) reaches it, "
             "and `timing_s/step` summed up to it (seeds that never reach it are left out and counted). "
             "KL term: `actor/sent/kl_term` + `actor/kl_coef` x `actor/kl_loss` (KL-Cov's penalty sits inside "
             "its policy loss and is not counted). s/step: `timing_s/step` without the first step; × grpo: the ratio "
             "on each seed, then its interval. wall min: training, merge and evaluation of all seeds in the "
             "invocations that finished them (resumed: the part after the resume).")
    lines += ["", notes, "", "| variant | preset | overrides | what |", "|---|---|---|---|"]
    lines += [f"| {name} | {v.preset} | `{' '.join(v.overrides)}` | {v.what} |" for name, v in variants.items()]
    if dose:
        lines += ["", "Dose-response (`dose_response.png`): " + "; ".join(
            f"{knob}: " + ", ".join(f"{value} ({name})" for value, name in points) for knob, points in dose.items())
            + ". Each point is a row above."]
        def collapse_and_accuracy(name: str) -> tuple:
            return (across(name, "entropy_ratio"),
                    _percent(heldout[name][0].get(f"avg@{ks[0]}")) if name in heldout else None)

        plot_dose_response({knob: [(value, *collapse_and_accuracy(name)) for value, name in points if name in per_run]
                            for knob, points in dose.items()},
                           out / "dose_response.png", f"avg@{ks[0]}",
                           reference={"grpo": collapse_and_accuracy("grpo")} if "grpo" in per_run else None)
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    plot_variant_curves(runs, CURVE_PANELS, out / "curves.png",
                        title="SENT lab: mean over seeds, band min-max (dotted: curriculum stage starts)")
    return report
