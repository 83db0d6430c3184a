"""`sent_sync`: verl's synchronous V1 trainer with SENT's actor loss, step-level token selection and
curriculum metrics.

Select with `trainer.v1.trainer_mode=sent_sync` (the recipe config does). With any other
`policy_loss.loss_mode` it behaves exactly like verl's `sync` trainer, so the `grpo`, `kl_cov` and
`clip_cov` presets run through the same entry point.
"""

from __future__ import annotations

from functools import partial

import transfer_queue as tq
from omegaconf import DictConfig
from tensordict import TensorDict
from verl.trainer.ppo.v1 import PPOTrainerSync, register_trainer
from verl.utils.config import omega_conf_to_dataclass

from recipe.sent.curriculum_dataset import STAGE_FIELD, curriculum_step_metrics
from recipe.sent.losses import sent_actor_loss
from recipe.sent.selection import STEP_FIELDS, step_sent_beta

TRAINER_MODE = "sent_sync"


def sent_loss_enabled(config: DictConfig) -> bool:
    return config.actor_rollout_ref.actor.policy_loss.loss_mode == "sent"


def prompt_batch_curriculum_metrics(batch: TensorDict) -> dict[str, float]:
    """`curriculum/stage` and `curriculum/mean_se` of a prompt batch as the dataloader hands it to the trainer
    (`tu.get_tensordict` of `collate_fn`'s output); empty for a run without a scored curriculum."""
    keys = set(batch.keys())
    stages = batch.get(STAGE_FIELD).tolist() if STAGE_FIELD in keys else None
    extra = batch.get("extra_info").tolist() if "extra_info" in keys else []
    scores = [info.get("semantic_entropy") if isinstance(info, dict) else None for info in extra]
    return curriculum_step_metrics(stages, scores)


@register_trainer(TRAINER_MODE)
class SentSyncTrainer(PPOTrainerSync):
    def on_init_end(self):
        if sent_loss_enabled(self.config):
            if self.config.distillation.enabled:
                raise ValueError("policy_loss.loss_mode=sent cannot be combined with distillation.enabled=True")
            self.actor_config = omega_conf_to_dataclass(self.config.actor_rollout_ref.actor)
            self.actor_rollout_wg.set_loss_fn(partial(sent_actor_loss, config=self.actor_config))
        super().on_init_end()

    def _next_train_batch(self, num_prompts: int | None = None) -> TensorDict:
        # In sync mode the prompts fetched while preparing a step are the ones that step trains on.
        batch = super()._next_train_batch(num_prompts)
        self._pending_curriculum_metrics = prompt_batch_curriculum_metrics(batch)
        return batch

    def step(self, metrics: dict, timing_raw: dict):
        trained = super().step(metrics, timing_raw)
        metrics.update(getattr(self, "_pending_curriculum_metrics", None) or {})
        self._pending_curriculum_metrics = {}
        return trained

    def _compute_advantage(self, batch, metrics: dict):
        batch = super()._compute_advantage(batch, metrics)
        if sent_loss_enabled(self.config) and self.actor_config.policy_loss.selection_scope == "global":
            batch = self._write_step_beta(batch, metrics)
        return batch

    def _write_step_beta(self, batch, metrics: dict):
        """One selection over the whole step batch (all DP ranks, all mini/micro-batches), written back to
        TransferQueue as the per-token field the actor loss reads. Returns the meta that the put returned: verl's
        worker bridge hands the actor only `meta.fields`, so the old meta would leave `sent_beta` behind."""
        step_batch = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=list(STEP_FIELDS))
        beta, step_metrics = step_sent_beta(step_batch, self.actor_config.policy_loss)
        metrics.update(step_metrics)
        return tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=beta)
