"""Speed of SENT's loss against verl's own losses, as ratios measured in one run.

1. Forward + backward of the full actor loss on (8, 4096) response tokens in the engine's layout (nested
   tensors in a TensorDict, as verl's FSDP engine hands them over): verl `ppo_loss` with `vanilla` and with
   `kl_cov`, and `sent_actor_loss` with the global scope (beta from the step) and the micro-batch scope.
   Target: SENT <= 1.5x vanilla.
2. The per-step global selection over 2048 x 2048 tokens (`select_sent_tokens`, plus the trainer's nested
   <-> padded conversions) against one vanilla forward + backward over the same tokens.
   Target: selection <= 1x.

    python -m bench.bench_loss [--repeats 7] [--threads 1] [--write]     (--write updates bench/RESULTS.md)
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
from omegaconf import OmegaConf
from tensordict import TensorDict
from verl.trainer.ppo.core_algos import compute_policy_loss_vanilla
from verl.utils.config import omega_conf_to_dataclass
from verl.workers.utils.losses import ppo_loss

from bench.results import write_section
from recipe.sent.losses import BETA_FIELD, sent_actor_loss
from recipe.sent.rollout_shaped import engine_inputs, rollout_like
from recipe.sent.selection import step_sent_beta
from verl_ext.token_entropy import select_sent_tokens


def actor_cfg(**policy_loss):
    base = {
        "_target_": "verl.workers.config.FSDPActorConfig", "strategy": "fsdp", "ppo_mini_batch_size": 8,
        "ppo_micro_batch_size_per_gpu": 8, "rollout_n": 1, "use_kl_loss": True, "kl_loss_coef": 0.001,
        "kl_loss_type": "low_var_kl", "loss_agg_mode": "token-mean", "clip_ratio": 0.2,
        "policy_loss": {"_target_": "recipe.sent.config.SentPolicyLossConfig", **policy_loss},
    }
    return omega_conf_to_dataclass(OmegaConf.create(base))


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> list[tuple[str, float, float]]:
    """(name, median, minimum) seconds per variant. The variants take turns within each repeat, so load from other
    processes on a shared machine falls on all of them alike; the minimum is the least-disturbed run."""
    for fn in fns.values():
        fn()  # warm-up
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return [(name, statistics.median(times), min(times)) for name, times in samples.items()]


def bench_actor_loss(repeats: int) -> list[tuple[str, float, float]]:
    td, values, offsets = engine_inputs(8, 4096)
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
    td[BETA_FIELD] = beta[BETA_FIELD]

    def run(loss_fn):
        leaf = values.clone().requires_grad_(True)
        out = {"log_probs": torch.nested.nested_tensor_from_jagged(leaf, offsets=offsets)}
        loss, _ = loss_fn(model_output=out, data=td)
        loss.backward()

    variants = {name: partial(run, partial(fn, config=cfg)) for name, (fn, cfg) in configs.items()}
    return time_interleaved(variants, repeats)


def bench_global_selection(repeats: int) -> list[tuple[str, float, float]]:
    rows = cols = 2048
    lengths, entropy, log_prob, old, _, adv, _ = rollout_like(rows, cols, seed=1)
    mask = torch.arange(cols).unsqueeze(0) < lengths.unsqueeze(1)
    policy = actor_cfg(loss_mode="sent").policy_loss
    cfg = OmegaConf.create({"clip_ratio": 0.2, "clip_ratio_low": None, "clip_ratio_high": None, "clip_ratio_c": 3.0,
                            "global_batch_info": {}})

    def vanilla():
        leaf = log_prob.clone().requires_grad_(True)
        loss, _ = compute_policy_loss_vanilla(old, leaf, adv, mask, "token-mean", cfg)
        loss.backward()

    def selection():
        select_sent_tokens(entropy, old, adv, mask, low_entropy_fraction=0.8, high_cov_fraction=0.002)

    nested = TensorDict({
        "response_mask": torch.nested.as_nested_tensor([mask[i, : lengths[i]].long() for i in range(rows)],
                                                        layout=torch.jagged),
        **{name: torch.nested.as_nested_tensor([t[i, : lengths[i]] for i in range(rows)], layout=torch.jagged)
           for name, t in (("entropy", entropy), ("old_log_probs", old), ("advantages", adv))},
    }, batch_size=[rows])

    return time_interleaved({
        "verl vanilla forward+backward (same tokens)": vanilla,
        "SENT global selection (math)": selection,
        "SENT global selection + nested<->padded + metrics": lambda: step_sent_beta(nested, policy),
    }, repeats)


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
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load = os.getloadavg()[0]  # other work on a shared machine: say how busy it was
    loss_rows = bench_actor_loss(args.repeats)
    selection_rows = bench_global_selection(max(3, args.repeats // 2))
    report = "\n\n".join([
        (
            f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
            f"torch {torch.__version__}; median and minimum of {args.repeats} (loss) / {max(3, args.repeats // 2)} "
            f"(selection) interleaved runs after a warm-up; 1-min load average {load:.1f} at start."
        ),
        table("Actor loss forward + backward, (8, 4096) tokens, engine layout (target: SENT <= 1.5x vanilla)",
              loss_rows, "verl vanilla (ppo_loss)"),
        table("Per-step global selection, 2048 x 2048 tokens (target: <= 1x one vanilla forward+backward)",
              selection_rows, "verl vanilla forward+backward (same tokens)"),
    ])
    print(report)
    if args.write:
        write_section("loss", report)


if __name__ == "__main__":
    main()
