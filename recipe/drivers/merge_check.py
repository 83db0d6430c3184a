"""The merged model is the trained model: a Hugging Face folder merged from an actor checkpoint gives the log-probs of
the actor that saved it, and the actor resumed from that checkpoint is the one that saved it.

    python -m recipe.drivers.merge_check --checkpoint <ckpt>/global_step_N/actor --rollouts <run>/rollouts/N.jsonl
        [--merged DIR] [--dtype fp32|bf16 ...] [--device cpu|cuda] [--no-roundtrip]

1. the actor: the checkpoint's FSDP2 shards loaded as verl loads them to resume (`FSDPCheckpointManager` into a model
   wrapped by verl's `apply_fsdp2`, with verl's optimizer and lr scheduler), one process per rank of the checkpoint's
   world size (gloo; nccl beside it on CUDA), under a deadline;
2. the round trip: that resumed actor saved again with the same manager, every tensor of every file (model shards,
   optimizer state, lr scheduler and RNG state) compared bitwise with the original's;
3. the merged folder (default: `recipe.drivers.hf_merge`, verl's merger keeping the checkpoint's dtype) loaded with
   transformers;
4. the prompt + response texts a run dumped (`trainer.rollout_data_dir`) tokenized with the checkpoint's tokenizer,
   and each response token's log-prob from both sides, the same token ids on both; max |delta| against the bound of
   the compute dtype: `fp32` both sides in fp32, `bf16` both sides with bf16 parameters (the actor through FSDP2's
   mixed precision as verl computes, the merged model's parameters cast the same way).

Exit status: 0 when every check holds, 1 when one fails, 2 when the input is unusable (one line naming the path).
`train_and_save` writes a real checkpoint without a training run (FSDP2, verl's optimizer and manager) for the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# max |log p_merged - log p_actor| over response tokens, nats. Both sides hold the same weights (bf16: rounded from the
# same fp32 ones identically) and run the same kernels, so only round-off from another thread split may differ; 0 was
# measured in both on 1 and 2 ranks (docs/evaluation.md). verl's bf16-rounding merger gives ~2e-3 in fp32, and one
# matrix scaled by 1 + 1e-3 gives 1.6e-4 in fp32, 2e-3 in bf16: both bounds catch it.
BOUNDS = {"fp32": 1e-5, "bf16": 1e-3}
DTYPES = {"fp32": "float32", "bf16": "bfloat16"}
DEADLINE_S = 600.0


class CheckInputError(ValueError):
    """Unusable input: the message is one line that names the path."""


@dataclass
class MergeCheck:
    """What `check` measured: max |delta log-prob| per compute dtype, and the round trip's differences."""

    world_size: int
    rollouts: int
    tokens: int
    max_diff: dict[str, float] = field(default_factory=dict)
    roundtrip_tensors: int = 0
    roundtrip_differences: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        found = [f"{dtype}: max |delta log-prob| {diff:.3g} > {BOUNDS[dtype]:g}: the merged model is not the trained "
                 f"model" for dtype, diff in self.max_diff.items() if not diff <= BOUNDS[dtype]]
        found += [f"resume round trip: {difference}" for difference in self.roundtrip_differences[:5]]
        if len(self.roundtrip_differences) > 5:
            found.append(f"resume round trip: {len(self.roundtrip_differences) - 5} more differences")
        return found

    def lines(self) -> list[str]:
        lines = [f"{dtype}: max |delta log-prob| {diff:.3g} over {self.tokens} response tokens of {self.rollouts} "
                 f"rollouts, world size {self.world_size} (bound {BOUNDS[dtype]:g}): "
                 + ("ok" if diff <= BOUNDS[dtype] else "FAILED") for dtype, diff in self.max_diff.items()]
        if self.roundtrip_tensors:
            lines.append(f"resume round trip: {self.roundtrip_tensors} tensors "
                         + ("bitwise equal" if not self.roundtrip_differences
                            else f"compared, {len(self.roundtrip_differences)} DIFFERENT"))
        return lines


# --- input -----------------------------------------------------------------------------------------------------------

def checkpoint_world_size(actor: Path) -> int:
    """The world size the actor checkpoint was saved with; every rank's model, optimizer and extra-state file must be
    there (the names verl's manager loads)."""
    actor = Path(actor)
    config = actor / "fsdp_config.json"
    if not actor.is_dir():
        raise CheckInputError(f"no such checkpoint folder: {actor}")
    if not config.is_file():
        raise CheckInputError(f"not an FSDP actor checkpoint (no fsdp_config.json): {actor}")
    world_size = int(json.loads(config.read_text())["world_size"])
    missing = [f"{kind}_world_size_{world_size}_rank_{rank}.pt" for rank in range(world_size)
               for kind in ("model", "optim", "extra_state")
               if not (actor / f"{kind}_world_size_{world_size}_rank_{rank}.pt").is_file()]
    if missing:
        raise CheckInputError(f"{config} says world size {world_size} but {actor} lacks {', '.join(missing)}")
    if not (actor / "huggingface" / "config.json").is_file():
        raise CheckInputError(f"no model config (huggingface/config.json) in {actor}")
    return world_size


def read_rollouts(path: Path) -> list[tuple[str, str]]:
    """(prompt, response) texts of a `trainer.rollout_data_dir` dump (`<step>.jsonl`: input, output, ...)."""
    path = Path(path)
    if not path.is_file():
        raise CheckInputError(f"no such rollouts file: {path}")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows or any("input" not in row or "output" not in row for row in rows):
        raise CheckInputError(f"not a rollout dump (rows with input and output): {path}")
    return [(row["input"], row["output"]) for row in rows]


def tokenize(tokenizer, rollouts: list[tuple[str, str]], max_length: int) -> list[tuple[list[int], int]]:
    """(token ids, prompt length) per rollout with a non-empty response. The dump holds decoded text, so these ids
    are the texts' tokenization, not necessarily the sampled ids; both sides score the same ids, which is the point."""
    sequences = []
    for prompt, response in rollouts:
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
        ids = (prompt_ids + response_ids)[:max_length]
        if response_ids and len(ids) > max(1, len(prompt_ids)):
            sequences.append((ids, max(1, len(prompt_ids))))
    if not sequences:
        raise CheckInputError("no rollout with a response to score")
    return sequences


# --- log-probs -------------------------------------------------------------------------------------------------------

def response_log_probs(model, sequences: list[tuple[list[int], int]], device: str) -> list:
    """log p(token | prefix) of each sequence's response tokens (fp32, on the CPU), one sequence per forward (no
    padding, so nothing but the weights and the kernels can differ between two models)."""
    import torch

    out = []
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")  # no TF32 on either side, whatever the process set before
    try:
        with torch.no_grad():
            for ids, prompt_len in sequences:
                tokens = torch.tensor([ids], device=device)
                logits = model(input_ids=tokens).logits[0].float()
                log_probs = torch.log_softmax(logits[:-1], dim=-1).gather(-1, tokens[0, 1:, None])[:, 0]
                out.append(log_probs[prompt_len - 1:].cpu())
    finally:
        torch.set_float32_matmul_precision(precision)
    return out


def merged_log_probs(merged: Path, sequences, dtype: str, device: str) -> list:
    """The merged folder's log-probs, loaded as an evaluation loads it, its parameters in `dtype` (buffers such as
    rotary frequencies stay fp32, as FSDP2's mixed precision leaves them on the actor's side)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32, attn_implementation="sdpa").to(device)
    for parameter in model.parameters():
        parameter.data = parameter.data.to(getattr(torch, DTYPES[dtype]))
    model.eval()
    return response_log_probs(model, sequences, device)


def resume_actor(actor: Path, device: str, dtype: str):
    """(model, checkpoint manager) of the actor checkpoint loaded as verl's FSDP2 engine resumes: the model from its
    config, wrapped by verl's `apply_fsdp2` over all ranks with `dtype` compute (FSDP2 mixed precision, fp32 master
    weights), verl's optimizer and lr scheduler, then `FSDPCheckpointManager.load_checkpoint`. In a process group."""
    import torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from verl.utils.checkpoint.fsdp_checkpoint_manager import FSDPCheckpointManager
    from verl.utils.fsdp_utils import apply_fsdp2
    from verl.utils.torch_functional import get_constant_schedule_with_warmup
    from verl.workers.config.optimizer import FSDPOptimizerConfig, build_optimizer

    hf = Path(actor) / "huggingface"
    config = AutoConfig.from_pretrained(hf)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="sdpa")
    mesh = init_device_mesh(device, (torch.distributed.get_world_size(),), mesh_dim_names=("fsdp",))
    compute = getattr(torch, DTYPES[dtype])
    apply_fsdp2(model, {"mesh": mesh, "offload_policy": None, "reshard_after_forward": True,
                        "mp_policy": MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=torch.float32,
                                                          cast_forward_inputs=True)}, {})
    # lr 0 and a constant schedule: the optimizer's hyper-parameters and the scheduler's state come from the checkpoint
    optimizer = build_optimizer(model.parameters(), FSDPOptimizerConfig(lr=0.0))
    scheduler = get_constant_schedule_with_warmup(optimizer, num_warmup_steps=0)
    manager = FSDPCheckpointManager(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                    processing_class=AutoTokenizer.from_pretrained(hf))
    manager.load_checkpoint(str(actor))
    model.eval()
    return model, manager


def _init_group(rank: int, world_size: int, port: int, device: str) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    if device == "cuda":
        torch.cuda.set_device(rank)
        backend = "cpu:gloo,cuda:nccl"  # gloo for verl's CPU-side barriers, nccl for the shards
    else:
        backend = "gloo"
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    dist.init_process_group(backend, rank=rank, world_size=world_size)


def _resumed_rank(rank: int, world_size: int, port: int, job: dict) -> None:
    """One rank of the resumed actor: resume, save again (first dtype only), score the sequences per dtype."""
    import torch
    import torch.distributed as dist

    _init_group(rank, world_size, port, job["device"])
    try:
        results = {}
        for index, dtype in enumerate(job["dtypes"]):
            model, manager = resume_actor(Path(job["actor"]), job["device"], dtype)
            if index == 0 and job["resave"]:
                manager.save_checkpoint(job["resave"], global_step=0)
            results[dtype] = response_log_probs(model, job["sequences"], job["device"])
            del model, manager
        if rank == 0:
            torch.save(results, job["out"])
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(target, world_size: int, job: dict, deadline_s: float, what: str) -> None:
    """`target(rank, world_size, port, job)` in `world_size` spawned processes; every one killed past `deadline_s`
    (a rank that dies leaves the others waiting in a collective: this is what keeps a failure from hanging)."""
    import torch.multiprocessing as mp

    context = mp.start_processes(target, args=(world_size, _free_port(), job), nprocs=world_size, join=False,
                                 start_method="spawn")
    deadline = time.monotonic() + deadline_s
    try:
        while not context.join(timeout=2):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} ({world_size} ranks) did not finish in {deadline_s:.0f} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
                process.join(10)


def actor_log_probs(actor: Path, sequences, dtypes: list[str], device: str, workdir: Path, *, resave: Path | None,
                    world_size: int, deadline_s: float = DEADLINE_S) -> dict[str, list]:
    """{dtype: log-probs} of the resumed actor, from `world_size` spawned ranks; with `resave`, saved there again."""
    import torch

    out = Path(workdir) / "actor_log_probs.pt"
    job = {"actor": str(actor), "sequences": sequences, "dtypes": list(dtypes), "device": device, "out": str(out),
           "resave": str(resave) if resave else None}
    spawn(_resumed_rank, world_size, job, deadline_s, f"the resumed actor of {actor}")
    return torch.load(out)


def _training_rank(rank: int, world_size: int, port: int, job: dict) -> None:
    """One rank of `train_and_save`."""
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from verl.utils.checkpoint.fsdp_checkpoint_manager import FSDPCheckpointManager
    from verl.utils.fsdp_utils import apply_fsdp2
    from verl.utils.torch_functional import get_constant_schedule_with_warmup
    from verl.workers.config.optimizer import FSDPOptimizerConfig, build_optimizer

    device = job["device"]
    _init_group(rank, world_size, port, device)
    try:
        model = AutoModelForCausalLM.from_pretrained(job["model"], dtype=torch.float32,
                                                     attn_implementation="sdpa").to(device)
        mesh = init_device_mesh(device, (world_size,), mesh_dim_names=("fsdp",))
        apply_fsdp2(model, {"mesh": mesh, "offload_policy": None, "reshard_after_forward": True,
                            "mp_policy": MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32,
                                                              cast_forward_inputs=True)}, {})
        optimizer = build_optimizer(model.parameters(), FSDPOptimizerConfig(lr=job["lr"]))
        scheduler = get_constant_schedule_with_warmup(optimizer, num_warmup_steps=0)
        generator = torch.Generator().manual_seed(job["seed"] + rank)
        for _ in range(job["steps"]):
            tokens = torch.randint(0, model.config.vocab_size, (2, 16), generator=generator).to(device)
            model(input_ids=tokens, labels=tokens).loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        manager = FSDPCheckpointManager(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                        processing_class=AutoTokenizer.from_pretrained(job["model"]))
        manager.save_checkpoint(job["actor"], global_step=job["steps"])
    finally:
        dist.destroy_process_group()


def train_and_save(model: Path, actor: Path, *, world_size: int = 1, steps: int = 2, lr: float = 1e-3, seed: int = 0,
                   device: str = "cpu", deadline_s: float = DEADLINE_S) -> Path:
    """A real actor checkpoint without a training run: the Hugging Face model `model` wrapped by verl's `apply_fsdp2`
    on `world_size` gloo ranks, `steps` AdamW steps of verl's optimizer on random tokens (so the weights and the
    optimizer state are not the initial ones), saved to `actor` by verl's `FSDPCheckpointManager`."""
    job = {"model": str(model), "actor": str(actor), "steps": steps, "lr": lr, "seed": seed, "device": device}
    spawn(_training_rank, world_size, job, deadline_s, f"the training of {model}")
    return Path(actor)


# --- the round trip --------------------------------------------------------------------------------------------------

def _differences(a, b, where: str) -> tuple[int, list[str]]:
    """(tensors compared, differences) between two loaded checkpoint objects, tensors bitwise."""
    import numpy as np
    import torch
    from torch.distributed.tensor import DTensor

    if isinstance(a, DTensor) or isinstance(b, DTensor):
        if not (isinstance(a, DTensor) and isinstance(b, DTensor)):
            return 1, [f"{where}: a DTensor on one side only"]
        if (tuple(a.placements), a.shape) != (tuple(b.placements), b.shape):
            return 1, [f"{where}: sharding {tuple(a.placements)} {tuple(a.shape)} vs {tuple(b.placements)} "
                       f"{tuple(b.shape)}"]
        return _differences(a.to_local(), b.to_local(), where)
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return 1, [f"{where}: a tensor on one side only"]
        if (a.dtype, a.shape) != (b.dtype, b.shape):
            return 1, [f"{where}: {a.dtype} {tuple(a.shape)} vs {b.dtype} {tuple(b.shape)}"]
        same = torch.equal(a.detach().cpu().contiguous().view(-1).view(torch.uint8),
                           b.detach().cpu().contiguous().view(-1).view(torch.uint8))
        if same:
            return 1, []
        delta = (a.detach().cpu().double() - b.detach().cpu().double()).abs().max().item()
        return 1, [f"{where}: values differ (max |delta| {delta:.3g})"]
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return 0, [f"{where}: keys {sorted(map(str, set(a) ^ set(b)))} on one side only"]
        counted, found = 0, []
        for key in a:
            n, diffs = _differences(a[key], b[key], f"{where}.{key}")
            counted, found = counted + n, found + diffs
        return counted, found
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return 0, [f"{where}: {len(a)} vs {len(b)} entries"]
        counted, found = 0, []
        for index, (x, y) in enumerate(zip(a, b)):
            n, diffs = _differences(x, y, f"{where}[{index}]")
            counted, found = counted + n, found + diffs
        return counted, found
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        same = isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
        return 1, [] if same else [f"{where}: arrays differ"]
    return 0, [] if a == b else [f"{where}: {a!r} vs {b!r}"]


def compare_checkpoints(original: Path, resaved: Path, world_size: int) -> tuple[int, list[str]]:
    """(tensors compared, differences) between two actor checkpoints of `world_size` ranks, every file verl's manager
    writes per rank (model shards, optimizer state, lr scheduler and RNG state), tensors bitwise."""
    import torch

    counted, found = 0, []
    for rank in range(world_size):
        for kind in ("model", "optim", "extra_state"):
            name = f"{kind}_world_size_{world_size}_rank_{rank}.pt"
            if not (Path(resaved) / name).is_file():
                found.append(f"{name}: not written by the resumed actor")
                continue
            a, b = (torch.load(Path(folder) / name, map_location="cpu", weights_only=False)
                    for folder in (original, resaved))
            n, diffs = _differences(a, b, name)
            counted, found = counted + n, found + diffs
    return counted, found


# --- the check -------------------------------------------------------------------------------------------------------

def check(actor: Path, rollouts: Path, merged: Path | None = None, *, dtypes=("fp32", "bf16"), device: str = "cpu",
          roundtrip: bool = True, workdir: Path | None = None, deadline_s: float = DEADLINE_S) -> MergeCheck:
    """Compare the merged folder (default: `recipe.drivers.hf_merge` of `actor` into `workdir`) with the resumed actor
    on the responses of `rollouts`; with `roundtrip`, the resumed actor saved again and compared file by file."""
    actor = Path(actor)
    world_size = checkpoint_world_size(actor)
    texts = read_rollouts(rollouts)
    if merged is not None and not (Path(merged) / "config.json").is_file():
        raise CheckInputError(f"not a Hugging Face model folder (no config.json): {merged}")
    unknown = [dtype for dtype in dtypes if dtype not in BOUNDS]
    if unknown:
        raise CheckInputError(f"unknown dtype {unknown}: choose from {sorted(BOUNDS)}")
    import torch
    from transformers import AutoConfig, AutoTokenizer

    workdir = Path(workdir or tempfile.mkdtemp(prefix="merge-check-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if merged is None:
        from recipe.drivers.hf_merge import merge

        merged = merge(actor, workdir / "merged")
    hf = actor / "huggingface"
    max_length = getattr(AutoConfig.from_pretrained(hf), "max_position_embeddings", 4096)
    sequences = tokenize(AutoTokenizer.from_pretrained(hf), texts, max_length)
    resave = workdir / "resaved" if roundtrip else None
    trained = actor_log_probs(actor, sequences, list(dtypes), device, workdir, resave=resave, world_size=world_size,
                              deadline_s=deadline_s)
    result = MergeCheck(world_size=world_size, rollouts=len(sequences),
                        tokens=sum(len(ids) - prompt_len for ids, prompt_len in sequences))
    for dtype in dtypes:
        ours = merged_log_probs(Path(merged), sequences, dtype, device)
        result.max_diff[dtype] = max((a - b).abs().max().item() for a, b in zip(ours, trained[dtype]))
        if not all(torch.isfinite(t).all() for t in ours + trained[dtype]):
            result.max_diff[dtype] = float("inf")
    if roundtrip:
        result.roundtrip_tensors, result.roundtrip_differences = compare_checkpoints(actor, resave, world_size)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="the actor checkpoint: <ckpt>/global_step_N/actor")
    parser.add_argument("--rollouts", type=Path, required=True, help="that step's rollout dump: <run>/rollouts/N.jsonl")
    parser.add_argument("--merged", type=Path, default=None,
                        help="the merged Hugging Face folder to check (default: recipe.drivers.hf_merge into a "
                             "temporary folder)")
    parser.add_argument("--dtype", choices=sorted(BOUNDS), action="append", default=None,
                        help="compute dtype of both sides; repeat for several (default: fp32 and bf16)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when torch sees one")
    parser.add_argument("--no-roundtrip", action="store_true", help="skip the resumed actor's save-again comparison")
    parser.add_argument("--deadline-s", type=float, default=DEADLINE_S, help="for the resumed actor's ranks")
    args = parser.parse_args(argv)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        result = check(args.checkpoint, args.rollouts, args.merged, dtypes=tuple(args.dtype or ("fp32", "bf16")),
                       device=device, roundtrip=not args.no_roundtrip, deadline_s=args.deadline_s)
    except CheckInputError as error:
        print(f"merge_check: {error}", file=sys.stderr)
        return 2
    for line in result.lines():
        print(line, flush=True)
    problems = result.problems()
    print("merge check: " + ("the merged model is the trained model" if not problems
                             else f"FAILED: {'; '.join(problems)}"), flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
