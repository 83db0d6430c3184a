"""The typed configs (ScoringConfig, EvalConfig, CurriculumConfig, LabConfig): every misspelt key (Hydra's `+key=`
and `++key=` too), wrong type, missing value, disallowed choice and model path that does not exist is an error naming
the key; defaults live once (in the dataclasses; YAML only overrides or is checked here); the knob tables in docs/ are
the dataclasses' fields; launcher children get the typed config."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from verl_ext.config import ConfigError
from verl_ext.curriculum import CurriculumConfig
from verl_ext.eval.config import EvalConfig
from verl_ext.model_path import check_model_path
from verl_ext.semantic_entropy.config import ModelConfig, ScoringConfig

REPO = Path(__file__).resolve().parents[1]
SCORING = {"input_files": "in.parquet", "output_dir": "out", "model": {"path": "m"}}
EVAL = {"model": {"path": "m"}}


def _scoring(**over):
    return {**SCORING, **over}


@pytest.mark.parametrize("mapping, named", [
    ({"epochs_per_stage": 0}, r"^data\.curriculum\.epochs_per_stage must be >= 1"),
    ({"enable": "maybe"}, r"^data\.curriculum\.enable must be one of auto, true, false"),
])
def test_bad_values_in_a_section_name_the_full_key(mapping, named):
    """As verl reads it: `data.curriculum` of the trainer config, so the message names the key a user typed."""
    with pytest.raises(ConfigError, match=named):
        CurriculumConfig.from_config(mapping, where="data.curriculum")


@pytest.mark.parametrize(
    ("cls", "mapping", "named"),
    [
        (ScoringConfig, _scoring(samplng={"n": 2}), "unknown config key samplng"),
        (ScoringConfig, _scoring(sampling={"nn": 2}), "unknown config key sampling.nn"),
        (ScoringConfig, _scoring(clustering={"unparsable": "shared"}), "did you mean clustering.unparseable"),
        (ScoringConfig, _scoring(debug={"sleep_after_generate_s": 3}), "unknown config key debug"),  # hook removed
        (EvalConfig, {**EVAL, "verify": {"timeout": 3}}, "unknown config key verify.timeout"),
        (EvalConfig, {**EVAL, "k": [1]}, "did you mean ks"),
    ],
)
def test_unknown_key_is_an_error_naming_it(cls, mapping, named):
    with pytest.raises(ConfigError, match=named):
        cls.from_config(mapping)


def test_curriculum_typo_names_the_full_key():
    with pytest.raises(ConfigError, match=r"data\.curriculum\.num_stage .*did you mean data\.curriculum\.num_stages"):
        CurriculumConfig.from_config({"num_stage": 3}, where="data.curriculum")


@pytest.mark.parametrize(
    ("cls", "mapping", "named"),
    [
        (ScoringConfig, _scoring(sampling={"n": "eight"}), r"sampling\.n: Value 'eight'"),
        (ScoringConfig, {"output_dir": "o", "model": {"path": "m"}}, "input_files is required"),
        (ScoringConfig, {"input_files": "a", "output_dir": "o"}, "model.path is required"),
        (ScoringConfig, _scoring(entropy="weigthed"), "entropy must be one of discrete, weighted; got 'weigthed'"),
        (ScoringConfig, _scoring(backend="hf"), "backend must be one of vllm, openai"),
        (ScoringConfig, _scoring(clustering={"unparseable": "drop"}), "clustering.unparseable must be one of"),
        (ScoringConfig, _scoring(data_parallel_backend="mpi"), "data_parallel_backend must be one of process, ray"),
        (ScoringConfig, _scoring(world_size=2, rank=2), r"rank=2 must be in \[0, world_size=2\)"),
        (ScoringConfig, _scoring(sampling={"top_p": 0.0}), r"sampling.top_p must be in \(0, 1\]"),
        (ScoringConfig, _scoring(summary={"stages": {"stage_boundaries": [1.0, 0.5]}}), "strictly ascending"),
        (EvalConfig, {}, "model.path is required"),
        (EvalConfig, {**EVAL, "ks": [0, 1]}, "ks must be"),
        (CurriculumConfig, {"enable": "maybe"}, "enable must be one of auto, true, false"),
        (CurriculumConfig, {"epochs_per_stage": 0}, "epochs_per_stage must be >= 1"),
    ],
)
def test_bad_values_are_errors_naming_the_field(cls, mapping, named):
    with pytest.raises(ConfigError, match=named):
        cls.from_config(mapping)


def test_keyword_construction_validates_and_normalises():
    cfg = ScoringConfig(input_files="in.parquet", output_dir="out", model=ModelConfig(path="m"))
    assert cfg.input_files == ["in.parquet"] and cfg.sampling.n == 8
    assert cfg == ScoringConfig.from_config(SCORING)
    with pytest.raises(ConfigError, match="entropy must be one of"):
        ScoringConfig(input_files="a", output_dir="o", model=ModelConfig(path="m"), entropy="x")
    assert CurriculumConfig(enable=True).enable == "true"  # Hydra reads `true` as a boolean


def test_configs_are_frozen():
    cfg = ScoringConfig.from_config(SCORING)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.shard_size = 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.sampling.n = 3


def test_data_parallel_children_receive_the_typed_config():
    from verl_ext.semantic_entropy.parallel import merge_config, rank_config

    cfg = ScoringConfig.from_config(_scoring(data_parallel_size=3, sampling={"n": 4}))
    child = rank_config(cfg, 2)
    assert isinstance(child, ScoringConfig)
    assert (child.data_parallel_size, child.world_size, child.rank, child.sampling.n) == (1, 3, 2, 4)
    assert ScoringConfig.from_json(child.to_json()) == child  # what a child process reads back
    assert (merge_config(cfg).world_size, merge_config(cfg).rank) == (1, 0)


# ------------------------------------------------------------------------------------------ one place per default
@pytest.mark.parametrize("name", ["score_semantic_entropy", "eval"])
def test_job_yaml_sets_no_knob(name):
    """The job YAMLs hold Hydra's settings only: every default is the dataclass's."""
    assert set(OmegaConf.load(REPO / "configs" / f"{name}.yaml")) == {"defaults", "hydra"}


@pytest.mark.parametrize(
    ("module", "name", "cls", "required"),
    [
        ("verl_ext.semantic_entropy.__main__", "score_semantic_entropy", ScoringConfig, SCORING),
        ("verl_ext.eval.__main__", "eval", EvalConfig, EVAL),
    ],
)
def test_hydra_composes_the_dataclass_and_rejects_typos(module, name, cls, required):
    import importlib

    from hydra import compose, initialize_config_dir

    importlib.import_module(module).register_schema()
    flat = [f"{k}={v}" for k, v in OmegaConf.to_container(OmegaConf.create(required)).items() if not isinstance(v, dict)]
    flat += [f"model.path={required['model']['path']}"]
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name=name, overrides=flat)
        assert cls.from_config(cfg) == cls.from_config(required)
        with pytest.raises(Exception, match=r"sampling\.nn"):
            compose(config_name=name, overrides=[*flat, "sampling.nn=3"])
        with pytest.raises(Exception, match=r"sampling\.n"):
            compose(config_name=name, overrides=[*flat, "sampling.n=many"])


def test_trainer_yaml_curriculum_block_matches_the_dataclass():
    """`data.curriculum` stays in configs/sent_trainer.yaml so Hydra overrides need no `+`; it must hold exactly
    CurriculumConfig's keys and defaults."""
    block = OmegaConf.to_container(OmegaConf.load(REPO / "configs/sent_trainer.yaml").data.curriculum)
    assert block == dataclasses.asdict(CurriculumConfig())


def test_curriculum_function_and_cli_defaults_are_the_dataclass():
    import inspect

    from verl_ext import curriculum

    defaults = CurriculumConfig()
    for fn in (curriculum.plan_curriculum, curriculum.assign_stages):
        for name, param in inspect.signature(fn).parameters.items():
            if param.default is not inspect.Parameter.empty:
                assert param.default == getattr(defaults, name), (fn.__name__, name)


# ------------------------------------------------------------------------------------------------ docs tables
KNOB_DOCS = {  # the document -> the configs whose knob tables it holds
    "docs/scoring.md": {"verl_ext.semantic_entropy.config.ScoringConfig", "verl_ext.curriculum.CurriculumConfig"},
    "docs/evaluation.md": {"verl_ext.eval.config.EvalConfig"},
}


@pytest.mark.parametrize("doc", sorted(KNOB_DOCS))
def test_docs_knob_tables_match_the_dataclasses(doc):
    from verl_ext.knob_tables import BLOCK, render_readme

    text = (REPO / doc).read_text()
    targets = {m.group("target") for m in BLOCK.finditer(text)}
    assert targets == KNOB_DOCS[doc]
    assert render_readme(text) == text, f"{doc} knob tables drifted: run python -m verl_ext.knob_tables {doc}"


@pytest.mark.parametrize("cls", [ScoringConfig, EvalConfig, CurriculumConfig])
def test_every_knob_is_documented(cls):
    from verl_ext.knob_tables import knob_rows

    undocumented = [key for key, default, meaning in knob_rows(cls) if default and not meaning]
    assert not undocumented, f"fields without a docstring under them: {undocumented}"


def test_a_value_where_a_section_belongs_is_named():
    with pytest.raises(ConfigError, match=r"summary\.stages is a section \(num_stages, stage_boundaries\); got 3"):
        ScoringConfig.from_config(_scoring(summary={"stages": 3}))


# ------------------------------------------------------------------------ through the entry points' own Hydra CLI
def _cli(module: str, *overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", module, *overrides], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def _one_error_line(run: subprocess.CompletedProcess) -> str:
    """The job's whole complaint: exit code 2 and a single stderr line (no traceback)."""
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2 and len(lines) == 1, f"rc={run.returncode}\n{run.stderr[-3000:]}"
    return lines[0]


SCORING_ARGS = ["input_files=in.parquet", "output_dir=out", "model.path=m"]


@pytest.mark.parametrize(
    ("module", "args", "override", "named"),
    [
        ("verl_ext.semantic_entropy", SCORING_ARGS, "+sampling.nn=3", "sampling.nn (sampling has: n, temperature"),
        ("verl_ext.semantic_entropy", SCORING_ARGS, "++sampling.nn=3", "sampling.nn (sampling has: n, temperature"),
        ("verl_ext.semantic_entropy", SCORING_ARGS, "+clustering.unparsable=shared", "clustering.unparsable (clustering has"),
        ("verl_ext.semantic_entropy", SCORING_ARGS, "+samplng.n=3", "samplng (ScoringConfig has: input_files"),
        ("verl_ext.eval", ["model.path=m"], "+sampling.nn=3", "sampling.nn (sampling has: n, temperature"),
        ("verl_ext.eval", ["model.path=m"], "+verify.timeout=3", "verify.timeout (verify has: num_workers"),
        ("recipe.drivers.lab", [], "+stepz=3", "stepz (LabConfig has: out, model"),
    ],
)
def test_hydra_add_syntax_is_rejected_by_name(module, args, override, named, tmp_path):
    """`+key=value` adds a key to the schema-typed node; before the check it was kept silently (`sampling.nn=3`
    without the `+` was already refused by Hydra itself, next test)."""
    line = _one_error_line(_cli(module, *args, override, cwd=tmp_path))
    assert line.startswith(f"error: unknown config key {named}"), line
    assert not any(tmp_path.iterdir()), "nothing may run (or write) on a rejected config"


@pytest.mark.parametrize("module, args", [("verl_ext.semantic_entropy", SCORING_ARGS), ("verl_ext.eval", ["model.path=m"])])
def test_plain_unknown_key_is_rejected_by_hydra_naming_it(module, args, tmp_path):
    run = _cli(module, *args, "sampling.nn=3", cwd=tmp_path)
    assert run.returncode == 1 and "Could not override 'sampling.nn'" in run.stderr, run.stderr[-3000:]


def test_hydra_add_syntax_is_rejected_in_the_curriculum_block(recipe_config):
    """`data.curriculum` as `main_sent`'s CLI composes it (Hydra's own override parser), read as the dataset reads it."""
    from recipe.sent.curriculum_dataset import curriculum_config

    assert curriculum_config(recipe_config(["data.curriculum.num_stages=3"]).data).num_stages == 3
    with pytest.raises(ConfigError, match=r"^unknown config key data\.curriculum\.num_stage .*did you mean "
                                          r"data\.curriculum\.num_stages"):
        curriculum_config(recipe_config(["+data.curriculum.num_stage=3"]).data)


# ------------------------------------------------------------------------------------------------ model paths
@pytest.mark.parametrize(
    ("module", "args", "named"),
    [
        ("verl_ext.semantic_entropy", ["input_files=in.parquet", "output_dir=out", "model.path=/nonexistent/model"],
         "model.path=/nonexistent/model"),
        ("verl_ext.semantic_entropy", ["input_files=in.parquet", "output_dir=out", "backend=openai",
                                       "model.path=Qwen/Qwen2.5-7B", "model.tokenizer_path=/nonexistent/tok"],
         "model.tokenizer_path=/nonexistent/tok"),
        ("verl_ext.eval", ["model.path=/nonexistent/model"], "model.path=/nonexistent/model"),
    ],
)
def test_a_missing_model_is_one_line_naming_key_and_path(module, args, named, tmp_path):
    """Before: a Hugging Face "Repo id must be in the form ..." traceback (scoring: after reading the inputs)."""
    line = _one_error_line(_cli(module, *args, cwd=tmp_path))
    assert line == f"error: {named}: no such model folder (and not a hub id like 'Qwen/Qwen2.5-7B')", line


def test_model_path_check_accepts_folders_and_hub_ids(tmp_path):
    for ok in (str(tmp_path), "Qwen/Qwen2.5-Math-7B", "org/name-1.5B", None, ""):
        check_model_path("model.path", ok)
    for bad in (str(tmp_path / "missing"), "missing-folder", "a/b/c"):
        with pytest.raises(ConfigError, match=rf"^model\.path={bad}: no such model folder"):
            check_model_path("model.path", bad)
