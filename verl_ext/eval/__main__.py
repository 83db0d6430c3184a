"""`python -m verl_ext.eval key=value ...`: the evaluation harness.

The config is ``EvalConfig`` (``config.py``: every knob, its default and its check), registered with Hydra as the
schema of `configs/eval.yaml`; a misspelt key or a value of the wrong type stops the run naming the key.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
SCHEMA_NAME = "eval_schema"


def register_schema() -> None:
    """Make ``EvalConfig`` the schema that ``eval.yaml`` names in its defaults list."""
    from hydra.core.config_store import ConfigStore

    from verl_ext.eval.config import EvalConfig

    ConfigStore.instance().store(name=SCHEMA_NAME, node=EvalConfig)


def main() -> None:
    import hydra
    from omegaconf import OmegaConf

    from verl_ext.config import ConfigError
    from verl_ext.eval.config import EvalConfig

    config_dir = os.environ.get("SENT_CONFIG_DIR", str(CONFIG_DIR))
    register_schema()

    @hydra.main(config_path=config_dir, config_name="eval", version_base="1.3")
    def _run(cfg) -> None:
        from verl_ext.eval.harness import EvalRun
        from verl_ext.semantic_entropy.rows import BadInputError

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        print(OmegaConf.to_yaml(cfg), flush=True)
        try:
            summary = EvalRun(EvalConfig.from_config(cfg)).run()
        except (BadInputError, ConfigError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(2)
        print((summary.parent / "results.md").read_text())
        print(f"results: {summary}  tables: {summary.parent / 'results.md'}")

    _run()


if __name__ == "__main__":
    main()
