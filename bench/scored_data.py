"""The bundled demo set with a synthetic semantic-entropy column, for benches that time training steps (the
curriculum is not what they measure, so no scoring job runs)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from recipe.drivers.demo_data import demo_rows


def scored_demo_data(path: Path) -> Path:
    """Write the demo's train rows to `path` with `extra_info.semantic_entropy` = level + a small distinct offset."""
    rows = demo_rows("train")
    for index, row in enumerate(rows):
        row["extra_info"]["semantic_entropy"] = float(row["extra_info"]["level"]) + index * 1e-3
    pd.DataFrame(rows).to_parquet(path)
    return path
