"""`python -m recipe.drivers.lab [key=value ...]`: the paper's comparison end to end on one machine.

1. data: model=toy: the toy task (`verl_ext.toy_task.split_rows`), `toy_train_per_level` problems per trained level
   and `toy_heldout_per_level` held-out ones per trained level plus the harder held-out level, never trained; other
   models: the bundled graded math set (`recipe.drivers.demo_data`), every `eval_every`-th problem of each difficulty
   level held out;
2. semantic-entropy scoring of the train split with the initial model (`runs.score`);
3. per variant (`lab_config.VARIANTS`: a preset plus its overrides; all else shared; a dose-response, `doses`,
   adds a variant at each value of a knob as one more, `<variant>@<knob>_<value>`) and seed (`seeds`, into
   `<variant>/seed<k>/`; `LabConfig.workers()` runs at once, each in a thread of its own): training through
   `recipe.drivers.launch.train` with checkpoints and `resume_mode=auto`, the last checkpoint merged to a Hugging Face
   folder (verl's merger at the trained dtype: `recipe.drivers.hf_merge`), evaluated on the held-out set
   (`verl_ext.eval`: avg@k, pass@k); the initial model is evaluated once as the baseline;
4. `report.md` (a row per variant: means over seeds with 95% intervals), `curves.png` (per step and variant, a
   band across seeds) and, with a dose-response, `dose_response.png` (collapse ratio and held-out avg@1 per knob value) from `<variant>/seed<k>/metrics.jsonl` (`recipe.drivers.lab_report`).

Re-running the same command resumes: a (variant, seed) run with `done.json` (written last) is skipped, an unfinished
one resumes from its last checkpoint; either only with the settings it started with (`settings.json`): a lab whose
model or overrides differ from a run's record stops before anything trains, naming the run and the key. A run that
fails is written to its `failed.json`, shown in the report, and retried on the next run. The config is `LabConfig`
(`recipe/drivers/lab_config.py`), the schema of `configs/lab.yaml`.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path

import psutil

from recipe.drivers.lab_config import LabConfig
from recipe.drivers.heldout import BENCHMARK, evaluate, last_checkpoint, merge
from recipe.drivers.lab_report import build_report, run_dir
from verl_ext.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "configs"
SCHEMA_NAME = "lab_schema"


# ------------------------------------------------------------------------------------------------ data and model
def split_data(out: Path, cfg: LabConfig) -> tuple[Path, Path]:
    """train.parquet and eval.parquet, the same for every seed (toy: `toy_task.split_rows`; else every
    `eval_every`-th bundled problem of each level is held out)."""
    import pandas as pd

    train_file, eval_file = out / "train.parquet", out / "eval.parquet"
    if train_file.exists() and eval_file.exists():
        return train_file, eval_file
    out.mkdir(parents=True, exist_ok=True)
    if cfg.model == "toy":
        from verl_ext import toy_task

        train, held_out = toy_task.split_rows(
            {level: cfg.toy_train_per_level for level in toy_task.TRAIN_LEVELS},
            {level: cfg.toy_heldout_per_level for level in toy_task.LEVELS}, seed=0)
    else:
        train, held_out = _bundled_split(cfg.eval_every)
    pd.DataFrame(held_out).to_parquet(eval_file)
    pd.DataFrame(train).to_parquet(train_file)
    print(f"{len(train)} train problems, {len(held_out)} held out -> {out}")
    return train_file, eval_file


def _bundled_split(eval_every: int) -> tuple[list[dict], list[dict]]:
    from recipe.drivers.demo_data import demo_rows

    seen: dict[int, int] = {}
    train, held_out = [], []
    for row, test_row in zip(demo_rows("train"), demo_rows("test")):
        level = row["extra_info"]["level"]
        seen[level] = seen.get(level, 0) + 1
        if seen[level] % eval_every == 0:
            held_out.append(test_row)
        else:
            train.append(row)
    return train, held_out


def model_dir(cfg: LabConfig) -> Path:
    from recipe.drivers.runs import smollm2_hf_dir, tiny_model_dir

    cache = Path(cfg.cache).resolve()
    if cfg.model == "smollm2":
        return smollm2_hf_dir(cache)
    if cfg.model == "tiny":
        return tiny_model_dir(cache)
    if cfg.model == "toy":
        from verl_ext.toy_model import DEFAULT_RECIPE, TINY_RECIPE, toy_model_dir

        # quick=true checks the path, not the model: the tiny recipe builds in seconds and is not measured
        return toy_model_dir(cache, TINY_RECIPE if cfg.quick else DEFAULT_RECIPE, measure_samples=0 if cfg.quick else 8)
    path = Path(cfg.model).resolve()
    if not (path / "config.json").exists():
        raise SystemExit(f"model: {path} is not a Hugging Face folder (no config.json); use smollm2, tiny, toy or a "
                         "folder")
    return path


def score_train(train_file: Path, model: Path, out: Path, cfg: LabConfig) -> Path:
    from recipe.drivers.runs import score

    scored = out / "scored.parquet"
    if not scored.exists():  # the job resumes by itself; skipping it also skips loading vLLM
        score(train_file, model, out, cfg.scoring_samples, cfg.max_tokens, cfg.data_source())
    return scored


# ------------------------------------------------------------------------------------------------ one run
def variant_overrides(name: str, seed: int, model: Path, scored: Path, eval_file: Path, out: Path, cfg: LabConfig,
                      machine: str) -> list[str]:
    """The shared sizes (`runs.training_overrides`), the seed's keys, the model's regime (`runs.REGIMES`),
    checkpoints for merge and resume, `cfg.train_overrides`, then the variant's own."""
    from recipe.drivers.runs import seed_overrides, training_overrides

    variant = cfg.variant(name)
    return [
        *training_overrides(model, scored, out, cfg.steps, machine, preset=variant.preset, val_files=eval_file,
                            data_source=cfg.data_source()),
        *seed_overrides(seed),
        *cfg.regime().overrides,
        f"trainer.save_freq={cfg.save_freq}", "trainer.resume_mode=auto", "trainer.max_actor_ckpt_to_keep=1",
        f"trainer.experiment_name=lab-{name}-seed{seed}",
        *cfg.train_overrides,  # shared scale-up; the variant's own overrides still define the variant
        *variant.overrides,
    ]


# where the run's folders go; a lab folder that moves keeps its runs
PATH_KEYS = ("actor_rollout_ref.model.path", "data.train_files", "data.val_files", "trainer.default_local_dir")
SETTINGS = "settings.json"


def run_settings(overrides: list[str], model: Path) -> dict:
    """What a run trains with, its folders left out: recorded when it starts, checked when it resumes or is skipped."""
    return {"model": model.name, "overrides": [item for item in overrides if item.split("=", 1)[0] not in PATH_KEYS]}


def check_settings(run_out: Path, settings: dict, label: str) -> None:
    """Raise ConfigError if `run_out` was started with other settings (a run from before the record passes)."""
    path = run_out / SETTINGS
    if not path.exists():
        return
    recorded = json.loads(path.read_text())
    if recorded.get("model") != settings["model"]:
        differs = f"model {recorded.get('model')}, this lab's {settings['model']}"
    else:
        old, new = (dict(item.split("=", 1) for item in side["overrides"]) for side in (recorded, settings))
        keys = [key for key in {**old, **new} if old.get(key) != new.get(key)]
        if not keys:
            return
        differs = "; ".join(f"{key}={old.get(key, '(unset)')}, this lab's {new.get(key, '(unset)')}" for key in keys)
    raise ConfigError(f"{path}: {label} was trained with {differs}. Use another out=, or delete {run_out} to "
                      "train it again")


def lab_evaluate(model: Path, tokenizer: Path, eval_file: Path, out: Path, name: str, cfg: LabConfig, seed: int
                 ) -> dict:
    """`heldout.evaluate` with the lab's sampling (eval_samples answers, ks, max_tokens), sampling with `seed`."""
    return evaluate(model, tokenizer, eval_file, out, name, samples=cfg.eval_samples, ks=cfg.ks,
                    max_tokens=cfg.max_tokens, seed=seed, data_source=cfg.data_source())


class Progress:
    """Run i/n, step, seconds per step and the time left (from the steps and runs timed so far, `workers` runs at a
    time); `names`: one label per (variant, seed) run. `start` gives each run its own `RunProgress`."""

    def __init__(self, names: list[str], steps: int, workers: int = 1):
        self.names, self.steps, self.workers = names, steps, workers
        self.variant_seconds: list[float] = []
        self.step_seconds: list[float] = []
        self.next_index = 0  # runs from here on have not started
        self.lock = threading.Lock()

    def start(self, index: int) -> RunProgress:
        with self.lock:
            self.next_index = max(self.next_index, index + 1)
        print(f"\n== run {index + 1}/{len(self.names)}: {self.names[index]} ==", flush=True)
        return RunProgress(self, index)


class RunProgress:
    """One run's share of `Progress`: its start time and whether its next step includes a launch's start-up."""

    def __init__(self, shared: Progress, index: int):
        self.shared, self.index, self.started, self.warming_up = shared, index, time.time(), True

    def step(self, step: int, seconds: float) -> None:
        shared = self.shared
        with shared.lock:
            if not self.warming_up:  # the first step of a launch (fresh or resumed) includes its start-up
                shared.step_seconds.append(seconds)
            self.warming_up = False
            per_step = sum(shared.step_seconds) / len(shared.step_seconds) if shared.step_seconds else seconds
            this_run = time.time() - self.started + (shared.steps - step) * per_step
            per_run = (sum(shared.variant_seconds) / len(shared.variant_seconds) if shared.variant_seconds
                       else this_run)
            waiting = len(shared.names) - shared.next_index
            left = (shared.steps - step) * per_step + waiting * per_run / shared.workers
        print(f"  [{self.index + 1}/{len(shared.names)} {shared.names[self.index]}] step {step}/{shared.steps}: "
              f"{seconds:.0f} s ({per_step:.0f} s/step); about {left / 60:.0f} min left", flush=True)

    def finish(self) -> None:
        with self.shared.lock:
            self.shared.variant_seconds.append(time.time() - self.started)


def run_in_order(count: int, workers: int, run_one: Callable[[int], None], stopping: threading.Event,
                 stop: Callable[[], None] | None = None) -> None:
    """`run_one(0)`, `run_one(1)`, ... started in that order, at most `workers` at once. An exception out of
    `run_one` (it records its own failures) or an interrupt of this thread (Ctrl-C, SIGTERM) stops the rest:
    `stopping` is set, nothing new starts, and `stop` (default `stop_children`) takes down what runs, so the run
    threads return."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lab-run")
    futures = []
    try:
        for index in range(count):
            futures.append(pool.submit(run_one, index))
        wait(futures, return_when=FIRST_EXCEPTION)
        failed = [future.exception() for future in futures if future.done() and future.exception()]
        if failed:
            raise failed[0]
    except BaseException:
        stopping.set()
        pool.shutdown(wait=False, cancel_futures=True)
        (stop or stop_children)()
        raise
    pool.shutdown()


def stop_children(grace_s: float = 10.0) -> None:
    """SIGTERM every process below the lab and every process in their sessions (a training leads a session of its
    own, which its Ray workers share), then SIGKILL what is left after `grace_s`. Never the lab's own session: that
    holds whoever started the lab."""
    from recipe.drivers.launch import session_processes, terminate

    own_session = os.getsid(0)
    found = {process.pid: process for process in psutil.Process().children(recursive=True)}
    for sid in {_session_of(pid) for pid in found} - {own_session, None}:
        found.update((process.pid, process) for process in session_processes(sid))
    found.pop(os.getpid(), None)
    terminate(lambda: list(found.values()), grace_s)


def _session_of(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:  # exited meanwhile
        return None


def run_variant(name: str, seed: int, model: Path, scored: Path, eval_file: Path, out: Path, cfg: LabConfig,
                machine: str, progress: RunProgress) -> None:
    """Train (or resume), merge, evaluate; `done.json` last. Raises on failure."""
    from recipe.drivers.launch import train

    checkpoints = out / "checkpoints"
    resumed = last_checkpoint(checkpoints)
    if resumed < cfg.steps:
        overrides = variant_overrides(name, seed, model, scored, eval_file, out, cfg, machine)
        if resumed:
            print(f"  resuming from the checkpoint of step {resumed}", flush=True)
        else:
            out.mkdir(parents=True, exist_ok=True)
            (out / SETTINGS).write_text(json.dumps(run_settings(overrides, model), indent=1))
        train(overrides, out, timeout_s=cfg.timeout_s, total_steps=cfg.steps, echo=lambda _: None,
              keep_metrics=True, on_step=progress.step, stall_s=cfg.stall_s)
    step = last_checkpoint(checkpoints)
    if step != cfg.steps:
        raise RuntimeError(f"training ended without the checkpoint of step {cfg.steps} (latest: {step})")
    hf = merge(checkpoints, step, out / "hf")
    results = lab_evaluate(hf, model, eval_file, out / "eval", f"{name}-seed{seed}", cfg, seed)
    (out / "failed.json").unlink(missing_ok=True)
    metrics = results["benchmarks"][BENCHMARK]["metrics"]
    wall_s = time.time() - progress.started  # this invocation's share: a resumed variant's earlier part is not counted
    (out / "done.json").write_text(json.dumps({"variant": name, "seed": seed, "steps": cfg.steps, "eval": metrics,
                                               "wall_s": round(wall_s, 1), "resumed": resumed > 0}, indent=1))
    if not cfg.keep_checkpoints:  # after the marker: a kill in between never retrains a finished variant
        shutil.rmtree(checkpoints, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ the lab
def run_lab(cfg: LabConfig, command: str = "") -> Path:
    from recipe.drivers.runs import gpu_training_available

    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    machine = cfg.machine if cfg.machine != "auto" else ("gpu" if gpu_training_available() else "cpu")
    names = cfg.run_names()
    print(f"== SENT lab: {len(names)} variants x {len(cfg.seeds)} seeds x {cfg.steps} steps, machine={machine}, "
          f"out={out} ==", flush=True)
    model = model_dir(cfg)
    # seed by seed: a lab stopped early still compares every variant on the seeds it finished
    runs = [(name, seed) for seed in cfg.seeds for name in names]
    labels = [f"{name} seed {seed}" for name, seed in runs]
    for (name, seed), label in zip(runs, labels):  # before anything trains: a mixed report is worse than none
        run_out = run_dir(out, name, seed)
        if (run_out / "done.json").exists() or last_checkpoint(run_out / "checkpoints"):  # else it starts afresh
            # data paths are left out of the record (PATH_KEYS), so the not yet scored files' folders stand in
            overrides = variant_overrides(name, seed, model, out / "scored", out / "data", run_out, cfg, machine)
            check_settings(run_out, run_settings(overrides, model), label)
    train_file, eval_file = split_data(out / "data", cfg)
    print("\n== scoring the train split (semantic entropy) ==", flush=True)
    scored = score_train(train_file, model, out / "scored", cfg)
    print("\n== baseline: the initial model on the held-out set ==", flush=True)
    try:
        if not (out / "baseline" / "eval" / "results.json").exists():
            lab_evaluate(model, model, eval_file, out / "baseline" / "eval", "initial", cfg, cfg.seeds[0])
    except Exception as failure:  # noqa: BLE001 - the report says "not evaluated"; the variants still run
        print(f"  baseline evaluation FAILED: {str(failure).splitlines()[0]}", flush=True)

    finished_before = [label for (name, seed), label in zip(runs, labels)
                       if (run_dir(out, name, seed) / "done.json").exists()]
    workers = cfg.workers(machine)
    progress = Progress(labels, cfg.steps, workers)
    stopping = threading.Event()

    def run_one(index: int) -> None:
        name, seed = runs[index]
        run_out = run_dir(out, name, seed)
        if (run_out / "done.json").exists():
            print(f"\n== run {index + 1}/{len(runs)}: {labels[index]}: done, skipped ==", flush=True)
            return
        run = progress.start(index)
        try:
            run_variant(name, seed, model, scored, eval_file, run_out, cfg, machine, run)
            print(f"  [{labels[index]}] done in {time.time() - run.started:.0f} s", flush=True)
        except Exception as failure:  # noqa: BLE001 - recorded in the report; the lab goes on with the others
            if stopping.is_set():  # the lab is being stopped: the run resumes next time, it did not fail
                return
            run_out.mkdir(parents=True, exist_ok=True)
            (run_out / "failed.json").write_text(json.dumps({"variant": name, "seed": seed, "error": str(failure)},
                                                            indent=1))
            print(f"  [{labels[index]}] FAILED: {str(failure).splitlines()[0]}", flush=True)
        run.finish()

    run_in_order(len(runs), workers, run_one, stopping)

    wall = f"Wall time: {(time.time() - started) / 60:.1f} min for this invocation"
    wall += (f" (finished earlier, not counted: {', '.join(finished_before)})." if finished_before
             else " (every run ran in it).")
    if workers > 1:
        wall += f" Runs trained {workers} at a time (`parallel`), so each run's seconds are under that load."
    run_info = (f"Machine: {describe_machine(machine)}.", "", wall)
    report = build_report(out, cfg.run_variants(), cfg.seeds, cfg.ks, cfg.last_steps,
                          cfg.reward_target, command, run_info, dose=cfg.dose_points())
    print(f"\nDone in {time.time() - started:.0f} s.\n  report {report}\n  curves {out / 'curves.png'}")
    print(report.read_text())
    return report


def describe_machine(machine: str) -> str:
    """What the timings were measured on: the training machine kind, CPU model and cores, memory, torch, GPUs."""
    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        memory = f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM"
    except (AttributeError, ValueError, OSError):  # not every OS names these
        memory = "RAM unknown"
    parts = [f"machine={machine}", f"{cores} cores of {cpu}", memory, platform.system(), f"torch {torch.__version__}"]
    if torch.cuda.is_available():
        parts.append(f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}")
    return ", ".join(parts)


def raise_interrupt(signum, frame):
    # as Ctrl-C: unwinds through launch.train, which takes the training's whole session down with it
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    import hydra
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=SCHEMA_NAME, node=LabConfig)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    signal.signal(signal.SIGTERM, raise_interrupt)
    command = " ".join(["python -m recipe.drivers.lab", *sys.argv[1:]])

    @hydra.main(config_path=str(CONFIG_DIR), config_name="lab", version_base="1.3")
    def _run(cfg) -> None:
        try:
            run_lab(LabConfig.from_config(cfg), command)
        except ConfigError as err:  # a bad key or value, or a run in `out` trained with other settings
            print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(2)

    _run()


if __name__ == "__main__":
    main()
