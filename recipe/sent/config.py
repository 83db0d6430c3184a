"""Typed knobs of the SENT loss: `actor_rollout_ref.actor.policy_loss._target_` points here.

Hydra imports this module in every actor worker when it builds the actor config, which also registers
SENT's policy losses there (see `recipe.sent.losses`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from verl.workers.config.actor import PolicyLossConfig

import recipe.sent.losses  # noqa: F401  (registers loss_mode "sent" and "unclipped" in this process)

KL_TARGETS = ("ref", "old")
SELECTION_SCOPES = ("global", "micro_batch")


@dataclass
class SentPolicyLossConfig(PolicyLossConfig):
    """verl's `PolicyLossConfig` plus SENT's fields.

    Args:
        base_loss_mode: registered policy loss that SENT's KL term is added to (`vanilla` = clipped PPO/GRPO,
            `unclipped` = -A * ratio as in KL-Cov and the released code).
        low_entropy_fraction: T_low is exactly the k = max(1, floor(fraction * N)) lowest-entropy valid tokens,
            ties by position (ignored when `entropy_threshold` is set).
        entropy_threshold: T_low = tokens with H_t < threshold.
        high_cov_fraction: T_high is exactly the k' = max(1, floor(fraction * |T_low|)) highest-covariance tokens of
            T_low, ties by position (ignored when `cov_threshold` is set).
        cov_threshold: T_high = tokens of T_low with Cov_t > threshold.
        low_cov_fraction: released-code form: beta_low only on exactly the k'' = max(1, floor(fraction * |T_low|))
            lowest-covariance tokens of T_low minus T_high (fewer if fewer remain), ties by position.
        beta_high / beta_low: KL coefficients on T_high and on the rest of T_low.
        kl_target: `ref` = KL to the reference model (the paper), `old` = |log pi - log pi_old| (release, KL-Cov).
        kl_type: verl `kl_penalty` estimator for `kl_target=ref` (`low_var_kl` = k3, `kl`, `mse`, `abs`, `k3+`...).
        selection_scope: `global` = one selection per training step over the whole batch, from the old-policy
            entropy and log-probs; `micro_batch` = selection inside each micro-batch (KL-Cov / release behaviour).

    Exact counts, ties by position: of equal values the earlier valid token (row-major in the selection scope)
    wins, so the global selection is the same for any micro-batch or DP split. Not "ties included", because a
    step with all rewards equal (every Cov 0) then put all of T_low into T_high (4x the penalty exactly when the
    policy gradient is 0), and bf16-tied entropies made T_low every token; KL-Cov's `topk` also takes exact counts.
    """

    base_loss_mode: str = "vanilla"
    low_entropy_fraction: float = 0.8
    entropy_threshold: Optional[float] = None
    high_cov_fraction: float = 0.002
    cov_threshold: Optional[float] = None
    low_cov_fraction: Optional[float] = None
    beta_high: float = 0.2
    beta_low: float = 0.05
    kl_target: str = "ref"
    kl_type: str = "low_var_kl"
    selection_scope: str = "global"

    def __post_init__(self):
        super_post_init = getattr(super(), "__post_init__", None)
        if super_post_init is not None:
            super_post_init()
        if self.base_loss_mode == "sent":
            raise ValueError("policy_loss.base_loss_mode cannot be 'sent' (it is the loss SENT's term is added to)")
        if self.kl_target not in KL_TARGETS:
            raise ValueError(f"policy_loss.kl_target must be one of {KL_TARGETS}, got {self.kl_target!r}")
        if self.selection_scope not in SELECTION_SCOPES:
            raise ValueError(
                f"policy_loss.selection_scope must be one of {SELECTION_SCOPES}, got {self.selection_scope!r}"
            )
        for name in ("low_entropy_fraction", "high_cov_fraction", "low_cov_fraction"):
            value = getattr(self, name)
            if value is not None and not 0.0 < float(value) <= 1.0:
                raise ValueError(f"policy_loss.{name} must be in (0, 1], got {value!r}")
        for name in ("beta_high", "beta_low"):
            if float(getattr(self, name)) < 0:
                raise ValueError(f"policy_loss.{name} must be >= 0, got {getattr(self, name)!r}")
