"""A seed gives the same run (docs/lab.md, Reproducibility): the same command trained twice on the CPU logs the same
metrics at every step, bitwise, and samples the same answers; and the pieces that make it so
(`recipe/sent/reproducible_rollouts.py`): a sampling seed per request, the step batch in the prompts' order."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from recipe.drivers import same_run
from recipe.drivers.launch import TrainingRun, train
from recipe.drivers.same_run import metric_differences
from recipe.sent.reproducible_rollouts import AGENT_LOOP_NAME, SEED_BITS, PromptOrder, SeededSingleTurnAgentLoop, \
    request_seed

REPO = Path(__file__).resolve().parents[1]



# ---- the seed of a request -------------------------------------------------------------------------------------
MESSAGES = [{"role": "user", "content": "What is 2 + 3?"}]


def test_a_request_seed_is_stable_and_depends_on_each_of_its_parts():
    seed = request_seed(0, 1, 7, MESSAGES, 0)
    # the same parts in another form (numpy scalars and arrays, as verl's dataloader hands them): the same seed
    assert request_seed(np.int64(0), np.int64(1), np.int64(7), np.array(MESSAGES, dtype=object), 0) == seed
    assert 0 <= seed < 2 ** SEED_BITS
    # a fixed value in every process: a hash of its parts (blake2b), not Python's per-process salted hash()
    # (PYTHONHASHSEED differs between Ray's workers)
    assert seed == 8370130466712613853
    others = {request_seed(1, 1, 7, MESSAGES, 0), request_seed(0, 2, 7, MESSAGES, 0),
              request_seed(0, 1, 8, MESSAGES, 0), request_seed(0, 1, 7, [{"role": "user", "content": "2 + 4?"}], 0),
              request_seed(0, 1, 7, MESSAGES, 1)}
    assert seed not in others and len(others) == 5


# ---- the recipe's config selects the seeded agent loop, and verl can load it --------------------------------
def test_the_recipe_samples_through_the_seeded_agent_loop(recipe_config):
    """machine=cpu's config names the seeded loop; its file is what verl's agent-loop worker loads
    (`resolve_config_path` + `OmegaConf.load`, `verl/experimental/agent_loop/agent_loop.py` ~534-539); main_sent
    anchors the relative path to the checkout; the loop is verl's single-turn loop."""
    from hydra.utils import get_class
    from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop
    from verl.utils.import_utils import resolve_config_path

    from recipe.sent.main_sent import anchor_agent_loop_config

    cfg = recipe_config(["machine=cpu"])
    agent = cfg.actor_rollout_ref.rollout.agent
    assert agent.default_agent_loop == AGENT_LOOP_NAME
    # a GPU run keeps verl's unseeded loop until the seeded one's cost is measured there
    assert recipe_config().actor_rollout_ref.rollout.agent.default_agent_loop == "single_turn_agent"
    anchor_agent_loop_config(cfg)
    path = Path(agent.agent_loop_config_path)
    assert path.is_absolute() and path == REPO / "recipe" / "sent" / "agent_loops.yaml"
    entries = {entry.name: entry for entry in OmegaConf.load(resolve_config_path(str(path)))}
    assert get_class(entries[AGENT_LOOP_NAME]["_target_"]) is SeededSingleTurnAgentLoop
    assert issubclass(SeededSingleTurnAgentLoop, SingleTurnAgentLoop)


# ---- the step batch in the prompts' order ------------------------------------------------------------------------
def test_the_replay_buffers_batch_goes_back_into_the_prompts_order():
    """Trajectories as they finished (verl's keys `{uid}_{session}_{index}`) come back in submission order, then
    answer, then turn; the tags travel with their keys; a sorted prompt is forgotten."""
    from transfer_queue import KVBatchMeta

    order = PromptOrder()
    order.record(["b-uid", "a-uid"])  # submitted: b first (uids are random uuid4s in verl)
    finished = ["a-uid_1_0", "b-uid_1_0", "a-uid_0_0", "b-uid_0_1", "b-uid_0_0"]
    batch = KVBatchMeta(partition_id="train", keys=list(finished), tags=[{"k": key} for key in finished])
    order.sort(batch)
    assert batch.keys == ["b-uid_0_0", "b-uid_0_1", "b-uid_1_0", "a-uid_0_0", "a-uid_1_0"]
    assert [tag["k"] for tag in batch.tags] == batch.keys
    assert order.sort_key("b-uid_0_0")[0] == math.inf  # forgotten once sampled
    order.record(["c-uid"])
    assert order.sort_key("c-uid_0_0")[0] == 2  # positions keep counting


# ---- end to end: the same command twice --------------------------------------------------------------------------
def logged_steps(run: TrainingRun) -> dict[int, dict]:
    return same_run.logged_steps(run.metrics_file)


def rollouts(out: Path, step: int) -> list[tuple]:
    """The step's dumped answers as (prompt, answer number, turn, answer, score), sorted: verl dumps them sorted by
    their random uids (`_log_rollout_data`), so the dump's order is not the run's."""
    dumped = pd.read_json(out / "rollouts" / f"{step}.jsonl", lines=True)
    rows = []
    for key, prompt, answer, score in zip(dumped["uid"], dumped["input"], dumped["output"], dumped["score"]):
        _, session, index = str(key).rsplit("_", 2)
        rows.append((prompt, int(session), int(index), answer, score))
    return sorted(rows)


@pytest.mark.slow
def test_the_same_command_twice_gives_the_same_run(gpu_check_cpu_form, tmp_path):
    """`make gpu-check`'s training (the run the CPU end-to-end tests read: 2 tiny preset=sent steps, validation
    first, a checkpoint each step) trained again with the same command, only its output folders elsewhere: the same
    metrics at steps 0 (validation), 1 and 2, bitwise (timings, throughput and memory aside: NOT_SEEDED), and the
    same answers with the same scores. The two answers to each prompt differ (each request has its own seed, not one
    for all). One training more than the CPU suite already runs (~1.5 min; 101 s on a busy 2-core machine)."""
    assert gpu_check_cpu_form["returncode"] == 0, gpu_check_cpu_form["stdout"][-4000:]
    first_out = gpu_check_cpu_form["out"] / "train"
    first = TrainingRun(out_dir=first_out, log=first_out / "train.log", metrics_file=first_out / "metrics.jsonl",
                        seconds=0.0)
    command = first.log.read_text().splitlines()[0].split(" ")  # launch.train writes " ".join(command)
    overrides = command[command.index("recipe.sent.main_sent") + 1:]
    second_out = tmp_path / "again"
    moved = {"trainer.default_local_dir": second_out / "checkpoints", "trainer.rollout_data_dir": second_out / "rollouts"}
    overrides = [f"{key}={moved[key]}" if (key := item.split("=", 1)[0]) in moved else item for item in overrides
                 if not item.startswith("trainer.logger=")]  # launch.train adds its own (wandb only logs)
    second = train(overrides, second_out, timeout_s=900, echo=lambda _: None)

    assert metric_differences(logged_steps(first), logged_steps(second)) == []
    assert sorted(logged_steps(second)) == [0, 1, 2]
    for step in (1, 2):
        assert rollouts(first_out, step) == rollouts(second_out, step)
        answers: dict[str, list[str]] = {}
        for prompt, _, _, answer, _ in rollouts(first_out, step):
            answers.setdefault(prompt, []).append(answer)
        assert all(len(set(group)) == len(group) for group in answers.values()), answers


def test_the_comparison_finds_a_changed_metric_and_ignores_timings():
    a = {1: {"critic/score/mean": 0.25, "timing_s/gen": 1.0, "perf/throughput": 9.0}}
    assert metric_differences(a, {1: {**a[1], "timing_s/gen": 2.0, "perf/throughput": 3.0}}) == []
    nudged = {1: {**a[1], "critic/score/mean": math.nextafter(0.25, 1.0)}}
    assert metric_differences(a, nudged) == [
        f"step 1: 1 of 1 metrics differ, e.g. {{'critic/score/mean': (0.25, {math.nextafter(0.25, 1.0)!r})}}"]
    assert metric_differences(a, {2: a[1]}) == ["logged steps [1] vs [2]"]


def test_same_run_reads_a_run_folder_or_the_labs_gzipped_archive_and_says_where_two_runs_part(tmp_path, capsys):
    import gzip
    import json

    steps = [{"step": 1, "data": {"critic/score/mean": 0.25, "timing_s/gen": 1.0}},
             {"step": 2, "data": {"critic/score/mean": 0.5}}]
    text = "".join(json.dumps(entry) + "\n" for entry in steps)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "metrics.jsonl").write_text(text)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "metrics.jsonl.gz").write_bytes(gzip.compress(text.replace("1.0}", "3.0}").encode()))
    assert same_run.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "the same run: 2 steps (1..2), 2 metrics, equal bitwise" in capsys.readouterr().out
    (tmp_path / "c.jsonl").write_text(text.replace("0.5}", "0.75}"))
    assert same_run.main([str(tmp_path / "a"), str(tmp_path / "c.jsonl")]) == 1
    assert capsys.readouterr().out.startswith("step 2: 1 of 1 metrics differ, e.g. {'critic/score/mean': (0.5, 0.75)}")
    (tmp_path / "bad.jsonl").write_text(text + "{not json\n")
    with pytest.raises(ValueError, match=r"bad.jsonl: line 3 is not a logged step"):
        same_run.logged_steps(tmp_path / "bad.jsonl")
    with pytest.raises(FileNotFoundError, match=r"no metrics.jsonl"):
        same_run.logged_steps(tmp_path / "b" / "..")  # tmp_path: a folder without metrics


def test_the_committed_toy_regime_run_twice_is_the_same_run():
    """docs/lab/toy/reproducibility/: a 24-step toy_8updates run and its repeat with the same seed, equal bitwise in
    every seeded metric at every step (and so in the held-out evaluation each ended with)."""
    folder = REPO / "docs" / "lab" / "toy" / "reproducibility"
    first, second = (same_run.logged_steps(folder / f"run_{x}.metrics.jsonl.gz") for x in "ab")
    assert sorted(first) == list(range(1, 25))
    assert metric_differences(first, second) == []
    assert first[24]["timing_s/step"] != second[24]["timing_s/step"]  # two runs, not one file twice
    done = [json.loads((folder / f"run_{x}.done.json").read_text()) for x in "ab"]
    assert done[0]["eval"] == done[1]["eval"] and done[0]["wall_s"] != done[1]["wall_s"]
