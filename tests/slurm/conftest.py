"""A real Slurm for the tests marked `slurm`: Debian's slurm-wlm 22.05 (slurmctld and two slurmd on this host, which
Debian's build allows, MULTIPLE_SLURMD) with munge and eight fake GPU devices per node; configuration, state and logs
in a temporary directory. One cluster for the whole session, stopped by pid at the end whatever happens. The
packages are installed when missing (as root); when that cannot be done the tests skip, saying why.
The measured set-up: ../shared/notes/slurm-local.md."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
TOOLS = ("slurmctld", "slurmd", "sbatch", "munged")
NODES = ("node1", "node2")
CPUS_PER_NODE = 16  # verl's CPU layer asks Ray for 16 logical CPUs; slurmd may declare more than the host has
GPUS_PER_NODE = 8
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


def which(tool: str) -> str | None:
    return shutil.which(tool, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin"]))


def _run(cmd: list[str], timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)


def install_slurm() -> str | None:
    """Install the Debian packages when a tool is missing; the reason when that cannot be done, else None."""
    missing = [tool for tool in TOOLS if which(tool) is None]
    if not missing:
        return None
    install = ["apt-get", "install", "-y", "-q", *PACKAGES]
    if os.geteuid() != 0 or which("apt-get") is None:
        return f"Slurm is not installed ({', '.join(missing)} missing) and this is not root with apt-get: " + " ".join(
            install)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = _run(install, timeout=600, env=env)
    if done.returncode != 0:  # a fresh machine may have no package lists yet
        _run(["apt-get", "update", "-q"], timeout=600, env=env)
        done = _run(install, timeout=600, env=env)
    if done.returncode != 0:
        return f"`{' '.join(install)}` failed ({done.returncode}): {(done.stdout + done.stderr)[-800:]}"
    missing = [tool for tool in TOOLS if which(tool) is None]
    return f"installed {' '.join(PACKAGES)} but {', '.join(missing)} still missing" if missing else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _munge_works() -> bool:
    try:
        return subprocess.run("munge -n | unmunge", shell=True, capture_output=True, timeout=10).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@dataclass
class Job:
    id: str
    state: str
    exit_code: str  # "status:signal", as Slurm reports it
    restarts: int
    output: str
    seconds: float
    info: dict


class SlurmCluster:
    def __init__(self, root: Path):
        self.root = root
        self.conf = root / "slurm.conf"
        self.procs: list[subprocess.Popen] = []
        self.munged: subprocess.Popen | None = None

    # -- set-up -------------------------------------------------------------------------------------------------
    def write_config(self) -> None:
        for sub in ("state", "spool", "log", "fakegpu"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        for index in range(GPUS_PER_NODE):
            device = self.root / "fakegpu" / f"gpu{index}"
            if not device.exists():  # character devices: slurmd checks that a gres File= is one
                _check(_run(["mknod", str(device), "c", "1", "3"]), "mknod (fake GPU devices)")
        ports = [_free_port() for _ in range(1 + len(NODES))]
        r = self.root
        lines = [
            "ClusterName=sentci", "SlurmctldHost=localhost", "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge", "AuthInfo=cred_expire=10",  # a requeued job restarts after ~13 s, not 120 s
            f"SlurmctldPort={ports[0]}", f"StateSaveLocation={r}/state", f"SlurmdSpoolDir={r}/spool/%n",
            f"SlurmctldPidFile={r}/slurmctld.pid", f"SlurmdPidFile={r}/slurmd-%n.pid",
            f"SlurmctldLogFile={r}/log/slurmctld.log", f"SlurmdLogFile={r}/log/slurmd-%n.log",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none", "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core", "SlurmdParameters=config_overrides", "GresTypes=gpu",
            "SchedulerType=sched/backfill", "SchedulerParameters=sched_interval=5,bf_interval=5", "ReturnToService=2",
            "MpiDefault=none", "KillWait=10", "MinJobAge=3600",
        ]
        for node, port in zip(NODES, ports[1:]):
            lines.append(f"NodeName={node} NodeHostname=localhost NodeAddr=127.0.0.1 Port={port} "
                         f"CPUs={CPUS_PER_NODE} RealMemory=8000 Gres=gpu:{GPUS_PER_NODE} State=UNKNOWN")
        lines.append(f"PartitionName=debug Nodes={','.join(NODES)} Default=YES MaxTime=INFINITE State=UP")
        self.conf.write_text("\n".join(lines) + "\n")
        # No Flags=nvidia_gpu_env: Slurm then sets ROCR_VISIBLE_DEVICES beside CUDA_VISIBLE_DEVICES, as many sites do
        (r / "gres.conf").write_text(
            f"AutoDetect=off\nNodeName={','.join(NODES)} Name=gpu File={r}/fakegpu/gpu[0-{GPUS_PER_NODE - 1}]\n")

    @property
    def env(self) -> dict[str, str]:
        """The environment of Slurm's commands (and of jobs submitted with it): this cluster, no outer allocation."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        env["SLURM_CONF"] = str(self.conf)
        return env

    def start_munge(self) -> None:
        if _munge_works():
            return
        run_dir = Path("/run/munge")
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.chown(run_dir, "munge", "munge")
        if not Path("/etc/munge/munge.key").exists():
            _check(_run(["mungekey", "--create"], user="munge", group="munge"), "mungekey --create")
        log = open(self.root / "log" / "munged.out", "w")
        self.munged = subprocess.Popen([which("munged"), "--foreground", "--force"], stdout=log,
                                       stderr=subprocess.STDOUT, user="munge", group="munge", start_new_session=True)
        self._until(_munge_works, 15, "munged did not answer", self.root / "log" / "munged.out")

    def start(self) -> None:
        self.write_config()
        self.start_munge()
        commands = [[which("slurmctld"), "-D", "-f", str(self.conf)]]
        commands += [[which("slurmd"), "-D", "-f", str(self.conf), "-N", node] for node in NODES]
        for command in commands:
            name = Path(command[0]).name + (f"-{command[-1]}" if "-N" in command else "")
            out = open(self.root / "log" / f"{name}.out", "w")
            self.procs.append(subprocess.Popen(command, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                               start_new_session=True))
        self._until(self._nodes_idle, 60, "the nodes did not become idle", self.root / "log" / "slurmctld.log")

    def _nodes_idle(self) -> bool:
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}: {self.logs()}")
        done = _run(["sinfo", "-h", "-N", "-o", "%N %T"], env=self.env, timeout=20)
        states = dict(line.split() for line in done.stdout.splitlines() if line.strip())
        return done.returncode == 0 and all(states.get(node) == "idle" for node in NODES)

    def _until(self, ready, timeout_s: float, what: str, log: Path) -> None:
        deadline = time.time() + timeout_s
        while not ready():
            if time.time() > deadline:
                raise RuntimeError(f"{what} within {timeout_s:.0f} s; {log}:\n{_tail(log)}")
            time.sleep(0.5)

    def logs(self) -> str:
        return "\n".join(f"== {p.name}\n{_tail(p)}" for p in sorted((self.root / "log").glob("*")))

    # -- tear-down ----------------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Cancel every job, stop the daemons by pid, then kill whatever still runs with this cluster's SLURM_CONF
        in its environment (job steps, Ray processes of a job); and munged when this started it."""
        try:
            jobs = _run(["squeue", "-h", "-o", "%A"], env=self.env, timeout=20).stdout.split()
            if jobs:
                _run(["scancel", *jobs], env=self.env, timeout=20)
                deadline = time.time() + 40
                while time.time() < deadline and _run(["squeue", "-h", "-o", "%A"], env=self.env,
                                                      timeout=20).stdout.split():
                    time.sleep(1)
        except (subprocess.TimeoutExpired, OSError):
            pass
        finally:
            for proc in self.procs:
                _stop(proc)
            for pid in self._own_processes():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if self.munged is not None:
                _stop(self.munged)

    def _own_processes(self) -> list[int]:
        marker = f"SLURM_CONF={self.conf}".encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:
                pass
        return pids

    # -- jobs -----------------------------------------------------------------------------------------------------
    def submit(self, args: list[str], env: dict[str, str] | None = None) -> str:
        """sbatch from the checkout; the job gets `env` (default: this process's), as sbatch exports it."""
        job_env = {k: v for k, v in (os.environ if env is None else env).items() if not k.startswith("SLURM_")}
        job_env["SLURM_CONF"] = str(self.conf)
        done = _run(["sbatch", "--parsable", *args], env=job_env, cwd=REPO, timeout=60)
        assert done.returncode == 0, f"sbatch {' '.join(args)}: {done.stderr}"
        return done.stdout.strip().split(";")[0]

    def job_info(self, job_id: str) -> dict[str, str]:
        done = _run(["scontrol", "-o", "show", "job", job_id], env=self.env, timeout=30)
        return dict(re.findall(r"(\w+)=(\S*)", done.stdout))

    def wait(self, job_id: str, timeout_s: float, on_poll=None) -> Job:
        """Poll until the job is in a final state; on the deadline cancel it and fail with its output."""
        started = time.time()
        while True:
            info = self.job_info(job_id)
            if on_poll is not None:
                on_poll(info)
            if info.get("JobState") in FINAL_STATES:
                break
            if time.time() - started > timeout_s:
                _run(["scancel", job_id], env=self.env, timeout=30)
                out = Path(info.get("StdOut", "/nonexistent"))
                pytest.fail(f"job {job_id} still {info.get('JobState')} after {timeout_s:.0f} s; output:\n"
                            f"{_tail(out, 6000)}")
            time.sleep(2)
        out = Path(info["StdOut"])
        return Job(id=job_id, state=info["JobState"], exit_code=info.get("ExitCode", "?"),
                   restarts=int(info.get("Restarts", 0)), output=out.read_text() if out.exists() else "",
                   seconds=time.time() - started, info=info)

    def scontrol(self, *args: str) -> None:
        _check(_run(["scontrol", *args], env=self.env, timeout=30), "scontrol " + " ".join(args))

    def run(self, args: list[str], env: dict[str, str] | None = None, timeout_s: float = 600) -> Job:
        return self.wait(self.submit(args, env), timeout_s)


def _check(done: subprocess.CompletedProcess, what: str) -> None:
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}): {done.stderr[-1000:]}")


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError as error:
        return f"({error})"


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=15)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """The running two-node cluster (`SlurmCluster`: submit, wait, run, env); skips when Slurm cannot be installed."""
    reason = install_slurm()
    if reason:
        pytest.skip(reason)
    if os.geteuid() != 0:
        pytest.skip("a two-node Slurm on one host runs slurmd as root; this is not root")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def slurm_job_env(tiny_model):
    """What every test job gets: the venv's `ray` and python on PATH, the checkout importable, no outer Slurm or Ray
    settings (the scripts must set RAY_AUTH_MODE themselves), the tiny model."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RAY_"))}
    env.update(PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}", PYTHON=sys.executable,
               MODEL_PATH=str(tiny_model), RAY_DEDUP_LOGS="0")  # every Ray worker's lines, with its pid
    return env
