"""The committed toy labs are what their files say: each report rebuilds from its committed per-run metrics and
held-out verdicts, and GRPO's collapse column (last-steps entropy / step 1's, seeds at most half) reads as the READMEs
say: 3 of 3 seeds on the reference build (docs/lab/toy/), 1 of 3 on an unpinned AVX-512 build of the same recipe
(docs/lab/toy/rebuild/), 2 of 3 for grpo alone on the reference build trained on an AVX-512 machine
(docs/lab/toy/grpo_avx512/), 3 of 3 at the regime's lr 5e-4 (docs/lab/toy/lr5e-4/) and 3 of 3 at 8 updates a step
(docs/lab/toy/toy_8updates/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from recipe.drivers.lab_archive import unpack
from recipe.drivers.lab_config import LabConfig
from recipe.drivers.lab_report import build_report

LAB = Path(__file__).resolve().parents[1] / "docs" / "lab" / "toy"


def _table_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| variant")]


# the 8-update regime's lab: the controls, the entropy bonus's dose and SENT's (docs/lab/toy/toy_8updates/commands.md)
TOY_8UPDATES = {"regime_name": "toy_8updates",
                "variants": ["grpo", "clip_higher", "kl_cov", "sent_released_tokens_only"],
                "doses": {"entropy_bonus": {"entropy_coeff": [0.01, 0.03, 0.05, 0.07, 0.1, 0.3]},
                          "sent_tokens_only": {"kl_scale": [10, 100], "low_entropy_fraction": [1.0],
                                               "kl_target": ["old"]}}}


@pytest.mark.parametrize("lab, config, grpo_collapse", [
    (LAB, {}, "0.43 [0.38, 0.47] (3/3)"),  # last 4 steps / step 1, and how many of 3 seeds are at or below 0.5
    (LAB / "rebuild", {}, "0.49 [0.45, 0.54] (1/3)"),
    (LAB / "grpo_avx512", {"variants": ["grpo"]}, "0.47 [0.38, 0.56] (2/3)"),
    (LAB / "lr5e-4", {}, "0.32 [0.14, 0.49] (3/3)"),
    (LAB / "toy_8updates", TOY_8UPDATES, "0.25 [0.24, 0.27] (3/3)"),
])
def test_the_committed_report_rebuilds_from_the_committed_runs_with_grpos_collapse(lab, config, grpo_collapse,
                                                                                   tmp_path):
    cfg = LabConfig.from_config({"model": "toy", **config})
    report = build_report(unpack(lab, tmp_path / "lab"), cfg.run_variants(), cfg.seeds, cfg.ks, cfg.last_steps,
                          cfg.reward_target, dose=cfg.dose_points())
    rebuilt, committed = report.read_text(), (lab / "report.md").read_text()
    assert _table_rows(rebuilt) == _table_rows(committed)
    grpo = next(row for row in _table_rows(rebuilt) if row.startswith("| grpo | done"))
    assert grpo_collapse in grpo
