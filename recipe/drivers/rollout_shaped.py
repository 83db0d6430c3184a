"""Synthetic tensors with the statistics of a GRPO math rollout, in the layout verl's FSDP engine hands a loss
function (nested tensors in a TensorDict), and an actor config to call the loss with. Used by the benchmarks, the
demo and `make gpu-check`; tests build their own."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf
from tensordict import TensorDict
from verl.utils import tensordict_utils as tu
from verl.utils.config import omega_conf_to_dataclass


def actor_config(**policy_loss):
    """verl's FSDPActorConfig with SENT's policy-loss config and the given policy-loss fields (any `loss_mode`)."""
    base = {
        "_target_": "verl.workers.config.FSDPActorConfig", "strategy": "fsdp2", "ppo_mini_batch_size": 8,
        "ppo_micro_batch_size_per_gpu": 8, "rollout_n": 1, "use_kl_loss": True, "kl_loss_coef": 0.001,
        "kl_loss_type": "low_var_kl", "loss_agg_mode": "token-mean", "clip_ratio": 0.2,
        "policy_loss": {"_target_": "recipe.sent.config.SentPolicyLossConfig", **policy_loss},
    }
    return omega_conf_to_dataclass(OmegaConf.create(base))


def rollout_like(rows: int, cols: int, seed: int = 0, prompt_len: int = 16):
    """Token statistics shaped like a GRPO math rollout: most tokens near-deterministic (entropy ~0), a long
    tail of forking tokens, group-normalised +/- advantages per sequence, ragged lengths."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(cols // 2, cols + 1, (rows,), generator=g)
    lengths[0] = cols
    entropy = 8.0 * torch.rand(rows, cols, generator=g) ** 4  # mostly near 0, a tail up to 8 nats
    # confident tokens have log-probs just below 0; exact ties are rare here (bf16 training produces more of them)
    log_prob = -(entropy * torch.rand(rows, cols, generator=g) + 1e-3 * torch.rand(rows, cols, generator=g))
    old = log_prob + 0.02 * torch.randn(rows, cols, generator=g)
    ref = log_prob + 0.05 * torch.randn(rows, cols, generator=g)
    rewards = torch.where(torch.rand(rows, generator=g) < 0.5, 1.0, -1.0)
    adv = ((rewards - rewards.mean()) / (rewards.std() + 1e-6)).unsqueeze(1).expand(rows, cols).contiguous()
    return lengths, entropy, log_prob, old, ref, adv, prompt_len


def engine_inputs(rows: int, cols: int, seed: int = 0):
    """(TensorDict of step fields + global-batch info, model log-prob values, their jagged offsets)."""
    lengths, entropy, log_prob, old, ref, adv, p = rollout_like(rows, cols, seed)

    def nested(t):
        return torch.nested.as_nested_tensor([t[i, : lengths[i]] for i in range(rows)], layout=torch.jagged)

    td = TensorDict({
        "prompts": torch.nested.as_nested_tensor([torch.zeros(p, dtype=torch.long)] * rows, layout=torch.jagged),
        "responses": nested(torch.zeros(rows, cols, dtype=torch.long)),
        "response_mask": nested(torch.ones(rows, cols, dtype=torch.int64)),
        "old_log_probs": nested(old), "ref_log_prob": nested(ref), "advantages": nested(adv),
        "entropy": nested(entropy),
    }, batch_size=[rows])
    tu.assign_non_tensor(td, dp_size=1, batch_num_tokens=int(lengths.sum()), global_batch_size=rows)
    # model output: prompt + response per sequence, response log-probs shifted by one as the engine lays them out
    seqs = [torch.cat([torch.zeros(p - 1), log_prob[i, : lengths[i]], torch.zeros(1)]) for i in range(rows)]
    values = torch.cat(seqs)
    offsets = torch.tensor([0] + [p + int(n) for n in lengths]).cumsum(0)
    return td, values, offsets


def as_bf16(td: TensorDict, values: torch.Tensor) -> tuple[TensorDict, torch.Tensor]:
    """What a bf16 model hands over: entropies and log-probs rounded to bf16 (many exact ties), stored in float32 as
    verl stores them; the model's log-probs in bf16."""
    td = td.clone()
    for key in ("entropy", "old_log_probs", "ref_log_prob"):
        td[key] = td[key].bfloat16().float()  # elementwise: the nested layout (and its ragged size) is kept
    return td, values.bfloat16()
