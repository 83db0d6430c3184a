"""plan_curriculum properties and the per-stage parquet CLI."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from verl_ext.curriculum import assign_stages, plan_curriculum

REPO = Path(__file__).resolve().parents[1]


def _scores(n, seed=0):
    rng = random.Random(seed)
    return [round(rng.uniform(0, 2.08), 2) for _ in range(n)]  # rounded: plenty of ties


def _blocks(plan, stages):
    """Stage of each plan position, collapsed into runs."""
    runs = []
    for i in plan:
        if not runs or runs[-1] != stages[i]:
            runs.append(stages[i])
    return runs


@pytest.mark.parametrize("n", [0, 1, 7, 10, 101])
@pytest.mark.parametrize("num_stages", [1, 2, 3, 5])
@pytest.mark.parametrize("epochs", [1, 3])
@pytest.mark.parametrize("shuffle", [True, False])
def test_plan_properties(n, num_stages, epochs, shuffle):
    scores = _scores(n)
    plan = plan_curriculum(scores, num_stages=num_stages, epochs_per_stage=epochs, seed=3, shuffle_within_stage=shuffle)
    stages = assign_stages(scores, num_stages=num_stages)
    # every index exactly epochs times
    assert Counter(plan) == Counter({i: epochs for i in range(n)})
    # stages are contiguous blocks in increasing order and never mix
    runs = _blocks(plan, stages)
    assert runs == sorted(set(runs))
    # equal-size quantile split: sizes differ by at most one
    sizes = [stages.count(k) for k in range(num_stages)]
    assert max(sizes) - min(sizes) <= 1
    # ascending scores across stages
    for k in range(num_stages - 1):
        lo = [scores[i] for i in range(n) if stages[i] == k]
        hi = [scores[i] for i in range(n) if stages[i] == k + 1]
        if lo and hi:
            assert max(lo) <= min(hi)
    # each stage block = epochs consecutive full passes over its members
    for k in range(num_stages):
        block = [i for i in plan if stages[i] == k]
        members = sorted(i for i in range(n) if stages[i] == k)
        m = len(members)
        for e in range(epochs):
            chunk = block[e * m : (e + 1) * m]
            assert sorted(chunk) == members
            if not shuffle:
                assert chunk == sorted(members, key=lambda i: (scores[i], i))
    # deterministic
    assert plan == plan_curriculum(scores, num_stages=num_stages, epochs_per_stage=epochs, seed=3, shuffle_within_stage=shuffle)


def test_shuffle_uses_seed_and_reshuffles_per_epoch():
    scores = [float(i) for i in range(200)]
    a = plan_curriculum(scores, num_stages=2, epochs_per_stage=2, seed=0)
    b = plan_curriculum(scores, num_stages=2, epochs_per_stage=2, seed=1)
    assert a != b
    assert a[:100] != a[100:200]  # stage 1, epoch 0 vs epoch 1: reshuffled
    assert sorted(a[:100]) == list(range(100))


def test_stage_boundaries():
    scores = [0.0, 1.5, 0.0, 0.7, 2.0, 0.3]
    assert assign_stages(scores, stage_boundaries=[0.0]) == [0, 1, 0, 1, 1, 1]  # SE = 0 vs SE > 0
    assert assign_stages(scores, stage_boundaries=[0.5, 1.5]) == [0, 1, 0, 1, 2, 0]
    plan = plan_curriculum(scores, stage_boundaries=[0.5, 1.5], shuffle_within_stage=False, num_stages=99)
    assert plan == [0, 2, 5, 3, 1, 4]
    # empty stages are skipped
    assert plan_curriculum(scores, stage_boundaries=[5.0, 6.0], shuffle_within_stage=False) == [0, 2, 5, 3, 1, 4]
    with pytest.raises(ValueError):
        assign_stages(scores, stage_boundaries=[1.0, 0.5])


def test_invalid_inputs():
    with pytest.raises(ValueError, match="index 1"):
        plan_curriculum([0.1, None, 0.3])
    with pytest.raises(ValueError):
        plan_curriculum([0.1, float("nan")])
    with pytest.raises(ValueError):
        plan_curriculum([0.1], epochs_per_stage=0)
    with pytest.raises(ValueError):
        plan_curriculum([0.1], num_stages=0)


def test_cli_writes_stage_files(tmp_path):
    n = 9
    scores = _scores(n, seed=5)
    df = pd.DataFrame(
        {
            "prompt": [[{"role": "user", "content": f"q{i}"}] for i in range(n)],
            "reward_model": [{"style": "rule", "ground_truth": str(i)} for i in range(n)],
            "extra_info": [{"index": i, "semantic_entropy": s} for i, s in enumerate(scores)],
        }
    )
    src = tmp_path / "scored.parquet"
    df.to_parquet(src)
    out = tmp_path / "stages"
    cmd = [sys.executable, "-m", "verl_ext.curriculum", "--input", str(src), "--output-dir", str(out), "--num-stages", "3"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    parts = [pd.read_parquet(out / f"stage{k}.parquet") for k in (1, 2, 3)]
    assert [len(p) for p in parts] == [3, 3, 3]
    se = [[d["semantic_entropy"] for d in p.extra_info] for p in parts]
    assert max(se[0]) <= min(se[1]) and max(se[1]) <= min(se[2])
    assert sorted(d["index"] for p in parts for d in p.extra_info) == list(range(n))
    assert len(json.loads((out / "curriculum.json").read_text())["stages"]) == 3

    # unscored input: clear error naming the file
    df.drop(columns=["extra_info"]).to_parquet(tmp_path / "raw.parquet")
    r = subprocess.run([*cmd[:4], str(tmp_path / "raw.parquet"), *cmd[5:]], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "raw.parquet" in r.stderr and "semantic_entropy" in r.stderr
