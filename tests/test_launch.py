"""recipe.sent.launch's stop: a training's whole session goes down, also the processes that left its process group
(as Ray's workers do: each sits in a group of its own)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import psutil

from recipe.sent.launch import is_alive, kill_session, session_processes

# A leader standing in for verl's driver, and a worker in its own process group that ignores SIGTERM, as a Ray
# worker busy in a task does (its SIGTERM handler runs only between Python bytecodes of its main thread).
LEADER = textwrap.dedent("""
    import subprocess, sys, time
    worker = subprocess.Popen([sys.executable, "-c", '''
    import os, signal, sys, time
    os.setpgrp()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(os.getpid(), flush=True)
    time.sleep(600)
    '''])
    time.sleep(600)
""")


def _start_session() -> tuple[subprocess.Popen, int]:
    leader = subprocess.Popen([sys.executable, "-c", LEADER], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    worker_pid = int(leader.stdout.readline())
    return leader, worker_pid


def test_kill_session_takes_down_a_worker_outside_the_leaders_process_group():
    leader, worker_pid = _start_session()
    worker = psutil.Process(worker_pid)
    try:
        assert os.getpgid(worker_pid) != leader.pid  # os.killpg(leader.pid, ...) would not reach it
        assert {process.pid for process in session_processes(leader.pid)} >= {leader.pid, worker_pid}
        kill_session(leader, grace_s=1)
        assert leader.returncode == -signal.SIGTERM  # the leader takes SIGTERM ...
        assert not is_alive(worker)  # ... and the worker that ignores it gets SIGKILL after the grace
        assert [process.pid for process in session_processes(leader.pid) if is_alive(process)] == []
    finally:
        for pid in (leader.pid, worker_pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        leader.wait(timeout=10)


def test_kill_session_of_a_finished_process_is_a_no_op():
    done = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    done.wait(timeout=30)
    kill_session(done, grace_s=1)
    assert done.returncode == 0
