"""Run `python -m recipe.sent.main_sent` as a child process with a deadline, its console in a log file, progress on
ours, and the per-step metrics verl logged in `<out_dir>/metrics.jsonl` (verl's `file` logger).

Used by the demo, the end-to-end tests and any script that trains and then reads the metrics.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
STEP_LINE = re.compile(r"\bstep:(\d+) - ")
EARLIER_METRICS = "metrics.earlier.jsonl"  # steps of interrupted runs while a resumed one runs (keep_metrics)


class TrainingFailed(RuntimeError):
    """The training process exited non-zero or ran past its deadline; the message ends with its log's tail."""


@dataclass
class TrainingRun:
    out_dir: Path
    log: Path
    metrics_file: Path
    seconds: float

    def metrics(self) -> list[dict]:
        """One dict per logged step (`{"step": N, "data": {...}}` as verl's file logger writes them)."""
        return read_metrics(self.metrics_file)


def read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def train(overrides: list[str], out_dir: str | Path, *, timeout_s: float, total_steps: int | None = None,
          echo=print, env: dict[str, str] | None = None, keep_metrics: bool = False,
          on_step: Callable[[int, float], None] | None = None, stall_s: float | None = None,
          loggers: tuple[str, ...] = ("console",), root: Path = ROOT) -> TrainingRun:
    """Train with `overrides`; `metrics.jsonl`, `train.log` land in `out_dir`. Raises TrainingFailed on a non-zero exit
    or when `timeout_s` passes (every process of the training's session is killed, Ray's workers and vLLM included;
    also when this process is interrupted). `keep_metrics`: a resumed run keeps the steps an earlier run logged in
    `metrics.jsonl` (verl's file logger truncates the file); a step logged but killed before its checkpoint (the
    trainer saves right after the log) is redone, and the later run's line is kept. `on_step(step, seconds)` is called
    as each step finishes. `stall_s`: also fail when no step is logged for that long (from the start, then from each
    step), as when Ray's memory monitor kills one of the run's actors and verl's loop waits for it forever.
    `loggers`: verl's `trainer.logger` backends (e.g. ("console", "wandb")); verl's `file` logger is always added.
    `root`: the checkout whose `recipe.sent.main_sent` runs (another commit's copy, for a before/after benchmark)."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    log, metrics_file = out_dir / "train.log", out_dir / "metrics.jsonl"
    earlier = out_dir / EARLIER_METRICS
    if keep_metrics:
        _set_aside(metrics_file, earlier)
    else:
        earlier.unlink(missing_ok=True)
    child_env = {**os.environ, "VERL_FILE_LOGGER_PATH": str(metrics_file), "PYTHONUNBUFFERED": "1", **(env or {})}
    child_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), child_env.get("PYTHONPATH", "")) if p)
    # file: verl's own per-step JSON lines, which this module reads back
    overrides = [*overrides, f"trainer.logger=[{','.join(dict.fromkeys([*loggers, 'file']))}]"]
    command = [sys.executable, "-m", "recipe.sent.main_sent", *overrides]
    started = time.time()
    last_step = [started]  # when the last step was logged (the watcher reads it)
    with open(log, "a" if keep_metrics else "w") as log_fh:
        log_fh.write(" ".join(command) + "\n\n")
        proc = subprocess.Popen(command, cwd=root, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", start_new_session=True)
        stopped = _watch_deadline(proc, timeout_s, stall_s, last_step)
        try:
            for line in proc.stdout:
                log_fh.write(line)
                match = STEP_LINE.search(line)
                if match:
                    now, step = time.time(), int(match.group(1))
                    of = f"/{total_steps}" if total_steps else ""
                    echo(f"  step {step}{of} done: {now - last_step[0]:.0f} s (elapsed {now - started:.0f} s)")
                    if on_step is not None:
                        on_step(step, now - last_step[0])
                    last_step[0] = now
            proc.wait()
        except BaseException:
            # Ctrl-C or SIGTERM of this process: the child has its own session, so it would outlive us
            kill_session(proc)
            raise
        finally:
            if keep_metrics:
                _join_metrics(earlier, metrics_file)
    seconds = time.time() - started
    if stopped or proc.returncode != 0:
        why = stopped[0] if stopped else f"exited with {proc.returncode}"
        raise TrainingFailed(f"training {why}; log: {log}\n{_error_tail(log)}")
    return TrainingRun(out_dir=out_dir, log=log, metrics_file=metrics_file, seconds=seconds)


def _set_aside(metrics_file: Path, earlier: Path) -> None:
    """Append what `metrics.jsonl` holds to `earlier` (the file logger of the next run truncates it)."""
    if metrics_file.exists() and metrics_file.stat().st_size:
        with open(earlier, "a") as fh:
            fh.write(metrics_file.read_text())
        metrics_file.unlink()


def _join_metrics(earlier: Path, metrics_file: Path) -> None:
    """metrics.jsonl = the earlier runs' steps before the first step this run logged (it redid the rest), then its own."""
    if not earlier.exists():
        return
    new = read_metrics(metrics_file)
    first_new = min((entry["step"] for entry in new), default=None)
    kept = [entry for entry in read_metrics(earlier) if first_new is None or entry["step"] < first_new]
    partial = metrics_file.with_suffix(".partial")
    partial.write_text("".join(json.dumps(entry) + "\n" for entry in [*kept, *new]))
    partial.replace(metrics_file)
    earlier.unlink()


def _watch_deadline(proc: subprocess.Popen, timeout_s: float, stall_s: float | None = None,
                    last_step: list[float] | None = None) -> list[str]:
    """Kill `proc`'s session once `timeout_s` pass, or `stall_s` after `last_step[0]` (the caller moves it at each
    step); the returned list gets the reason when it did."""
    deadline, fired = time.time() + timeout_s, []

    def watch():
        while proc.poll() is None:
            now = time.time()
            if now > deadline:
                fired.append(f"ran past its {timeout_s:.0f} s deadline")
            elif stall_s is not None and now - last_step[0] > stall_s:
                fired.append(f"logged no step for {stall_s:.0f} s (stalled)")
            if fired:
                kill_session(proc)
                return
            time.sleep(1)

    threading.Thread(target=watch, daemon=True).start()
    return fired


def kill_session(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM every process in `proc`'s session, SIGKILL what is left after `grace_s`. The session, not the process
    group: Ray puts each worker (the TaskRunner that runs the training loop, vLLM, FSDP) in a group of its own, and
    they outlive verl's driver by seconds, long enough to finish and checkpoint another step after a kill."""
    terminate(lambda: [process for process in session_processes(proc.pid) if process.pid != proc.pid], grace_s,
              child=proc)


def terminate(processes: Callable[[], list[psutil.Process]], grace_s: float = 10.0, *,
              child: subprocess.Popen | None = None) -> None:
    """SIGTERM `processes()` (and `child`), then SIGKILL what is left after `grace_s`; each round asks `processes()`
    anew (a worker can start meanwhile). `child`, a Popen of ours, is signalled through Popen, which waits for it and
    never signals a reaped pid."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        found = processes()
        for process in found:
            try:
                process.send_signal(sig)
            except psutil.Error:  # gone already
                pass
        if child is not None:
            child.send_signal(sig)
        deadline = time.time() + grace_s
        while time.time() < deadline:
            if (child is None or child.poll() is not None) and not any(is_alive(process) for process in found):
                return
            time.sleep(0.1)


def session_processes(sid: int) -> list[psutil.Process]:
    """The processes of session `sid` (a child started with `start_new_session=True` leads one: pid == sid)."""
    found = []
    for pid in psutil.pids():
        try:
            if os.getsid(pid) == sid:
                found.append(psutil.Process(pid))
        except (OSError, psutil.Error):  # exited meanwhile
            continue
    return found


def is_alive(process: psutil.Process) -> bool:
    """Running, and not a zombie (a killed Ray worker stays one until its adopter reaps it)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _error_tail(log: Path, lines: int = 40) -> str:
    """The last lines of the log that say what went wrong (errors first, else the plain tail)."""
    text = log.read_text(errors="replace").splitlines()
    errors = [line for line in text
              if re.search(r"Error|error:|Exception|SystemExit|Traceback", line) and "Warning" not in line]
    return "\n".join((errors or text)[-lines:])
