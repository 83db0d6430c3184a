"""The SENT lab (`python -m recipe.sent.lab`): its config, the report builder on fixture metrics, and the `quick=true`
lab end to end (tiny model, grpo and sent, 2 steps: training -> merge -> eval -> report), stopped inside its second
variant after its first step and re-run with the same command (the finished variant is skipped, the other
resumes at step 2)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from bench.lab_step_time import lab_table
from recipe.sent.lab import variant_overrides
from recipe.sent.lab_report import build_report
from recipe.sent.lab_config import QUICK, VARIANTS, LabConfig
from recipe.sent.launch import is_alive, session_processes
from verl_ext.config import ConfigError

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------ config
def test_every_variant_is_a_preset_plus_overrides_that_compose(recipe_config):
    for name, variant in VARIANTS.items():
        cfg = recipe_config([f"preset={variant.preset}", *variant.overrides])
        assert cfg.preset_name == variant.preset, name
    assert str(recipe_config(list(VARIANTS["grpo"].overrides)).data.curriculum.enable).lower() == "false"
    low_only = recipe_config(["preset=sent", *VARIANTS["sent_low_only"].overrides]).actor_rollout_ref.actor
    assert low_only.policy_loss.beta_high == low_only.policy_loss.beta_low


def test_train_overrides_reach_every_variant_and_the_variant_keeps_its_own(recipe_config, tmp_path):
    cfg = LabConfig.from_config({"train_overrides": ["data.train_batch_size=8", "data.curriculum.enable=true"]})
    for name in ("grpo", "sent"):
        overrides = variant_overrides(name, tmp_path / "model", tmp_path / "scored.parquet",
                                      tmp_path / "eval.parquet", tmp_path / name, cfg, "cpu")
        composed = recipe_config(overrides)
        assert composed.data.train_batch_size == 8 and composed.trainer.total_training_steps == cfg.steps
        # grpo's own data.curriculum.enable=false comes after the shared overrides
        assert str(composed.data.curriculum.enable).lower() == ("false" if name == "grpo" else "true")


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="stepz"):
        LabConfig.from_config({"stepz": 3})
    with pytest.raises(ConfigError, match="variants: unknown"):
        LabConfig.from_config({"variants": ["grpo", "ppo"]})
    with pytest.raises(ConfigError, match="train_overrides: each item is key=value"):
        LabConfig.from_config({"train_overrides": ["data.train_batch_size"]})
    with pytest.raises(ConfigError, match="quick=true sets steps"):
        LabConfig.from_config({"quick": True, "steps": 5})
    quick = LabConfig.from_config({"quick": True, "out": "x"})
    assert {key: getattr(quick, key) for key in QUICK} == QUICK and quick.out == "x"


# ------------------------------------------------------------------------------------------------ report
def _metrics(entropy: list[float], stage: list[int] | None, seconds: float, sent: bool) -> str:
    lines = []
    for step, value in enumerate(entropy, start=1):
        data = {"training/global_step": step, "actor/entropy": value, "critic/score/mean": -1 + 0.1 * step,
                "actor/pg_clipfrac": 0.01, "timing_s/step": seconds, "actor/kl_loss": 0.5, "actor/kl_coef": 0.001,
                "semantic_entropy/mean": 2 * value, "semantic_entropy/agree_frac": 0.25 * step}
        if stage:
            data["curriculum/stage"] = stage[step - 1]
        if sent:
            data.update({"sent/entropy_p50": value / 2, "sent/penalised_frac": 0.8, "actor/sent/kl_term": 0.02,
                         "actor/kl_coef": 0.0})
        lines.append(json.dumps({"step": step, "data": data}))
    return "\n".join(lines) + "\n"


def _results(avg1: float) -> str:
    metrics = {"pass@1": avg1, "avg@1": avg1, "pass@2": avg1 + 5, "avg@2": avg1}
    return json.dumps({"benchmarks": {"heldout": {"metrics": metrics}}})


def _report_rows(report: Path) -> dict[str, dict[str, str]]:
    """The report's first table: {variant: {column: cell}}."""
    lines = report.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| variant | status"))
    end = next((i for i, line in enumerate(lines[start:]) if not line.startswith("|")), len(lines) - start)
    header = [c.strip() for c in lines[start].split("|")[1:-1]]
    rows = [dict(zip(header, (c.strip() for c in line.split("|")[1:-1]))) for line in lines[start + 2:start + end]]
    return {row["variant"]: row for row in rows}


def test_report_builder_on_fixture_metrics(tmp_path):
    for name, text in (("grpo", _metrics([1.0, 0.8, 0.6, 0.5], None, 10.0, sent=False)),
                       ("sent", _metrics([1.0, 0.95, 0.9, 0.9], [1, 1, 2, 2], 11.0, sent=True))):
        (tmp_path / name / "eval").mkdir(parents=True)
        (tmp_path / name / "metrics.jsonl").write_text(text)
        (tmp_path / name / "eval" / "results.json").write_text(_results(20.0 if name == "grpo" else 30.0))
        (tmp_path / name / "done.json").write_text(json.dumps({"wall_s": 90.0, "resumed": name == "sent"}))
    (tmp_path / "baseline" / "eval").mkdir(parents=True)
    (tmp_path / "baseline" / "eval" / "results.json").write_text(_results(10.0))
    (tmp_path / "kl_cov").mkdir()
    (tmp_path / "kl_cov" / "failed.json").write_text(json.dumps({"error": "training exited with 1\nTraceback"}))

    report = build_report(tmp_path, ["grpo", "kl_cov", "sent"], ks=[1, 2], last_steps=2, command="python -m x",
                          run_info=("Machine: a test box.", "Wall time: 3.0 min"))
    rows = _report_rows(report)
    assert "Command: `python -m x`\n\nMachine: a test box.\nWall time: 3.0 min\n" in report.read_text()
    assert list(rows) == ["initial model", "grpo", "kl_cov", "sent"]
    assert rows["initial model"]["held-out avg@1"] == "10.0"
    assert rows["grpo"]["status"] == rows["sent"]["status"] == "done"
    assert rows["kl_cov"]["status"] == "failed: training exited with 1"
    assert rows["grpo"]["token entropy, mean: start → end"] == "1.000 → 0.500 (-50%)"
    assert rows["sent"]["entropy p50: start → end"] == "0.500 → 0.450 (-10%)"
    assert rows["grpo"]["entropy p50: start → end"] == "–"
    assert rows["grpo"]["semantic entropy, mean: start → end"] == "2.000 → 1.000 (-50%)"
    assert rows["sent"]["all agree: start → end"] == "0.250 → 1.000 (+300%)"
    assert rows["initial model"]["semantic entropy, mean: start → end"] == "–"
    assert rows["sent"]["held-out pass@2"] == "35.0"
    assert rows["grpo"]["train reward (last 2)"] == f"{(-0.7 - 0.6) / 2:.3f}"
    assert rows["sent"]["penalised frac"] == "0.800" and rows["grpo"]["penalised frac"] == "–"
    assert rows["grpo"]["KL term"] == "5.00e-04" and rows["sent"]["KL term"] == "2.00e-02"
    assert rows["sent"]["× grpo"] == "1.10" and rows["grpo"]["× grpo"] == "1.00"
    assert rows["grpo"]["wall min"] == "1.5" and rows["sent"]["wall min"] == "1.5 (resumed)"
    assert rows["kl_cov"]["wall min"] == rows["initial model"]["wall min"] == "–"
    assert (tmp_path / "curves.png").stat().st_size > 20_000

    # the lab's ratio for bench/RESULTS.md, from the same metrics and the report's header
    table = lab_table(tmp_path)
    assert table.startswith("Command: `python -m x`\n\nMachine: a test box.\n\nWall time: 3.0 min")
    assert "| grpo | 10.00 | 1.000x |" in table and "| sent | 11.00 | 1.100x |" in table and "kl_cov" not in table
    assert table.endswith("SENT vs GRPO per step in this lab: 1.100x.")
    (tmp_path / "grpo" / "metrics.jsonl").unlink()
    with pytest.raises(SystemExit, match="no grpo/metrics.jsonl"):
        lab_table(tmp_path)


# ------------------------------------------------------------------------------------------------ the quick lab
def _lab(out: Path, cache: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "recipe.sent.lab", "quick=true", f"out={out}", f"cache={cache}"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _step_logged(metrics_file: Path, step: int) -> bool:
    for line in metrics_file.read_text().splitlines() if metrics_file.exists() else []:
        try:
            if json.loads(line)["step"] == step:
                return True
        except ValueError:  # a line still being written
            continue
    return False


def _stop_sent_after_step_1(lab: subprocess.Popen, out: Path, stopped: dict) -> None:
    """Once `sent` has checkpointed and logged step 1 (verl saves before it logs), freeze its training where it stands
    and SIGTERM the lab, as Ctrl-C or a scheduler would. The freeze lands the stop between steps 1 and 2 on any
    machine; without it a fast one finishes step 2 while the lab shuts the training down."""
    marker = out / "sent" / "checkpoints" / "latest_checkpointed_iteration.txt"
    while lab.poll() is None:
        if marker.exists() and marker.read_text().strip() == "1" and _step_logged(out / "sent" / "metrics.jsonl", 1):
            training = next(child for child in psutil.Process(lab.pid).children()
                            if "recipe.sent.main_sent" in child.cmdline())
            frozen = session_processes(training.pid)
            for process in frozen:
                process.suspend()
            stopped["training"] = frozen
            os.killpg(lab.pid, signal.SIGTERM)
            return
        time.sleep(0.05)


@pytest.fixture(scope="module")
def quick_lab(tmp_path_factory):
    """The quick lab, stopped once `sent` saved and logged step 1, then re-run to the end."""
    root = tmp_path_factory.mktemp("lab")
    out, cache = root / "out", root / "cache"
    started = time.time()
    first = _lab(out, cache)
    stopped: dict = {}
    threading.Thread(target=_stop_sent_after_step_1, args=(first, out, stopped), daemon=True).start()
    first_log, _ = first.communicate(timeout=900)
    assert "training" in stopped, f"the lab ended before sent's first checkpoint:\n{first_log[-4000:]}"
    # the lab took its training's whole session down: Ray workers sit in process groups of their own
    assert [process.pid for process in stopped["training"] if is_alive(process)] == []
    assert (out / "sent" / "checkpoints" / "latest_checkpointed_iteration.txt").read_text().strip() == "1"
    grpo_done_mtime = (out / "grpo" / "done.json").stat().st_mtime_ns
    assert not (out / "sent" / "done.json").exists()
    second = _lab(out, cache)
    second_log, _ = second.communicate(timeout=900)
    assert second.returncode == 0, second_log[-6000:]
    print(f"quick lab with one kill and resume: {time.time() - started:.0f} s")
    return {"out": out, "first_log": first_log, "second_log": second_log, "grpo_done_mtime": grpo_done_mtime}


@pytest.mark.slow
def test_quick_lab_trains_merges_evaluates_and_reports(quick_lab):
    out = quick_lab["out"]
    rows = _report_rows(out / "report.md")
    assert set(rows) == {"initial model", "grpo", "sent"}
    assert rows["grpo"]["status"] == rows["sent"]["status"] == "done"
    for name in ("initial model", "grpo", "sent"):
        row = {key: float(rows[name][f"held-out {key}"]) for key in ("avg@1", "avg@2", "avg@4", "pass@1", "pass@2",
                                                                      "pass@4")}
        assert all(0.0 <= value <= 100.0 for value in row.values())
        # avg@k is the first k samples' accuracy; over all 4 samples it is the pass@1 estimate; pass@k grows with k
        assert row["avg@4"] == pytest.approx(row["pass@1"], abs=0.06)  # the report rounds to .1
        assert row["pass@1"] <= row["pass@2"] <= row["pass@4"]
    for name in ("grpo", "sent"):
        assert "→" in rows[name]["token entropy, mean: start → end"]
        assert "→" in rows[name]["semantic entropy, mean: start → end"]  # logged by every preset
        assert float(rows[name]["s/step"]) > 0 and rows[name]["steps"] == "2"
        assert (out / name / "hf" / "config.json").exists() and not (out / name / "checkpoints").exists()
        results = json.loads((out / name / "eval" / "results.json").read_text())
        assert results["benchmarks"]["heldout"]["num_problems"] == 19
    assert rows["grpo"]["× grpo"] == "1.00" and rows["sent"]["penalised frac"] != "–"
    assert (out / "curves.png").stat().st_size > 20_000
    text = (out / "report.md").read_text()
    assert f"Machine: machine=cpu, {len(os.sched_getaffinity(0))} cores of " in text
    assert "min for this invocation (finished earlier, not counted: grpo)." in text  # the resumed invocation wrote it
    assert rows["grpo"]["wall min"] != "–" and rows["sent"]["wall min"].endswith("(resumed)")
    assert "variant 2/2" in quick_lab["second_log"] and "about" in quick_lab["second_log"]  # progress with time left


@pytest.mark.slow
def test_rerun_skips_the_finished_variant_and_resumes_the_killed_one(quick_lab):
    out, second_log = quick_lab["out"], quick_lab["second_log"]
    assert "variant 1/2: grpo: done, skipped" in second_log
    assert (out / "grpo" / "done.json").stat().st_mtime_ns == quick_lab["grpo_done_mtime"]
    assert "resuming from the checkpoint of step 1" in second_log
    assert "step 2/2" in second_log and "step 1/2" not in second_log  # only step 2 trained again
    lines = [json.loads(line) for line in (out / "sent" / "metrics.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in lines if "training/global_step" in entry["data"]] == [1, 2]  # both parts
    assert not (out / "sent" / "metrics.earlier.jsonl").exists()
    assert (out / "sent" / "train.log").read_text().count("recipe.sent.main_sent") >= 2
