"""p(`{` | `\\boxed`) on a fixed set of toy contexts (recipe/drivers/format_probe.py, issue 28 section 3): the contexts
are the lab's held-out problems with their reference solutions cut after ``\\boxed``; the committed `kl_cov` seed 2
model (docs/lab/toy/lr5e-4/kl_cov_seed2_hf/, which wrote ``\\boxed232}``) has lost the brace and the initial toy
reasoner has not; an actor checkpoint is probed through the merge the lab evaluates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recipe.drivers import format_probe
from verl_ext import toy_task

REPO = Path(__file__).resolve().parents[1]
KL_COV_SEED2 = REPO / "docs" / "lab" / "toy" / "lr5e-4" / "kl_cov_seed2_hf"


@pytest.mark.parametrize("numbers, prefix", [
    ((12, 5), "12+5=17\n\\boxed"),
    ((12, 5, 9, 3), "12+5=17\n17+9=26\n26+3=29\n\\boxed"),
    ((29, 9, 9, 9, 9, 9, 9, 9), "29+9=38\n38+9=47\n47+9=56\n56+9=65\n65+9=74\n74+9=83\n83+9=92\n\\boxed"),
])
def test_a_context_is_the_reference_solution_cut_after_the_box(numbers, prefix):
    assert format_probe.solution_prefix(numbers) == prefix
    # the reference solution goes on with the brace and the right total
    assert toy_task.solution(numbers) == prefix + "{" + str(sum(numbers)) + "}"


def test_the_contexts_are_the_labs_held_out_problems_in_order():
    items = format_probe.contexts()
    _, held_out = toy_task.split_rows({level: 32 for level in toy_task.TRAIN_LEVELS},
                                      {level: 72 for level in toy_task.LEVELS}, seed=0)  # the lab's defaults
    assert [item.question for item in items] == [row["prompt"][0]["content"] for row in held_out]
    assert [item.level for item in items] == [row["extra_info"]["level"] for row in held_out]
    assert len(items) == 504 and {item.level for item in items} == set(toy_task.LEVELS)
    assert all(item.prefix.endswith("\\boxed") and item.prefix.count("\\boxed") == 1 for item in items)
    few = format_probe.contexts(per_level=2)
    assert few == format_probe.contexts(per_level=2) and len(few) == 2 * len(toy_task.LEVELS)  # fixed, no sampling


def test_a_context_is_tokenized_as_a_rollout_ending_in_the_box_token():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(KL_COV_SEED2)
    item = format_probe.Context(2, "12+5", "12+5=17\n\\boxed")
    ids = format_probe.encode(tokenizer, item)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "12+5"}], add_generation_prompt=True,
                                           tokenize=False)
    assert prompt == "<|im_start|>user\n12+5<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.decode(ids) == prompt + "12+5=17\n\\boxed"
    assert tokenizer.convert_ids_to_tokens(ids[-1:]) == ["\\boxed"]
    assert tokenizer.convert_ids_to_tokens([format_probe.brace_id(tokenizer)]) == ["{"]


def test_the_contexts_as_a_rollout_dump_for_the_merge_check(tmp_path):
    """`--rollouts-out`: merge_check reads the file and scores the context's ids, then ``{`` and the answer."""
    from transformers import AutoTokenizer

    from recipe.drivers import merge_check

    tokenizer = AutoTokenizer.from_pretrained(KL_COV_SEED2)
    items = format_probe.contexts(per_level=1)
    path = format_probe.write_rollouts(tmp_path / "probe.jsonl", tokenizer, items)
    sequences = merge_check.tokenize(tokenizer, merge_check.read_rollouts(path), max_length=256)
    assert len(sequences) == len(items)
    for (ids, _), item in zip(sequences, items):
        context = format_probe.encode(tokenizer, item)
        assert ids[:len(context)] == context and ids[len(context)] == format_probe.brace_id(tokenizer)


@pytest.fixture(scope="module")
def initial_model(tmp_path_factory) -> Path:
    """The initial toy reasoner: the shipped reference weights, as the lab installs them (`toy_model_dir`)."""
    from verl_ext.toy_model import toy_model_dir

    return toy_model_dir(tmp_path_factory.mktemp("cache"), measure_samples=0, log=lambda line: None)


def test_the_drifted_model_lost_the_brace_and_the_initial_model_did_not(initial_model, tmp_path, capsys):
    out = tmp_path / "probe.json"
    assert format_probe.main([str(KL_COV_SEED2), str(initial_model), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["contexts"] == 504
    drifted, initial = result["models"]
    assert (drifted["kind"], initial["kind"], drifted["step"]) == ("hf", "hf", None)
    # measured: mean 0.059, median 0.0077, 96% of contexts below 0.5
    assert drifted["median"] < 0.01 and drifted["mean"] < 0.1 and drifted["share_below_0.5"] > 0.9
    # measured: mean 0.9906 (levels 2-7 0.989-1.000; the untrained level 8 0.946), median 0.9999, 4 of 504 below 0.5
    assert initial["median"] > 0.999 and initial["mean"] > 0.99 and initial["share_below_0.5"] < 0.01
    assert all(initial["mean_by_level"][str(level)] > 0.98 for level in toy_task.TRAIN_LEVELS)
    table = capsys.readouterr().out
    assert table.startswith("| model | step | mean p({)") and "kl_cov_seed2_hf" in table


def test_resolve_reads_each_kind_of_folder(tmp_path):
    def actor(step: int) -> Path:
        folder = tmp_path / "run" / "checkpoints" / f"global_step_{step}" / "actor"
        folder.mkdir(parents=True)
        (folder / "fsdp_config.json").write_text("{}")
        return folder

    first, second = actor(2), actor(10)
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    run, checkpoints = tmp_path / "run", tmp_path / "run" / "checkpoints"
    for path, expected in [
        (tmp_path / "hf", ("hf", None, [(None, tmp_path / "hf")])),
        (second, ("actor", None, [(10, second)])),
        (checkpoints, ("checkpoints", run, [(2, first), (10, second)])),  # by step, not by name
        (run, ("run", run, [(2, first), (10, second)])),
    ]:
        assert format_probe.resolve(path) == expected
    with pytest.raises(FileNotFoundError, match="neither"):
        format_probe.resolve(tmp_path / "nothing")


def test_a_run_folders_train_reward_and_malformed_rollouts(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in [
        {"step": 1, "data": {"critic/score/mean": -0.25}},
        {"step": 2, "data": {"critic/score/mean": 0.1}},
        {"step": 2, "data": {"critic/score/mean": 0.2}},  # a resumed run's redo: the later line counts
    ]))
    assert format_probe.train_rewards(tmp_path) == {1: -0.25, 2: 0.2}
    (tmp_path / "rollouts").mkdir()
    outputs = ["12+5=17\n\\boxed{17}", "12+5=17\n\\boxed17}", "12+5=17\n\\boxed{17}\n\\boxed17", "12+5=17"]
    (tmp_path / "rollouts" / "2.jsonl").write_text("".join(json.dumps({"input": "q", "output": text}) + "\n"
                                                           for text in outputs))
    assert format_probe.malformed_share(tmp_path, 2) == pytest.approx(1 / 3)  # of the 3 that box; the first box
    assert format_probe.malformed_share(tmp_path, 1) is None and format_probe.malformed_share(None, 2) is None


@pytest.mark.slow
def test_an_actor_checkpoint_is_probed_through_the_merge(initial_model, tmp_path):
    """A real FSDP checkpoint of the initial model (verl's manager, no optimizer step): the run folder's probe, merged
    by `hf_merge`, gives the initial model's numbers."""
    from recipe.drivers.merge_check import train_and_save

    run = tmp_path / "run"
    train_and_save(initial_model, run / "checkpoints" / "global_step_3" / "actor", steps=0)
    (run / "metrics.jsonl").write_text(json.dumps({"step": 3, "data": {"critic/score/mean": 0.5}}) + "\n")
    result = format_probe.probe([run, initial_model], per_level=4, log=lambda line: None)
    merged, folder = result["models"]
    assert (merged["kind"], merged["step"], merged["train_reward"]) == ("run", 3, 0.5)
    assert {key: merged[key] for key in ("mean", "median", "min", "share_below_0.5", "n")} == \
        {key: folder[key] for key in ("mean", "median", "min", "share_below_0.5", "n")}
    # the screen probes the same last checkpoint through the same merge
    row = format_probe.screen(run, items=format_probe.contexts(per_level=4))
    assert row["last_checkpoint"] == {"step": 3, **{key: merged[key] for key in row["last_checkpoint"] if key != "step"}}
    level, value = min(row["last_checkpoint"]["mean_by_level"].items(), key=lambda item: item[1])
    assert not row["drift"] and f"| {value:.4f} (k = {level}) | no |" in format_probe.screen_table([row])


def _heldout(folder: Path, answers: list) -> None:
    (folder / "eval").mkdir(parents=True)
    (folder / "eval" / "heldout.json").write_text(json.dumps({"problems": [{"index": 0, "answers": answers,
                                                                             "correct": [False] * len(answers)}]}))


@pytest.mark.parametrize("heldout, rollouts, worst, drift", [
    # (held-out answers, None = unreadable), {step: outputs}, (worst step after 2, its share), drift
    ([17] * 100, {1: ["\\boxed17}"], 3: ["\\boxed{17}"] * 10}, (3, 0.0), False),  # a step-1 dip is not the drift
    ([17] * 98 + [None] * 2, {}, (None, None), False),  # 2% unreadable: not above the threshold
    ([17] * 97 + [None] * 3, {}, (None, None), True),  # 3%, as grpo seed 0 of the committed lab (3.6%)
    ([17] * 100, {3: ["\\boxed{17}"] * 49 + ["\\boxed17}"], 4: ["\\boxed{1}"] * 19 + ["\\boxed1}"]}, (4, 0.05), True),
])
def test_the_screen_reads_a_runs_held_out_and_rollout_format(tmp_path, heldout, rollouts, worst, drift):
    _heldout(tmp_path, heldout)
    (tmp_path / "rollouts").mkdir()
    for step, outputs in rollouts.items():
        (tmp_path / "rollouts" / f"{step}.jsonl").write_text("".join(json.dumps({"input": "q", "output": text}) + "\n"
                                                                     for text in outputs))
    row = format_probe.screen(tmp_path)
    assert (row["worst_step_after_2"], row["worst_share"]) == worst
    assert row["drift"] is drift and "last_checkpoint" not in row  # no checkpoints: nothing to probe
    assert ("| yes |" if drift else "| no |") in format_probe.screen_table([row])


def test_the_screen_on_committed_runs_of_the_strict_grader(tmp_path):
    """Two runs of the committed toy_8updates lab (strict grader, so an unreadable answer is a malformed or missing
    box): the entropy bonus at 0.1, whose entropy blew up (66% unreadable), shows the drift; grpo seed 0 does not."""
    from recipe.drivers.lab_archive import unpack

    lab = unpack(REPO / "docs" / "lab" / "toy" / "toy_8updates", tmp_path)
    blown, kept = (format_probe.screen(lab / "entropy_bonus@entropy_coeff_0.1" / "seed0"),
                   format_probe.screen(lab / "grpo" / "seed0"))
    assert blown["drift"] and blown["heldout_format_failures"] == pytest.approx(0.663, abs=5e-4)
    assert not kept["drift"] and kept["heldout_format_failures"] < format_probe.DRIFT
