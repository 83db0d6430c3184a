"""Speed of SENT's loss against verl's own losses, as ratios measured in one run.

1. Forward + backward of the full actor loss on (8, 4096) response tokens in the engine's layout (nested
   tensors in a TensorDict, as verl's FSDP engine hands them over): verl `ppo_loss` with `vanilla` and with
   `kl_cov`, and `sent_actor_loss` with the global scope (beta from the step) and the micro-batch scope.
   Target: SENT <= 1.5x vanilla.
2. The per-step global selection over 2048 x 2048 tokens (`select_sent_tokens`, plus the trainer's nested
   <-> padded conversions) against one vanilla (and one kl_cov) forward + backward over the same tokens.
   Target: selection <= 1x vanilla.

`--dtype bf16` rounds entropies and log-probs to bf16 (what a bf16 model hands over: many exact ties) and gives the
loss bf16 model log-probs; `--device cuda` runs everything on the GPU (timed with a device sync after each call) and
counts the host syncs of each variant (`verl_ext/host_syncs.py`, `torch.cuda.set_sync_debug_mode`). The trainer-side
step (nested <-> padded + metrics) runs on the CPU in the TaskRunner, so it is timed on the CPU only.

    python -m bench.bench_loss [--repeats 7] [--threads 1] [--device cpu|cuda] [--dtype fp32|bf16] [--write]
    (--write updates bench/RESULTS.md: block `loss` for cpu/fp32, `loss_<dtype>_<device>` otherwise)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
from tensordict import TensorDict
from verl.trainer.ppo.core_algos import get_policy_loss_fn
from verl.workers.utils.losses import ppo_loss

from bench.results import write_section
from recipe.sent.losses import BETA_FIELD, sent_actor_loss
from recipe.drivers.rollout_shaped import actor_config as actor_cfg
from recipe.drivers.rollout_shaped import as_bf16, engine_inputs, rollout_like
from recipe.sent.selection import step_sent_beta
from verl_ext.token_entropy import select_sent_tokens


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int,
                     device: str = "cpu") -> list[tuple[str, float, float]]:
    """(name, median, minimum) seconds per variant. The variants take turns within each repeat, so load from other
    processes on a shared machine falls on all of them alike; the minimum is the least-disturbed run. On a GPU each
    call is timed up to the device finishing it."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for fn in fns.values():
        fn()  # warm-up
    sync()
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync()
            samples[name].append(time.perf_counter() - start)
    return [(name, statistics.median(times), min(times)) for name, times in samples.items()]


def bench_actor_loss(repeats: int, device: str = "cpu", dtype: str = "fp32"):
    """(timing rows, {variant: function}) of the full actor loss, forward + backward."""
    td, values, offsets = engine_inputs(8, 4096)
    if dtype == "bf16":
        td, values = as_bf16(td, values)
    configs = {
        "verl vanilla (ppo_loss)": (ppo_loss, actor_cfg(loss_mode="vanilla")),
        "verl kl_cov (ppo_loss)": (ppo_loss, actor_cfg(loss_mode="kl_cov", kl_cov_ratio=0.002, ppo_kl_coef=1.0)),
        "SENT, global scope": (sent_actor_loss, actor_cfg(loss_mode="sent")),
        "SENT, micro-batch scope": (sent_actor_loss, actor_cfg(loss_mode="sent", selection_scope="micro_batch")),
        "SENT released preset": (sent_actor_loss, actor_cfg(
            loss_mode="sent", base_loss_mode="unclipped", kl_target="old", selection_scope="micro_batch",
            high_cov_fraction=0.0002, low_cov_fraction=0.0002)),
    }
    beta, _ = step_sent_beta(td.select("response_mask", "entropy", "old_log_probs", "advantages"),
                             configs["SENT, global scope"][1].policy_loss)
    td[BETA_FIELD] = beta[BETA_FIELD]  # the step selection runs on the CPU (TaskRunner), before the update
    td, values, offsets = td.to(device), values.to(device), offsets.to(device)

    def run(loss_fn):
        leaf = values.clone().requires_grad_(True)
        out = {"log_probs": torch.nested.nested_tensor_from_jagged(leaf, offsets=offsets)}
        loss, _ = loss_fn(model_output=out, data=td)
        loss.backward()

    variants = {name: partial(run, partial(fn, config=cfg)) for name, (fn, cfg) in configs.items()}
    return time_interleaved(variants, repeats, device), variants


def bench_global_selection(repeats: int, device: str = "cpu", dtype: str = "fp32"):
    """(timing rows, {variant: function}) of the selection against verl's vanilla and kl_cov policy losses."""
    rows = cols = 2048
    lengths, entropy, log_prob, old, _, adv, _ = rollout_like(rows, cols, seed=1)
    if dtype == "bf16":
        entropy, log_prob, old = entropy.bfloat16(), log_prob.bfloat16(), old.bfloat16().float()
    mask = torch.arange(cols).unsqueeze(0) < lengths.unsqueeze(1)
    policy = actor_cfg(loss_mode="sent").policy_loss
    on_device = [t.to(device) for t in (entropy, log_prob, old, adv, mask)]

    def verl_loss(mode, config):
        d_entropy, d_log_prob, d_old, d_adv, d_mask = on_device
        leaf = d_log_prob.clone().requires_grad_(True)
        loss, _ = get_policy_loss_fn(mode)(d_old, leaf, d_adv, d_mask, "token-mean", config)
        loss.backward()

    def selection():
        d_entropy, _, d_old, d_adv, d_mask = on_device
        select_sent_tokens(d_entropy, d_old, d_adv, d_mask, low_entropy_fraction=0.8, high_cov_fraction=0.002)

    nested = TensorDict({
        "response_mask": torch.nested.as_nested_tensor([mask[i, : lengths[i]].long() for i in range(rows)],
                                                        layout=torch.jagged),
        **{name: torch.nested.as_nested_tensor([t[i, : lengths[i]] for i in range(rows)], layout=torch.jagged)
           for name, t in (("entropy", entropy), ("old_log_probs", old), ("advantages", adv))},
    }, batch_size=[rows])

    variants = {
        "verl vanilla forward+backward (same tokens)": partial(verl_loss, "vanilla", actor_cfg(loss_mode="vanilla")),
        "verl kl_cov forward+backward (same tokens)": partial(verl_loss, "kl_cov", actor_cfg(
            loss_mode="kl_cov", kl_cov_ratio=0.002, ppo_kl_coef=1.0)),
        "SENT global selection (math)": selection,
    }
    if device == "cpu":  # the trainer's step: on the CPU in the TaskRunner, whatever the workers run on
        variants["SENT global selection + nested<->padded + metrics"] = lambda: step_sent_beta(nested, policy)
    return time_interleaved(variants, repeats, device), variants


def sync_table(variants: dict[str, Callable[[], object]]) -> str:
    """Host syncs per variant, by the code that asked for them (GPU only)."""
    from verl_ext.host_syncs import host_syncs

    lines = ["### Host syncs per call (`torch.cuda.set_sync_debug_mode`), by the code that asked", "",
             "| variant | syncs | where |", "|---|---:|---|"]
    for name, fn in variants.items():
        found = host_syncs(fn)
        where = ", ".join(f"{place} ({kind}) x{count}" for (place, kind), count in found.most_common()) or "-"
        lines.append(f"| {name} | {sum(found.values())} | {where} |")
    return "\n".join(lines)


def table(title: str, rows: list[tuple[str, float, float]], baseline: str) -> str:
    base_median, base_min = next((median, least) for name, median, least in rows if name == baseline)
    lines = [f"### {title}", "", "| variant | median time (ms) | ratio vs baseline | min time (ms) | ratio of minima |",
             "|---|---:|---:|---:|---:|"]
    for name, median, least in rows:
        lines.append(f"| {name} | {median * 1e3:.1f} | {median / base_median:.2f}x | {least * 1e3:.1f} | "
                     f"{least / base_min:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--write", action="store_true", help="write the tables into bench/RESULTS.md")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (1 keeps millisecond timings stable on a machine shared with other jobs)")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu",
                        help="auto: cuda when torch sees a GPU")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    args = parser.parse_args()
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load = os.getloadavg()[0]  # other work on a shared machine: say how busy it was
    loss_rows, loss_fns = bench_actor_loss(args.repeats, device, args.dtype)
    selection_rows, selection_fns = bench_global_selection(max(3, args.repeats // 2), device, args.dtype)
    where = (f"GPU {torch.cuda.get_device_name()}" if device == "cuda"
             else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads")
    parts = [
        (
            f"Machine: {where}, torch {torch.__version__}, {args.dtype}; median and minimum of {args.repeats} (loss) / "
            f"{max(3, args.repeats // 2)} (selection) interleaved runs after a warm-up; 1-min load average {load:.1f} "
            "at start."
        ),
        table(f"Actor loss forward + backward, (8, 4096) tokens, engine layout, {args.dtype} (target: SENT <= 1.5x "
              "vanilla)", loss_rows, "verl vanilla (ppo_loss)"),
        table(f"Per-step global selection, 2048 x 2048 tokens, {args.dtype} (target: <= 1x one vanilla "
              "forward+backward)", selection_rows, "verl vanilla forward+backward (same tokens)"),
    ]
    if device == "cuda":
        parts.append(sync_table({**loss_fns, **selection_fns}))
    report = "\n\n".join(parts)
    print(report)
    if args.write:
        write_section("loss" if (device, args.dtype) == ("cpu", "fp32") else f"loss_{args.dtype}_{device}", report)


if __name__ == "__main__":
    main()
