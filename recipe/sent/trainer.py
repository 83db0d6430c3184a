"""`sent_sync`: verl's synchronous V1 trainer with SENT's actor loss and step-level token selection.

Select with `trainer.v1.trainer_mode=sent_sync` (the recipe config does). With any other
`policy_loss.loss_mode` it behaves exactly like verl's `sync` trainer, so the `grpo`, `kl_cov` and
`clip_cov` presets run through the same entry point.
"""

from __future__ import annotations

from functools import partial

import transfer_queue as tq
from omegaconf import DictConfig
from verl.trainer.ppo.v1 import PPOTrainerSync, register_trainer
from verl.utils.config import omega_conf_to_dataclass

from recipe.sent.losses import sent_actor_loss
from recipe.sent.selection import STEP_FIELDS, step_sent_beta

TRAINER_MODE = "sent_sync"


def sent_loss_enabled(config: DictConfig) -> bool:
    return config.actor_rollout_ref.actor.policy_loss.get("loss_mode", "vanilla") == "sent"


@register_trainer(TRAINER_MODE)
class SentSyncTrainer(PPOTrainerSync):
    def on_init_end(self):
        if sent_loss_enabled(self.config):
            if self.config.get("distillation", {}).get("enabled", False):
                raise ValueError("policy_loss.loss_mode=sent cannot be combined with distillation.enabled=True")
            self.actor_config = omega_conf_to_dataclass(self.config.actor_rollout_ref.actor)
            self.actor_rollout_wg.set_loss_fn(partial(sent_actor_loss, config=self.actor_config))
        super().on_init_end()

    def _compute_advantage(self, batch, metrics: dict):
        batch = super()._compute_advantage(batch, metrics)
        if sent_loss_enabled(self.config) and self.actor_config.policy_loss.selection_scope == "global":
            self._write_step_beta(batch, metrics)
        return batch

    def _write_step_beta(self, batch, metrics: dict) -> None:
        """One selection over the whole step batch (all DP ranks, all mini/micro-batches), written back to
        TransferQueue as the per-token field the actor loss reads."""
        step_batch = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=list(STEP_FIELDS))
        beta, step_metrics = step_sent_beta(step_batch, self.actor_config.policy_loss)
        tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=beta)
        metrics.update(step_metrics)
