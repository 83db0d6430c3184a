"""A two-step SENT training of the tiny random Qwen2 through verl's real loop, and the checks its metrics must pass.

Shared by the CPU end-to-end tests (`tests/test_train_cpu_e2e.py`) and `make gpu-check` (`recipe/drivers/gpu_check.py`):
the same data, sizes, reward and checks on `machine=cpu` and `machine=gpu`.

The tiny model never solves a math problem, so the math reward would be -1 everywhere, every advantage 0 and every
gradient and KL term exactly 0. `digit_share_reward` gives varied scores instead.
"""

from __future__ import annotations

import math
from pathlib import Path

TRAIN_BATCH_SIZE, ROLLOUT_N = 4, 2
RESPONSES_PER_STEP = TRAIN_BATCH_SIZE * ROLLOUT_N
LOW_ENTROPY_FRACTION = 0.8  # preset=sent's
HIGH_COV_FRACTION = 0.1  # large enough that T_high is more than the one token the floor guarantees
# |p_rollout - p_trainer| averaged over tokens: with fp32 on both sides the weights synced into vLLM give the
# trainer's probabilities (5e-10 measured); bf16 rounds both sides (3e-5 measured on the CPU; the tiny model's token
# probabilities are ~2e-3), so its bound is a sanity bound only.
ROLLOUT_PROBS_DIFF_BOUND = {"fp32": 1e-5, "bf16": 5e-4}
# |actor/sent/kl_term| at step 1, where actor and reference hold the same weights: exactly 0 in fp32 (and in bf16 on
# the CPU); a bf16 GPU run may group the reference's and the actor's kernels differently (~(bf16 eps)^2 per token)
FIRST_STEP_KL_BOUND = {"fp32": 0.0, "bf16": 1e-6}
# compute in bf16, as verl's GPU default: FSDP2 mixed precision and vLLM's dtype (the CPU runs fp32 unless asked)
BF16_OVERRIDES = [
    f"actor_rollout_ref.{role}.fsdp_config.mixed_precision={{param_dtype:bf16,reduce_dtype:fp32,buffer_dtype:fp32}}"
    for role in ("actor", "ref")
] + ["actor_rollout_ref.rollout.dtype=bfloat16"]


def digit_share_reward(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> float:
    """Share of digits in the response: varied rewards from a model that cannot do math."""
    text = solution_str or ""
    return sum(c.isdigit() for c in text) / max(1, len(text))


def write_tiny_data(root: str | Path) -> tuple[Path, Path]:
    """Scored train data (synthetic SE, so the curriculum has two stages) and a 4-row validation set."""
    import pandas as pd

    from recipe.drivers.demo_data import demo_rows

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rows = demo_rows("train")
    for index, row in enumerate(rows):
        row["extra_info"]["semantic_entropy"] = (index % 6) / 5
    train, val = root / "train.parquet", root / "val.parquet"
    pd.DataFrame(rows).to_parquet(train)
    pd.DataFrame(demo_rows("test")[:4]).to_parquet(val)
    return train, val


def tiny_overrides(model: Path, train: Path, val: Path, out: Path, *extra: str, steps: int = 2,
                   machine: str = "cpu") -> list[str]:
    """Hydra overrides of `main_sent` for `steps` tiny steps; `extra` come last and win."""
    gpu = ["actor_rollout_ref.rollout.gpu_memory_utilization=0.3"] if machine == "gpu" else []
    return [
        f"machine={machine}", *gpu,
        f"actor_rollout_ref.model.path={model}",
        f"data.train_files={train}", f"data.val_files={val}",
        f"data.train_batch_size={TRAIN_BATCH_SIZE}", "data.max_prompt_length=64", "data.max_response_length=32",
        f"actor_rollout_ref.rollout.n={ROLLOUT_N}", "actor_rollout_ref.rollout.max_model_len=128",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=2",
        "actor_rollout_ref.actor.optim.lr=1e-3",
        f"actor_rollout_ref.actor.policy_loss.high_cov_fraction={HIGH_COV_FRACTION}",
        "reward.custom_reward_function.path=pkg://recipe.drivers.tiny_run",
        "reward.custom_reward_function.name=digit_share_reward",
        "trainer.n_gpus_per_node=1", f"trainer.total_training_steps={steps}", "trainer.val_before_train=false",
        "trainer.test_freq=-1", "trainer.save_freq=-1", f"trainer.default_local_dir={Path(out) / 'checkpoints'}",
        f"trainer.rollout_data_dir={Path(out) / 'rollouts'}",
        *extra,
    ]


def train_steps(entries: list[dict]) -> dict[int, dict]:
    """Training metrics per step from verl's file logger lines (validation-only lines carry no global step)."""
    return {entry["step"]: entry["data"] for entry in entries if "training/global_step" in entry["data"]}


def exact_fraction(fraction: float, count: int) -> tuple[int, float]:
    """(k, k / count) with k = max(1, floor(fraction * count)): the selection's exact set size."""
    k = max(1, math.floor(fraction * count))
    return k, k / count


def check_sent_steps(steps: dict[int, dict], *, precision: str = "fp32", expect_steps=(1, 2),
                     responses_per_step: int = RESPONSES_PER_STEP) -> list[str]:
    """What is wrong with a preset=sent tiny run's metrics (an empty list: nothing). Checks: the steps ran; exact
    selection counts (k of N valid tokens; bf16 entropies tie massively, and ties never change a count); the
    curriculum ran; rewards varied; rollout and trainer probabilities agree (the weights reached vLLM); the KL term is
    0 before the first update and positive after it."""
    problems = []
    if sorted(steps) != list(expect_steps):
        return [f"trained steps {sorted(steps)}, expected {list(expect_steps)}"]
    bound = ROLLOUT_PROBS_DIFF_BOUND[precision]
    for step, m in sorted(steps.items()):
        def bad(what):
            problems.append(f"step {step}: {what}")

        missing = [key for key in ("sent/low_entropy_frac", "sent/high_cov_frac", "response_length/mean",
                                   "actor/sent/kl_term", "training/rollout_probs_diff_mean", "curriculum/stage",
                                   "curriculum/mean_se", "critic/score/max", "critic/score/min") if key not in m]
        if missing:
            bad(f"metrics missing: {missing}")
            continue
        valid = round(m["response_length/mean"] * responses_per_step)
        k_low, low_frac = exact_fraction(LOW_ENTROPY_FRACTION, valid)
        _, high_frac = exact_fraction(HIGH_COV_FRACTION, k_low)
        if abs(m["sent/low_entropy_frac"] - low_frac) > 1e-6:
            bad(f"sent/low_entropy_frac={m['sent/low_entropy_frac']:.6f}, expected exactly {k_low}/{valid}")
        if abs(m["sent/high_cov_frac"] - high_frac) > 1e-6:
            bad(f"sent/high_cov_frac={m['sent/high_cov_frac']:.6f}, expected exactly {high_frac:.6f} of {k_low}")
        if m["curriculum/stage"] not in (1.0, 2.0):
            bad(f"curriculum/stage={m['curriculum/stage']}")
        if not m["critic/score/max"] > m["critic/score/min"]:
            bad("all rewards equal: no policy gradient")
        # the measured token sets (token_sets/*) are the applied selection under the step-level SENT loss
        if m.get("token_sets/applied") != 1.0 or abs(1.0 - m.get("token_sets/free_frac", -1.0)
                                                     - m.get("sent/penalised_frac", 0.0)) > 1e-6:
            bad(f"token_sets/applied={m.get('token_sets/applied')}, token_sets/free_frac="
                f"{m.get('token_sets/free_frac')} against sent/penalised_frac={m.get('sent/penalised_frac')}")
        if not m["training/rollout_probs_diff_mean"] < bound:
            bad(f"training/rollout_probs_diff_mean={m['training/rollout_probs_diff_mean']:.3g} >= {bound} "
                f"({precision}): rollout and trainer disagree (did the weights reach vLLM?)")
    first, last = steps[expect_steps[0]], steps[expect_steps[-1]]
    if "actor/sent/kl_term" in first and expect_steps[0] == 1 and abs(first["actor/sent/kl_term"]) > (
            FIRST_STEP_KL_BOUND[precision]):
        problems.append(f"step 1: actor/sent/kl_term={first['actor/sent/kl_term']}, expected 0 (actor == reference)"
                        + (f" up to {FIRST_STEP_KL_BOUND[precision]}" if FIRST_STEP_KL_BOUND[precision] else ""))
    if len(expect_steps) > 1 and not last.get("actor/sent/kl_term", 0.0) > 0.0:
        problems.append(f"step {expect_steps[-1]}: actor/sent/kl_term is not > 0 after an update")
    if len(expect_steps) > 1 and not last.get("actor/sent/penalised_kl_mean", 0.0) > 0.0:
        problems.append(f"step {expect_steps[-1]}: actor/sent/penalised_kl_mean is not > 0 after an update")
    return problems
