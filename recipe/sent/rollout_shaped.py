"""Synthetic tensors with the statistics of a GRPO math rollout, in the layout verl's FSDP engine hands a loss
function (nested tensors in a TensorDict). Used by the benchmarks and the demo; tests build their own."""

from __future__ import annotations

import torch
from tensordict import TensorDict
from verl.utils import tensordict_utils as tu


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
