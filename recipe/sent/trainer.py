"""`sent_sync`: verl's synchronous V1 trainer with SENT's actor loss, step-level token selection, curriculum
metrics and the semantic entropy of every step's rollout groups.

Select with `trainer.v1.trainer_mode=sent_sync` (the recipe config does). With any other
`policy_loss.loss_mode` it behaves exactly like verl's `sync` trainer, so the `grpo`, `kl_cov` and
`clip_cov` presets run through the same entry point; `semantic_entropy/*` is logged in every preset.
"""

from __future__ import annotations

import atexit
import time
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial

import transfer_queue as tq
from omegaconf import DictConfig
from tensordict import TensorDict
from verl.trainer.ppo.v1 import PPOTrainerSync, register_trainer
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer
from verl.utils.config import omega_conf_to_dataclass

from recipe.sent.curriculum_dataset import STAGE_FIELD, curriculum_step_metrics
from recipe.sent.losses import sent_actor_loss
from recipe.sent.reproducible_rollouts import PromptOrder
from recipe.sent.config import SentPolicyLossConfig
from recipe.sent.selection import REF_FIELD, STEP_FIELDS, step_sent_beta, token_set_metrics
from recipe.sent.weight_sync_lock import weight_sync_lock
from verl_ext.semantic_entropy.clustering import MathVerifyPool
from verl_ext.semantic_entropy.config import ClusteringConfig
from verl_ext.semantic_entropy.rollout_groups import group_entropies, group_responses, summarize

TRAINER_MODE = "sent_sync"
# verl switches its V1 trainer's behaviour on the mode's *name* ("sync" vs anything else: the async replay buffer,
# one-prompt dataloader fetches, prompts persisted in TransferQueue, its checkpoint); we are the sync trainer
VERL_MODE = "sync"
SE_CONFIG_KEY = "semantic_entropy_metrics"
SE_PREFIX = "semantic_entropy/"
SAVED_LINE = "[sent] checkpoint saved after logging step"  # on_train_begin; its order is tested end to end
SE_TIMING = "semantic_entropy"  # timing_s/semantic_entropy: what the metric adds to the step on the trainer's thread
SYNC_WAIT_TIMING = "weight_sync_wait"  # timing_s/weight_sync_wait: the step's wait for another training's weight sync


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


class RolloutSemanticEntropy:
    """`semantic_entropy/{mean,p50,agree_frac}` of a step's rollout groups: `start` decodes the responses (as verl's
    reward manager does) and hands them to a background thread that clusters them with the scoring job's code in a
    `MathVerifyPool` (worker processes, a deadline per call) while the step goes on; `collect` waits for it."""

    def __init__(self, config: DictConfig, tokenizer):
        clustering = {key: value for key, value in (config.get("clustering") or {}).items() if value is not None}
        self.clustering = ClusteringConfig.from_config(clustering, where=SE_CONFIG_KEY)
        self.tokenizer = tokenizer
        # started now: the workers import math-verify while the model loads
        self.pool = MathVerifyPool(num_workers=self.clustering.num_workers, timeout_s=self.clustering.timeout_s)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="semantic_entropy")
        self._pending: list[Future] = []  # one per sampled batch of the step (verl's parameter_sync_step)
        self._seconds = 0.0
        atexit.register(self.close)

    def start(self, batch) -> None:
        began = time.perf_counter()
        keys = [key for key, tag in zip(batch.keys, batch.tags) if not tag.get("is_padding", False)]
        data = tq.kv_batch_get(keys=keys, partition_id=batch.partition_id, select_fields=["uid", "responses"])
        # one row per trajectory, its generated tokens only (TransferQueue keeps them jagged)
        texts = [self.tokenizer.decode(ids, skip_special_tokens=True) for ids in data["responses"].unbind()]
        groups = group_responses([str(uid) for uid in data.pop("uid").tolist()], texts)  # as verl's rollout dump
        self._pending.append(self._thread.submit(group_entropies, groups, pool=self.pool,
                                                 unparseable=self.clustering.unparseable,
                                                 answer_fallback=self.clustering.answer_fallback))
        self._seconds += time.perf_counter() - began

    def collect(self, metrics: dict, timing_raw: dict) -> None:
        if not self._pending:
            return
        began = time.perf_counter()
        per_group = [entry for future in self._pending for entry in future.result()]
        metrics.update({SE_PREFIX + key: value for key, value in summarize(per_group).items()})
        timing_raw[SE_TIMING] = self._seconds + time.perf_counter() - began
        self._pending, self._seconds = [], 0.0

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)
        self.pool.close()


@register_trainer(TRAINER_MODE)
class SentSyncTrainer(PPOTrainerSync):
    def _build_replay_buffer(self) -> ReplayBuffer:
        self.trainer_mode = VERL_MODE  # read by verl from here on (PPOTrainer.__init__ builds the buffer first)
        buffer = super()._build_replay_buffer()
        # verl's ReplayBuffer takes no poll interval from the config (2.0 s): a step's generation ended up to 2 s late
        poll_interval = self.config.trainer.v1.get(TRAINER_MODE, {}).get("poll_interval_s", None)
        if poll_interval is not None:
            buffer.poll_interval = float(poll_interval)
        # verl's buffer returns a step's trajectories in the order they finished; they go back in the prompts' order
        # (recipe/sent/reproducible_rollouts.py), so a seed fills the same mini-batches in every run
        self.prompt_order = PromptOrder()
        sample = buffer.sample

        def sample_in_prompt_order(*args, **kwargs):
            batch, metrics = sample(*args, **kwargs)
            self.prompt_order.sort(batch)
            return batch, metrics

        buffer.sample = sample_in_prompt_order
        return buffer

    def on_init_end(self):
        if sent_loss_enabled(self.config):
            if self.config.distillation.enabled:
                raise ValueError("policy_loss.loss_mode=sent cannot be combined with distillation.enabled=True")
            self.actor_config = omega_conf_to_dataclass(self.config.actor_rollout_ref.actor)
            self.actor_rollout_wg.set_loss_fn(partial(sent_actor_loss, config=self.actor_config))
        se_config = self.config.get(SE_CONFIG_KEY, None)
        self.semantic_entropy = (RolloutSemanticEntropy(se_config, self.tokenizer)
                                 if se_config is not None and se_config.get("enable", False) else None)
        self._sync_weights_one_at_a_time()
        super().on_init_end()  # its first update_weights already goes through the lock

    def fit(self, agent_loop_manager):
        """Every batch of prompts goes to the agent loops through `generate_sequences` (training, refills,
        validation), in the dataloader's order: `self.prompt_order` remembers it for the replay buffer's batches."""
        generate = agent_loop_manager.generate_sequences

        def generate_recording_order(prompts, *args, **kwargs):
            if "uid" in prompts.keys():
                self.prompt_order.record(prompts["uid"])
            return generate(prompts, *args, **kwargs)

        agent_loop_manager.generate_sequences = generate_recording_order
        return super().fit(agent_loop_manager)

    def _sync_weights_one_at_a_time(self) -> None:
        """Every update_weights of this training holds the host's weight-sync lock (`recipe.sent.weight_sync_lock`:
        verl's socket path is the same for every training that starts its own Ray cluster)."""
        update_weights = self.checkpoint_manager.update_weights

        def update_weights_alone(*args, **kwargs):
            with weight_sync_lock() as waited:
                timing = getattr(self, "timing_raw", None)
                if timing is not None:
                    timing[SYNC_WAIT_TIMING] = timing.get(SYNC_WAIT_TIMING, 0.0) + waited
                return update_weights(*args, **kwargs)

        self.checkpoint_manager.update_weights = update_weights_alone

    def on_train_begin(self):
        super().on_train_begin()
        # verl's fit saves a step's checkpoint before it logs the step, so a job killed in between (a Slurm requeue)
        # resumed past a step whose metrics were never written. From here on the save runs right after the log: a
        # kill in between redoes the step and logs it again (the launchers keep the later run's line).
        log = self.logger.log

        def log_then_save(data, step, backend=None):
            log(data=data, step=step, backend=backend)
            if self._checkpoint_due:
                self._checkpoint_due = False
                started = time.time()
                super(SentSyncTrainer, self)._save_checkpoint()
                # the step's timing_s/* went out with its metrics (timing_s/save_checkpoint times only the deferral)
                print(f"{SAVED_LINE} {step} in {time.time() - started:.1f} s", flush=True)

        self.logger.log = log_then_save
        self._checkpoint_due, self._defer_checkpoint = False, True

    def _save_checkpoint(self):
        if getattr(self, "_defer_checkpoint", False):
            self._checkpoint_due = True  # saved by log_then_save (on_train_begin) once the step is logged
            return
        super()._save_checkpoint()

    def _next_train_batch(self, num_prompts: int | None = None) -> TensorDict:
        # In sync mode the prompts fetched while preparing a step are the ones that step trains on.
        batch = super()._next_train_batch(num_prompts)
        self._pending_curriculum_metrics = prompt_batch_curriculum_metrics(batch)
        return batch

    def step(self, metrics: dict, timing_raw: dict):
        trained = super().step(metrics, timing_raw)
        metrics.update(getattr(self, "_pending_curriculum_metrics", None) or {})
        self._pending_curriculum_metrics = {}
        if getattr(self, "semantic_entropy", None) is not None:
            self.semantic_entropy.collect(metrics, timing_raw)
        return trained

    def _compute_old_log_prob(self, batch, metrics: dict):
        # the earliest hook with the sampled step batch: the clustering overlaps the log-prob and update passes
        if getattr(self, "semantic_entropy", None) is not None and batch.partition_id == "train":
            self.semantic_entropy.start(batch)
        return super()._compute_old_log_prob(batch, metrics)

    def _compute_advantage(self, batch, metrics: dict):
        batch = super()._compute_advantage(batch, metrics)
        if batch.partition_id == "train":
            metrics.update(self._token_set_metrics(batch))
        if sent_loss_enabled(self.config) and self.actor_config.policy_loss.selection_scope == "global":
            batch = self._write_step_beta(batch, metrics)
        return batch

    def _token_set_metrics(self, batch) -> dict[str, float]:
        """`token_sets/*` for every preset: SENT's selection of this step (the run's own settings under the SENT loss,
        SENT's published defaults otherwise) measured, whether or not the loss applies it."""
        sent = sent_loss_enabled(self.config)
        policy_loss = self.actor_config.policy_loss if sent else SentPolicyLossConfig()
        fields = [*STEP_FIELDS, *([REF_FIELD] if self.use_reference_policy else [])]
        step_batch = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
        kl_type = policy_loss.kl_type if sent else self.config.actor_rollout_ref.actor.kl_loss_type
        return token_set_metrics(step_batch, policy_loss, applied=sent, kl_type=kl_type)

    def _write_step_beta(self, batch, metrics: dict):
        """One selection over the whole step batch (all DP ranks, all mini/micro-batches), written back to
        TransferQueue as the per-token field the actor loss reads. Returns the meta that the put returned: verl's
        worker bridge hands the actor only `meta.fields`, so the old meta would leave `sent_beta` behind."""
        step_batch = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=list(STEP_FIELDS))
        beta, step_metrics = step_sent_beta(step_batch, self.actor_config.policy_loss)
        metrics.update(step_metrics)
        return tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=beta)
