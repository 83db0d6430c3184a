"""`recipe.drivers.lab_archive`: a lab folder's record for the repository rebuilds the lab's report, keeps only
finished runs, and archiving twice gives the same bytes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from recipe.drivers.lab_archive import archive, unpack
from recipe.drivers.lab_config import LabConfig
from recipe.drivers.lab_report import build_report


def _lab(out: Path) -> LabConfig:
    cfg = LabConfig.from_config({"variants": ["grpo"], "doses": {"entropy_bonus": {"entropy_coeff": [0.01]}},
                                 "seeds": [0, 1], "ks": [1], "eval_samples": 2, "last_steps": 1})
    (out / "data").mkdir(parents=True)
    pd.DataFrame({"extra_info": [{"level": 2}]}).to_parquet(out / "data" / "train.parquet")
    pd.DataFrame({"extra_info": [{"level": 2}] * 10}).to_parquet(out / "data" / "eval.parquet")
    heldout = lambda solved: json.dumps({"settings": {"answer_fallback": "none"}, "problems": [  # noqa: E731
        {"index": i, "correct": [i < solved] * 2, "answers": ["1", None]} for i in range(10)]})
    (out / "baseline" / "eval").mkdir(parents=True)
    (out / "baseline" / "eval" / "heldout.json").write_text(heldout(2))
    for i, name in enumerate(cfg.run_names()):
        for seed in cfg.seeds:
            run = out / name / f"seed{seed}"
            (run / "eval").mkdir(parents=True)
            (run / "settings.json").write_text(json.dumps({"model": "m", "overrides": [f"data.seed={seed}"]}))
            (run / "metrics.jsonl").write_text("".join(
                json.dumps({"step": step, "data": {"training/global_step": step, "actor/entropy": 1.0 - 0.1 * step * i,
                                                   "critic/score/mean": 0.1 * step, "timing_s/step": 5.0}}) + "\n"
                for step in (1, 2, 3)))
            if (name, seed) == ("entropy_bonus@entropy_coeff_0.01", 1):
                continue  # still training: no verdict, no done.json
            (run / "eval" / "heldout.json").write_text(heldout(4 + i + seed))
            (run / "done.json").write_text(json.dumps({"wall_s": 60.0, "resumed": False}))
            (run / "checkpoints").mkdir()  # left behind
    return cfg


def test_the_archive_rebuilds_the_report_of_its_finished_runs(tmp_path):
    out, docs = tmp_path / "lab", tmp_path / "docs"
    cfg = _lab(out)
    archived, unfinished = archive(out, docs)
    assert unfinished == ["entropy_bonus@entropy_coeff_0.01/seed1"]
    assert len(archived) == 5 and "grpo/seed0" in archived
    assert not list(docs.rglob("checkpoints")) and not (docs / "runs" / unfinished[0]).exists()
    assert json.loads((docs / "runs" / "grpo" / "seed1" / "settings.json").read_text())["overrides"] == ["data.seed=1"]
    # the report from the archive is the report from the lab folder, once the unfinished run is gone there too
    shutil.rmtree(out / "entropy_bonus@entropy_coeff_0.01" / "seed1")
    args = (cfg.run_variants(), cfg.seeds, cfg.ks, cfg.last_steps, cfg.reward_target)
    original = build_report(out, *args, dose=cfg.dose_points()).read_text()
    rebuilt = build_report(unpack(docs, tmp_path / "rebuilt"), *args, dose=cfg.dose_points()).read_text()
    assert rebuilt == original and "entropy_bonus@entropy_coeff_0.01 | done" not in original
    archive(out, docs)  # now with the report and its figures
    assert (docs / "report.md").read_text() == original and (docs / "dose_response.png").exists()
    # archiving again changes no byte (gzip without a time stamp)
    before = {path: path.read_bytes() for path in docs.rglob("*") if path.is_file()}
    archive(out, docs)
    assert {path: path.read_bytes() for path in docs.rglob("*") if path.is_file()} == before


def test_a_folder_that_is_no_lab_is_named(tmp_path):
    import pytest

    with pytest.raises(SystemExit, match=f"{tmp_path}: not a lab folder"):
        archive(tmp_path, tmp_path / "docs")
