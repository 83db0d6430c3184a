"""Data preparation (verl_ext/data_prep.py, scripts/prepare_data.py) on small local fixtures in each hub dataset's
column layout (no hub here)."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from verl_ext import data_prep
from verl_ext.data_prep import DAPO_PREFIX, DAPO_SUFFIX, INSTRUCTION, SOURCES, DataPrepError

REPO = Path(__file__).resolve().parents[1]


def _dapo_row(question, answer, index):
    return {
        "data_source": "math_dapo",
        "prompt": [{"role": "user", "content": DAPO_PREFIX + question + DAPO_SUFFIX}],
        "ability": "MATH",
        "reward_model": {"ground_truth": answer, "style": "rule-lighteval/MATH_v2"},
        "extra_info": {"index": f"id-{index}"},
    }


def _jsonl(path: Path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_hub_fixtures(root: Path) -> Path:
    """One small local copy per source, laid out as the hub datasets are (column names and types)."""
    # DAPO-Math-17k: a git clone of the hub repo (data/*.parquet); each prompt repeated, as on the hub.
    dapo = [_dapo_row("What is $1+1$?", "2", 0), _dapo_row("Find $x$ if $2x=6$.", "3", 1)]
    dapo += [_dapo_row("What is $1+1$?", "2", 2), _dapo_row("Find $x$ if $2x=6$.", "3", 3)]
    (root / "DAPO-Math-17k" / "data").mkdir(parents=True)
    pd.DataFrame(dapo).to_parquet(root / "DAPO-Math-17k" / "data" / "dapo-math-17k.parquet")
    # HuggingFaceH4/aime_2024 (train): id, problem, solution, answer, url, year
    _jsonl(root / "aime24.jsonl", [
        {"id": 60, "problem": "Find the remainder when $9 \\times 99$ is divided by 1000.", "solution": "...",
         "answer": "891", "url": "https://aops", "year": 2024},
    ])  # fmt: skip
    # math-ai/aime25 (test): problem, answer, id
    pd.DataFrame([{"problem": "Compute $2^{10}$.", "answer": "1024", "id": "0"}]).to_parquet(root / "aime25.parquet")
    # math-ai/amc23 (test): id, question, answer (a float on the hub), url
    _jsonl(root / "amc23.jsonl", [{"id": 0, "question": "What is $3 \\cdot 9$?", "answer": 27.0, "url": "x"}])
    # HuggingFaceH4/MATH-500 (test): problem, solution, answer, subject, level, unique_id
    _jsonl(root / "math500.jsonl", [
        {"problem": "Simplify $\\frac{2}{4}$.", "solution": "...", "answer": "\\frac{1}{2}", "subject": "Algebra",
         "level": 1, "unique_id": "test/algebra/1.json"},
    ])  # fmt: skip
    # math-ai/minervamath (test): question, answer
    _jsonl(root / "minerva.jsonl", [{"question": "A star has T = 5800 K. Give T in K.", "answer": "5800"}])
    # Hothan/OlympiadBench, config OE_TO_maths_en_COMP (train): a clone with one folder per config
    olympiad = root / "OlympiadBench" / "OE_TO_maths_en_COMP"
    olympiad.mkdir(parents=True)
    pd.DataFrame([
        {"id": 1606, "question": "Find all pairs $(x, y)$ with $x + y = 5$ and $x - y = 1$.", "solution": ["..."],
         "final_answer": ["$(3,2)$"], "context": None, "is_multiple_answer": False, "unit": None,
         "answer_type": "Tuple", "subfield": "Algebra"},
        {"id": 1607, "question": "What is $r$?", "solution": ["..."], "final_answer": ["$\\frac{1}{2}$", "$2$"],
         "context": "A circle has radius $r$ with $2r^2 = r$ or $r = 2$.", "is_multiple_answer": True, "unit": None,
         "answer_type": "Numerical", "subfield": "Geometry"},
    ]).to_parquet(olympiad / "train-00000-of-00001.parquet")  # fmt: skip
    # another config in the same clone must not be picked up
    (root / "OlympiadBench" / "OE_TO_physics_en_COMP").mkdir()
    pd.DataFrame([{"question": "physics", "final_answer": ["1"]}]).to_parquet(
        root / "OlympiadBench" / "OE_TO_physics_en_COMP" / "train.parquet"
    )
    return root


@pytest.fixture
def raw_dir(tmp_path):
    return write_hub_fixtures(tmp_path / "raw")


def test_source_table_is_complete_and_unambiguous():
    assert set(SOURCES) == {"dapo_math_17k", "aime24", "aime25", "amc23", "math500", "minerva", "olympiadbench"}
    assert len({s.data_source for s in SOURCES.values()}) == len(SOURCES)
    assert [n for n, s in SOURCES.items() if s.role == "train"] == ["dapo_math_17k"]
    assert SOURCES["dapo_math_17k"].hub_id == "BytedTsinghua-SIA/DAPO-Math-17k"
    assert SOURCES["dapo_math_17k"].data_source == "math_dapo"  # routes to verl's math_dapo rules in the reward


def test_prepare_all_from_dir(raw_dir, tmp_path):
    out = tmp_path / "data"
    written = data_prep.prepare(list(SOURCES), out, from_dir=raw_dir, log=lambda _: None)
    assert set(written) == set(SOURCES)
    for name, path in written.items():
        assert path == (out / f"{name}.parquet" if name == "dapo_math_17k" else out / "eval" / f"{name}.parquet")
        assert data_prep.validate_parquet(path) > 0
        # verl's RLHFDataset reads prompt as list<struct<role, content>>, reward_model / extra_info as structs
        schema = pq.read_schema(path)
        assert str(schema.field("prompt").type) == "list<element: struct<role: string, content: string>>"
        assert {f.name for f in schema.field("reward_model").type} == {"style", "ground_truth"}

    train = pd.read_parquet(out / "dapo_math_17k.parquet")
    assert len(train) == 2  # deduplicated by prompt
    first = train.iloc[0]
    assert first["data_source"] == "math_dapo" and first["ability"] == "math"
    assert first["prompt"][0]["content"] == "What is $1+1$?\n" + INSTRUCTION  # DAPO's wrapper replaced by ours
    assert first["reward_model"] == {"style": "rule", "ground_truth": "2"}
    assert first["extra_info"]["split"] == "train" and list(train["extra_info"].map(lambda e: e["index"])) == [0, 1]

    def row(name, i=0):
        return pd.read_parquet(written[name]).iloc[i]

    assert row("aime24")["reward_model"]["ground_truth"] == "891"
    assert row("aime24")["extra_info"]["split"] == "test"
    assert row("amc23")["reward_model"]["ground_truth"] == "27"  # float 27.0 on the hub
    assert row("math500")["reward_model"]["ground_truth"] == "\\frac{1}{2}"
    assert row("minerva")["data_source"] == "minerva"
    olympiad = pd.read_parquet(out / "eval" / "olympiadbench.parquet")
    assert len(olympiad) == 2  # the physics config next to it was not read
    assert olympiad.iloc[0]["reward_model"]["ground_truth"] == "(3,2)"  # $...$ stripped
    assert olympiad.iloc[1]["reward_model"]["ground_truth"] == "\\frac{1}{2}, 2"
    assert olympiad.iloc[1]["prompt"][0]["content"].startswith("A circle has radius")  # context prepended
    for name in SOURCES:
        assert row(name)["prompt"][0]["content"].endswith("\n" + INSTRUCTION)


def test_bad_source_row_names_file_and_row(tmp_path):
    raw = tmp_path / "raw"
    _jsonl(raw / "minerva.jsonl", [{"question": "q0", "answer": "1"}, {"question": "q1", "answer": "2"},
                                   {"question": "q2", "answer": ""}])  # fmt: skip
    with pytest.raises(DataPrepError, match=r"minerva\.jsonl: row 2: empty answer"):
        data_prep.prepare(["minerva"], tmp_path / "out", from_dir=raw, log=lambda _: None)
    _jsonl(raw / "minerva.jsonl", [{"question": "q0", "answer": "1"}, {"problem": "q1", "answer": "2"}])
    with pytest.raises(DataPrepError, match=r"minerva\.jsonl: row 1: missing column\(s\) \['question'\]"):
        data_prep.prepare(["minerva"], tmp_path / "out", from_dir=raw, log=lambda _: None)


def test_validate_parquet_names_file_and_row(raw_dir, tmp_path):
    out = tmp_path / "data"
    path = data_prep.prepare(["aime24"], out, from_dir=raw_dir, log=lambda _: None)["aime24"]
    frame = pd.read_parquet(path)
    frame = pd.concat([frame, frame], ignore_index=True)
    frame.at[1, "reward_model"] = {"style": "rule", "ground_truth": ""}
    bad = tmp_path / "bad.parquet"
    frame.to_parquet(bad)
    with pytest.raises(DataPrepError, match=rf"{bad}: row 1: reward_model.ground_truth must be a non-empty string"):
        data_prep.validate_parquet(bad)
    frame = pd.read_parquet(path).drop(columns=["extra_info"])
    frame.to_parquet(bad)
    with pytest.raises(DataPrepError, match=r"row 0: missing column\(s\) \['extra_info'\]"):
        data_prep.validate_parquet(bad)


def test_missing_local_copy_says_where_it_looked(tmp_path):
    with pytest.raises(DataPrepError, match=r"aime25: no local copy of math-ai/aime25 under .*aime25\.parquet"):
        data_prep.prepare(["aime25"], tmp_path / "out", from_dir=tmp_path, log=lambda _: None)


def test_hub_path_imports_datasets_lazily(monkeypatch, tmp_path):
    calls = []

    def load_dataset(hub_id, config, split, cache_dir=None):
        calls.append((hub_id, config, split))
        rows = pd.DataFrame([{"id": 1, "question": "Find $x$.", "final_answer": ["$4$"], "context": None}])
        return types.SimpleNamespace(to_pandas=lambda: rows)

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    written = data_prep.prepare(["olympiadbench"], tmp_path, log=lambda _: None)
    assert calls == [("Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train")]
    assert pd.read_parquet(written["olympiadbench"]).iloc[0]["reward_model"]["ground_truth"] == "4"


def test_cli_runs_as_a_file(raw_dir, tmp_path):
    """scripts/prepare_data.py must run as a file (verl's wheel owns the package name `scripts`)."""
    out = tmp_path / "data"
    cmd = [sys.executable, str(REPO / "scripts" / "prepare_data.py")]
    done = subprocess.run([*cmd, "--from-dir", str(raw_dir), "--out-dir", str(out), "--only", "dapo_math_17k",
                           "aime24"], capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "2 duplicates dropped" in done.stdout
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.parquet")) == [
        "dapo_math_17k.parquet",
        "eval/aime24.parquet",
    ]
    done = subprocess.run([*cmd, "--validate", str(out / "eval" / "aime24.parquet")], capture_output=True, text=True)
    assert done.returncode == 0 and "1 rows OK" in done.stdout
    done = subprocess.run([*cmd, "--from-dir", str(tmp_path / "nowhere"), "--out-dir", str(out), "--only", "minerva"],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 1 and "error: minerva: no local copy" in done.stderr


def test_verl_rlhf_dataset_reads_the_prepared_files(raw_dir, tmp_path, recipe_config):
    """verl's own RLHFDataset (data config of the composed recipe) loads the output, with overlong filtering on."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from verl.utils.dataset.rl_dataset import RLHFDataset

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    core.train_from_iterator(["What is 1+1? \\boxed{2}"] * 10, trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))  # fmt: skip
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    written = data_prep.prepare(["dapo_math_17k", "olympiadbench"], tmp_path / "data", from_dir=raw_dir,
                                log=lambda _: None)  # fmt: skip
    data_cfg = recipe_config(["data.filter_overlong_prompts=true", "data.max_prompt_length=1024"]).data
    dataset = RLHFDataset([str(p) for p in written.values()], tokenizer, data_cfg)
    assert len(dataset) == 4
    item = dataset[3]
    assert item["data_source"] == "olympiadbench"
    assert item["raw_prompt"][0]["content"].endswith(INSTRUCTION)
    assert item["reward_model"]["ground_truth"] == "\\frac{1}{2}, 2" and item["index"] == 1
