"""One weight sync at a time on a host, across trainings.

verl 0.9.1 sends the FSDP actor's weights to vLLM through a ZMQ socket named
``/tmp/rl-colocate-zmq-<Ray job id>-replica-<r>-rank-<k>.sock`` (`workers/rollout/vllm_rollout/vllm_rollout.py` and
`utils.py`); the sender removes the path and binds it, the vLLM worker connects to it. The job id keeps two jobs of one
Ray cluster apart, but every training that starts a Ray cluster of its own (each of `main_sent`'s, so each of the lab's
`parallel` runs) is job ``01000000``: two such trainings on one host bind and connect the same path, and when their
syncs overlap one run's vLLM can take the other's weights or a sync waits forever (seen: a grpo run of a
two-at-a-time toy lab stuck in ``update_weights`` until the lab's stall deadline). With the trainer's whole
``update_weights`` call under this host-wide lock, no two syncs overlap; a sync of the toy model takes 0.03-0.04 s
on the CPU.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_PATH = Path("/tmp/rl-colocate-zmq.lock")  # beside the sockets it guards, shared by every user's trainings
TIMEOUT_S = 900.0  # a sync holding it longer is stuck: its own training's stall deadline takes it down


@contextmanager
def weight_sync_lock(path: str | Path = LOCK_PATH, timeout_s: float = TIMEOUT_S,
                     poll_s: float = 0.05) -> Iterator[float]:
    """Hold the host's weight-sync lock; yields the seconds waited for it. An flock: a process that dies releases it."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:  # another user's file: a read-only descriptor locks as well
        fd = os.open(path, os.O_RDONLY)
    started = time.monotonic()
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - started > timeout_s:
                    raise TimeoutError(f"{path}: another training's weight sync has held it for {timeout_s:g} s"
                                       ) from None
                time.sleep(poll_s)
        yield time.monotonic() - started
    finally:
        os.close(fd)  # releases the lock
