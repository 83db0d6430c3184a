"""SENT's actor loss for verl 0.9.1's engine workers.

`sent_actor_loss` is the full loss function installed with `actor_rollout_wg.set_loss_fn` (see
`recipe.sent.trainer`). It runs verl's own `ppo_loss` unchanged (base policy loss, entropy bonus, uniform
KL, metrics) with `loss_mode=sent`, whose registered policy loss computes the configured base loss and,
beside it, SENT's token-weighted KL term:

    loss = ppo_loss(base_loss_mode, entropy_coeff, use_kl_loss ...) + agg_loss(beta_t * KL_t)

A registered policy loss only sees (old_log_prob, log_prob, advantages, response_mask); the fields it
lacks (old-policy entropy, ref_log_prob, the step-level beta) are handed over through a context variable
set for the duration of one `sent_actor_loss` call, so verl's padding, normalisation and metric code is
reused rather than copied.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from tensordict import TensorDict
from verl.trainer.ppo.core_algos import agg_loss, get_policy_loss_fn, kl_penalty, register_policy_loss
from verl.utils.metric import AggregationType, Metric
from verl.workers.utils.losses import ppo_loss
from verl.workers.utils.padding import no_padding_2_padding

from verl_ext.token_entropy import SELECTION_PARAMETERS, SentSelection, masked_quantiles, select_sent_tokens

# A penalised token counts as off-policy when |log pi - log pi_old| exceeds this (recompute noise is below it).
OFF_POLICY_TOL = 1e-5
# Field carrying the step-level beta from the trainer to the loss (global selection scope).
BETA_FIELD = "sent_beta"
ENTROPY_QUANTILES = (0.1, 0.5, 0.9)


@dataclass
class _SentCall:
    """What one `sent_actor_loss` call hands to the registered `sent` policy loss, and gets back."""

    extra: TensorDict  # padded: entropy / ref_log_prob / sent_beta, whichever the micro-batch carries
    current_entropy: Optional[torch.Tensor]  # padded current-policy entropy, when the engine computed it
    kl_term: Optional[torch.Tensor] = None
    metrics: dict[str, Any] = field(default_factory=dict)


_ACTIVE_CALL: contextvars.ContextVar[Optional[_SentCall]] = contextvars.ContextVar("sent_actor_loss", default=None)


@register_policy_loss("unclipped")
def compute_policy_loss_unclipped(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    config=None,
    rollout_is_weights: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """-A * ratio without a trust region: the surrogate of KL-Cov and of SENT's released code.

    Unlike verl's `kl_cov` the log-ratio is clamped to [-20, 20] before `exp`, as the vanilla loss does.
    """
    log_ratio = torch.clamp(log_prob - old_log_prob, min=-20.0, max=20.0)
    per_token = -advantages * torch.exp(log_ratio)
    if rollout_is_weights is not None:
        per_token = per_token * rollout_is_weights
    loss = agg_loss(loss_mat=per_token, loss_mask=response_mask, loss_agg_mode=loss_agg_mode, **config.global_batch_info)
    mask = response_mask.float()
    ppo_kl = -(log_ratio * mask).sum() / mask.sum().clamp(min=1)
    return loss, {"actor/ppo_kl": ppo_kl.detach()}


@register_policy_loss("sent")
def compute_policy_loss_sent(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    config=None,
    rollout_is_weights: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The base policy loss; SENT's KL term is computed here too and returned through `sent_actor_loss`."""
    call = _ACTIVE_CALL.get()
    if call is None:
        raise RuntimeError(
            "policy_loss.loss_mode=sent needs SENT's actor loss, which sees token entropy and ref_log_prob: run "
            "`python -m recipe.sent.main_sent` (trainer.v1.trainer_mode=sent_sync installs it). verl's default "
            "ppo_loss cannot compute it."
        )
    policy_loss_cfg = config.policy_loss
    base_loss, base_metrics = get_policy_loss_fn(policy_loss_cfg.base_loss_mode)(
        old_log_prob=old_log_prob,
        log_prob=log_prob,
        advantages=advantages,
        response_mask=response_mask,
        loss_agg_mode=loss_agg_mode,
        config=config,
        rollout_is_weights=rollout_is_weights,
    )

    if policy_loss_cfg.selection_scope == "global":
        if BETA_FIELD not in call.extra.keys():
            raise KeyError(
                f"selection_scope=global needs the per-token `{BETA_FIELD}` that SentSyncTrainer writes before the "
                "actor update; it is missing from the micro-batch (is trainer.v1.trainer_mode=sent_sync?)"
            )
        beta = call.extra[BETA_FIELD].to(log_prob.dtype)
        selection = None
    else:
        # KL-Cov / release behaviour: select inside this micro-batch, from the current policy.
        entropy = call.current_entropy if call.current_entropy is not None else call.extra.get("entropy", None)
        if entropy is None:
            raise KeyError(
                "selection_scope=micro_batch needs token entropy: neither the model output nor the micro-batch "
                "field `entropy` is present (set actor.calculate_entropy=True)"
            )
        selection = select_sent_tokens(
            entropy.detach(), log_prob.detach(), advantages, response_mask, **selection_kwargs(policy_loss_cfg)
        )
        beta = selection.beta.to(log_prob.dtype)

    kl = _token_kl(log_prob, old_log_prob, call.extra, policy_loss_cfg)
    call.kl_term = agg_loss(
        loss_mat=beta * kl, loss_mask=response_mask, loss_agg_mode=loss_agg_mode, **config.global_batch_info
    )
    call.metrics = _loss_metrics(beta, kl, log_prob, old_log_prob, response_mask)
    if selection is not None:
        call.metrics.update(selection_metrics(selection, entropy, response_mask))
    return base_loss, base_metrics


def sent_actor_loss(config, model_output, data: TensorDict, dp_group=None):
    """Full actor loss (engine contract: `loss_fn(config, model_output, data, dp_group) -> (loss, metrics)`)."""
    if config.policy_loss.loss_mode != "sent":
        raise ValueError(f"sent_actor_loss needs policy_loss.loss_mode=sent, got {config.policy_loss.loss_mode!r}")
    policy_loss_cfg = config.policy_loss
    if policy_loss_cfg.kl_target == "ref" and "ref_log_prob" not in data.keys():
        raise KeyError(
            "kl_target=ref needs `ref_log_prob` in the batch: set actor_rollout_ref.actor.use_kl_loss=True (it "
            "turns the reference policy on; kl_loss_coef=0 keeps verl's uniform KL off) or use kl_target=old"
        )
    # Pad only what this configuration reads: this runs for every micro-batch.
    current_entropy = None
    wanted = ["ref_log_prob"] if policy_loss_cfg.kl_target == "ref" else []
    if policy_loss_cfg.selection_scope == "global":
        wanted.append(BETA_FIELD)
    elif model_output.get("entropy", None) is not None:
        current_entropy = no_padding_2_padding(model_output["entropy"], data)
    else:
        wanted.append("entropy")  # old-policy entropy, when the engine did not compute the current one
    extra_fields = [key for key in wanted if key in data.keys()]
    extra = data.select(*extra_fields).to_padded_tensor() if extra_fields else TensorDict({}, batch_size=[])

    call = _SentCall(extra=extra, current_entropy=current_entropy)
    token = _ACTIVE_CALL.set(call)
    try:
        loss, metrics = ppo_loss(config, model_output, data, dp_group)
    finally:
        _ACTIVE_CALL.reset(token)

    aggregation = _loss_metric_aggregation(config, data)
    metrics["sent/kl_term"] = Metric(value=call.kl_term.detach(), aggregation=aggregation)
    metrics.update(Metric.from_dict(call.metrics, aggregation=AggregationType.MEAN))
    return loss + call.kl_term, metrics


def selection_metrics(selection: SentSelection, entropy: torch.Tensor, response_mask: torch.Tensor) -> dict:
    """Step- or micro-batch-level statistics of the selection (scalars as 0-d tensors)."""
    valid = response_mask != 0
    num_valid = selection.num_valid.clamp(min=1).float()
    p10, p50, p90 = masked_quantiles(entropy, valid, ENTROPY_QUANTILES)
    return {
        "sent/low_entropy_frac": selection.low_entropy.sum() / num_valid,
        "sent/high_cov_frac": selection.high_cov.sum() / selection.low_entropy.sum().clamp(min=1).float(),  # of T_low
        "sent/penalised_frac": (selection.beta > 0).sum() / num_valid,
        "sent/entropy_cut": selection.entropy_cut,
        "sent/cov_cut": selection.cov_cut,
        "sent/entropy_p10": p10,
        "sent/entropy_p50": p50,
        "sent/entropy_p90": p90,
    }


def selection_kwargs(policy_loss_cfg) -> dict:
    """Keyword arguments of `verl_ext.token_entropy.sent_token_weights` taken from a SentPolicyLossConfig."""
    return {name: getattr(policy_loss_cfg, name) for name in SELECTION_PARAMETERS}


def _token_kl(log_prob, old_log_prob, extra: TensorDict, policy_loss_cfg) -> torch.Tensor:
    if policy_loss_cfg.kl_target == "old":
        return torch.clamp(log_prob - old_log_prob, min=-20.0, max=20.0).abs()
    ref_log_prob = extra["ref_log_prob"]
    if ref_log_prob.shape != log_prob.shape:
        raise ValueError(f"ref_log_prob has shape {tuple(ref_log_prob.shape)}, log_prob {tuple(log_prob.shape)}")
    return kl_penalty(logprob=log_prob, ref_logprob=ref_log_prob, kl_penalty=policy_loss_cfg.kl_type)


def _loss_metrics(beta, kl, log_prob, old_log_prob, response_mask) -> dict:
    penalised = (beta > 0) & response_mask
    count = penalised.sum().clamp(min=1).float()
    off_policy = (log_prob.detach() - old_log_prob).abs() > OFF_POLICY_TOL
    return {
        "sent/penalised_kl_mean": (kl.detach() * penalised).sum() / count,
        "sent/penalised_off_policy_frac": (off_policy & penalised).sum() / count,
    }


def _loss_metric_aggregation(config, data) -> AggregationType:
    # Same rule as verl's ppo_loss: a loss normalised by global counts is a partial sum per micro-batch.
    if (
        data["dp_size"] > 1
        or data["batch_num_tokens"] is not None
        or data["global_batch_size"] is not None
        or config.loss_scale_factor is not None
    ):
        return AggregationType.SUM
    return AggregationType.MEAN
