"""The merged model is the trained model (recipe/drivers/merge_check.py, recipe/drivers/hf_merge.py), without a
training run: the tiny random Qwen2 wrapped by verl's `apply_fsdp2` in a gloo group, two AdamW steps of verl's
optimizer, saved by verl's `FSDPCheckpointManager` (`merge_check.train_and_save`). The checks on real runs are in
tests/test_train_cpu_e2e.py and `make gpu-check`."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recipe.drivers import merge_check

REPO = Path(__file__).resolve().parents[1]
# as verl dumps them (`trainer.rollout_data_dir`): decoded without special tokens, broken bytes and all
ROLLOUTS = [
    {"input": "user\n12 + 7 = ?\nAnswer with the number only.\nassistant\n", "output": "19. So \\boxed{19}"},
    {"input": "user\n3 + 4 = ?\nAnswer with the number only.\nassistant\n", "output": "So 40\u0004~b\ufffd 51boxed 53"},
    {"input": "user\n28 + 1 = ?\nAnswer with the number only.\nassistant\n", "output": "What is 28+1? Answer: 29."},
]


def safetensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def write_rollouts(path: Path) -> Path:
    path.write_text("".join(json.dumps({**row, "score": 0.0, "step": 2}) + "\n" for row in ROLLOUTS))
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_model) -> tuple[Path, Path]:
    """(actor checkpoint of 1 rank, its rollouts file)."""
    root = tmp_path_factory.mktemp("merge_check")
    actor = merge_check.train_and_save(tiny_model, root / "global_step_2" / "actor", steps=2)
    return actor, write_rollouts(root / "2.jsonl")


def test_the_merged_folder_is_the_resumed_actor_and_the_resume_round_trips_bitwise(checkpoint, tiny_model, tmp_path):
    actor, rollouts = checkpoint
    result = merge_check.check(actor, rollouts, workdir=tmp_path)
    assert result.problems() == [], result.lines()
    assert (result.world_size, result.rollouts) == (1, len(ROLLOUTS)) and result.tokens > 10
    assert result.max_diff["fp32"] <= merge_check.BOUNDS["fp32"]
    assert result.max_diff["bf16"] <= merge_check.BOUNDS["bf16"]
    # model shards, optimizer state (step, exp_avg, exp_avg_sq per parameter), lr scheduler and RNG state
    assert result.roundtrip_tensors > 3 * 26 and result.roundtrip_differences == []
    # not vacuous: the merged weights are fp32, its config says so, and they moved away from the initial model's
    merged, initial = safetensors(tmp_path / "merged"), safetensors(tiny_model)
    assert {tensor.dtype for tensor in merged.values()} == {torch.float32}
    assert json.loads((tmp_path / "merged" / "config.json").read_text())["dtype"] == "float32"
    assert sorted(merged) == sorted(initial)
    assert not any(torch.equal(merged[key], initial[key]) for key in merged if key.endswith("proj.weight"))


def test_a_small_perturbation_of_the_merged_weights_fails_the_check(checkpoint, tmp_path):
    """One weight matrix scaled by 1 + 1e-3 (less than bf16's rounding, up to 2^-8 relative): the CLI names the
    failure and exits 1."""
    from transformers import AutoModelForCausalLM

    from recipe.drivers.heldout import merge as heldout_merge

    actor, rollouts = checkpoint
    merged = heldout_merge(actor.parents[1], 2, tmp_path / "merged")  # as the demo and the lab merge, a subprocess
    assert {tensor.dtype for tensor in safetensors(merged).values()} == {torch.float32}
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight.mul_(1 + 1e-3)
    model.save_pretrained(tmp_path / "perturbed")
    done = subprocess.run([sys.executable, "-m", "recipe.drivers.merge_check", "--checkpoint", str(actor),
                           "--rollouts", str(rollouts), "--merged", str(tmp_path / "perturbed"), "--dtype", "fp32",
                           "--no-roundtrip"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr[-3000:]
    measured = float(done.stdout.split("max |delta log-prob| ")[1].split()[0])
    assert measured > 10 * merge_check.BOUNDS["fp32"], done.stdout
    assert "merge check: FAILED: fp32: max |delta log-prob|" in done.stdout
    assert "the merged model is not the trained model" in done.stdout


def test_verls_own_merger_rounds_the_weights_to_bf16(checkpoint, tmp_path):
    """Why recipe.drivers.hf_merge exists: verl 0.9.1's `python -m verl.model_merger merge` writes bf16 weights, so in
    fp32 its folder is not the trained model; in bf16 compute it is (both sides round the same fp32 weights)."""
    actor, rollouts = checkpoint
    done = subprocess.run([sys.executable, "-m", "verl.model_merger", "merge", "--backend", "fsdp", "--local_dir",
                           str(actor), "--target_dir", str(tmp_path / "verl")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert {tensor.dtype for tensor in safetensors(tmp_path / "verl").values()} == {torch.bfloat16}
    result = merge_check.check(actor, rollouts, tmp_path / "verl", workdir=tmp_path / "work", roundtrip=False)
    assert result.max_diff["fp32"] > merge_check.BOUNDS["fp32"], result.lines()
    assert result.max_diff["bf16"] <= merge_check.BOUNDS["bf16"], result.lines()


def test_two_ranks_resume_and_merge_to_the_same_model(tiny_model, tmp_path):
    """A checkpoint of two gloo ranks (the embedding's 385 rows split unevenly, 193 + 192) resumed on two ranks."""
    actor = merge_check.train_and_save(tiny_model, tmp_path / "actor", world_size=2, steps=1)
    result = merge_check.check(actor, write_rollouts(tmp_path / "1.jsonl"), dtypes=("fp32",), workdir=tmp_path / "w")
    assert result.world_size == 2
    assert result.problems() == [], result.lines()


def test_the_round_trip_comparison_finds_one_changed_optimizer_value(checkpoint, tmp_path):
    actor, _ = checkpoint
    copy = shutil.copytree(actor, tmp_path / "actor")
    assert merge_check.compare_checkpoints(actor, copy, 1)[1] == []
    optim = torch.load(copy / "optim_world_size_1_rank_0.pt", weights_only=False)
    local = optim["state"][3]["exp_avg"]._local_tensor
    local.view(-1)[0] = torch.nextafter(local.view(-1)[0], torch.tensor(math.inf))  # one fp32 ulp
    torch.save(optim, copy / "optim_world_size_1_rank_0.pt")
    counted, differences = merge_check.compare_checkpoints(actor, copy, 1)
    assert counted > 3 * 26
    assert len(differences) == 1 and differences[0].startswith("optim_world_size_1_rank_0.pt.state.3.exp_avg: "), \
        differences


def test_bad_input_is_one_line_naming_the_path(checkpoint, tmp_path):
    actor, rollouts = checkpoint
    with pytest.raises(merge_check.CheckInputError, match="no such checkpoint folder: /nonexistent/actor"):
        merge_check.check(Path("/nonexistent/actor"), rollouts)
    # a world size the files do not have
    wrong = shutil.copytree(actor, tmp_path / "actor")
    (wrong / "fsdp_config.json").write_text(json.dumps({"FSDP_version": 2, "world_size": 2}))
    with pytest.raises(merge_check.CheckInputError, match="says world size 2 but .* lacks model_world_size_2_rank_0"):
        merge_check.checkpoint_world_size(wrong)
    with pytest.raises(merge_check.CheckInputError, match=f"no such rollouts file: {tmp_path}/none.jsonl"):
        merge_check.read_rollouts(tmp_path / "none.jsonl")
    done = subprocess.run([sys.executable, "-m", "recipe.drivers.merge_check", "--checkpoint", str(tmp_path / "gone"),
                           "--rollouts", str(rollouts)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == f"merge_check: no such checkpoint folder: {tmp_path / 'gone'}"
