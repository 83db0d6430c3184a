"""scripts/slurm/*.sbatch under a real two-node Slurm (conftest.py): training with the tiny model on `machine=cpu`
(scripts/run_tiny_cpu.sh) on two nodes and on one, a requeue near the time limit that resumes from the checkpoint,
the scoring job data parallel over two tasks, and the two ways a Ray cluster fails to come up."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.slurm]
REPO = Path(__file__).resolve().parents[2]
TRAIN = ["scripts/slurm/train.sbatch", "scripts/run_tiny_cpu.sh"]
# verl's CPU workers sit on logical Ray GPUs: one fake GPU device per node from Slurm; 16 logical CPUs per node
TRAIN_RESOURCES = ["--gpus-per-node=1", "--cpus-per-task=16"]
REWARD = '''
def digit_share_reward(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    text = solution_str or ""
    return sum(c.isdigit() for c in text) / max(1, len(text))
'''
# the requeue test's reward: once the first step is logged it holds the next step (up to 5 min) while HOLD exists, so
# the training is still running whenever Slurm's time-limit check (every 30 s) sends the signal, on any machine
HELD_REWARD = '''
import os
import time


def held_digit_share_reward(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    deadline = time.time() + 300
    while os.path.exists(HOLD) and os.path.exists(METRICS) and os.path.getsize(METRICS) and time.time() < deadline:
        time.sleep(0.5)
    text = solution_str or ""
    return sum(c.isdigit() for c in text) / max(1, len(text))
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """The launcher's data (made by its first run, then reused) and the test reward: varied scores, so the two ranks
    compute real gradients (the tiny model never solves a problem: the math reward is -1 everywhere)."""
    root = tmp_path_factory.mktemp("slurm_jobs")
    (root / "reward.py").write_text(REWARD)
    return root


def train_job(cluster, env, shared, out: Path, nodes: int, *sbatch_args: str, reward: Path | None = None,
              reward_name: str = "digit_share_reward", **knobs):
    """sbatch train.sbatch run_tiny_cpu.sh; returns (job id, the launcher's log folder)."""
    out.mkdir(parents=True, exist_ok=True)
    job_env = {**env, "OUTPUT_ROOT": str(out), "DATA_DIR": str(shared / "data"), "RAY_PORT": str(free_port()),
               "WAIT_TIMEOUT_S": "300", **knobs}
    args = [f"--nodes={nodes}", *TRAIN_RESOURCES, f"--output={out}/slurm-%j.out", *sbatch_args, *TRAIN,
            f"reward.custom_reward_function.path={reward or shared / 'reward.py'}",
            f"reward.custom_reward_function.name={reward_name}"]
    return cluster.submit(args, job_env), out / "logs" / "sent" / "tiny-cpu-sent"


def metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def training_steps(entries: list[dict]) -> list[int]:
    return [entry["step"] for entry in entries if "training/global_step" in entry["data"]]


def assert_trained(job, logs: Path, nodes: int, steps: list[int]) -> dict:
    assert job.state == "COMPLETED" and job.exit_code == "0:0", job.output[-6000:]
    assert f"Ray cluster ready: {nodes}/{nodes} nodes" in job.output
    assert f"tiny-cpu-sent ({nodes} node(s) x 1 GPU(s))" in job.output  # NNODES and the step's own GPU count
    config = yaml.safe_load((logs / "hydra" / ".hydra" / "config.yaml").read_text())
    assert config["trainer"]["nnodes"] == nodes and config["trainer"]["n_gpus_per_node"] == 1
    assert config["ray_kwargs"]["ray_init"]["num_cpus"] is None  # attached to the job's cluster
    # the metrics land where the launcher said (its VERL_FILE_LOGGER_PATH reached verl's trainer, a Ray worker)
    assert f"[sent] metrics    : {logs / 'metrics.jsonl'}" in job.output
    assert training_steps(metrics(logs / "metrics.jsonl")) == steps
    return config


def test_two_nodes_train_with_a_rank_on_each(slurm_cluster, slurm_job_env, shared, tmp_path):
    """Ray head on node1, a worker on node2, trainer.nnodes=2 with one rank per node, 2 steps; with a Ray token file
    in HOME (Ray 2.60 then turns token authentication on unless told)."""
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("0123456789abcdef" * 4)
    job_id, logs = train_job(slurm_cluster, {**slurm_job_env, "HOME": str(home)}, shared, tmp_path / "out", 2)
    job = slurm_cluster.wait(job_id, timeout_s=900)
    assert_trained(job, logs, 2, [1, 2])
    # two ranks: two processes of verl's fused actor/ref worker (one logical GPU on each Ray node; Ray prefixes their
    # lines with "(WorkerDict pid=...)"), each saving its shard of the checkpoint
    assert len(set(re.findall(r"\(WorkerDict pid=(\d+)", job.output))) == 2
    actor = tmp_path / "out" / "checkpoints" / "sent" / "tiny-cpu-sent" / "global_step_2" / "actor"
    assert sorted(p.name for p in actor.glob("model_world_size_*")) == [
        "model_world_size_2_rank_0.pt", "model_world_size_2_rank_1.pt"]


def test_one_node_training_requeued_near_its_time_limit_resumes(slurm_cluster, slurm_job_env, shared, tmp_path):
    """One node, checkpoints every step. Once step 1 is logged the test moves the job's time limit to within the
    script's --signal=B:USR1@600 of now (Slurm's own warning then fires, as near any time limit) and holds step 2 in
    its reward until the job restarts; the script requeues the job, the second run resumes from the latest
    checkpoint, and every step is in the metrics exactly once."""
    steps = 4
    out = tmp_path / "out"
    logs = out / "logs" / "sent" / "tiny-cpu-sent"
    hold = tmp_path / "hold"
    reward = tmp_path / "held_reward.py"
    reward.write_text(f"HOLD = {str(hold)!r}\nMETRICS = {str(logs / 'metrics.jsonl')!r}\n{HELD_REWARD}")
    hold.touch()
    job_id, _ = train_job(slurm_cluster, slurm_job_env, shared, out, 1, "--time=60", reward=reward,
                          reward_name="held_digit_share_reward", STEPS=str(steps))
    moved = {"limit": False, "restored": False}

    def steer(info):
        if not moved["limit"] and training_steps(metrics(logs / "metrics.jsonl")):
            moved["limit"] = True
            run_s = _seconds(info["RunTime"])
            slurm_cluster.scontrol("update", f"JobId={job_id}", f"TimeLimit={_clock(run_s + 540)}")
        elif moved["limit"] and not moved["restored"] and int(info.get("Restarts", 0)) >= 1:
            moved["restored"] = True
            hold.unlink()
            slurm_cluster.scontrol("update", f"JobId={job_id}", "TimeLimit=60")

    job = slurm_cluster.wait(job_id, timeout_s=1200, on_poll=steer)
    assert job.restarts == 1, job.output[-6000:]
    assert "[slurm] time limit close: requeueing" in job.output
    assert job.output.count("(restart 1)") == 1
    earlier = training_steps(metrics(logs / "metrics.1.jsonl"))
    later = training_steps(metrics(logs / "metrics.jsonl"))
    # the first run stopped while its step 2 was held: step 1 logged and checkpointed, the second run resumed from it
    assert (earlier, later) == ([1], list(range(2, steps + 1)))
    resumed = 1
    assert f"Resuming from {logs.parents[2]}/checkpoints/sent/tiny-cpu-sent/global_step_{resumed}" in job.output.split(
        "(restart 1)")[1]
    job.output = job.output.split("(restart 1)")[1]
    assert_trained(job, logs, 1, later)


def _seconds(clock: str) -> int:
    days, _, rest = clock.rpartition("-")
    h, m, s = (int(x) for x in rest.split(":"))
    return (int(days) if days else 0) * 86400 + h * 3600 + m * 60 + s


def _clock(seconds: int) -> str:
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def test_head_port_taken_fails_within_the_wait_naming_it(slurm_cluster, slurm_job_env, shared, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        job_id, _ = train_job(slurm_cluster, slurm_job_env, shared, tmp_path / "out", 1, RAY_PORT=str(port),
                              WAIT_TIMEOUT_S="120")
        job = slurm_cluster.wait(job_id, timeout_s=300)
    assert job.state == "FAILED" and job.exit_code != "0:0"
    assert f"port {port} on 127.0.0.1 is already in use" in job.output
    assert "the Ray head on node1 exited (status 1) before the Ray cluster was up" in job.output
    assert _seconds(job.info["RunTime"]) < 120


def test_worker_that_never_joins_fails_at_the_wait_timeout_naming_it(slurm_cluster, slurm_job_env, shared,
                                                                     tmp_path):
    # CONTAINER wraps every step; on node2 this one stands for a worker that runs but never reaches the head
    wrapper = tmp_path / "container"
    wrapper.write_text('#!/usr/bin/env bash\n'
                       'if [[ $SLURMD_NODENAME == node2 && " $* " == *" sent_ray_node worker "* ]]; then\n'
                       '    exec sleep 600\nfi\nexec "$@"\n')
    wrapper.chmod(0o755)
    job_id, _ = train_job(slurm_cluster, slurm_job_env, shared, tmp_path / "out", 2, CONTAINER=str(wrapper),
                          WAIT_TIMEOUT_S="60")  # for the head, then for the worker
    job = slurm_cluster.wait(job_id, timeout_s=400)
    assert job.state == "FAILED" and job.exit_code != "0:0"
    assert "Ray cluster ready: 1/1 nodes" in job.output
    assert "timed out after 60s waiting for the Ray cluster" in job.output and ": 1/2 nodes up;" in job.output
    assert "the Ray worker on node2" in job.output.split("timed out after 60s")[1]
    assert "never joins cannot reach the head" in job.output
    assert "stopping the job's Ray steps" in job.output


def test_score_sbatch_two_tasks_merge_what_one_process_scores(slurm_cluster, slurm_job_env, tiny_model, tmp_path):
    rows = [{"data_source": "math_dapo", "prompt": [{"role": "user", "content": f"What is {i}+{i + 1}?"}],
             "ability": "MATH", "reward_model": {"style": "rule", "ground_truth": str(2 * i + 1)},
             "extra_info": {"split": "train", "index": i}} for i in range(8)]
    data = tmp_path / "in.parquet"
    pd.DataFrame(rows).to_parquet(data)
    overrides = ["backend=vllm", "sampling.n=4", "sampling.max_tokens=16", "vllm.dtype=float32",
                 "vllm.enforce_eager=true", "vllm.max_model_len=256", "shard_size=2", "clustering.num_workers=1",
                 "progress=false"]
    env = {**slurm_job_env, "MODEL_PATH": str(tiny_model), "MODEL_TAG": "tiny", "INPUT_FILES": str(data),
           "OUTPUT_DIR": str(tmp_path / "slurm")}
    job_id = slurm_cluster.submit(["--nodes=2", "--ntasks-per-node=1", "--gpus-per-task=1", "--cpus-per-task=8",
                                   f"--output={tmp_path}/slurm-%j.out", "scripts/slurm/score.sbatch", *overrides], env)
    # the single-process reference scores while the job runs (both mostly wait on vLLM's start-up)
    single, single_log = tmp_path / "single", tmp_path / "single.log"
    with single_log.open("w") as log:
        alone_run = subprocess.Popen([sys.executable, "-m", "verl_ext.semantic_entropy", f"input_files=[{data}]",
                                      f"output_dir={single}", f"model.path={tiny_model}", *overrides],
                                     cwd=REPO, env=slurm_job_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        job = slurm_cluster.wait(job_id, timeout_s=900)
        alone_run.wait(timeout=600)
    finally:
        alone_run.kill()
    assert job.state == "COMPLETED" and job.exit_code == "0:0", job.output[-6000:]
    assert alone_run.returncode == 0, single_log.read_text()[-3000:]
    assert "on 2 task(s)" in job.output
    # the job prints its config: ranks 0 and 1 of 2 scored their shards, then a rank-0 step merged
    configs = re.findall(r"^world_size: (\d+)\nrank: (\d+)\nmerge_only: (\w+)$", job.output, re.M)
    assert sorted(configs) == [("2", "0", "false"), ("2", "0", "true"), ("2", "1", "false")]
    merged, alone = pd.read_parquet(tmp_path / "slurm" / "scored.parquet"), pd.read_parquet(single / "scored.parquet")
    assert len(merged) == len(alone) == 8
    key = ["semantic_entropy", "se_num_clusters", "se_pass_rate"]
    as_rows = [[row["index"], *(row[k] for k in key)] for row in merged.extra_info]
    assert as_rows == [[row["index"], *(row[k] for k in key)] for row in alone.extra_info]
