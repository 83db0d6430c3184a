"""bench/bench_step_profile.py's bookkeeping: process titles, CPU seconds between two samples, and the table of
several rounds (the training runs themselves are what `python -m bench.bench_step_profile` times, not a test)."""

from __future__ import annotations

import pytest

from bench.bench_step_profile import CpuSampler, computed_metrics, merge_runs, process_title, table


@pytest.mark.parametrize("name, cmdline, title", [
    ("python", ["ray::WorkerDict.actor_rollout_ref_update_actor"], "ray::WorkerDict"),
    ("python", ["ray::IDLE"], "ray::IDLE"),
    ("python", ["VLLM::EngineCore"], "VLLM::EngineCore"),
    ("python", ["/v/bin/python", "-m", "recipe.sent.main_sent", "machine=cpu"], "recipe.sent.main_sent"),
    ("python", ["/v/bin/python", "/v/site-packages/ray/dashboard/dashboard.py", "--host=1"], "dashboard"),
    ("raylet", ["/v/site-packages/ray/core/src/ray/raylet/raylet", "--x"], "raylet"),
    ("kworker", [], "kworker"),
    (None, None, "?"),
])
def test_process_titles(name, cmdline, title):
    assert process_title(name, cmdline) == title


def test_cpu_seconds_between_two_samples_by_title():
    sampler = CpuSampler()
    sampler.samples = [
        (10.0, {1: ("ray::WorkerDict", 5.0), 2: ("ray::IDLE", 1.0), 3: ("ray::IDLE", 2.0)}),
        (20.0, {1: ("ray::WorkerDict", 9.5), 2: ("ray::IDLE", 1.5), 3: ("ray::IDLE", 2.0), 4: ("VLLM::Worker", 3.0)}),
    ]
    # pid 4 started in between: all of its CPU counts; the two IDLE workers add up; pid 1's 4.5 s
    assert sampler.between(10.2, 19.9) == {"ray::WorkerDict": 4.5, "ray::IDLE": 0.5, "VLLM::Worker": 3.0}


def _run(name: str, step_s: list[float], startup: float, cpu: dict[str, float]) -> dict:
    return {"name": name, "overrides": ["a=b"] if name == "after" else [], "code": "/old" if name == "before" else None,
            "timings": {"timing_s/step": step_s, "timing_s/gen": [s / 2 for s in step_s]}, "load": 1.2,
            "startup_s": startup, "step1_s": 20.0, "response_length": 34.0, "cpu_per_step": cpu}


def test_the_table_merges_rounds_and_compares_with_the_first_column():
    runs = [_run("before", [10.0, 12.0], 50.0, {"ray::WorkerDict": 5.0, "VLLM::Worker": 2.0}),
            _run("after", [8.0, 9.0], 54.0, {"ray::WorkerDict": 4.0}),
            _run("before", [11.0, 13.0], 56.0, {"ray::WorkerDict": 6.0, "VLLM::Worker": 2.0})]
    text = table(merge_runs(runs), steps=3, preset="grpo", model="toy")
    lines = text.splitlines()
    assert "32 prompts x 8 answers" in lines[0] and "2 optimizer steps (regime toy)" in lines[0]
    assert "| start-up (launch to step 1) | 53.00 (50.00-56.00) | 54.00 (54.00-54.00) |" in lines
    assert "| timing_s/step | 11.50 (10.00-13.00) | 8.50 (8.00-9.00) |" in lines
    assert "| step vs first column | 1.00x | 0.74x |" in lines
    assert "| all | 7.50 | 4.00 |" in lines  # per round: 7.0 and 8.0 -> median 7.5
    assert "| VLLM::Worker | 2.00 | – |" in lines
    assert "- before: `(none)`, code of /old" in lines and "- after: `a=b`" in lines


def test_step_one_is_compared_across_columns_without_timings():
    """The check that a speed change leaves what a step computes alone: the largest relative difference of step 1's
    metrics from the first column's first round, timings and throughput left out."""
    reference = {"actor/pg_loss": 0.002, "response_length/mean": 33.25, "critic/score/mean": -0.5}
    runs = [{**_run("before", [10.0], 50.0, {}), "step1": reference},
            {**_run("after", [8.0], 50.0, {}), "step1": {**reference, "actor/pg_loss": 0.002002}},
            {**_run("other", [8.0], 50.0, {}), "step1": {**reference, "response_length/mean": 33.0}}]
    lines = table(merge_runs(runs), steps=3, preset="grpo", model="toy").splitlines()
    assert "- before round 1: 3 of 3 equal bitwise, largest relative difference 0.0e+00; response lengths equal; " \
           "beyond 0.0001: none" in lines
    assert "- after round 1: 2 of 3 equal bitwise, largest relative difference 1.0e-03; response lengths equal; " \
           "beyond 0.0001: actor/pg_loss 1.0e-03" in lines
    assert "- other round 1: 2 of 3 equal bitwise, largest relative difference 7.5e-03; response lengths differ; " \
           "beyond 0.0001: response_length/mean 7.5e-03" in lines
    assert computed_metrics({"timing_s/gen": 1.0, "perf/throughput": 2.0, "actor/entropy": 0.1, "note": "x"}) == {
        "actor/entropy": 0.1}
