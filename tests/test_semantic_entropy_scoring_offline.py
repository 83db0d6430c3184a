"""The scoring job with a scripted backend (no vLLM): the weighted flavour and the se_weighted column follow
`length_normalized`, rows record it in `se_flavour`, and the summary's histogram data (pass rate per SE bin) and
curriculum stages agree with the scored rows."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from verl_ext.semantic_entropy.backends import Sample

N_ROWS = 8


class ScriptedBackend:
    """Row i (prompt "What is i+i?"): i % 4 + 1 of 4 samples give the right answer in 10 tokens; the rest give a wrong
    one in 100 tokens. Every token is at -0.5 nats, so per token all samples are equally likely."""

    def generate(self, prompt_ids, sampling, seeds):
        return [self._samples(self.calls.pop(0), sampling.n) for _ in prompt_ids]

    def __init__(self):
        self.calls = list(range(N_ROWS))

    @staticmethod
    def _samples(i, n):
        right = i % 4 + 1
        return [
            Sample(f"Answer: {2 * i}", -5.0, 10) if j < right else Sample(f"Answer: {1000 + i}", -50.0, 100)
            for j in range(n)
        ]

    def close(self):
        pass


def _input(path):
    rows = [{"prompt": [{"role": "user", "content": f"What is {i}+{i}?"}],
             "reward_model": {"style": "rule", "ground_truth": str(2 * i)}, "extra_info": {"index": i}}
            for i in range(N_ROWS)]
    pd.DataFrame(rows).to_parquet(path)


def _run(tmp_path, tiny_model, name, **over):
    from verl_ext.semantic_entropy.run import run_job

    inp = tmp_path / "in.parquet"
    _input(inp)
    cfg = {"input_files": [str(inp)], "output_dir": str(tmp_path / name), "model": {"path": str(tiny_model)},
           "sampling": {"n": 4}, "clustering": {"num_workers": 0}, "shard_size": 3, "progress": False, **over}
    res = run_job(cfg, backend=ScriptedBackend())
    return pd.read_parquet(res.scored_path), res.summary


def _entropy(counts_or_masses):
    total = sum(counts_or_masses)
    return -sum(m / total * math.log(m / total) for m in counts_or_masses if m)


@pytest.mark.parametrize(
    ("over", "flavour"),
    [
        ({"entropy": "weighted"}, "weighted_length_normalized"),  # the default weighting
        ({"entropy": "weighted", "length_normalized": False}, "weighted"),
        ({}, "discrete"),
        ({"length_normalized": False}, "discrete"),
    ],
)
def test_weighting_follows_length_normalized(tmp_path, tiny_model, over, flavour):
    scored, summary = _run(tmp_path, tiny_model, "out", **over)
    length_normalized = over.get("length_normalized", True)
    assert summary["entropy_flavour"] == flavour and summary["se_weighted_length_normalized"] is length_normalized
    for i, ei in enumerate(scored.extra_info):
        right = i % 4 + 1
        discrete = _entropy([right, 4 - right])
        # per token every sample is equally likely: the weighted SE equals the discrete one; per sequence the short
        # right answers (e^-5 against e^-50) take all the mass
        weighted = discrete if length_normalized else _entropy([right * math.exp(-5), (4 - right) * math.exp(-50)])
        assert ei["se_flavour"] == flavour
        assert ei["se_discrete"] == pytest.approx(discrete)
        assert ei["se_weighted"] == pytest.approx(weighted, abs=1e-12)
        assert ei["semantic_entropy"] == (ei["se_weighted"] if flavour.startswith("weighted") else ei["se_discrete"])
        assert ei["se_pass_rate"] == right / 4


def test_summary_histogram_pass_rate_and_stages(tmp_path, tiny_model):
    scored, summary = _run(tmp_path, tiny_model, "out", summary={"histogram_bins": 4, "stages": {"num_stages": 2}})
    se = np.array([ei["semantic_entropy"] for ei in scored.extra_info])
    pass_rate = np.array([ei["se_pass_rate"] for ei in scored.extra_info])
    hist = summary["se_histogram"]
    edges = hist["edges"]
    assert len(edges) == 5 and sum(hist["counts"]) == N_ROWS
    for b in range(4):  # brute force: the rows whose SE falls in bin b (the last bin includes its right edge)
        inside = [(lo <= s < hi) or (b == 3 and s == hi) for s, lo, hi in zip(se, [edges[b]] * N_ROWS, [edges[b + 1]] * N_ROWS)]
        assert hist["counts"][b] == sum(inside)
        assert hist["pass_rate"][b] == (pytest.approx(pass_rate[inside].mean()) if any(inside) else None)
    # SE per row: 2 rows at 0 (4 of 4 right), 4 at H(1/4) (1 or 3 right), 2 at log 2; quantile stages of 4 rows each
    stages = summary["curriculum_stages"]
    assert [s["rows"] for s in stages] == [4, 4]
    assert stages[0]["se_min"] == 0.0 and stages[0]["se_max"] == pytest.approx(_entropy([1, 3]))
    assert stages[1]["se_min"] == pytest.approx(_entropy([1, 3])) and stages[1]["se_max"] == pytest.approx(math.log(2))
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["curriculum_stages"] == stages
    assert (tmp_path / "out" / "se_hist.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    _, by_threshold = _run(tmp_path, tiny_model, "thresholds", summary={"stages": {"stage_boundaries": [0.0]}})
    zero = int((se <= 0.0).sum())  # rows whose 4 samples all agree (pass rate 1)
    assert [s["rows"] for s in by_threshold["curriculum_stages"]] == [zero, N_ROWS - zero]
