"""Launchers (scripts/run_*.sh): bash syntax, DRY_RUN composes the full Hydra config on CPU with the released setup,
environment knobs and "$@" overrides reach it, the model-merger command they print exists; the Dockerfile."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
LAUNCHERS = ["run_qwen7b.sh", "run_r1_distill_1p5b.sh", "run_qwen3_14b.sh"]
SHELL_FILES = sorted(
    [*REPO.glob("scripts/*.sh"), *REPO.glob("scripts/lib/*.sh"), *REPO.glob("scripts/slurm/*")],
)


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    for knob in ("NNODES", "N_GPUS_PER_NODE", "MODEL_PATH", "MODEL_TAG", "TRAIN_FILE", "VAL_FILE", "PRESET", "DRY_RUN"):
        env.pop(knob, None)
    env.update(PYTHON=sys.executable, PATH=f"{Path(sys.executable).parent}:{env['PATH']}", **extra)
    return env


def dry_run(launcher, *overrides, **env):
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / launcher), *overrides],
        env=clean_env(DRY_RUN="1", **env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return yaml.safe_load(done.stdout), done.stderr


@pytest.mark.parametrize("path", SHELL_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_bash_syntax_and_strict_mode(path):
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
    if path.suffix in (".sh", ".sbatch") and path.name != "lib.sh" and path.parent.name != "lib":  # libs are sourced
        assert "set -euo pipefail" in path.read_text()


@pytest.fixture(scope="module")
def qwen7b_dry_run():
    return dry_run("run_qwen7b.sh")


def test_qwen7b_dry_run_has_the_released_setup(qwen7b_dry_run):
    cfg, stderr = qwen7b_dry_run
    actor, rollout = cfg["actor_rollout_ref"]["actor"], cfg["actor_rollout_ref"]["rollout"]
    data, trainer = cfg["data"], cfg["trainer"]
    assert cfg["actor_rollout_ref"]["model"]["path"] == "Qwen/Qwen2.5-Math-7B"
    assert cfg["algorithm"]["adv_estimator"] == "grpo"
    assert data["train_batch_size"] == 256 and rollout["n"] == 8 and actor["ppo_mini_batch_size"] == 128
    assert actor["optim"]["lr"] == 1e-6 and actor["optim"]["lr_scheduler_type"] == "constant"
    assert actor["optim"]["lr_warmup_steps_ratio"] == 0.0
    assert data["max_prompt_length"] == 1024 and data["max_response_length"] == 2048
    assert rollout["temperature"] == 1.0 and rollout["name"] == "vllm"
    assert rollout["val_kwargs"]["top_p"] == 0.6 and rollout["val_kwargs"]["do_sample"] is True
    # the 2-stage SE curriculum in one run, 5 epochs per stage
    assert data["curriculum"]["num_stages"] == 2 and data["curriculum"]["epochs_per_stage"] == 5
    assert trainer["total_epochs"] == 1 and data["shuffle"] is False
    assert data["custom_cls"]["name"] == "CurriculumRLDataset"
    assert data["train_files"].endswith("data/scored/qwen2.5-math-7b/scored.parquet")
    assert data["val_files"].endswith("data/eval/aime24.parquet")
    # SENT loss, the reward, validation, checkpoints, resume
    assert actor["policy_loss"]["loss_mode"] == "sent" and cfg["preset_name"] == "sent"
    assert cfg["reward"]["custom_reward_function"]["path"] == "pkg://recipe.sent.reward"
    assert trainer["test_freq"] == 10 and trainer["save_freq"] == 20 and trainer["resume_mode"] == "auto"
    assert trainer["nnodes"] == 1 and trainer["default_local_dir"].endswith("checkpoints/sent/qwen2.5-math-7b-sent")
    # where things land, and the merger command
    for line in ("[sent] logs", "[sent] checkpoints", "[sent] HF export", "-m verl.model_merger merge --backend fsdp"):
        assert line in stderr


def test_env_knobs_slurm_variables_and_hydra_overrides_reach_the_config():
    cfg, _ = dry_run(
        "run_qwen7b.sh",
        "trainer.save_freq=7",
        "actor_rollout_ref.actor.policy_loss.beta_high=0.3",
        SLURM_NNODES="3",
        SLURM_GPUS_PER_NODE="h100:4",
        PRESET="sent_released",
        EPOCHS_PER_STAGE="2",
    )
    assert cfg["trainer"]["nnodes"] == 3 and cfg["trainer"]["n_gpus_per_node"] == 4
    assert cfg["trainer"]["save_freq"] == 7  # "$@" comes last and wins
    assert cfg["actor_rollout_ref"]["actor"]["policy_loss"]["beta_high"] == 0.3
    assert cfg["preset_name"] == "sent_released"
    assert cfg["actor_rollout_ref"]["actor"]["policy_loss"]["selection_scope"] == "micro_batch"
    assert cfg["data"]["curriculum"]["epochs_per_stage"] == 2
    cfg, _ = dry_run("run_qwen7b.sh", NNODES="2", N_GPUS_PER_NODE="2", SLURM_NNODES="5")
    assert cfg["trainer"]["nnodes"] == 2 and cfg["trainer"]["n_gpus_per_node"] == 2  # explicit knobs win


@pytest.mark.parametrize(
    ("launcher", "model", "tp", "offload"),
    [
        ("run_r1_distill_1p5b.sh", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", 1, False),
        ("run_qwen3_14b.sh", "Qwen/Qwen3-14B", 4, True),
    ],
)
def test_other_model_launchers(launcher, model, tp, offload):
    cfg, stderr = dry_run(launcher)
    assert cfg["actor_rollout_ref"]["model"]["path"] == model
    assert cfg["actor_rollout_ref"]["rollout"]["tensor_model_parallel_size"] == tp
    assert cfg["actor_rollout_ref"]["actor"]["fsdp_config"]["param_offload"] is offload
    assert cfg["data"]["train_batch_size"] == 256 and cfg["trainer"]["resume_mode"] == "auto"
    tag = cfg["trainer"]["experiment_name"].rsplit("-sent", 1)[0]
    assert cfg["data"]["train_files"].endswith(f"data/scored/{tag}/scored.parquet")
    assert "[sent] HF export" in stderr


def test_real_run_without_data_fails_early_with_a_hint(tmp_path):
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "run_qwen7b.sh")],
        env=clean_env(TRAIN_FILE=str(tmp_path / "missing.parquet"), OUTPUT_ROOT=str(tmp_path / "out")),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "missing.parquet not found" in done.stderr and "prepare_data.py" in done.stderr


def test_real_run_tees_the_log_and_returns_the_trainer_status(tmp_path):
    fake_python = tmp_path / "python"
    fake_python.write_text('#!/usr/bin/env bash\necho "trainer got: $*"\nexit 3\n')
    fake_python.chmod(0o755)
    train, val = tmp_path / "train.parquet", tmp_path / "val.parquet"
    train.touch()
    val.touch()
    env = clean_env(TRAIN_FILE=str(train), VAL_FILE=str(val), OUTPUT_ROOT=str(tmp_path / "out"))
    env["PYTHON"] = str(fake_python)
    done = subprocess.run(["bash", str(REPO / "scripts" / "run_qwen7b.sh"), "trainer.save_freq=9"], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 3
    log = (tmp_path / "out" / "logs" / "sent" / "qwen2.5-math-7b-sent" / "train.log").read_text()
    assert log.startswith("trainer got: -m recipe.sent.main_sent") and log.rstrip().endswith("trainer.save_freq=9")
    assert f"data.train_files={train}" in log and "trainer.resume_mode=auto" in log
    assert (tmp_path / "out" / "checkpoints" / "sent" / "qwen2.5-math-7b-sent").is_dir()


def test_printed_model_merger_command_parses_with_verl_cli(qwen7b_dry_run):
    """The launchers print `python -m verl.model_merger merge --backend fsdp --local_dir ... --target_dir ...`:
    verl 0.9.1's own argument parser accepts exactly that command line."""
    _, stderr = qwen7b_dry_run
    printed = re.search(r"-m verl\.model_merger (merge .*?)\n(?!\s+--)", stderr.replace("\\\n", "\n"), re.S)
    argv = printed.group(1).replace("<N>", "20").split()
    assert argv[:3] == ["merge", "--backend", "fsdp"]
    assert argv[argv.index("--local_dir") + 1].endswith("checkpoints/sent/qwen2.5-math-7b-sent/global_step_20/actor")
    code = (
        "import sys; from verl.model_merger.base_model_merger import parse_args; sys.argv = ['x', *sys.argv[1:]]; "
        "a = parse_args(); print(a.operation, a.backend, a.local_dir, a.target_dir)"
    )
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[:2] == ["merge", "fsdp"] and done.stdout.split()[3].endswith("global_step_20")


def test_a_trainer_attaching_to_a_cluster_gets_the_wandb_settings_but_never_the_api_key():
    """On a cluster started before the launcher (RAY_ADDRESS), the workers have `ray start`'s environment: the
    launcher forwards SENT_WORKER_ENV in the job's runtime env (docs/wandb.md), the API key not (it would be logged)."""
    env = clean_env(RAY_ADDRESS="auto", WANDB_MODE="offline", WANDB_DIR="/shared/wandb", WANDB_ENTITY="team",
                    WANDB_API_KEY="secret")
    done = subprocess.run(["bash", "-c", "source scripts/lib/launch_common.sh >/dev/null && sent_attach_overrides"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    forwarded = dict(line.split("=", 1) for line in done.stdout.splitlines())
    prefix = "++ray_kwargs.ray_init.runtime_env.env_vars."
    assert forwarded[prefix + "WANDB_MODE"] == "'offline'" and forwarded[prefix + "WANDB_DIR"] == "'/shared/wandb'"
    assert forwarded[prefix + "WANDB_ENTITY"] == "'team'"
    assert "secret" not in done.stdout and prefix + "WANDB_API_KEY" not in forwarded

