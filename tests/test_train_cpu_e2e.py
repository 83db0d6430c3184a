"""verl's real SENT training loop end to end on the CPU (`machine=cpu`): a `python -m recipe.sent.main_sent`
subprocess with Ray, a vLLM-CPU server, FSDP2 actor and reference workers on gloo, TransferQueue, the reward loop,
the step selection and the weight sync into vLLM, with the tiny random Qwen2.

The tiny model never solves a math problem, so the math reward would be -1 everywhere, every advantage 0 and every
gradient and KL term exactly 0. The reward here (`digit_share_reward`) gives varied scores instead.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from recipe.sent.launch import TrainingFailed, TrainingRun, read_metrics, train
from recipe.sent.tiny_run import BF16_OVERRIDES, check_sent_steps, tiny_overrides, write_tiny_data
from recipe.sent.tiny_run import train_steps as tiny_train_steps

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_model):
    """Scored train data (synthetic SE so the curriculum has two stages) and a validation set."""
    root = tmp_path_factory.mktemp("train_e2e")
    write_tiny_data(root)
    return root


def overrides(workdir: Path, tiny_model: Path, out: Path, *extra: str, steps: int = 2) -> list[str]:
    return tiny_overrides(tiny_model, workdir / "train.parquet", workdir / "val.parquet", out, *extra, steps=steps)


def train_steps(run) -> dict[int, dict]:
    """Training metrics per step (validation-only lines carry no `training/global_step`)."""
    return tiny_train_steps(run.metrics())


def prompts_served(out: Path, step: int) -> list[str]:
    return sorted(pd.read_json(out / "rollouts" / f"{step}.jsonl", lines=True)["input"])


def assert_semantic_entropy_metrics(out: Path, step: int, m: dict, answers: int = 2) -> None:
    """`semantic_entropy/*` is logged, in range, and equals the scoring job's clustering of the responses verl dumped
    for that step (`trainer.rollout_data_dir`), grouped by prompt."""
    from verl_ext.semantic_entropy import MathVerifyPool
    from verl_ext.semantic_entropy.rollout_groups import group_responses, rollout_se_stats

    assert 0.0 <= m["semantic_entropy/p50"] <= math.log(answers) + 1e-9
    assert 0.0 <= m["semantic_entropy/mean"] <= math.log(answers) + 1e-9
    assert 0.0 <= m["semantic_entropy/agree_frac"] <= 1.0
    assert 0.0 < m["timing_s/semantic_entropy"] < m["timing_s/step"]
    dumped = pd.read_json(out / "rollouts" / f"{step}.jsonl", lines=True)
    groups = group_responses([key.rsplit("_", 2)[0] for key in dumped["uid"]], list(dumped["output"]))
    expected = rollout_se_stats(groups, pool=MathVerifyPool(num_workers=0))
    assert {key: m[f"semantic_entropy/{key}"] for key in expected} == pytest.approx(expected)


@pytest.fixture(scope="module")
def sent_run(gpu_check_cpu_form):
    """preset=sent (global selection, KL to the reference), 2 steps, validating first and saving every step: the
    training of `make gpu-check`'s CPU form (`gpu_check.check_training`), run once for both test files. Its tiny
    model and data sit beside it (`gpu_check_inputs`)."""
    root = gpu_check_cpu_form["out"]
    assert gpu_check_cpu_form["returncode"] == 0, gpu_check_cpu_form["stdout"][-4000:]
    out = root / "train"
    return TrainingRun(out_dir=out, log=out / "train.log", metrics_file=out / "metrics.jsonl", seconds=0.0)


def gpu_check_inputs(sent_run) -> tuple[Path, Path]:
    """The tiny model and the data folder (train.parquet, val.parquet) `sent_run` trained on."""
    root = sent_run.out_dir.parent
    return root / "tiny-qwen2", root / "data"


def test_sent_preset_trains_two_steps_with_its_metrics(sent_run):
    """Exact selection counts, the curriculum, varied rewards, rollout = trainer probabilities (fp32 on both sides:
    the weights reached vLLM), a KL term of 0 before the first update and > 0 after it (recipe/sent/tiny_run.py)."""
    assert check_sent_steps(train_steps(sent_run)) == []
    for step, m in train_steps(sent_run).items():
        assert_semantic_entropy_metrics(sent_run.out_dir, step, m)
        # every step's weight sync went through the host's lock (recipe/sent/weight_sync_lock.py)
        assert 0.0 <= m["timing_s/weight_sync_wait"] < m["timing_s/step"]


def test_sent_trains_in_bf16_on_two_data_parallel_ranks_with_exact_global_selection_counts(workdir, tiny_model):
    """bf16 parameters and compute on the CPU (FSDP2 mixed precision param_dtype bf16 for actor and reference,
    vLLM-CPU's rollout in bfloat16, which it accepts on this AVX2-only CPU) on two data-parallel ranks. The tiny
    model's bf16 entropies tie massively (entropy p10/p50/p90 5.906/5.938/5.938 in one run, the cut inside the tie),
    and each rank holds half the step's tokens, so exact counts are the point: sent/low_entropy_frac is exactly
    floor(0.8 N)/N and sent/high_cov_frac floor(0.1 k)/k of the whole step (the selection is global, not per rank),
    and every other check of the fp32 run holds, with rollout/trainer probabilities within bf16's bound instead of
    fp32's. One run for both (bf16 and two ranks each cost a training start: ~2 min on the 2-core CI machine)."""
    out = workdir / "bf16_dp2"
    run = train(overrides(workdir, tiny_model, out, "preset=sent", "trainer.n_gpus_per_node=2", *BF16_OVERRIDES),
                out, timeout_s=900, echo=lambda _: None)
    steps = train_steps(run)
    assert check_sent_steps(steps, precision="bf16") == []
    assert steps[1]["sent/entropy_p90"] - steps[1]["sent/entropy_p10"] < 0.1  # bf16-quantised, heavily tied
    assert "actor/sent/penalised_kl_mean" in steps[1]  # the loss ran on both ranks


def test_each_checkpoint_is_saved_after_its_step_is_logged(sent_run):
    """verl's fit saves before it logs; the trainer defers the save to right after the log, so a job killed in
    between redoes (and logs) the step instead of resuming past a step with no metrics. Both lines come from the
    trainer's process, in order."""
    from recipe.sent.trainer import SAVED_LINE

    lines = sent_run.log.read_text().splitlines()
    logged = [next(i for i, line in enumerate(lines) if f"step:{step} - " in line) for step in (1, 2)]
    saved = [next(i for i, line in enumerate(lines) if f"{SAVED_LINE} {step} in " in line) for step in (1, 2)]
    assert logged[0] < saved[0] < logged[1] < saved[1], (logged, saved)
    assert (sent_run.out_dir / "checkpoints" / "global_step_1" / "actor").is_dir()


def test_validation_runs_with_the_reward_on_the_validation_set(sent_run):
    validation = [entry for entry in sent_run.metrics() if any(k.startswith("val-") for k in entry["data"])]
    assert [entry["step"] for entry in validation] == [0], "val_before_train=true validates once, before step 1"
    # the test reward (share of digits) scored the validation responses: verl reports it per data source
    assert validation[0]["data"]["val-aux/sent_demo/reward/mean@1"] > 0


def test_checkpoint_merges_into_a_hugging_face_folder_that_loads(sent_run, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    actor = sent_run.out_dir / "checkpoints" / "global_step_2" / "actor"
    assert actor.is_dir()
    merged = tmp_path / "hf"
    done = subprocess.run([sys.executable, "-m", "verl.model_merger", "merge", "--backend", "fsdp", "--local_dir",
                           str(actor), "--target_dir", str(merged)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    trained = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)
    initial = AutoModelForCausalLM.from_pretrained(gpu_check_inputs(sent_run)[0], dtype=torch.float32)
    changed = [name for name, p in trained.named_parameters()
               if not torch.equal(p, dict(initial.named_parameters())[name])]
    assert changed, "two lr-1e-3 updates left every merged weight equal to the initial model"


def test_resume_continues_at_step_2_and_serves_the_same_prompts(sent_run, tmp_path):
    """A run killed right after saving step 1 (its step-2 checkpoint removed, as if it never got there) resumes
    with trainer.resume_mode=auto at step 2 and serves the prompts the uninterrupted run served at step 2."""
    model, data = gpu_check_inputs(sent_run)
    out = tmp_path / "resumed"
    shutil.copytree(sent_run.out_dir / "checkpoints", out / "checkpoints")
    shutil.rmtree(out / "checkpoints" / "global_step_2")
    (out / "checkpoints" / "latest_checkpointed_iteration.txt").write_text("1")
    resumed = train(tiny_overrides(model, data / "train.parquet", data / "val.parquet", out, "preset=sent",
                                   "trainer.resume_mode=auto"), out, timeout_s=600, echo=lambda _: None)
    assert sorted(train_steps(resumed)) == [2]
    assert not (out / "rollouts" / "1.jsonl").exists()
    assert prompts_served(out, 2) == prompts_served(sent_run.out_dir, 2)
    assert prompts_served(out, 2) != prompts_served(sent_run.out_dir, 1)


@pytest.mark.parametrize("preset, own_metrics, absent", [
    # micro-batch scope: the selection runs inside the loss, so its metrics come from the actor
    ("sent_released", ["actor/sent/kl_term", "actor/sent/low_entropy_frac", "actor/sent/penalised_off_policy_frac"],
     ["sent/low_entropy_frac"]),
    # grpo: its own keys are checked on the quick lab's grpo run (tests/test_lab.py), a training CI pays for anyway
    ("kl_cov", ["actor/kl_loss", "actor/pg_loss"], ["actor/sent/kl_term", "sent/low_entropy_frac"]),
])
def test_other_presets_train_one_step(workdir, tiny_model, preset, own_metrics, absent):
    out = workdir / preset
    run = train(overrides(workdir, tiny_model, out, f"preset={preset}", steps=1), out, timeout_s=600,
                echo=lambda _: None)
    step = train_steps(run)[1]
    assert [key for key in own_metrics if key not in step] == []
    assert [key for key in absent if key in step] == []
    assert_semantic_entropy_metrics(out, 1, step)  # every preset, grpo included


def test_a_missing_model_fails_fast_naming_the_path(workdir, tiny_model):
    out = workdir / "missing_model"
    started = time.time()
    with pytest.raises(TrainingFailed, match="no such model folder") as failure:
        train(overrides(workdir, tiny_model, out, "actor_rollout_ref.model.path=/nonexistent/model"), out,
              timeout_s=300, echo=lambda _: None)
    assert "/nonexistent/model" in str(failure.value)
    assert time.time() - started < 120
    assert read_metrics(out / "metrics.jsonl") == []
