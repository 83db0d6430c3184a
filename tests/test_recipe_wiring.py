"""The recipe as verl sees it: Hydra composition and presets, verl's config validation, the trainer registry,
the `verl.plugins` entry point, and the CLI's `--cfg job` on a machine without a GPU."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from verl.utils.config import omega_conf_to_dataclass

ROOT = Path(__file__).resolve().parents[1]

PRESETS = {
    # preset: (loss_mode, base_loss_mode, kl_target, selection_scope, uniform kl_loss_coef)
    "sent": ("sent", "vanilla", "ref", "global", 0.0),
    "sent_released": ("sent", "unclipped", "old", "micro_batch", 0.001),
    "grpo": ("vanilla", None, None, None, 0.001),
    "kl_cov": ("kl_cov", None, None, None, 0.001),
    "clip_cov": ("clip_cov", None, None, None, 0.001),
}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_compose_into_verl_actor_config(recipe_config, preset):
    from recipe.sent.config import SentPolicyLossConfig

    cfg = recipe_config([f"preset={preset}"])
    assert cfg.algorithm.adv_estimator == "grpo"
    assert cfg.data.shuffle is False
    assert cfg.trainer.v1.trainer_mode == "sent_sync"
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    loss_mode, base, target, scope, coef = PRESETS[preset]
    assert isinstance(actor.policy_loss, SentPolicyLossConfig)
    assert actor.policy_loss.loss_mode == loss_mode
    assert actor.kl_loss_coef == coef
    if base is not None:
        assert (actor.policy_loss.base_loss_mode, actor.policy_loss.kl_target, actor.policy_loss.selection_scope) == (
            base, target, scope)
    if preset == "sent_released":
        assert actor.policy_loss.high_cov_fraction == actor.policy_loss.low_cov_fraction == 0.0002
        assert actor.calculate_entropy is True


def test_cli_overrides_reach_the_dataclass(recipe_config):
    cfg = recipe_config(["actor_rollout_ref.actor.policy_loss.beta_high=0.3",
                         "actor_rollout_ref.actor.policy_loss.entropy_threshold=0.5"])
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    assert actor.policy_loss.beta_high == 0.3 and actor.policy_loss.entropy_threshold == 0.5


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_verl_validate_config_accepts_the_recipe(recipe_config, preset):
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    cfg = recipe_config([f"preset={preset}", "trainer.device=cpu"])
    assert need_reference_policy(cfg)  # kl_target=ref needs ref_log_prob: use_kl_loss keeps the ref worker on
    validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))


def test_trainer_is_registered_and_selected_from_config(recipe_config):
    from verl.trainer.ppo.v1 import PPOTrainerSync, get_trainer_cls

    import recipe.sent.main_sent  # noqa: F401
    import recipe.sent.trainer
    from recipe.sent.main_sent import SentTaskRunner

    cfg = recipe_config()
    trainer_cls = get_trainer_cls(cfg.trainer.v1.trainer_mode)
    assert trainer_cls is recipe.sent.trainer.SentSyncTrainer
    assert issubclass(trainer_cls, PPOTrainerSync)
    assert callable(SentTaskRunner.run)


def test_registrations_reach_a_fresh_process_through_the_verl_plugin_entry_point():
    """What every Ray worker does: `import verl` alone, with nothing of ours imported explicitly."""
    code = (
        "import verl\n"
        "from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY\n"
        "assert {'sent', 'unclipped'} <= set(POLICY_LOSS_REGISTRY), sorted(POLICY_LOSS_REGISTRY)\n"
        "print('ok')\n"
    )
    env = {**os.environ, "VERL_USE_EXTERNAL_PLUGINS": "auto"}
    out = subprocess.run([sys.executable, "-c", code], cwd="/", env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


def test_loss_function_pickles_for_ray(actor_config):
    """set_loss_fn ships the partial to every actor worker through Ray's cloudpickle."""
    from functools import partial

    import ray.cloudpickle as cloudpickle

    from recipe.sent.losses import sent_actor_loss

    fn = cloudpickle.loads(cloudpickle.dumps(partial(sent_actor_loss, config=actor_config())))
    assert fn.func is sent_actor_loss and fn.keywords["config"].policy_loss.loss_mode == "sent"


def test_cfg_job_prints_the_composed_config_without_a_gpu():
    out = subprocess.run(
        [sys.executable, "-m", "recipe.sent.main_sent", "--cfg", "job", "preset=sent_released",
         "actor_rollout_ref.actor.policy_loss.beta_low=0.07"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "_target_: recipe.sent.config.SentPolicyLossConfig" in out.stdout
    assert "beta_low: 0.07" in out.stdout and "selection_scope: micro_batch" in out.stdout
    assert "trainer_mode: sent_sync" in out.stdout and "shuffle: false" in out.stdout
