"""`make gpu-check` (recipe/drivers/gpu_check.py): the command itself in its CPU form (this machine has no GPU), the
version check against pins, and the metric checks it shares with the CPU end-to-end tests (recipe/drivers/tiny_run.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from recipe.drivers.gpu_check import check_versions
from recipe.drivers.tiny_run import check_sent_steps

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_make_gpu_check_runs_its_cpu_form_and_passes(gpu_check_cpu_form):
    """The real command: versions, bf16 loss/selection on the CPU, 2 tiny steps of preset=sent on machine=cpu with
    validation first and a checkpoint each step (the run `tests/test_train_cpu_e2e.py` reads too). 6.5 min measured
    on the shared 2-core machine under load (average 15-20); the 2 steps take most of it."""
    text = gpu_check_cpu_form["stdout"]
    assert gpu_check_cpu_form["returncode"] == 0, text[-4000:] + gpu_check_cpu_form["stderr"][-3000:]
    assert "gpu-check (CPU form, machine=cpu)" in text
    for section in ("[versions]", "[loss and selection, bf16]", "[training: 2 steps of preset=sent"):
        assert section in text
    assert text.count("-> ok") == 3
    assert "accelerator algorithm on the CPU vs CPU: identical sets and beta" in text
    assert "machine=cpu, fp32, attention: sdpa (configured)" in text
    for step in (1, 2):  # each checkpoint merged and compared with the resumed actor (recipe/drivers/merge_check.py)
        for dtype in ("fp32", "bf16"):
            assert f"step {step}, merged = trained: {dtype}: max |delta log-prob| " in text
        assert any(line.startswith(f"  step {step}, merged = trained: resume round trip: ")
                   and line.endswith("tensors bitwise equal") for line in text.splitlines())
    assert "gpu-check passed (cpu form)" in text.splitlines()[-1]
    assert (gpu_check_cpu_form["out"] / "train" / "metrics.jsonl").exists()


def test_versions_pass_here_and_a_wrong_pin_is_named(tmp_path):
    lines, problems = check_versions("cpu")
    assert problems == [], problems
    assert any(line.split()[0] == "verl" and "0.9.1" in line for line in lines)

    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\ndependencies = ["torch==1.0", "verl[verl-core]==0.9.1"]\n'
                         '[project.optional-dependencies]\ncpu = ["transformers<1"]\n')
    _, problems = check_versions("cpu", pyproject)
    assert len(problems) == 2, problems
    assert problems[0].startswith("torch: torch 2.13.0") and "pinned torch==1.0 (pyproject.toml)" in problems[0]
    assert problems[1].startswith("transformers: ") and "transformers<1 (pyproject.toml [cpu])" in problems[1]


def test_cli_exits_non_zero_naming_the_problem(tmp_path):
    """A check that fails makes the command exit 1 with the problem listed (here: a GPU form asked for on a machine
    without a CUDA device)."""
    import sys

    out = subprocess.run([sys.executable, "-m", "recipe.drivers.gpu_check", "--machine", "gpu", "--skip-training",
                          "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stdout[-3000:]
    assert "gpu-check FAILED (gpu form)" in out.stdout
    assert "sees no CUDA device" in out.stdout


# A two-step bf16 run's metrics (measured on the CPU: 251 and 256 valid tokens, 8 responses a step).
GOOD = {
    1: {"sent/low_entropy_frac": 200 / 251, "sent/high_cov_frac": 0.1, "response_length/mean": 31.375,
        "actor/sent/kl_term": 0.0, "actor/sent/penalised_kl_mean": 0.0, "training/rollout_probs_diff_mean": 3.3e-5,
        "curriculum/stage": 1.0, "curriculum/mean_se": 0.2, "critic/score/max": 0.3, "critic/score/min": 0.0,
        "sent/penalised_frac": 200 / 251, "token_sets/free_frac": 51 / 251, "token_sets/applied": 1.0},
    2: {"sent/low_entropy_frac": 204 / 256, "sent/high_cov_frac": 20 / 204, "response_length/mean": 32.0,
        "actor/sent/kl_term": 1.3e-3, "actor/sent/penalised_kl_mean": 0.021, "training/rollout_probs_diff_mean": 3e-5,
        "curriculum/stage": 1.0, "curriculum/mean_se": 0.2, "critic/score/max": 0.3, "critic/score/min": 0.0,
        "sent/penalised_frac": 204 / 256, "token_sets/free_frac": 52 / 256, "token_sets/applied": 1.0},
}


@pytest.mark.parametrize("step, key, value, named", [
    (1, "sent/low_entropy_frac", 1.0, "expected exactly 200/251"),  # ties included: every token "low"
    (2, "sent/high_cov_frac", 0.1, "expected exactly 0.098039 of 204"),
    (2, "training/rollout_probs_diff_mean", 1e-3, "did the weights reach vLLM?"),
    (1, "actor/sent/kl_term", 0.01, "expected 0 (actor == reference) up to 1e-06"),
    (2, "actor/sent/kl_term", 0.0, "not > 0 after an update"),
    (2, "critic/score/max", 0.0, "all rewards equal"),
    (2, "token_sets/free_frac", 0.5, "against sent/penalised_frac=0.796875"),
    (1, "token_sets/applied", 0.0, "token_sets/applied=0.0"),
])
def test_metric_checks_name_what_is_wrong(step, key, value, named):
    assert check_sent_steps(GOOD, precision="bf16") == []
    bad = {s: dict(m) for s, m in GOOD.items()}
    bad[step][key] = value
    problems = check_sent_steps(bad, precision="bf16")
    assert len(problems) == 1 and named in problems[0], problems


def test_fp32_bound_is_tighter_than_bf16s():
    assert check_sent_steps(GOOD, precision="fp32") == [
        "step 1: training/rollout_probs_diff_mean=3.3e-05 >= 1e-05 (fp32): rollout and trainer disagree (did the "
        "weights reach vLLM?)",
        "step 2: training/rollout_probs_diff_mean=3e-05 >= 1e-05 (fp32): rollout and trainer disagree (did the "
        "weights reach vLLM?)"]
