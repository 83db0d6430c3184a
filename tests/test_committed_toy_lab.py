"""The committed toy lab (docs/lab/toy/) is what its files say: the report rebuilds from the committed per-run
metrics and held-out verdicts, and GRPO's collapse (last-steps entropy at most half of step 1's) holds on every seed."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

from recipe.sent.lab_config import LabConfig
from recipe.sent.lab_report import build_report

LAB = Path(__file__).resolve().parents[1] / "docs" / "lab" / "toy"


def _unpacked(tmp_path: Path) -> Path:
    out = tmp_path / "lab"
    for path in (LAB / "runs").rglob("*"):
        if path.is_file():
            target = out / path.relative_to(LAB / "runs")
            target.parent.mkdir(parents=True, exist_ok=True)
            if path.suffix == ".gz":
                target.with_suffix("").write_bytes(gzip.decompress(path.read_bytes()))
            else:
                shutil.copy(path, target)
    return out


def _table_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| variant")]


def test_the_committed_report_rebuilds_from_the_committed_runs_and_grpo_collapses_on_every_seed(tmp_path):
    cfg = LabConfig.from_config({"model": "toy"})
    report = build_report(_unpacked(tmp_path), cfg.variants, cfg.seeds, cfg.ks, cfg.last_steps, cfg.reward_target)
    rebuilt, committed = report.read_text(), (LAB / "report.md").read_text()
    assert _table_rows(rebuilt) == _table_rows(committed)
    grpo = next(row for row in _table_rows(rebuilt) if row.startswith("| grpo | done"))
    assert "0.43 [0.38, 0.47] (3/3)" in grpo  # last 4 steps / step 1, and 3 of 3 seeds at or below 0.5
