"""SENT's curriculum: train on prompts in ascending semantic entropy, stage by stage (pure functions + a CLI).

``plan_curriculum`` returns dataset indices in training order. ``recipe.sent.curriculum_dataset`` serves that order
in a single verl run (configured by ``CurriculumConfig``, the ``data.curriculum`` block); ``python -m
verl_ext.curriculum`` writes one parquet per stage for stage-by-stage runs. The defaults of every knob are the fields of
``CurriculumConfig`` (the functions' keyword defaults and the CLI's are read from it).
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from verl_ext.config import ConfigError, TypedConfig, one_of

SCORE_KEY = "semantic_entropy"  # the column the scoring job writes (extra_info.semantic_entropy)
ENABLE_MODES = ("auto", "true", "false")


@dataclass
class StagesConfig(TypedConfig):
    """How prompts are split into stages (shared by ``data.curriculum`` and the scoring job's histogram)."""

    num_stages: int = 2
    """equal-size quantile stages in ascending SE (ignored when stage_boundaries is set)"""
    stage_boundaries: list[float] | None = None
    """ascending SE thresholds instead, e.g. [0.0] (SE = 0 vs > 0) or [0.5, 1.2]; stage k holds b_(k-1) < SE <= b_k"""

    def validate(self) -> None:
        if self.num_stages < 1:
            raise ConfigError(f"num_stages must be >= 1, got {self.num_stages}")
        b = self.stage_boundaries
        if b is not None and any(b2 <= b1 for b1, b2 in zip(b, b[1:])):
            raise ConfigError(f"stage_boundaries must be strictly ascending, got {list(b)}")

    @property
    def stage_count(self) -> int:
        return len(self.stage_boundaries) + 1 if self.stage_boundaries is not None else self.num_stages


@dataclass
class CurriculumConfig(StagesConfig):
    """``data.curriculum`` of the recipe's trainer config (``recipe.sent.curriculum_dataset.CurriculumRLDataset``)."""

    enable: Any = "auto"
    """auto: curriculum when the train data has scores, file order with a warning otherwise; true: fail on unscored data; false: plain RLHFDataset"""
    score_key: str = SCORE_KEY
    """a top-level column, else extra_info.<score_key> (what the scoring job writes)"""
    epochs_per_stage: int = 1
    """passes over each stage before the next (the release used 5); keep trainer.total_epochs=1"""
    shuffle_within_stage: bool = True
    """reshuffle each stage every epoch (seeded); false = ascending SE inside a stage"""
    seed: int = 0
    """seed of the within-stage shuffles"""

    def validate(self) -> None:
        super().validate()
        # Hydra reads `true`/`false` as booleans and `auto` as a string: one spelling for the code to compare
        self._normalise("enable", str(self.enable).lower())
        one_of("enable", self.enable, ENABLE_MODES)
        if self.epochs_per_stage < 1:
            raise ConfigError(f"epochs_per_stage must be >= 1, got {self.epochs_per_stage}")


DEFAULTS = CurriculumConfig()


def _check_scores(scores: Sequence[float]) -> list[float]:
    out = []
    for i, s in enumerate(scores):
        if s is None or (isinstance(s, float) and math.isnan(s)):
            raise ValueError(f"score of index {i} is missing/NaN: every prompt needs a semantic-entropy score")
        out.append(float(s))
    return out


def assign_stages(
    scores: Sequence[float],
    *,
    num_stages: int = DEFAULTS.num_stages,
    stage_boundaries: Sequence[float] | None = DEFAULTS.stage_boundaries,
) -> list[int]:
    """Stage id (0-based) of every index.

    - ``stage_boundaries=None``: equal-size quantile split of the indices sorted by ascending score (ties broken by
      index); stage sizes differ by at most one (the earlier stages take the extra rows).
    - otherwise ascending thresholds ``b_0 < b_1 < ...``: stage ``k`` holds ``b_{k-1} < score <= b_k``, so there are
      ``len(stage_boundaries) + 1`` stages and ``num_stages`` is ignored (``[0.0]`` separates SE = 0 from SE > 0).
    """
    sc = _check_scores(scores)
    n = len(sc)
    bounds = [float(x) for x in stage_boundaries] if stage_boundaries is not None else None
    StagesConfig(num_stages=num_stages, stage_boundaries=bounds)  # validates both
    if bounds is not None:
        return [bisect.bisect_left(bounds, s) for s in sc]
    order = sorted(range(n), key=lambda i: (sc[i], i))
    stages = [0] * n
    base, extra = divmod(n, num_stages)
    pos = 0
    for k in range(num_stages):
        size = base + (1 if k < extra else 0)
        for i in order[pos : pos + size]:
            stages[i] = k
        pos += size
    return stages


def plan_curriculum(
    scores: Sequence[float],
    *,
    num_stages: int = DEFAULTS.num_stages,
    epochs_per_stage: int = DEFAULTS.epochs_per_stage,
    seed: int = DEFAULTS.seed,
    shuffle_within_stage: bool = DEFAULTS.shuffle_within_stage,
    stage_boundaries: Sequence[float] | None = DEFAULTS.stage_boundaries,
) -> list[int]:
    """Dataset indices in training order.

    Stages are contiguous blocks in ascending score (see ``assign_stages``); each stage block repeats its indices
    ``epochs_per_stage`` times, reshuffled per epoch (a generator seeded with ``(seed, stage, epoch)``) when
    ``shuffle_within_stage``, else in ascending score order (ties by index). Stages never mix; empty stages are
    skipped. Deterministic for fixed arguments.
    """
    if epochs_per_stage < 1:
        raise ConfigError(f"epochs_per_stage must be >= 1, got {epochs_per_stage}")
    stages = assign_stages(scores, num_stages=num_stages, stage_boundaries=stage_boundaries)
    sc = [float(s) for s in scores]
    n_stages = (len(stage_boundaries) + 1) if stage_boundaries is not None else num_stages
    plan: list[int] = []
    for k in range(n_stages):
        members = sorted((i for i, s in enumerate(stages) if s == k), key=lambda i: (sc[i], i))
        if not members:
            continue
        for epoch in range(epochs_per_stage):
            if shuffle_within_stage:
                rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, k, epoch])
                plan.extend(int(members[j]) for j in rng.permutation(len(members)))
            else:
                plan.extend(members)
    return plan


def describe_stages(scores: Sequence[float], split: StagesConfig) -> list[dict]:
    """Per stage of ``split``: 1-based ``stage``, ``rows``, ``se_min`` and ``se_max`` (None for an empty stage)."""
    stage_of = assign_stages(scores, num_stages=split.num_stages, stage_boundaries=split.stage_boundaries)
    out = []
    for k in range(split.stage_count):
        members = [float(s) for s, st in zip(scores, stage_of) if st == k]
        out.append({"stage": k + 1, "rows": len(members), "se_min": min(members, default=None),
                    "se_max": max(members, default=None)})
    return out


# --------------------------------------------------------------------------------------------------------- CLI
def read_scores(table, score_key: str = SCORE_KEY) -> list[float | None]:
    """Scores of a pyarrow table: a top-level ``score_key`` column, else ``extra_info.<score_key>``."""
    if score_key in table.column_names:
        return table.column(score_key).to_pylist()
    if "extra_info" in table.column_names:
        return [(d or {}).get(score_key) for d in table.column("extra_info").to_pylist()]
    return [None] * table.num_rows


def main(argv: list[str] | None = None) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = argparse.ArgumentParser(
        prog="python -m verl_ext.curriculum",
        description="Split a semantic-entropy-scored parquet into per-stage parquet files (stage-by-stage runs).",
    )
    p.add_argument("--input", required=True, help="scored parquet (output of python -m verl_ext.semantic_entropy)")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--num-stages", type=int, default=DEFAULTS.num_stages)
    p.add_argument("--epochs-per-stage", type=int, default=DEFAULTS.epochs_per_stage, help="repeat each stage's rows in its file")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed)
    p.add_argument("--no-shuffle", action="store_true", help="keep ascending score order within a stage")
    p.add_argument("--stage-boundaries", default=None, help="comma-separated SE thresholds, e.g. 0.0,1.0")
    p.add_argument("--score-key", default=SCORE_KEY)
    a = p.parse_args(argv)

    try:
        table = pq.read_table(a.input)
    except Exception as e:  # noqa: BLE001
        print(f"error: {a.input}: cannot read the file as parquet: {e}", file=sys.stderr)
        return 2
    scores = read_scores(table, a.score_key)
    missing = [i for i, s in enumerate(scores) if s is None or (isinstance(s, float) and math.isnan(s))]
    if missing:
        print(
            f"error: {a.input}: {len(missing)} of {len(scores)} rows have no {a.score_key!r} score (first: row "
            f"{missing[0]}); score the data first with python -m verl_ext.semantic_entropy",
            file=sys.stderr,
        )
        return 2
    bounds = [float(x) for x in a.stage_boundaries.split(",")] if a.stage_boundaries else None
    kw = dict(num_stages=a.num_stages, stage_boundaries=bounds)
    stages = assign_stages(scores, **kw)
    plan = plan_curriculum(
        scores, epochs_per_stage=a.epochs_per_stage, seed=a.seed, shuffle_within_stage=not a.no_shuffle, **kw
    )
    out = Path(a.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_stages = len(bounds) + 1 if bounds else a.num_stages
    info = {"input": a.input, "stages": []}
    for k in range(n_stages):
        idx = [i for i in plan if stages[i] == k]
        path = out / f"stage{k + 1}.parquet"
        pq.write_table(table.take(pa.array(idx, pa.int64())), path)
        sc = [scores[i] for i in idx]
        info["stages"].append(
            {"stage": k + 1, "file": str(path), "rows": len(idx), "se_min": min(sc) if sc else None, "se_max": max(sc) if sc else None}
        )
        print(f"stage {k + 1}: {len(idx)} rows -> {path}")
    (out / "curriculum.json").write_text(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
