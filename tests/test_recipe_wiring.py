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


# --- machine=gpu: FSDP2 for actor, reference and critic; FSDP1 one override away -----------------------------------

STRATEGY_KEYS = ("actor_rollout_ref.actor.strategy", "actor_rollout_ref.ref.strategy", "critic.strategy")


@pytest.mark.parametrize("overrides, strategy", [
    ([], "fsdp2"),  # machine=gpu is the default machine
    (["machine=gpu"], "fsdp2"),
    (["machine=gpu", "actor_rollout_ref.actor.strategy=fsdp"], "fsdp"),  # FSDP1: one override, all three follow
    (["machine=cpu"], "fsdp2"),
])
def test_strategy_reaches_verls_engine_configs(recipe_config, tiny_model, overrides, strategy):
    """The strategy verl's engine workers read is the dataclass's engine config (synced from `<role>.strategy` in
    FSDPActorConfig/FSDPCriticConfig.__post_init__); verl's own validate_config accepts the composed config."""
    from omegaconf import OmegaConf
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    # the critic is off for GRPO; its config still builds (it loads its model and needs a micro-batch size)
    cfg = recipe_config([*overrides, f"critic.model.path={tiny_model}", "critic.ppo_micro_batch_size_per_gpu=1"])
    assert [OmegaConf.select(cfg, key) for key in STRATEGY_KEYS] == [strategy] * 3
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    ref = omega_conf_to_dataclass(ref_as_verls_worker_reads_it(cfg))
    critic = omega_conf_to_dataclass(cfg.critic)
    assert (actor.engine.strategy, ref.engine.strategy, critic.engine.strategy) == (strategy,) * 3
    validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))


def ref_as_verls_worker_reads_it(cfg):
    """The reference section renamed as verl's ActorRolloutRefWorker does before building its FSDPActorConfig
    (verl/workers/engine_workers.py, `if "ref" in self.role`)."""
    from omegaconf import OmegaConf, open_dict

    ref = OmegaConf.create(OmegaConf.to_container(cfg.actor_rollout_ref.ref))
    with open_dict(ref):
        ref.ppo_mini_batch_size = cfg.actor_rollout_ref.actor.ppo_mini_batch_size
        ref.ppo_micro_batch_size = ref.pop("log_prob_micro_batch_size", None)
        ref.ppo_micro_batch_size_per_gpu = ref.pop("log_prob_micro_batch_size_per_gpu", None)
        ref.use_dynamic_bsz = ref.pop("log_prob_use_dynamic_bsz", False)
        ref.ppo_max_token_len_per_gpu = ref.pop("log_prob_max_token_len_per_gpu", None)
    return ref


def test_cfg_job_shows_fsdp2_on_the_gpu_machine_through_hydras_cli():
    import yaml

    def composed(*overrides):
        out = subprocess.run([sys.executable, "-m", "recipe.sent.main_sent", "--cfg", "job", *overrides], cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        return yaml.safe_load(out.stdout)

    gpu = composed("machine=gpu")
    assert gpu["machine"] == "gpu" and gpu["actor_rollout_ref"]["actor"]["strategy"] == "fsdp2"
    # unresolved in --cfg job: the reference and the critic follow the actor's strategy
    follows = "${actor_rollout_ref.actor.strategy}"
    assert gpu["actor_rollout_ref"]["ref"]["strategy"] == gpu["critic"]["strategy"] == follows
    assert composed("actor_rollout_ref.actor.strategy=fsdp")["actor_rollout_ref"]["actor"]["strategy"] == "fsdp"


# --- attention: flash-attn optional, sdpa without it ----------------------------------------------------------------

NO_FLASH = (False, "ModuleNotFoundError: No module named 'flash_attn'")
FLASH = (True, "flash-attn 2.8.3")


@pytest.mark.parametrize("requested, flash_attn, ulysses, chosen", [
    (None, FLASH, 1, "flash_attention_2"),        # verl's default, flash-attn present
    (None, NO_FLASH, 1, "sdpa"),                  # verl's default, flash-attn missing: fall back
    ("flash_attention_2", NO_FLASH, 1, "sdpa"),   # asked for explicitly, still missing: fall back
    ("flash_attention_2", FLASH, 4, "flash_attention_2"),
    ("sdpa", FLASH, 1, "sdpa"),                   # an explicit choice is kept
    ("eager", NO_FLASH, 1, "eager"),
    ("sdpa", NO_FLASH, 2, "sdpa"),
])
def test_choose_attention(requested, flash_attn, ulysses, chosen):
    from recipe.sent.attention import choose_attention

    choice = choose_attention(requested, flash_attn=flash_attn, ulysses_size=ulysses)
    assert choice.implementation == chosen
    if chosen == "sdpa" and requested != "sdpa":
        assert "flash-attn is not importable" in choice.why and "No module named 'flash_attn'" in choice.why


def test_ulysses_without_flash_attn_is_an_error_naming_the_key(recipe_config):
    from recipe.sent.attention import apply_attention_choice

    cfg = recipe_config(["actor_rollout_ref.actor.ulysses_sequence_parallel_size=2"])
    with pytest.raises(ValueError, match=r"actor_rollout_ref.actor: ulysses_sequence_parallel_size=2 needs flash-attn"):
        apply_attention_choice(cfg, flash_attn=NO_FLASH)


@pytest.mark.parametrize("machine, flash_attn, chosen", [
    ("gpu", NO_FLASH, "sdpa"), ("gpu", FLASH, "flash_attention_2"), ("cpu", FLASH, "sdpa")])
def test_attention_choice_lands_in_the_composed_config(recipe_config, machine, flash_attn, chosen):
    from recipe.sent.attention import apply_attention_choice

    cfg = recipe_config([f"machine={machine}"])
    line = apply_attention_choice(cfg, flash_attn=flash_attn)
    # verl's packed rows stay on a GPU; the CPU layer pads (sdpa's mask over a packed micro-batch grows with its
    # square: configs/machine/cpu.yaml)
    assert line.startswith(f"attention: {chosen} (") and f"use_remove_padding={machine == 'gpu'}" in line
    assert cfg.actor_rollout_ref.model.override_config.attn_implementation == chosen
    assert cfg.critic.model.override_config.attn_implementation == chosen
    assert cfg.actor_rollout_ref.model.use_remove_padding is (machine == "gpu")


def test_verl_loads_flash_attention_2_by_default(tiny_model):
    """`VERL_DEFAULT` is what verl's HFModelConfig loads when override_config names no attention."""
    from verl.workers.config.model import HFModelConfig

    from recipe.sent.attention import VERL_DEFAULT

    assert HFModelConfig(path=str(tiny_model)).hf_config._attn_implementation == VERL_DEFAULT


def test_main_sent_on_the_gpu_machine_without_flash_attn_chooses_sdpa_and_says_so():
    """This CPU machine has no flash-attn: main_sent's first log line says sdpa, before anything starts (the missing
    model stops it right after, so no Ray or GPU is needed)."""
    from recipe.sent.attention import flash_attn_status

    assert not flash_attn_status()[0], "flash-attn is importable here: this test needs a machine without it"
    out = subprocess.run([sys.executable, "-m", "recipe.sent.main_sent", "machine=gpu",
                          "actor_rollout_ref.model.path=/nonexistent/model"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    lines = [line for line in (out.stdout + out.stderr).splitlines() if "attention: " in line]
    assert len(lines) == 1, out.stdout[-2000:] + out.stderr[-2000:]
    assert "attention: sdpa (instead of flash_attention_2, verl's default: flash-attn is not importable" in lines[0]
    assert out.returncode != 0 and "/nonexistent/model" in out.stderr + out.stdout
