"""The SENT lab (`python -m recipe.drivers.lab`): its config, the report builder on fixture metrics, and the `quick=true`
lab end to end (tiny model, grpo and sent on one seed, 2 steps: training -> merge -> eval -> report), stopped inside
its second run after its first step and re-run with the same command (the finished run is skipped, the other resumes
at step 2)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

import pandas as pd
from omegaconf import OmegaConf

from bench.lab_step_time import lab_table
from recipe.drivers.lab import raise_interrupt, run_in_order, split_data, variant_overrides
from recipe.drivers.lab_report import build_report
from recipe.drivers.lab_config import QUICK, QUICK_REGIME, VARIANTS, LabConfig
from recipe.drivers.launch import is_alive, session_processes
from recipe.drivers.runs import REGIMES, seed_overrides
from verl_ext import toy_task
from verl_ext.config import ConfigError

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------ config
def test_every_variant_is_a_preset_plus_overrides_that_compose(recipe_config):
    for name, variant in VARIANTS.items():
        cfg = recipe_config([f"preset={variant.preset}", *variant.overrides])
        assert cfg.preset_name == variant.preset, name
    assert str(recipe_config(list(VARIANTS["grpo"].overrides)).data.curriculum.enable).lower() == "false"
    low_only = recipe_config(["preset=sent", *VARIANTS["sent_low_only"].overrides]).actor_rollout_ref.actor
    assert low_only.policy_loss.beta_high == low_only.policy_loss.beta_low


def test_train_overrides_reach_every_variant_and_the_variant_keeps_its_own(recipe_config, tmp_path):
    cfg = LabConfig.from_config({"train_overrides": ["data.train_batch_size=8", "data.curriculum.enable=true"]})
    for name in ("grpo", "sent"):
        overrides = variant_overrides(name, 0, tmp_path / "model", tmp_path / "scored.parquet",
                                      tmp_path / "eval.parquet", tmp_path / name, cfg, "cpu")
        composed = recipe_config(overrides)
        assert composed.data.train_batch_size == 8 and composed.trainer.total_training_steps == cfg.steps
        # grpo's own data.curriculum.enable=false comes after the shared overrides
        assert str(composed.data.curriculum.enable).lower() == ("false" if name == "grpo" else "true")


def test_the_models_regime_reaches_every_variant_and_train_overrides_come_after_it(recipe_config, tmp_path):
    """model=toy: the toy regime (runs.REGIMES) is what every variant shares; the variants still differ only in
    their own overrides, and train_overrides (a user's scale-up) win over the regime."""

    toy = LabConfig.from_config({"model": "toy"})
    assert toy.steps == REGIMES["toy"].steps and LabConfig.from_config({}).steps == 12
    composed = {}
    for name in ("grpo", "sent", "curriculum_only"):
        overrides = variant_overrides(name, 0, tmp_path / "model", tmp_path / "scored.parquet",
                                      tmp_path / "eval.parquet", tmp_path / name, toy, "cpu")
        composed[name] = recipe_config(overrides)
        assert composed[name].trainer.total_training_steps == toy.steps
    shared = [item.split("=")[0] for item in REGIMES["toy"].overrides]
    for key in shared:
        values = {OmegaConf.select(cfg, key) for cfg in composed.values()}
        assert len(values) == 1, (key, values)
    assert (composed["grpo"].data.train_batch_size, composed["grpo"].actor_rollout_ref.rollout.n) == (32, 8)
    # the curriculum's plan covers the run: its passes over the train prompts fill every step (4 x 192 = 24 x 32)
    prompts = toy.toy_train_per_level * len(toy_task.TRAIN_LEVELS)
    assert composed["sent"].data.curriculum.epochs_per_stage * prompts == toy.steps * 32
    quick = LabConfig.from_config({"quick": True})  # its 24 prompts (4 a level) fill a step of its own regime
    assert quick.regime() is QUICK_REGIME and "data.train_batch_size=8" in quick.regime().overrides
    eight = LabConfig.from_config({"model": "toy", "regime_name": "toy_8updates"})
    cfg8 = recipe_config(variant_overrides("grpo", 0, tmp_path / "m", tmp_path / "s.parquet", tmp_path / "e.parquet",
                                           tmp_path / "g", eight, "cpu"))
    assert cfg8.data.train_batch_size // cfg8.actor_rollout_ref.actor.ppo_mini_batch_size == 8  # updates a step
    assert cfg8.actor_rollout_ref.actor.ppo_epochs == 1 and eight.steps == 24
    with pytest.raises(ConfigError, match="regime_name"):
        LabConfig.from_config({"model": "toy", "regime_name": "toy8"})
    mine = LabConfig.from_config({"model": "toy", "train_overrides": ["actor_rollout_ref.rollout.n=2"]})
    assert recipe_config(variant_overrides("grpo", 0, tmp_path / "m", tmp_path / "s.parquet", tmp_path / "e.parquet",
                                           tmp_path / "g", mine, "cpu")).actor_rollout_ref.rollout.n == 2


def test_a_runs_seed_sets_data_order_sampling_and_curriculum_shuffles(recipe_config, tmp_path):
    cfg = LabConfig.from_config({})
    assert cfg.seeds == [0, 1, 2]
    for seed in (0, 7):
        composed = recipe_config(variant_overrides("sent", seed, tmp_path / "model", tmp_path / "scored.parquet",
                                                   tmp_path / "eval.parquet", tmp_path / "sent", cfg, "cpu"))
        assert composed.data.seed == seed and composed.actor_rollout_ref.rollout.seed == seed
        assert composed.data.curriculum.seed == seed and composed.actor_rollout_ref.actor.data_loader_seed == seed
        assert composed.trainer.experiment_name == f"lab-sent-seed{seed}"
    assert len(seed_overrides(3)) == 4


def test_toy_split_holds_out_500_problems_with_the_untrained_level(tmp_path):

    cfg = LabConfig.from_config({"model": "toy"})
    train_file, eval_file = split_data(tmp_path, cfg)
    train, held = pd.read_parquet(train_file), pd.read_parquet(eval_file)
    train_levels = [info["level"] for info in train["extra_info"]]
    held_levels = [info["level"] for info in held["extra_info"]]
    assert len(held) == 7 * 72 >= 500 and sorted(set(held_levels)) == [*toy_task.TRAIN_LEVELS, toy_task.HELDOUT_LEVEL]
    assert len(train) == 6 * 32 and sorted(set(train_levels)) == list(toy_task.TRAIN_LEVELS)
    prompts = lambda frame: {row[0]["content"] for row in frame["prompt"]}  # noqa: E731
    assert not prompts(train) & prompts(held)
    assert split_data(tmp_path, cfg) == (train_file, eval_file)  # written once, the same for every seed


def _documented_train_overrides():
    """Every `train_overrides=...` example in the help and the docs, as the shell hands it to Hydra."""
    import re
    import shlex

    from verl_ext.config import field_docs

    texts = {"LabConfig help": field_docs(LabConfig)["train_overrides"]}
    docs = ("README.md", "docs/lab.md", "docs/lab/README.md", "scripts/lab.sh")
    texts |= {name: (REPO / name).read_text() for name in docs}
    quoted = r"'train_overrides=[^']*'|train_overrides='[^']*'"  # 'key=[...]' or key='[...]'
    return [pytest.param(shlex.split(example)[0], id=name)
            for name, text in texts.items() for example in re.findall(quoted, text)]


@pytest.mark.parametrize("example", _documented_train_overrides())
def test_documented_train_overrides_parse_through_hydras_cli_grammar(example):
    """What the docs tell a user to type composes into the lab's config (the unquoted form they once gave,
    `train_overrides=[a=1]`, is a Hydra grammar error: an unquoted = inside a list)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from hydra.errors import OverrideParseException

    from recipe.drivers.lab import CONFIG_DIR, SCHEMA_NAME

    ConfigStore.instance().store(name=SCHEMA_NAME, node=LabConfig)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = LabConfig.from_config(compose(config_name="lab", overrides=[example]))
        assert cfg.train_overrides and all("=" in item for item in cfg.train_overrides)
        with pytest.raises(OverrideParseException):
            compose(config_name="lab", overrides=["train_overrides=[data.train_batch_size=64]"])


def _documented_doses():
    """Every `+doses.<variant>.<knob>=[...] ...` example in the help and the docs, as the shell splits it."""
    import re
    import shlex

    from verl_ext.config import field_docs

    texts = {"LabConfig help": field_docs(LabConfig)["doses"], "docs/lab.md": (REPO / "docs/lab.md").read_text()}
    pattern = r"\+doses\.[a-z_]+\.[a-z_]+=\[[^\]]*\](?:\s+\\?\s*\+doses\.[a-z_]+\.[a-z_]+=\[[^\]]*\])*"
    return [pytest.param(shlex.split(example.replace("\\\n", " ")), id=name)
            for name, text in texts.items() for example in re.findall(pattern, text)]


@pytest.mark.parametrize("example", _documented_doses())
def test_documented_doses_compose_through_hydras_cli(example):
    from hydra import compose, initialize_config_dir
    from hydra.core.config_store import ConfigStore

    from recipe.drivers.lab import CONFIG_DIR, SCHEMA_NAME

    ConfigStore.instance().store(name=SCHEMA_NAME, node=LabConfig)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = LabConfig.from_config(compose(config_name="lab", overrides=example))
    assert cfg.doses and len(cfg.run_names()) > len(cfg.variants) + 1


def test_the_docs_give_dose_examples():
    assert len(_documented_doses()) >= 2


def test_the_docs_give_train_overrides_examples():
    assert len(_documented_train_overrides()) >= 3


@pytest.mark.parametrize(("now", "model", "match"), [
    (["a=1", "b=2"], "m", None),
    (["a=1", "b=2", "actor_rollout_ref.model.path=/elsewhere"], "m", None),  # its folders may move
    (["a=1", "b=2", "b=3"], "m", "b=2, this lab's 3"),  # the last value wins, as in Hydra
    (["a=1"], "m", r"b=2, this lab's \(unset\)"),
    (["a=1", "b=2", "c=4"], "m", r"c=\(unset\), this lab's 4"),
    (["a=1", "b=2"], "n", "model m, this lab's n"),
])
def test_a_run_resumes_or_is_skipped_only_with_the_settings_it_started_with(tmp_path, now, model, match):
    import re

    from recipe.drivers.lab import check_settings, run_settings

    recorded = run_settings(["a=1", "b=2", "actor_rollout_ref.model.path=/here"], Path("/cache/m"))
    assert recorded == {"model": "m", "overrides": ["a=1", "b=2"]}
    check_settings(tmp_path, run_settings(now, Path(model)), "grpo seed 0")  # no record: a run from before it
    (tmp_path / "settings.json").write_text(json.dumps(recorded))
    if match is None:
        check_settings(tmp_path, run_settings(now, Path(model)), "grpo seed 0")
        return
    record = re.escape(str(tmp_path / "settings.json"))
    with pytest.raises(ConfigError, match=rf"^{record}: grpo seed 0 was trained with {match}"):
        check_settings(tmp_path, run_settings(now, Path(model)), "grpo seed 0")


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="stepz"):
        LabConfig.from_config({"stepz": 3})
    with pytest.raises(ConfigError, match="variants: unknown"):
        LabConfig.from_config({"variants": ["grpo", "ppo"]})
    with pytest.raises(ConfigError, match="train_overrides: each item is key=value"):
        LabConfig.from_config({"train_overrides": ["data.train_batch_size"]})
    for seeds in ([], [1, 1], [-1]):
        with pytest.raises(ConfigError, match="seeds must be distinct"):
            LabConfig.from_config({"seeds": seeds})
    with pytest.raises(ConfigError, match="quick=true sets seeds"):
        LabConfig.from_config({"quick": True, "seeds": [3]})
    with pytest.raises(ConfigError, match="quick=true sets steps"):
        LabConfig.from_config({"quick": True, "steps": 5})
    quick = LabConfig.from_config({"quick": True, "out": "x"})
    assert {key: getattr(quick, key) for key in QUICK} == QUICK and quick.out == "x"
    with pytest.raises(ConfigError, match="parallel must be >= 1 or null; got 0"):
        LabConfig.from_config({"parallel": 0})


# ------------------------------------------------------------------------------------------------ dose-response
def test_dose_points_are_the_variant_at_each_knob_value_composed_through_hydra(recipe_config, tmp_path):
    cfg = LabConfig.from_config({"variants": ["grpo"], "doses": {"sent_tokens_only": {
        "kl_scale": [10, 100], "low_entropy_fraction": [0.8, 0.95], "kl_target": ["old"]}}})
    # the base point of each knob is the variant itself (kl_scale 1, the preset's 0.8 and ref), run once
    assert cfg.dose_points() == {
        "kl_scale (sent_tokens_only)": [(1, "sent_tokens_only"), (10, "sent_tokens_only@kl_scale_10"),
                                        (100, "sent_tokens_only@kl_scale_100")],
        "low_entropy_fraction (sent_tokens_only)": [(0.8, "sent_tokens_only"),
                                                    (0.95, "sent_tokens_only@low_entropy_fraction_0.95")],
        "kl_target (sent_tokens_only)": [("ref", "sent_tokens_only"), ("old", "sent_tokens_only@kl_target_old")]}
    assert cfg.run_names() == ["grpo", "sent_tokens_only", "sent_tokens_only@kl_scale_10",
                               "sent_tokens_only@kl_scale_100", "sent_tokens_only@low_entropy_fraction_0.95",
                               "sent_tokens_only@kl_target_old"]
    base = recipe_config(["preset=sent", *VARIANTS["sent_tokens_only"].overrides]).actor_rollout_ref.actor
    expected = {  # point -> (beta_high, beta_low, low_entropy_fraction, kl_target) after Hydra composed the run
        "sent_tokens_only@kl_scale_10": (10 * base.policy_loss.beta_high, 10 * base.policy_loss.beta_low, 0.8, "ref"),
        "sent_tokens_only@kl_scale_100": (100 * base.policy_loss.beta_high, 100 * base.policy_loss.beta_low, 0.8,
                                          "ref"),
        "sent_tokens_only@low_entropy_fraction_0.95": (base.policy_loss.beta_high, base.policy_loss.beta_low, 0.95,
                                                       "ref"),
        "sent_tokens_only@kl_target_old": (base.policy_loss.beta_high, base.policy_loss.beta_low, 0.8, "old")}
    for name, (beta_high, beta_low, fraction, target) in expected.items():
        overrides = variant_overrides(name, 0, tmp_path / "model", tmp_path / "scored.parquet",
                                      tmp_path / "eval.parquet", tmp_path / name, cfg, "cpu")
        composed = recipe_config(overrides)
        loss = composed.actor_rollout_ref.actor.policy_loss
        assert (loss.beta_high, loss.beta_low, loss.low_entropy_fraction) == pytest.approx((beta_high, beta_low,
                                                                                            fraction)), name
        assert loss.kl_target == target, name
        assert str(composed.data.curriculum.enable).lower() == "false"  # the variant's own overrides stay


def test_an_entropy_bonus_dose_starts_from_the_variants_own_coefficient(recipe_config, tmp_path):
    cfg = LabConfig.from_config({"variants": ["grpo"], "doses": {"entropy_bonus": {"entropy_coeff": [0.01, 0.1]}}})
    assert cfg.dose_points() == {"entropy_coeff (entropy_bonus)": [
        (0.001, "entropy_bonus"), (0.01, "entropy_bonus@entropy_coeff_0.01"), (0.1, "entropy_bonus@entropy_coeff_0.1")]}
    overrides = variant_overrides("entropy_bonus@entropy_coeff_0.1", 1, tmp_path / "model", tmp_path / "s.parquet",
                                  tmp_path / "e.parquet", tmp_path / "point", cfg, "cpu")
    actor = recipe_config(overrides).actor_rollout_ref.actor
    assert actor.entropy_coeff == pytest.approx(0.1) and actor.policy_loss.loss_mode == "vanilla"
    assert [item for item in overrides if item.startswith("actor_rollout_ref.actor.entropy_coeff")] == [
        "actor_rollout_ref.actor.entropy_coeff=0.1"]
    # grpo's own coefficient is the recipe's default (configs/sent_trainer.yaml), 0
    both = LabConfig.from_config({"variants": ["kl_cov"], "doses": {"grpo": {"entropy_coeff": [0.01]},
                                                                     "sent": {"kl_scale": [10]}}})
    assert both.dose_points() == {"entropy_coeff (grpo)": [(0.0, "grpo"), (0.01, "grpo@entropy_coeff_0.01")],
                                  "kl_scale (sent)": [(1, "sent"), (10, "sent@kl_scale_10")]}
    assert both.run_names() == ["kl_cov", "grpo", "grpo@entropy_coeff_0.01", "sent", "sent@kl_scale_10"]


@pytest.mark.parametrize("doses, match", [
    ({"sent": {}}, "doses.sent must map knobs to values"),
    ({"sent": [10]}, "doses.sent must map knobs to values"),
    ({"grpo": {"kl_scale": [10]}}, "doses.grpo.kl_scale: kl_scale acts on SENT's loss, which grpo does not train with "
                                   r"\(those that do: sent, sent_tokens_only, "),
    ({"ppo": {"kl_scale": [10]}}, "doses: a variant must be one of grpo, "),
    ({"grpo": {"entropy_coeff": [-0.1]}}, "a number >= 0"),
    ({"sent": {"beta": [10]}}, "doses.sent.beta: unknown knob 'beta'; known: kl_scale"),
    ({"sent": {"kl_scale": [0]}}, r"doses.sent.kl_scale: each value a number > 0"),
    ({"sent": {"kl_scale": [10, 10]}}, r"each once"),
    ({"sent": {"low_entropy_fraction": [1.5]}}, r"a number in \(0, 1\]"),
    ({"sent": {"kl_target": ["policy"]}}, "ref or old"),
    ({"sent": {"kl_target": []}}, "non-empty list"),
])
def test_a_bad_dose_names_its_key(doses, match):
    with pytest.raises(ConfigError, match=match):
        LabConfig.from_config({"doses": doses})


def test_dose_response_figure_and_rows_from_fixture_runs(tmp_path):
    cfg = LabConfig.from_config({"variants": ["grpo"], "doses": {"sent_tokens_only": {"kl_scale": [10],
                                                                                      "kl_target": ["old"]}},
                                 "ks": [1], "eval_samples": 2})
    names = cfg.run_names()
    for seed in (0, 1):
        for i, name in enumerate(names):
            run = tmp_path / name / f"seed{seed}"
            (run / "eval").mkdir(parents=True)
            (run / "metrics.jsonl").write_text(_metrics([1.0, 0.5 + 0.1 * i + 0.02 * seed], None, 10.0, 0.1,
                                                        sent=name != "grpo"))
            (run / "eval" / "heldout.json").write_text(_heldout(lambda p, k=i + seed: p < 10 + k))
    report = build_report(tmp_path, cfg.run_variants(), [0, 1], [1], 1, 0.5, dose=cfg.dose_points())
    rows = _report_rows(report)
    assert list(rows) == names == ["grpo", "sent_tokens_only", "sent_tokens_only@kl_scale_10",
                                   "sent_tokens_only@kl_target_old"]
    assert rows["sent_tokens_only@kl_scale_10"]["token entropy last 1 / step 1 (seeds ≤ 0.5)"] == "0.71 [0.58, 0.84] (0/2)"
    text = report.read_text()
    assert "Dose-response (`dose_response.png`): kl_scale (sent_tokens_only): 1 (sent_tokens_only), 10 " \
           "(sent_tokens_only@kl_scale_10); kl_target (sent_tokens_only): ref (sent_tokens_only), old " \
           "(sent_tokens_only@kl_target_old)." in text
    assert "| sent_tokens_only@kl_scale_10 | sent | `data.curriculum.enable=false data.shuffle=true " \
           "actor_rollout_ref.actor.policy_loss.beta_high=2 actor_rollout_ref.actor.policy_loss.beta_low=0.5` |" in text
    assert (tmp_path / "dose_response.png").stat().st_size > 20_000


@pytest.mark.parametrize("config, machine, workers", [
    ({"model": "toy"}, "cpu", 2),  # the toy regime: two small runs fill the 2-core machine
    ({"model": "toy"}, "gpu", 1),  # a run takes every GPU
    ({"model": "smollm2"}, "cpu", 1),
    ({"quick": True}, "cpu", 1),  # CI's quick lab: one training at a time
    ({"model": "smollm2", "parallel": 3}, "cpu", 3),
    ({"model": "toy", "parallel": 1}, "cpu", 1),
    ({"model": "toy", "parallel": 2}, "gpu", 2),  # said explicitly: the user's call
])
def test_runs_at_once_come_from_parallel_else_the_regime_on_the_cpu(config, machine, workers):
    assert LabConfig.from_config(config).workers(machine) == workers


@pytest.mark.parametrize("count, workers", [(5, 1), (5, 2), (1, 2), (3, 4)])
def test_runs_start_in_order_at_most_workers_at_once(count, workers):
    lock, running, most, started = threading.Lock(), [0], [0], []

    def run_one(index: int) -> None:
        with lock:
            started.append(index)
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1

    run_in_order(count, workers, run_one, threading.Event(), stop=lambda: None)
    assert started == list(range(count))  # a pool of threads takes the queue in order
    assert most[0] == min(count, workers)


@pytest.mark.parametrize("how", ["signal", "raise"])
def test_an_interrupt_stops_the_runs_and_starts_no_more(how):
    """A signal handled by the lab's own handler (it raises KeyboardInterrupt in the main thread, which waits for the
    runs), or an exception out of a run: `stopping` is set before the stop callback runs, what was queued never
    starts, and the exception goes on up."""
    stopping, started, stopped_with = threading.Event(), [], []
    release = threading.Event()

    def run_one(index: int) -> None:
        started.append(index)
        if index == 1:
            if how == "signal":
                os.kill(os.getpid(), signal.SIGUSR1)  # as SIGTERM does to the lab (SIGUSR1: nothing else here uses it)
                release.wait(5)
            else:
                raise KeyboardInterrupt
        release.wait(5)  # a training that runs until `stop` ends it

    def stop() -> None:
        stopped_with.append(stopping.is_set())
        release.set()

    previous = signal.signal(signal.SIGUSR1, raise_interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_in_order(6, 2, run_one, stopping, stop=stop)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    time.sleep(0.2)
    assert stopped_with == [True] and sorted(started) == [0, 1]


STOPPING_LAB = """
import json, subprocess, sys, time
import psutil
from recipe.drivers.lab import stop_children
worker = ("import os, signal, sys, time; os.setpgrp(); signal.signal(signal.SIGTERM, signal.SIG_IGN); "
          "print(os.getpid(), flush=True); time.sleep(600)")
leader = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', sys.argv[1]]); time.sleep(600)")
# a training leads a session of its own; its Ray workers sit in process groups of their own
training = subprocess.Popen([sys.executable, "-c", leader, worker], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
plain = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # a child in the lab's own session
pids = [training.pid, int(training.stdout.readline()), plain.pid]
stop_children(grace_s=1)
time.sleep(0.2)
def alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
print(json.dumps([alive(pid) for pid in pids]))
"""


def test_stop_children_takes_down_every_session_below_the_lab():
    """A training's leader, its worker that ignores SIGTERM outside the leader's group (SIGKILL after the grace), and
    a plain child: all gone; the lab itself carries on (it prints)."""
    done = subprocess.run([sys.executable, "-c", STOPPING_LAB], capture_output=True, text=True, timeout=60, cwd=REPO,
                          start_new_session=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1]) == [False, False, False]


# ------------------------------------------------------------------------------------------------ report
def _metrics(entropy: list[float], stage: list[int] | None, seconds: float, reward_slope: float, sent: bool) -> str:
    lines = []
    for step, value in enumerate(entropy, start=1):
        data = {"training/global_step": step, "actor/entropy": value, "critic/score/mean": -1 + reward_slope * step,
                "actor/pg_clipfrac": 0.01, "timing_s/step": seconds, "actor/kl_loss": 0.5, "actor/kl_coef": 0.001,
                "semantic_entropy/mean": 2 * value, "semantic_entropy/agree_frac": 0.25 * step,
                # SENT's selection, measured in every run: the free fifth holds most of the entropy
                "token_sets/free_entropy_mean": 4 * value, "token_sets/penalised_entropy_mean": value / 4,
                "token_sets/free_entropy_share": 0.8, "token_sets/free_kl_ref_share": 0.5 + 0.1 * step}
        if stage:
            data["curriculum/stage"] = stage[step - 1]
        if sent:
            data.update({"sent/entropy_p50": value / 2, "sent/penalised_frac": 0.8, "actor/sent/kl_term": 0.02,
                         "actor/kl_coef": 0.0})
        lines.append(json.dumps({"step": step, "data": data}))
    return "\n".join(lines) + "\n"


def _heldout(solved, problems: int = 40) -> str:
    """The eval harness's <eval>/heldout.json: 2 answers per problem, both right on the problems `solved` accepts."""
    return json.dumps({"problems": [{"index": i, "correct": [solved(i)] * 2} for i in range(problems)]})


def _report_rows(report: Path, first: str = "| variant | status") -> dict[str, dict[str, str]]:
    """The report's table whose header starts with `first`: {variant: {column: cell}}."""
    lines = report.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first))
    end = next((i for i, line in enumerate(lines[start:]) if not line.startswith("|")), len(lines) - start)
    header = [c.strip() for c in lines[start].split("|")[1:-1]]
    rows = [dict(zip(header, (c.strip() for c in line.split("|")[1:-1]))) for line in lines[start + 2:start + end]]
    return {row["variant"]: row for row in rows}


def _mean(cell: str) -> float:
    return float(cell.split()[0])


def test_report_builder_on_fixture_metrics(tmp_path):
    """2 variants x 3 seeds (and a third variant whose seed 1 failed) with known means and intervals."""
    (tmp_path / "data").mkdir()
    levels = [2] * 18 + [3] * 18 + [8] * 4  # level 8 is held out only
    pd.DataFrame({"extra_info": [{"level": 2}, {"level": 3}]}).to_parquet(tmp_path / "data" / "train.parquet")
    pd.DataFrame({"extra_info": [{"level": level} for level in levels]}).to_parquet(tmp_path / "data" / "eval.parquet")
    for seed in (0, 1, 2):
        for name, text, solved in (
                ("grpo", _metrics([1.0, 0.8, 0.6, 0.5 + 0.1 * seed], None, 10.0, 0.1, sent=False),
                 lambda i, s=seed: i < 12 + s),
                ("sent", _metrics([1.0, 0.95, 0.9, 0.9 + 0.01 * seed], [1, 1, 2, 2], 11.0, 0.15, sent=True),
                 lambda i, s=seed: i < 28 + s or i >= 36)):
            run = tmp_path / name / f"seed{seed}"
            (run / "eval").mkdir(parents=True)
            (run / "metrics.jsonl").write_text(text)
            (run / "eval" / "heldout.json").write_text(_heldout(solved))
            (run / "done.json").write_text(json.dumps({"wall_s": 30.0, "resumed": name == "sent" and seed == 2}))
    (tmp_path / "baseline" / "eval").mkdir(parents=True)
    (tmp_path / "baseline" / "eval" / "heldout.json").write_text(_heldout(lambda i: i < 4))
    (tmp_path / "kl_cov" / "seed0").mkdir(parents=True)
    (tmp_path / "kl_cov" / "seed0" / "metrics.jsonl").write_text(_metrics([1.0, 0.9], None, 10.0, 0.1, sent=False))
    (tmp_path / "kl_cov" / "seed1").mkdir(parents=True)
    (tmp_path / "kl_cov" / "seed1" / "failed.json").write_text(json.dumps({"error": "training exited with 1\nTrace"}))

    report = build_report(tmp_path, {n: VARIANTS[n] for n in ("grpo", "kl_cov", "sent")}, seeds=[0, 1, 2], ks=[1, 2], last_steps=2,
                          reward_target=-0.75, command="python -m x",
                          run_info=("Machine: a test box.", "Wall time: 3.0 min"))
    text = report.read_text()
    rows = _report_rows(report)
    assert "Command: `python -m x`\n\nMachine: a test box.\nWall time: 3.0 min\n" in text
    assert list(rows) == ["grpo", "kl_cov", "sent"]
    assert rows["grpo"]["status"] == rows["sent"]["status"] == "done"
    assert rows["kl_cov"]["status"] == "failed: seed 1: training exited with 1"
    assert (rows["grpo"]["seeds"], rows["kl_cov"]["seeds"], rows["grpo"]["steps"]) == ("3", "1", "4")
    # last 2 steps' entropy: grpo 0.55, 0.60, 0.65 -> 0.6 +- t(0.975, 2) * 0.05 / sqrt(3) = 0.124
    assert rows["grpo"]["token entropy, mean: step 1 → last 2"] == \
        "1.000 [1.000, 1.000] → 0.600 [0.476, 0.724] (-40%)"
    assert rows["sent"]["entropy p50: step 1 → last 2"] == "0.500 [0.500, 0.500] → 0.453 [0.446, 0.459] (-9%)"
    assert rows["grpo"]["entropy p50: step 1 → last 2"] == "–"
    assert rows["kl_cov"]["token entropy, mean: step 1 → last 2"] == \
        "1.000 (n=1, no interval) → 0.950 (n=1, no interval) (-5%)"
    assert rows["grpo"]["semantic entropy, mean: step 1 → last 2"] == \
        "2.000 [2.000, 2.000] → 1.200 [0.952, 1.448] (-40%)"
    assert rows["sent"]["all agree: step 1 → last 2"] == "0.250 [0.250, 0.250] → 0.875 [0.875, 0.875] (+250%)"
    # per set: grpo's last 2 steps' entropy 0.55, 0.60, 0.65 by seed, the free tokens' 4x and the penalised 1/4
    assert rows["grpo"]["entropy of the tokens SENT leaves free: step 1 → last 2"] == \
        "4.000 [4.000, 4.000] → 2.400 [1.903, 2.897] (-40%)"
    assert rows["grpo"]["entropy of the tokens SENT penalises: step 1 → last 2"] == \
        "0.250 [0.250, 0.250] → 0.150 [0.119, 0.181] (-40%)"
    assert rows["grpo"]["free tokens' share of the entropy (last 2)"] == "0.80 [0.80, 0.80]"
    assert rows["sent"]["free tokens' share of the KL to the reference (last 2)"] == "0.85 [0.85, 0.85]"
    assert rows["grpo"]["token entropy last 2 / step 1 (seeds ≤ 0.5)"] == "0.60 [0.48, 0.72] (0/3)"
    assert rows["grpo"]["train reward (last 2)"] == "-0.650 [-0.650, -0.650]"
    # efficiency: grpo reaches -0.75 at step 3 (30 s), sent at step 2 (22 s)
    assert rows["grpo"]["steps to reward ≥ -0.75"] == "3.0 [3.0, 3.0]"
    assert rows["sent"]["seconds to reward ≥ -0.75"] == "22 [22, 22]"
    assert rows["kl_cov"]["steps to reward ≥ -0.75"] == "– (0/1 reached)"
    assert rows["sent"]["penalised frac"] == "0.800 [0.800, 0.800]" and rows["grpo"]["penalised frac"] == "–"
    assert rows["grpo"]["KL term"] == "5.00e-04 [5.00e-04, 5.00e-04]"
    assert rows["sent"]["× grpo"] == "1.10 [1.10, 1.10]" and rows["grpo"]["× grpo"] == "1.00 [1.00, 1.00]"
    assert rows["kl_cov"]["× grpo"] == "1.00 (n=1, no interval)"
    assert rows["grpo"]["wall min"] == "1.5" and rows["sent"]["wall min"] == "1.5 (resumed)"
    assert rows["kl_cov"]["wall min"] == "–"

    held = _report_rows(report, "| variant | seeds | held-out")
    assert list(held) == ["initial model", "grpo", "kl_cov", "sent"]
    assert _mean(held["initial model"]["held-out avg@1"]) == 10.0 and held["initial model"]["seeds"] == "1"
    assert _mean(held["grpo"]["held-out avg@1"]) == 32.5 and _mean(held["sent"]["held-out pass@2"]) == 82.5
    # seeds solve 12, 13, 14 of 40: 30.0, 32.5, 35.0 -> 32.5 +- t(0.975, 2) * 2.5 / sqrt(3) = 6.2, across seeds
    assert held["grpo"]["held-out avg@1"] == "32.5 [26.3, 38.7]"
    low, high = (float(x) for x in held["initial model"]["held-out avg@1"].split("[")[1].rstrip("]").split(", "))
    assert 0 <= low < 10.0 < high < 25  # one evaluation: a bootstrap over its 40 problems
    assert held["kl_cov"]["held-out avg@1"] == "–"
    assert held["grpo"]["level 8 (never trained) avg@1"] == "0.0 [0.0, 0.0]"
    assert held["sent"]["level 8 (never trained) pass@2"] == "100.0 [100.0, 100.0]"

    assert "- **sent vs grpo**: token entropy (last 2 steps): higher than grpo (0.905 vs 0.6) beyond the 95% " \
           "intervals; " in text
    assert "train reward (last 2 steps): -0.475 vs -0.65" not in text  # sent's reward is higher beyond the intervals
    assert "train reward (last 2 steps): higher than grpo" in text
    assert "steps to reward ≥ -0.75: lower than grpo (2 vs 3) beyond the 95% intervals" in text
    assert "held-out avg@1 (%): higher than grpo (82.5 vs 32.5) beyond the 95% intervals" in text
    assert "- **kl_cov vs grpo**: token entropy (last 2 steps): 0.95 vs 0.6, one seed: no interval, cannot tell" in text
    assert "grpo vs grpo" not in text
    assert (tmp_path / "curves.png").stat().st_size > 20_000

    # the lab's ratio for bench/RESULTS.md, from the same per-seed metrics and the report's header
    table = lab_table(tmp_path)
    assert table.startswith("Command: `python -m x`\n\nMachine: a test box.\n\nWall time: 3.0 min")
    assert "| grpo | 10.00 | 10.00-10.00 | 1.000x |" in table and "| sent | 11.00 | 11.00-11.00 | 1.100x |" in table
    assert "| kl_cov | 10.00 | 10.00-10.00 | 1.000x |" in table  # its one finished seed
    assert [row.split("|")[-3:-1] for row in table.splitlines() if row.startswith("| sent")] == [[" 3 ", " 9 "]]
    assert table.endswith("SENT vs GRPO per step in this lab: 1.100x.")
    for seed in (0, 1, 2):
        (tmp_path / "grpo" / f"seed{seed}" / "metrics.jsonl").unlink()
    with pytest.raises(SystemExit, match="no grpo/seed"):
        lab_table(tmp_path)


def test_curves_band_is_mean_min_max_across_seeds_at_every_logged_step():
    from recipe.drivers.curves import band
    seeds = []
    for entropy in (([1.0, 0.5, 0.2], [1.0, 0.7], [0.8, 0.6, 0.4])):
        seeds.append([json.loads(line) for line in _metrics(entropy, None, 1.0, 0.1, sent=False).splitlines()])
    steps, mean, low, high = band(seeds, "actor/entropy")
    assert steps == [1, 2, 3]
    assert mean == pytest.approx([2.8 / 3, 0.6, 0.3]) and low == [0.8, 0.5, 0.2] and high == [1.0, 0.7, 0.4]
    assert band(seeds, "sent/entropy_p50") == ([], [], [], [])


def test_report_says_within_noise_when_intervals_overlap(tmp_path):
    for seed in (0, 1, 2):
        for name, last in (("grpo", [0.5, 0.7, 0.9][seed]), ("sent", [0.6, 0.8, 0.7][seed])):
            (tmp_path / name / f"seed{seed}").mkdir(parents=True)
            (tmp_path / name / f"seed{seed}" / "metrics.jsonl").write_text(
                _metrics([1.0, last], None, 10.0, 0.1, sent=False))
    report = build_report(tmp_path, {n: VARIANTS[n] for n in ("grpo", "sent")}, seeds=[0, 1, 2], ks=[1], last_steps=1, reward_target=0.5)
    text, rows = report.read_text(), _report_rows(report)
    # collapse: grpo's seed 0 ends at half its step-1 entropy (0.5 / 1.0), the others above
    assert rows["grpo"]["token entropy last 1 / step 1 (seeds ≤ 0.5)"].endswith("(1/3)")
    assert rows["sent"]["token entropy last 1 / step 1 (seeds ≤ 0.5)"].endswith("(0/3)")
    assert "token entropy (last 1 steps): 0.7 vs 0.7, within noise (the 95% intervals overlap)" in text
    assert "steps to reward ≥ 0.5: not measured for both" in text  # no seed reached it


# ------------------------------------------------------------------------------------------------ the quick lab
def _lab(out: Path, cache: Path, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "recipe.drivers.lab", "quick=true", f"out={out}", f"cache={cache}",
                             *overrides],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _step_logged(metrics_file: Path, step: int) -> bool:
    for line in metrics_file.read_text().splitlines() if metrics_file.exists() else []:
        try:
            if json.loads(line)["step"] == step:
                return True
        except ValueError:  # a line still being written
            continue
    return False


def _is_training(process: psutil.Process) -> bool:
    try:
        return "recipe.sent.main_sent" in process.cmdline()
    except psutil.Error:  # the lab's other children (a zombie multiprocessing helper) are not the training
        return False


def _stop_sent_after_step_1(lab: subprocess.Popen, out: Path, stopped: dict) -> None:
    try:
        _wait_and_stop(lab, out, stopped)
    except Exception as failure:  # noqa: BLE001 - the fixture's assertion shows it instead of a silent thread
        stopped["error"] = repr(failure)


def _wait_and_stop(lab: subprocess.Popen, out: Path, stopped: dict) -> None:
    """Once `sent` has logged and checkpointed step 1 (the trainer saves right after it logs), freeze its training
    where it stands and SIGTERM the lab, as Ctrl-C or a scheduler would. The freeze lands the stop between steps 1 and 2 on any
    machine; without it a fast one finishes step 2 while the lab shuts the training down."""
    marker = out / "sent" / "seed0" / "checkpoints" / "latest_checkpointed_iteration.txt"
    while lab.poll() is None:
        if marker.exists() and marker.read_text().strip() == "1" and \
                _step_logged(out / "sent" / "seed0" / "metrics.jsonl", 1):
            training = next(child for child in psutil.Process(lab.pid).children() if _is_training(child))
            frozen = session_processes(training.pid)
            for process in frozen:
                process.suspend()
            stopped["training"] = frozen
            os.killpg(lab.pid, signal.SIGTERM)
            return
        time.sleep(0.05)


def _train_steps(metrics_file: Path) -> list[dict]:
    entries = (json.loads(line)["data"] for line in metrics_file.read_text().splitlines())
    return [data for data in entries if "training/global_step" in data]


@pytest.fixture(scope="module")
def quick_lab(tmp_path_factory):
    """The quick lab, stopped once `sent` saved and logged step 1, then re-run to the end."""
    root = tmp_path_factory.mktemp("lab")
    out, cache = root / "out", root / "cache"
    started = time.time()
    first = _lab(out, cache)
    stopped: dict = {}
    threading.Thread(target=_stop_sent_after_step_1, args=(first, out, stopped), daemon=True).start()
    first_log, _ = first.communicate(timeout=1800)  # a deadline, not a speed check (15 min seen under load)
    assert "training" in stopped, f"the lab ended before sent's first checkpoint ({stopped}):\n{first_log[-4000:]}"
    # the lab took its training's whole session down: Ray workers sit in process groups of their own
    assert [process.pid for process in stopped["training"] if is_alive(process)] == []
    assert (out / "sent" / "seed0" / "checkpoints" / "latest_checkpointed_iteration.txt").read_text().strip() == "1"
    grpo_done_mtime = (out / "grpo" / "seed0" / "done.json").stat().st_mtime_ns
    assert not (out / "sent" / "seed0" / "done.json").exists()
    second = _lab(out, cache)
    second_log, _ = second.communicate(timeout=1800)
    assert second.returncode == 0, second_log[-6000:]
    print(f"quick lab with one kill and resume: {time.time() - started:.0f} s")
    return {"out": out, "first_log": first_log, "second_log": second_log, "grpo_done_mtime": grpo_done_mtime}


@pytest.mark.slow
def test_quick_lab_trains_merges_evaluates_and_reports(quick_lab):
    out = quick_lab["out"]
    rows = _report_rows(out / "report.md")
    held = _report_rows(out / "report.md", "| variant | seeds | held-out")
    names = ["grpo", "entropy_bonus", "sent", "sent@kl_scale_10"]  # a control and a dose of two points
    assert list(rows) == names and list(held) == ["initial model", *names]
    assert {rows[name]["status"] for name in names} == {"done"}
    for name in ["initial model", *names]:
        assert held[name]["seeds"] == "1"
        row = {key: _mean(held[name][f"held-out {key}"]) for key in ("avg@1", "avg@2", "avg@4", "pass@1", "pass@2",
                                                                      "pass@4")}
        assert all(0.0 <= value <= 100.0 for value in row.values())
        # avg@k is the first k samples' accuracy; over all 4 samples it is the pass@1 estimate; pass@k grows with k
        assert row["avg@4"] == pytest.approx(row["pass@1"], abs=0.06)  # the report rounds to .1
        assert row["pass@1"] <= row["pass@2"] <= row["pass@4"]
        assert "[" in held[name]["held-out avg@1"]  # a bootstrap over the held-out problems even on one seed
    for name in names:
        assert "→" in rows[name]["token entropy, mean: step 1 → last 1"]
        assert "→" in rows[name]["semantic entropy, mean: step 1 → last 1"]  # logged by every preset
        assert rows[name]["s/step"].endswith("(n=1, no interval)") and _mean(rows[name]["s/step"]) > 0
        assert rows[name]["steps"] == "2" and rows[name]["seeds"] == "1"
        run = out / name / "seed0"
        assert (run / "hf" / "config.json").exists() and not (run / "checkpoints").exists()
        results = json.loads((run / "eval" / "results.json").read_text())
        assert results["benchmarks"]["heldout"]["num_problems"] == 7 * 3  # toy_heldout_per_level=3, levels 2-8
        assert json.loads((run / "done.json").read_text())["seed"] == 0
    assert rows["grpo"]["× grpo"] == "1.00 (n=1, no interval)" and rows["sent"]["penalised frac"] != "–"
    # each preset logs its own keys and not the others' (grpo: uniform KL in the loss, no SENT selection)
    steps = {name: _train_steps(out / name / "seed0" / "metrics.jsonl") for name in names}
    assert [len(steps[name]) for name in names] == [2, 2, 2, 2]
    for step in steps["grpo"] + steps["entropy_bonus"]:
        assert "actor/kl_loss" in step and "actor/pg_clipfrac" in step and "semantic_entropy/mean" in step
        assert "actor/sent/kl_term" not in step and "sent/low_entropy_frac" not in step
        assert step["token_sets/applied"] == 0.0  # SENT's selection measured, not applied
    assert all("actor/entropy_loss" in step for step in steps["entropy_bonus"])  # the bonus is in its loss
    assert not any("actor/entropy_loss" in step for step in steps["grpo"])
    for step in steps["sent"] + steps["sent@kl_scale_10"]:
        assert "actor/sent/kl_term" in step and "sent/low_entropy_frac" in step and "semantic_entropy/mean" in step
        assert step["token_sets/applied"] == 1.0
    for step in sum(steps.values(), []):  # every run measures SENT's penalised and free tokens
        for key in ("free_entropy_mean", "penalised_entropy_mean", "free_kl_ref_mean", "penalised_kl_ref_mean",
                    "free_frac"):
            assert 0.0 <= step[f"token_sets/{key}"] < float("inf"), key
    # a seed's step-1 answers do not depend on the loss (each answer has its own sampling seed: docs/lab.md,
    # Reproducibility): grpo and entropy_bonus sample the same, and so do sent and its dose point, trained in the
    # lab's second invocation
    for a, b in (("grpo", "entropy_bonus"), ("sent", "sent@kl_scale_10")):
        for key in ("response_length/mean", "actor/entropy", "critic/score/mean"):
            assert steps[a][0][key] == steps[b][0][key], (a, b, key)
    # the dose point is sent at 10x its betas, in the run's own recorded settings
    recorded = json.loads((out / "sent@kl_scale_10" / "seed0" / "settings.json").read_text())["overrides"]
    assert "actor_rollout_ref.actor.policy_loss.beta_high=2" in recorded
    assert (out / "dose_response.png").stat().st_size > 20_000
    assert (out / "curves.png").stat().st_size > 20_000
    text = (out / "report.md").read_text()
    assert "- **sent vs grpo**: token entropy (last 1 steps): " in text and "one seed: no interval, cannot tell" in text
    assert f"Machine: machine=cpu, {len(os.sched_getaffinity(0))} cores of " in text
    # format failures per run: the share of held-out answers its grader could not read, from its own eval file
    for name, label in (("baseline", "initial model"), *((f"{n}/seed0", f"{n} seed 0") for n in names)):
        answers = [a for p in json.loads((out / name / "eval" / "heldout.json").read_text())["problems"]
                   for a in p["answers"]]
        assert f"{label} {100 * sum(a is None for a in answers) / len(answers):.1f}%" in text
    # the resumed invocation wrote it
    assert "min for this invocation (finished earlier, not counted: grpo seed 0, entropy_bonus seed 0)." in text
    assert rows["grpo"]["wall min"] != "–" and rows["sent"]["wall min"].endswith("(resumed)")
    assert "run 3/4: sent seed 0" in quick_lab["second_log"] and "about" in quick_lab["second_log"]  # time left


@pytest.mark.slow
def test_rerun_skips_the_finished_run_and_resumes_the_killed_one(quick_lab):
    out, second_log = quick_lab["out"], quick_lab["second_log"]
    assert "run 1/4: grpo seed 0: done, skipped" in second_log
    assert (out / "grpo" / "seed0" / "done.json").stat().st_mtime_ns == quick_lab["grpo_done_mtime"]
    assert "resuming from the checkpoint of step 1" in second_log
    # only sent's step 2 trained again (its dose point, new, trains both)
    assert "[3/4 sent seed 0] step 2/2" in second_log and "[3/4 sent seed 0] step 1/2" not in second_log
    run = out / "sent" / "seed0"
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in lines if "training/global_step" in entry["data"]] == [1, 2]  # both parts
    assert not (run / "metrics.earlier.jsonl").exists()
    assert (run / "train.log").read_text().count("recipe.sent.main_sent") >= 2


@pytest.mark.slow
def test_a_lab_with_other_settings_stops_before_training_in_a_folder_of_finished_runs(quick_lab):
    """Re-run in the same folder at another learning rate: the finished runs were trained at the old one, so the lab
    names the first run's record and the key, exits 2 before anything trains, and leaves the runs as they were."""
    out = quick_lab["out"]
    recorded = json.loads((out / "grpo" / "seed0" / "settings.json").read_text())
    from verl_ext.toy_model import TINY_RECIPE

    assert recorded["model"] == f"toy-reasoner-{TINY_RECIPE.key()}"
    assert not any(str(out) in item for item in recorded["overrides"])  # the folder may move
    done = {name: (out / name / "seed0" / "done.json").stat().st_mtime_ns for name in ("grpo", "sent")}
    report = (out / "report.md").read_text()
    third = _lab(out, out.parent / "cache", 'train_overrides=["actor_rollout_ref.actor.optim.lr=5e-4"]')
    log, _ = third.communicate(timeout=600)
    assert third.returncode == 2, log[-3000:]
    error = [line for line in log.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and f"{out / 'grpo' / 'seed0' / 'settings.json'}: grpo seed 0 was trained with " \
        "actor_rollout_ref.actor.optim.lr=" in error[0] and "this lab's 5e-4" in error[0], log[-3000:]
    assert "== scoring" not in log and "run 1/4" not in log
    assert {name: (out / name / "seed0" / "done.json").stat().st_mtime_ns for name in done} == done
    assert (out / "report.md").read_text() == report
