"""Entry point: `python -m recipe.sent.main_sent [hydra overrides]`.

verl's PPO (`run_ppo`) with `configs/sent_trainer.yaml`, whose search path includes verl's own config
(`pkg://verl.trainer.config`), and a TaskRunner that registers the `sent_sync` trainer in its own process.
`machine=cpu` runs the same loop on a CPU-only machine (`configs/machine/cpu.yaml`, `recipe/cpu/`).
`--cfg job` prints the composed config without starting anything (works without a GPU).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import hydra
import ray
from verl.trainer.main_ppo import TaskRunnerV1, run_ppo
from verl.trainer.ppo.utils import need_critic, need_reference_policy
from verl.utils.config import validate_config
from verl.utils.device import auto_set_device
from verl.utils.import_utils import import_external_libs

from verl_ext.config import ConfigError
from verl_ext.model_path import check_model_available as check_path

from recipe.sent.attention import apply_attention_choice

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = str(ROOT / "configs")
log = logging.getLogger(__name__)


class SentTaskRunner(TaskRunnerV1.__ray_actor_class__):
    """verl's V1 TaskRunner; the trainer registry lives in this Ray actor's process, so register here."""

    def run(self, config):
        import recipe.sent.trainer  # noqa: F401  (registers trainer.v1.trainer_mode=sent_sync)

        return super().run(config)


def export_worker_environment(config) -> None:
    """The driver runs with the environment its Ray workers get (`ray_kwargs.ray_init.runtime_env.env_vars`), and
    imports the modules that environment asks verl to import (verl did its own imports before Hydra ran)."""
    runtime_env = config.ray_kwargs.ray_init.runtime_env
    env_vars = runtime_env.env_vars if "env_vars" in runtime_env else {}  # verl's schema has no env_vars key
    os.environ.update({str(key): str(value) for key, value in env_vars.items()})
    modules = [name for name in os.environ.get("VERL_USE_EXTERNAL_MODULES", "").split(",") if name]
    if modules:
        import_external_libs(modules)


def check_model_path(config) -> None:
    """Fail before Ray starts on a model path that cannot load (the workers would fail one by one, or hang): no such
    folder, or a hub id this node cannot get (hub unreachable, or HF_HUB_OFFLINE=1 and not cached; docs/offline.md)."""
    model = config.actor_rollout_ref.model
    try:
        for key in ("path", "tokenizer_path"):
            check_path(f"actor_rollout_ref.model.{key}", model[key])
    except ConfigError as err:
        raise SystemExit(str(err)) from None


def anchor_agent_loop_config(config) -> None:
    """verl reads `rollout.agent.agent_loop_config_path` in each agent-loop worker, relative to that worker's working
    directory; the recipe's (`recipe/sent/agent_loops.yaml`, the seeded agent loop) is made absolute here."""
    agent = config.actor_rollout_ref.rollout.agent
    path = agent.get("agent_loop_config_path")
    if path and not os.path.isabs(path) and (ROOT / path).is_file():
        agent.agent_loop_config_path = str(ROOT / path)


@hydra.main(config_path=CONFIG_DIR, config_name="sent_trainer", version_base=None)
def main(config) -> None:
    log.info(apply_attention_choice(config))  # flash-attn is optional: sdpa without it, said in one line
    check_model_path(config)
    anchor_agent_loop_config(config)
    export_worker_environment(config)
    auto_set_device(config)
    validate_config(config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    run_ppo(config, task_runner_class=ray.remote(num_cpus=1)(SentTaskRunner))


if __name__ == "__main__":
    main()
