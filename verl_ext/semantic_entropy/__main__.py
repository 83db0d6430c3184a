"""``python -m verl_ext.semantic_entropy key=value ...``: the scoring job.

The config is ``ScoringConfig`` (``config.py``: every knob, its default and its check), registered with Hydra as the
schema of ``configs/score_semantic_entropy.yaml``; a misspelt key or a value of the wrong type stops the job before
anything runs, naming the key.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
SCHEMA_NAME = "score_semantic_entropy_schema"


def register_schema() -> None:
    """Make ``ScoringConfig`` the schema that ``score_semantic_entropy.yaml`` names in its defaults list."""
    from hydra.core.config_store import ConfigStore

    from .config import ScoringConfig

    ConfigStore.instance().store(name=SCHEMA_NAME, node=ScoringConfig)


def main() -> None:
    import hydra
    from omegaconf import OmegaConf

    from verl_ext.config import ConfigError

    from .config import ScoringConfig

    config_dir = os.environ.get("SENT_CONFIG_DIR", str(CONFIG_DIR))
    if not (Path(config_dir) / "score_semantic_entropy.yaml").exists():
        sys.exit(f"score_semantic_entropy.yaml not found in {config_dir}; set SENT_CONFIG_DIR to the repo's configs/")
    register_schema()

    @hydra.main(config_path=config_dir, config_name="score_semantic_entropy", version_base="1.3")
    def _run(cfg) -> None:
        from .job import BadInputError
        from .run import run_job

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        print(OmegaConf.to_yaml(cfg), flush=True)
        try:
            res = run_job(ScoringConfig.from_config(cfg))
        except (BadInputError, ConfigError) as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            sys.exit(2)
        s = res.summary
        if res.scored_path:
            print(f"scored {s.get('rows_scored')} rows -> {res.scored_path} (bad rows: {s.get('bad_rows')})")
            print(f"SE percentiles: {s.get('se_percentiles')}; corr(SE, pass rate) spearman={s.get('corr_se_pass_rate_spearman')}")
            print(f"summary: {Path(res.output_dir) / 'summary.json'}; histogram: {s.get('histogram_png')}")

    _run()


if __name__ == "__main__":
    main()
