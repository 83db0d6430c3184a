"""Slurm helpers (scripts/slurm/lib.sh) and the sbatch scripts, with stand-in `scontrol`, `srun` and `ray`
executables on PATH (Slurm cannot be installed here)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
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
# srun stand-in: log, drop srun's own options, answer the address queries, run anything else locally.
FAKE_SRUN = """\
#!/usr/bin/env bash
echo "srun $*" >> "$FAKE_LOG"
while (($#)); do
    case $1 in -w) shift 2 ;; -*) shift ;; *) break ;; esac
done
if [[ $1 == hostname ]]; then echo "${FAKE_IP:-10.0.0.1} 172.17.0.1"; exit 0; fi
if [[ $1 == ip ]]; then echo "4: ib0    inet 192.168.7.21/24 brd 192.168.7.255 scope global ib0"; exit 0; fi
export SLURM_PROCID=${SLURM_PROCID:-0}
exec "$@"
"""
FAKE_RAY = """\
#!/usr/bin/env bash
echo "ray $*" >> "$FAKE_LOG"
if [[ $1 == status ]]; then
    calls=$(( $(cat "$FAKE_DIR/status_calls" 2>/dev/null || echo 0) + 1 ))
    echo "$calls" > "$FAKE_DIR/status_calls"
    up=$(( calls < ${FAKE_NODES:-1} ? calls : ${FAKE_NODES:-1} ))
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
    assert fake.log.read_text().count("ray status --address 10.0.0.1:6379") == 3  # 1, 2, then 3 nodes up
    (Path(env["FAKE_DIR"]) / "status_calls").unlink()
    done = bash("sent_wait_for_nodes 5 0", {**env, "RAY_ADDRESS": "10.0.0.1:6379"}, check=False)
    assert done.returncode == 1 and "timed out after 0s: 1/5" in done.stderr


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


def test_gpus_per_node(fake):
    env = fake(["gpu01"])
    assert bash("sent_gpus_per_node", {**env, "SLURM_GPUS_PER_NODE": "h100:4"}).stdout.strip() == "4"
    assert bash("sent_gpus_per_node", {**env, "SLURM_GPUS_ON_NODE": "2"}).stdout.strip() == "2"
    assert bash("sent_gpus_per_node 8", env).stdout.strip() == "8"


def test_train_sbatch_end_to_end_with_stand_ins(fake):
    """The whole sbatch: Ray head on the first node, workers on the others, wait, the launcher (DRY_RUN) with
    trainer.nnodes=$SLURM_NNODES, then Ray torn down."""
    hosts = ["gpu01", "gpu02", "gpu03"]
    env = fake(hosts, FAKE_NODES="3", SLURM_NNODES="3", SLURM_GPUS_PER_NODE="h100:4", SLURM_CPUS_PER_TASK="16",
               SLURM_JOB_ID="42", SLURM_SUBMIT_DIR=str(REPO), DRY_RUN="1", PYTHON=sys.executable)  # fmt: skip
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "slurm" / "train.sbatch"), "scripts/run_qwen7b.sh", "trainer.save_freq=5"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    cfg = yaml.safe_load(done.stdout)
    assert cfg["trainer"]["nnodes"] == 3 and cfg["trainer"]["n_gpus_per_node"] == 4
    assert cfg["trainer"]["save_freq"] == 5 and cfg["trainer"]["resume_mode"] == "auto"
    log = fake.log.read_text().splitlines()
    head_start = [i for i, line in enumerate(log) if "-w gpu01" in line and "ray start --head" in line]
    assert len(head_start) == 1
    assert "--node-ip-address=10.0.0.1 --port=6379 --num-cpus=16 --num-gpus=4" in log[head_start[0]]
    for worker in hosts[1:]:
        assert any(f"-w {worker}" in line and "ray start --address=10.0.0.1:6379" in line for line in log)
    assert not any("-w gpu01" in line and "ray start --address" in line for line in log)
    launcher = [i for i, line in enumerate(log) if "bash scripts/run_qwen7b.sh trainer.nnodes=3" in line]
    assert launcher and "--overlap" in log[launcher[0]] and "-w gpu01" in log[launcher[0]]
    assert any("ray stop --force" in line for line in log[launcher[0] :])  # torn down after training


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
