"""SentSyncTrainer's step-level selection against a real TransferQueue (Ray on the CPU): the trainer reads the
step's old-policy fields, writes `sent_beta` back, and the actor loss then trains on exactly what it stored.

What the actor receives is read the way verl's worker bridge reads it (`kv_batch_meta2batch_meta`, which keeps only
`meta.fields`, then the bridge's fetch), not as a read-back of all fields: the first real run crashed because the
trainer handed on a meta from before its put."""

from functools import partial

import pytest
import torch

pytestmark = pytest.mark.slow


def fields_the_actor_receives(meta):
    """The TensorDict an actor method decorated with verl's `tqbridge` gets for `meta`."""
    from verl.utils.transferqueue_utils import _meta_to_realdata, kv_batch_meta2batch_meta

    return _meta_to_realdata(kv_batch_meta2batch_meta(meta))

PROMPTS = [5, 3, 7, 4, 6, 2, 5, 3]
RESPONSES = [30, 12, 25, 40, 8, 33, 19, 27]


@pytest.fixture(scope="module")
def transfer_queue():
    import ray
    import transfer_queue as tq
    from omegaconf import OmegaConf

    from recipe.sent.main_sent import CONFIG_DIR  # noqa: F401  (the recipe's import path works in the driver)

    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    conf = OmegaConf.create({"enable": True, "metrics": {"enabled": False, "port": 0}, "backend": {
        "storage_backend": "SimpleStorage", "SimpleStorage": {"total_storage_size": 10000, "num_data_storage_units": 1}}})
    tq.init(conf)
    yield tq
    tq.close()
    if started_ray:
        ray.shutdown()


def test_trainer_writes_step_beta_that_the_loss_consumes(transfer_queue, recipe_config, actor_config, engine_batch,
                                                         engine_loss):
    from verl.utils.config import omega_conf_to_dataclass

    from recipe.sent.losses import BETA_FIELD, sent_actor_loss
    from recipe.sent.trainer import SentSyncTrainer
    from verl_ext.token_entropy import sent_token_weights

    tq = transfer_queue
    config = recipe_config(["actor_rollout_ref.actor.policy_loss.high_cov_fraction=0.05"])
    trainer = object.__new__(SentSyncTrainer)  # only the step-selection seam; no GPU workers are started
    trainer.config = config
    trainer.actor_config = omega_conf_to_dataclass(config.actor_rollout_ref.actor)

    batch = engine_batch(PROMPTS, RESPONSES, hole_every=6)
    keys = [f"uid{i}_0_0" for i in range(batch.batch_size)]
    meta = tq.kv_batch_put(keys=keys, partition_id="train", fields=batch.td)

    metrics = {}
    handed_on = trainer._write_step_beta(meta, metrics)
    assert metrics["sent/low_entropy_frac"] == pytest.approx(0.8, abs=0.01)

    assert BETA_FIELD not in fields_the_actor_receives(meta).keys()  # the meta from before the put lacks it
    stored = fields_the_actor_receives(handed_on)  # what update_actor gets through verl's bridge
    assert BETA_FIELD in stored.keys() and set(batch.td.keys()) <= set(stored.keys())
    assert stored[BETA_FIELD].is_nested
    padded = batch.td.select("entropy", "old_log_probs", "advantages", "response_mask").to_padded_tensor()
    want = sent_token_weights(padded["entropy"], padded["old_log_probs"], padded["advantages"],
                              padded["response_mask"], **{k: getattr(trainer.actor_config.policy_loss, k) for k in (
                                  "low_entropy_fraction", "high_cov_fraction", "beta_high", "beta_low")})
    torch.testing.assert_close(stored[BETA_FIELD].to_padded_tensor(0.0), want)

    # the loss trains on the stored record; splitting it differently changes nothing
    batch.td = stored
    loss_fn = partial(sent_actor_loss, config=trainer.actor_config)
    _, grad_1, _ = engine_loss(loss_fn, batch, dp_size=1, micro_batches=1)
    _, grad_4, _ = engine_loss(loss_fn, batch, dp_size=2, micro_batches=2)
    torch.testing.assert_close(grad_4, grad_1, rtol=1e-5, atol=1e-7)


def test_advantages_then_step_beta_through_verls_own_compute_advantage(transfer_queue, recipe_config):
    """The override runs after verl's real `_compute_advantage` (GRPO over TransferQueue records laid out as the agent
    loop writes them): the step beta is selected from the advantages verl just wrote."""
    from verl.utils import tensordict_utils as tu
    from verl.utils.config import omega_conf_to_dataclass

    from recipe.sent.losses import BETA_FIELD
    from recipe.sent.trainer import SentSyncTrainer
    from verl_ext.token_entropy import sent_token_weights

    tq = transfer_queue
    config = recipe_config(["actor_rollout_ref.rollout.n=4", "actor_rollout_ref.actor.policy_loss.high_cov_fraction=0.1"])
    trainer = object.__new__(SentSyncTrainer)
    trainer.config = config
    trainer.actor_config = omega_conf_to_dataclass(config.actor_rollout_ref.actor)

    g = torch.Generator().manual_seed(3)
    samples, keys = [], []
    for prompt in range(2):
        for session in range(4):
            length = int(torch.randint(5, 30, (1,), generator=g))
            reward = torch.zeros(length)
            reward[-1] = float(torch.randint(0, 2, (1,), generator=g)) * 2 - 1  # +1 / -1 at the last token
            samples.append({
                "uid": f"p{prompt}", "prompts": torch.randint(0, 50, (4,), generator=g),
                "responses": torch.randint(0, 50, (length,), generator=g),
                "response_mask": torch.ones(length, dtype=torch.int64), "rm_scores": reward,
                "old_log_probs": -torch.rand(length, generator=g), "entropy": 3 * torch.rand(length, generator=g),
            })
            keys.append(f"p{prompt}_{session}_0")
    meta = tq.kv_batch_put(keys=keys, partition_id="adv", fields=tu.list_of_dict_to_tensordict(samples))

    metrics = {}
    handed_on = trainer._compute_advantage(meta, metrics)
    stored = fields_the_actor_receives(handed_on)
    assert {"advantages", BETA_FIELD} <= set(stored.keys())
    padded = stored.select("advantages", "entropy", "old_log_probs", "response_mask").to_padded_tensor()
    mask = padded["response_mask"].bool()
    assert padded["advantages"][mask].abs().sum() > 0  # verl's GRPO advantages are there
    want = sent_token_weights(padded["entropy"], padded["old_log_probs"], padded["advantages"], padded["response_mask"],
                              low_entropy_fraction=0.8, high_cov_fraction=0.1, beta_high=0.2, beta_low=0.05)
    torch.testing.assert_close(stored[BETA_FIELD].to_padded_tensor(0.0), want)
    assert metrics["sent/low_entropy_frac"] == pytest.approx(0.8, abs=0.02)
