"""recipe.drivers.launch's stop: a training's whole session goes down, also the processes that left its process group
(as Ray's workers do: each sits in a group of its own)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import psutil
import pytest

from recipe.drivers.launch import _watch_deadline, is_alive, kill_session, session_processes

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


@contextlib.contextmanager
def _session():
    """(leader, worker pid); both are SIGKILLed at the end, whatever the test did."""
    leader = subprocess.Popen([sys.executable, "-c", LEADER], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    worker_pid = int(leader.stdout.readline())
    try:
        yield leader, worker_pid
    finally:
        for pid in (leader.pid, worker_pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        leader.wait(timeout=10)


def test_kill_session_takes_down_a_worker_outside_the_leaders_process_group():
    with _session() as (leader, worker_pid):
        worker = psutil.Process(worker_pid)
        assert os.getpgid(worker_pid) != leader.pid  # os.killpg(leader.pid, ...) would not reach it
        assert {process.pid for process in session_processes(leader.pid)} >= {leader.pid, worker_pid}
        kill_session(leader, grace_s=1)
        assert leader.returncode == -signal.SIGTERM  # the leader takes SIGTERM ...
        assert not is_alive(worker)  # ... and the worker that ignores it gets SIGKILL after the grace
        assert [process.pid for process in session_processes(leader.pid) if is_alive(process)] == []


def test_kill_session_of_a_finished_process_is_a_no_op():
    done = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    done.wait(timeout=30)
    kill_session(done, grace_s=1)
    assert done.returncode == 0


@pytest.mark.parametrize("timeout_s, stall_s, progress_s, reason", [
    (3, None, 0, "ran past its 3 s deadline"),
    (600, 2, 0, "logged no step for 2 s (stalled)"),
    (600, 2, 5, "logged no step for 2 s (stalled)"),  # steps every 0.5 s for 5 s keep it alive, then it stalls
])
def test_a_training_past_its_deadline_or_stalled_is_killed_naming_why(timeout_s, stall_s, progress_s, reason):
    last_step = [time.time()]
    started = time.time()

    def steps():
        while time.time() - started < progress_s:
            last_step[0] = time.time()
            time.sleep(0.5)

    with _session() as (leader, worker_pid):
        worker = psutil.Process(worker_pid)
        stepping = threading.Thread(target=steps)
        stepping.start()
        fired = _watch_deadline(leader, timeout_s, stall_s, last_step)
        stepping.join()
        if progress_s:
            assert fired == [] and leader.poll() is None  # alive while it steps
        leader.wait(timeout=60)
        assert fired == [reason]
        assert time.time() - started >= max(progress_s, min(timeout_s, stall_s or timeout_s))
        worker.wait(timeout=30)  # the session went down with it
        assert not is_alive(worker)
