"""Slurm helpers (scripts/slurm/lib.sh) and the sbatch scripts' control flow, with stand-in `scontrol`, `srun` and
`ray` executables on PATH: seconds, and cases a real cluster cannot stage (a `ray status` that hangs, 3+ nodes,
multi-NIC addresses). The stand-in `ray` fails `ray status` while the head starts and blocks in `ray start --block`,
as the real one does. The same scripts under a real two-node Slurm: tests/slurm/."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
LIB = REPO / "scripts" / "slurm" / "lib.sh"

FAKE_SCONTROL = """\
#!/usr/bin/env bash
echo "scontrol $*" >> "$FAKE_LOG"
if [[ $1 == show && $2 == hostnames ]]; then
    for host in $FAKE_HOSTS; do echo "$host"; done
fi
"""
# srun stand-in: log, drop srun's own options, answer the address queries, run anything else locally with the
# step's devices (FAKE_STEP_GPUS, set by Slurm as CUDA_ and ROCR_VISIBLE_DEVICES).
FAKE_SRUN = """\
#!/usr/bin/env bash
echo "srun $*" >> "$FAKE_LOG"
while (($#)); do
    case $1 in -w) export SLURMD_NODENAME=$2; shift 2 ;; -*) shift ;; *) break ;; esac
done
if [[ $1 == hostname ]]; then echo "${FAKE_IP:-10.0.0.1} 172.17.0.1"; exit 0; fi
if [[ $1 == ip ]]; then echo "4: ib0    inet 192.168.7.21/24 brd 192.168.7.255 scope global ib0"; exit 0; fi
export SLURM_PROCID=${SLURM_PROCID:-0}
if [[ -n ${FAKE_STEP_GPUS:-} ]]; then
    export CUDA_VISIBLE_DEVICES=$FAKE_STEP_GPUS ROCR_VISIBLE_DEVICES=$FAKE_STEP_GPUS
fi
exec "$@"
"""
# ray stand-in: `ray status` exits 1 (after FAKE_STATUS_SLEEP s) for the first FAKE_FAILS calls, as the real one
# does while the head starts, then lists one more node per call up to FAKE_NODES; `ray start` logs its environment
# and, with --block, blocks like the real one.
FAKE_RAY = """\
#!/usr/bin/env bash
echo "ray $*" >> "$FAKE_LOG"
if [[ $1 == start ]]; then
    echo "ray-env node=${SLURMD_NODENAME:-} auth=${RAY_AUTH_MODE:-unset} tmp=${RAY_TMPDIR:-unset}" \
        "cuda=${CUDA_VISIBLE_DEVICES:-unset} rocr=${ROCR_VISIBLE_DEVICES:-unset}" >> "$FAKE_LOG"
    [[ " $* " == *" --block "* ]] && exec sleep 300
    exit 0
fi
if [[ $1 == status ]]; then
    calls=$(( $(cat "$FAKE_DIR/status_calls" 2>/dev/null || echo 0) + 1 ))
    echo "$calls" > "$FAKE_DIR/status_calls"
    sleep "${FAKE_STATUS_SLEEP:-0}"
    if ((calls <= ${FAKE_FAILS:-1})); then
        echo "ConnectionError: Could not find any running Ray instance." >&2
        exit 1
    fi
    up=$(( calls - ${FAKE_FAILS:-1} < ${FAKE_NODES:-1} ? calls - ${FAKE_FAILS:-1} : ${FAKE_NODES:-1} ))
    echo "======== Autoscaler status ========"
    echo "Node status"
    echo "---------------------------------------------------------------"
    echo "Active:"
    echo " 1 node_head0000"
    for ((i = 1; i < up; i++)); do echo " 1 node_worker$i"; done
    echo "Pending:"
    echo " 1 node_pending"
    echo "Recent failures:"
    echo " (no failures)"
fi
exit 0
"""


@pytest.fixture
def fake(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("scontrol", FAKE_SCONTROL), ("srun", FAKE_SRUN), ("ray", FAKE_RAY)):
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "calls.log"
    log.touch()

    def env(hosts, **extra):
        base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RAY_", "SENT_"))}
        base.update(
            PATH=f"{bin_dir}:{Path(sys.executable).parent}:{base['PATH']}",
            FAKE_LOG=str(log),
            FAKE_DIR=str(tmp_path),
            FAKE_HOSTS=" ".join(hosts),
            SLURM_JOB_NODELIST="gpu[01-%02d]" % len(hosts) if hosts else "",
            SENT_WAIT_POLL_S="0",
        )
        base.update(extra)
        return base

    env.log = log
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bash(snippet, env, check=True):
    done = subprocess.run(
        ["bash", "-c", f"set -euo pipefail; source {LIB}; {snippet}"], env=env, capture_output=True, text=True
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


@pytest.mark.parametrize("hosts", [["gpu01"], ["gpu01", "gpu02"], ["gpu01", "gpu02", "gpu03", "gpu04"]])
def test_node_list_head_and_workers(fake, hosts):
    env = fake(hosts)
    out = bash('sent_nodes; echo "${#SENT_NODES[@]}"; sent_head_node; echo "--"; sent_worker_nodes', env).stdout
    count, head, rest = out.split("\n", 2)
    assert int(count) == len(hosts)
    assert head == "gpu01"
    assert rest.split() == ["--", *hosts[1:]]
    assert "scontrol show hostnames gpu[01-" in fake.log.read_text()


def test_multi_node_case_verls_example_gets_wrong(fake):
    """verl's example: nodes_array=("$nodes") is ONE element (all hosts joined by newlines): its 'head' is the whole
    list and its worker loop never runs. Ours: one element per host."""
    env = fake(["gpu01", "gpu02", "gpu03"])
    verl_way = bash('nodes=$(scontrol show hostnames "$SLURM_JOB_NODELIST"); nodes_array=("$nodes"); '
                    'echo "${#nodes_array[@]}"; echo "${nodes_array[@]:1}" | wc -w', env).stdout.split()  # fmt: skip
    assert verl_way == ["1", "0"]  # one "node", zero workers
    ours = bash('sent_nodes; echo "${#SENT_NODES[@]}"; echo "${SENT_NODES[0]}"; sent_worker_nodes | wc -l', env)
    assert ours.stdout.split() == ["3", "gpu01", "2"]


def test_no_allocation_is_a_clear_error(fake):
    done = bash("sent_nodes", fake([], SLURM_JOB_NODELIST=""), check=False)
    assert done.returncode != 0 and "SLURM_JOB_NODELIST is not set" in done.stderr
    done = bash("sent_nodes", fake([], SLURM_JOB_NODELIST="gpu[01-02]"), check=False)
    assert done.returncode != 0 and "no hosts" in done.stderr


def test_head_address(fake):
    env = fake(["gpu07", "gpu08"])
    assert bash("sent_head_address", env).stdout.strip() == "10.0.0.1"  # first of several addresses
    assert "-w gpu07 hostname --ip-address" in fake.log.read_text()
    assert bash("sent_head_address", {**env, "SENT_HEAD_IFACE": "ib0"}).stdout.strip() == "192.168.7.21"
    assert "ip -4 -o addr show dev ib0" in fake.log.read_text()
    assert bash("sent_head_address gpu08", {**env, "FAKE_IP": "fd00::5"}).stdout.strip() == "[fd00::5]"


def test_wait_for_nodes(fake):
    env = fake(["gpu01", "gpu02", "gpu03"], FAKE_NODES="3")
    done = bash("sent_wait_for_nodes 3 60 10.0.0.1:6379", env)
    assert "ready: 3/3" in done.stderr
    # the first call fails (head starting), then 1, 2, 3 nodes
    assert fake.log.read_text().count("ray status --address 10.0.0.1:6379") == 4
    (Path(env["FAKE_DIR"]) / "status_calls").unlink()
    done = bash("sent_wait_for_nodes 5 0", {**env, "RAY_ADDRESS": "10.0.0.1:6379"}, check=False)
    assert done.returncode == 1
    assert "timed out after 0s waiting for the Ray cluster at 10.0.0.1:6379: 0/5" in done.stderr


def test_failing_ray_status_does_not_end_a_strict_script_silently(fake):
    """The issue's reproduction: under set -euo pipefail a failing `ray status` used to end the script at once,
    with no message."""
    done = bash("SENT_RAY=false sent_wait_for_nodes 1 3; echo unreachable", fake(["gpu01"]), check=False)
    assert done.returncode == 1 and "unreachable" not in done.stdout
    assert "timed out after 3s waiting for the Ray cluster" in done.stderr


def test_wait_counts_wall_time_not_sleeps(fake):
    """A `ray status` that cannot reach the head hangs (~40 s for the real one): each call is bounded and the
    timeout is wall time."""
    env = fake(["gpu01"], FAKE_FAILS="100", FAKE_STATUS_SLEEP="30", SENT_STATUS_TIMEOUT_S="2", SENT_WAIT_POLL_S="1")
    started = time.time()
    done = bash("sent_wait_for_nodes 1 5 10.0.0.1:6379", env, check=False)
    assert done.returncode == 1 and "timed out after 5s" in done.stderr
    assert time.time() - started < 15


def test_wait_stops_when_a_watched_step_dies(fake):
    env = fake(["gpu01"], FAKE_FAILS="1000000")  # never up: only the dead step can end the wait
    started = time.time()
    done = bash('(sleep 1; exit 3) & sent_watch_step $! "the Ray head on gpu01"; sent_wait_for_nodes 1 120 x:1', env,
                check=False)
    assert done.returncode == 1 and time.time() - started < 30
    assert "the Ray head on gpu01 exited (status 3) before the Ray cluster was up" in done.stderr


def test_count_active_nodes_handles_idle_and_pending():
    status = textwrap.dedent("""\
        Node status
        ---------------------------------------------------------------
        Active:
         1 node_a
        Idle:
         2 node_b
        Pending:
         1 node_c
        Recent failures:
         (no failures)
        """)  # fmt: skip
    done = subprocess.run(["bash", "-c", f"source {LIB}; sent_count_active_nodes"], input=status,
                          capture_output=True, text=True)  # fmt: skip
    assert done.stdout.strip() == "3"


def test_step_gpus_and_devices(fake):
    env = fake(["gpu01"], SLURM_GPUS_ON_NODE="8")  # the batch script's view under --exclusive; the step sees 2
    step = {**env, "CUDA_VISIBLE_DEVICES": "0,1", "ROCR_VISIBLE_DEVICES": "0,1"}
    out = bash('sent_step_devices; sent_step_gpus; echo "${ROCR_VISIBLE_DEVICES-unset}"', step).stdout.split()
    assert out == ["2", "unset"]
    assert bash("sent_step_gpus", {**step, "SENT_RAY_GPUS": "1"}).stdout.strip() == "1"
    assert bash("sent_step_gpus", {**env, "CUDA_VISIBLE_DEVICES": "NoDevFiles"}).stdout.strip() == "0"
    rocr_only = {**env, "ROCR_VISIBLE_DEVICES": "0,1,2"}  # AMD without CUDA_VISIBLE_DEVICES: kept
    assert bash('sent_step_devices; sent_step_gpus; echo "$ROCR_VISIBLE_DEVICES"', rocr_only).stdout.split() == [
        "3", "0,1,2"]


def test_train_sbatch_end_to_end_with_stand_ins(fake):
    """The whole sbatch: Ray head on the first node, workers on the others (each with the GPUs its own step sees),
    wait, the launcher (DRY_RUN) with trainer.nnodes=$SLURM_NNODES attaching without resource arguments, then only
    the job's own Ray steps stopped."""
    hosts = ["gpu01", "gpu02", "gpu03"]
    env = fake(hosts, FAKE_NODES="3", SLURM_NNODES="3", SLURM_GPUS_ON_NODE="8", SLURM_CPUS_PER_TASK="16",
               SLURM_JOB_ID="42", SLURM_SUBMIT_DIR=str(REPO), DRY_RUN="1", PYTHON=sys.executable, FAKE_STEP_GPUS="0,1",
               FAKE_IP="127.0.0.1", RAY_PORT=str(free_port()))  # fmt: skip
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "slurm" / "train.sbatch"), "scripts/run_qwen7b.sh", "trainer.save_freq=5"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    cfg = yaml.safe_load(done.stdout)
    assert cfg["trainer"]["nnodes"] == 3 and cfg["trainer"]["n_gpus_per_node"] == 2
    assert cfg["trainer"]["save_freq"] == 5 and cfg["trainer"]["resume_mode"] == "auto"
    assert cfg["ray_kwargs"]["ray_init"]["num_cpus"] is None and cfg["ray_kwargs"]["ray_init"]["num_gpus"] is None
    assert cfg["ray_kwargs"]["ray_init"]["runtime_env"]["env_vars"]["PYTHONPATH"].split(":")[0] == str(REPO)
    log = fake.log.read_text().splitlines()
    head_start = [line for line in log if line.startswith("ray start --head")]
    resources = "--num-cpus=16 --num-gpus=2 --disable-usage-stats --block"  # the step's 2 GPUs, not the node's 8
    assert head_start == [f"ray start --head --node-ip-address=127.0.0.1 --port={env['RAY_PORT']} {resources}"]
    starts = [line for line in log if line.startswith("ray-env")]
    assert sorted(starts) == sorted(f"ray-env node={host} auth=disabled tmp=/tmp/ray-job42 cuda=0,1 rocr=unset"
                                    for host in hosts)
    assert log.count(f"ray start --address=127.0.0.1:{env['RAY_PORT']} {resources}") == 2
    launcher = [i for i, line in enumerate(log) if "sent_run_launcher 3 scripts/run_qwen7b.sh trainer.nnodes=3" in line]
    assert launcher and "--overlap" in log[launcher[0]] and "-w gpu01" in log[launcher[0]]
    assert not any(line.startswith("ray stop") for line in log)  # `ray stop` would stop other jobs' Ray too
    assert "stopping the job's Ray steps" in done.stderr


def test_score_sbatch_runs_every_rank_then_merges(fake, tmp_path):
    fake_python = tmp_path / "bin" / "fake-python"
    fake_python.write_text('#!/usr/bin/env bash\necho "python $*" >> "$FAKE_LOG"\n')
    fake_python.chmod(0o755)
    env = fake(["gpu01"], SLURM_NTASKS="8", SLURM_SUBMIT_DIR=str(REPO), PYTHON=str(fake_python))
    done = subprocess.run(["bash", str(REPO / "scripts" / "slurm" / "score.sbatch"), "sampling.n=16"], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    runs = [line for line in fake.log.read_text().splitlines() if line.startswith("python -m verl_ext.semantic_")]
    assert len(runs) == 2
    assert "input_files=[data/dapo_math_17k.parquet]" in runs[0]
    assert "output_dir=data/scored/r1-distill-qwen-1.5b" in runs[0]
    assert "world_size=8 rank=0" in runs[0] and runs[0].endswith("sampling.n=16")
    assert "merge_only=true" in runs[1]
    assert "data/scored/r1-distill-qwen-1.5b/scored.parquet" in done.stderr
