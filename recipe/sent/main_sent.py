"""Entry point: `python -m recipe.sent.main_sent [hydra overrides]`.

verl's PPO (`run_ppo`) with `configs/sent_trainer.yaml`, whose search path includes verl's own config
(`pkg://verl.trainer.config`), and a TaskRunner that registers the `sent_sync` trainer in its own process.
`--cfg job` prints the composed config without starting anything (works without a GPU).
"""

from __future__ import annotations

from pathlib import Path

import hydra
import ray
from verl.trainer.main_ppo import TaskRunnerV1, run_ppo
from verl.trainer.ppo.utils import need_critic, need_reference_policy
from verl.utils.config import validate_config
from verl.utils.device import auto_set_device

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs")


class SentTaskRunner(TaskRunnerV1.__ray_actor_class__):
    """verl's V1 TaskRunner; the trainer registry lives in this Ray actor's process, so register here."""

    def run(self, config):
        import recipe.sent.trainer  # noqa: F401  (registers trainer.v1.trainer_mode=sent_sync)

        return super().run(config)


@hydra.main(config_path=CONFIG_DIR, config_name="sent_trainer", version_base=None)
def main(config) -> None:
    auto_set_device(config)
    validate_config(config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    run_ppo(config, task_runner_class=ray.remote(num_cpus=1)(SentTaskRunner))


if __name__ == "__main__":
    main()
