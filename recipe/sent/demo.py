"""The README's main-job command on embedded defaults (`make demo`), runnable on a CPU-only machine.

What exists so far runs end to end: the composed training config of the recipe, one SENT update on
rollout-shaped tokens in verl's engine layout (step-level selection, actor loss, backward) for the paper
preset and the released-code preset side by side, and the loss benchmark. It ends with the command that
trains on a GPU machine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from functools import partial
from pathlib import Path

import torch
from omegaconf import OmegaConf
from verl.utils import tensordict_utils as tu
from verl.utils.config import omega_conf_to_dataclass
from verl.utils.metric import reduce_metrics
from verl.utils.py_functional import append_to_dict

from recipe.sent.losses import BETA_FIELD, sent_actor_loss
from recipe.sent.main_sent import CONFIG_DIR
from recipe.sent.rollout_shaped import engine_inputs
from recipe.sent.selection import step_sent_beta

ROOT = Path(__file__).resolve().parents[2]
SHOWN = ["sent/low_entropy_frac", "sent/high_cov_frac", "sent/penalised_frac", "sent/entropy_cut", "sent/cov_cut",
         "sent/entropy_p10", "sent/entropy_p50", "sent/entropy_p90", "sent/kl_term", "sent/penalised_kl_mean",
         "sent/penalised_off_policy_frac", "actor/pg_loss", "kl_loss"]


def compose(preset: str):
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return hydra_compose(config_name="sent_trainer", overrides=[f"preset={preset}"])


def one_update(preset: str, sequences: int, length: int, micro_batches: int) -> dict:
    """Selection + loss + backward for one mini-batch, micro-batched as verl's engine does it."""
    cfg = compose(preset)
    OmegaConf.resolve(cfg)
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    data, values, offsets = engine_inputs(sequences, length, seed=0)
    metrics: dict = {}
    if actor.policy_loss.selection_scope == "global":
        beta, step_metrics = step_sent_beta(data.select("response_mask", "entropy", "old_log_probs", "advantages"),
                                            actor.policy_loss)
        data[BETA_FIELD] = beta[BETA_FIELD]
        metrics.update(step_metrics)
    leaf = values.clone().requires_grad_(True)
    seq_lens = offsets.diff()
    per_micro = sequences // micro_batches
    collected: dict = {}
    for index, micro in enumerate(tu.chunk_tensordict(data, micro_batches)):
        lo, hi = int(offsets[index * per_micro]), int(offsets[(index + 1) * per_micro])
        micro_offsets = torch.cat([torch.zeros(1, dtype=torch.long), seq_lens[index * per_micro:(index + 1) * per_micro].cumsum(0)])
        out = {"log_probs": torch.nested.nested_tensor_from_jagged(leaf[lo:hi], offsets=micro_offsets)}
        loss, micro_metrics = partial(sent_actor_loss, config=actor)(model_output=out, data=micro)
        loss.backward()
        append_to_dict(collected, micro_metrics)
    metrics.update(reduce_metrics(collected))
    metrics["grad_norm"] = float(leaf.grad.norm())
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=32, help="responses in the demo mini-batch")
    parser.add_argument("--length", type=int, default=1024, help="max response tokens")
    parser.add_argument("--micro-batches", type=int, default=8)
    parser.add_argument("--skip-bench", action="store_true")
    args = parser.parse_args()

    print("== 1/3  Composed training config (python -m recipe.sent.main_sent --cfg job) ==", flush=True)
    cfg = compose("sent")
    actor = cfg.actor_rollout_ref.actor
    print(OmegaConf.to_yaml(actor.policy_loss))
    print(f"use_kl_loss={actor.use_kl_loss} kl_loss_coef={actor.kl_loss_coef} data.shuffle={cfg.data.shuffle} "
          f"trainer.v1.trainer_mode={cfg.trainer.v1.trainer_mode}\n")

    print(f"== 2/3  One SENT update: {args.sequences} responses x <= {args.length} tokens, "
          f"{args.micro_batches} micro-batches ==", flush=True)
    results = {preset: one_update(preset, args.sequences, args.length, args.micro_batches)
               for preset in ("sent", "sent_released")}
    print(f"{'metric':34s} {'sent (paper, global)':>22s} {'sent_released (micro)':>22s}")
    for key in SHOWN + ["grad_norm"]:
        row = [results[p].get(key) for p in ("sent", "sent_released")]
        cells = ["-" if v is None else f"{v:.4g}" for v in row]
        print(f"{key:34s} {cells[0]:>22s} {cells[1]:>22s}")
    print("(sent_released selects inside each micro-batch: its penalised set is a handful of tokens per micro-batch;\n"
          " the paper preset selects once over the step. Selection metrics of the released preset are per micro-batch.)\n")

    if not args.skip_bench:
        print("== 3/3  Loss benchmark (ratios measured in this run) ==", flush=True)
        subprocess.run([sys.executable, "-m", "bench.bench_loss", "--repeats", "5"], cwd=ROOT, check=True)

    print("\nTo train on a GPU machine (pip install -e '.[gpu]'):\n"
          "  python -m recipe.sent.main_sent actor_rollout_ref.model.path=Qwen/Qwen2.5-Math-7B \\\n"
          "      data.train_files=<train.parquet> data.val_files=<val.parquet> trainer.n_gpus_per_node=8 \\\n"
          "      preset=sent            # or sent_released / grpo / kl_cov / clip_cov")


if __name__ == "__main__":
    main()
