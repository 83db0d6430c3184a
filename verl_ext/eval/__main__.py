"""`python -m verl_ext.eval key=value ...`: the evaluation harness with `configs/eval.yaml`."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def main() -> None:
    import hydra
    from omegaconf import OmegaConf

    config_dir = os.environ.get("SENT_CONFIG_DIR", str(CONFIG_DIR))

    @hydra.main(config_path=config_dir, config_name="eval", version_base="1.3")
    def _run(cfg) -> None:
        from verl_ext.eval.harness import EvalRun
        from verl_ext.semantic_entropy.job import BadInputError

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        print(OmegaConf.to_yaml(cfg), flush=True)
        try:
            summary = EvalRun(cfg).run()
        except (BadInputError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(2)
        print((summary.parent / "results.md").read_text())
        print(f"results: {summary}  tables: {summary.parent / 'results.md'}")

    _run()


if __name__ == "__main__":
    main()
