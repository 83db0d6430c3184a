"""Step-level (global) token selection: one selection per training step, before the actor update.

Input is the step batch as verl's V1 trainer stores it in TransferQueue (nested, response-only tensors:
`response_mask`, old-policy `entropy` and `old_log_probs` from the old-log-prob pass, `advantages`). The
output `sent_beta` travels with the batch to every micro-batch on every data-parallel rank, so the
selection and therefore the gradient do not depend on micro-batch size, mini-batch split or DP size.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict
from verl.workers.utils.padding import response_to_nested

from recipe.sent.losses import BETA_FIELD, selection_kwargs, selection_metrics
from verl_ext.token_entropy import select_sent_tokens

STEP_FIELDS = ("response_mask", "entropy", "old_log_probs", "advantages")
REF_FIELD = "ref_log_prob"  # verl's reference log-probs in TransferQueue (present when a reference model runs)
SETS_PREFIX = "token_sets/"


def step_sent_beta(step_batch: TensorDict, policy_loss_cfg) -> tuple[TensorDict, dict[str, float]]:
    """Per-token beta for a whole step batch, as a nested field ready to write back, plus step metrics."""
    missing = [name for name in STEP_FIELDS if name not in step_batch.keys()]
    if missing:
        raise KeyError(
            f"global SENT selection needs the step fields {list(STEP_FIELDS)}; missing {missing} (old-policy entropy "
            "comes from verl's old-log-prob pass, absent with algorithm.rollout_correction.bypass_mode=True)"
        )
    nested_mask = step_batch["response_mask"]
    padded = step_batch.select(*STEP_FIELDS).to_padded_tensor()
    mask = padded["response_mask"]
    selection = select_sent_tokens(
        padded["entropy"],
        padded["old_log_probs"],
        padded["advantages"],
        mask,
        **selection_kwargs(policy_loss_cfg),
    )
    beta = selection.beta
    if nested_mask.is_nested:
        beta = response_to_nested(beta, nested_mask)
    metrics = {key: float(value) for key, value in selection_metrics(selection, padded["entropy"], mask).items()}
    return TensorDict({BETA_FIELD: beta}, batch_size=[mask.shape[0]]), metrics


def token_set_metrics(step_batch: TensorDict, policy_loss_cfg, *, applied: bool, kl_type: str = "low_var_kl"
                      ) -> dict[str, float]:
    """Where a step's entropy and KL to the reference sit: SENT's selection (`policy_loss_cfg`'s parameters) over the
    whole step batch, split into the tokens it penalises (beta > 0) and the tokens it leaves free. Computed for every
    preset: `applied` is 1.0 when the SENT loss uses this selection, 0.0 when it is only measured (grpo, KL-Cov, ...).
    The KL keys need `ref_log_prob` in `step_batch` (a reference model ran); `kl_type` is verl's estimator."""
    from verl.trainer.ppo.core_algos import kl_penalty

    padded = step_batch.select(*STEP_FIELDS, *([REF_FIELD] if REF_FIELD in step_batch.keys() else [])
                               ).to_padded_tensor()
    mask = padded["response_mask"] != 0
    selection = select_sent_tokens(padded["entropy"], padded["old_log_probs"], padded["advantages"], mask,
                                   **selection_kwargs(policy_loss_cfg))
    penalised = (selection.beta > 0) & mask
    sets = {"penalised": penalised, "free": mask & ~penalised}
    values = {"entropy": padded["entropy"].detach().float()}
    if REF_FIELD in padded.keys():
        values["kl_ref"] = kl_penalty(logprob=padded["old_log_probs"], ref_logprob=padded[REF_FIELD],
                                      kl_penalty=kl_type).detach().float()
    metrics = {f"{SETS_PREFIX}applied": 1.0 if applied else 0.0,
               f"{SETS_PREFIX}free_frac": float(sets["free"].sum() / mask.sum().clamp(min=1))}
    for name, value in values.items():
        total = float((value * mask).sum())
        for set_name, members in sets.items():
            inside = float((value * members).sum())
            metrics[f"{SETS_PREFIX}{set_name}_{name}_mean"] = inside / max(1, int(members.sum()))
            metrics[f"{SETS_PREFIX}{set_name}_{name}_share"] = inside / total if total > 0 else 0.0
    return metrics


def padded_beta(beta: torch.Tensor) -> torch.Tensor:
    """Padded view of a (possibly nested) beta field, for inspection and tests."""
    return beta.to_padded_tensor(0.0) if beta.is_nested else beta
