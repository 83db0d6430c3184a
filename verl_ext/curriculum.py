"""SENT's curriculum: train on prompts in ascending semantic entropy, stage by stage (pure functions + a CLI).

``plan_curriculum`` returns dataset indices in training order. ``recipe.sent.curriculum_dataset`` serves that order
in a single verl run; ``python -m verl_ext.curriculum`` writes one parquet per stage for stage-by-stage runs.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

SCORE_KEY = "semantic_entropy"


def _check_scores(scores: Sequence[float]) -> list[float]:
    out = []
    for i, s in enumerate(scores):
        if s is None or (isinstance(s, float) and math.isnan(s)):
            raise ValueError(f"score of index {i} is missing/NaN: every prompt needs a semantic-entropy score")
        out.append(float(s))
    return out


def assign_stages(
    scores: Sequence[float], *, num_stages: int = 2, stage_boundaries: Sequence[float] | None = None
) -> list[int]:
    """Stage id (0-based) of every index.

    - ``stage_boundaries=None``: equal-size quantile split of the indices sorted by ascending score (ties broken by
      index); stage sizes differ by at most one (the earlier stages take the extra rows).
    - otherwise ascending thresholds ``b_0 < b_1 < ...``: stage ``k`` holds ``b_{k-1} < score <= b_k``, so there are
      ``len(stage_boundaries) + 1`` stages and ``num_stages`` is ignored (``[0.0]`` separates SE = 0 from SE > 0).
    """
    sc = _check_scores(scores)
    n = len(sc)
    if stage_boundaries is not None:
        b = [float(x) for x in stage_boundaries]
        if any(b2 <= b1 for b1, b2 in zip(b, b[1:])):
            raise ValueError(f"stage_boundaries must be strictly ascending, got {b}")
        return [bisect.bisect_left(b, s) for s in sc]
    if num_stages < 1:
        raise ValueError(f"num_stages must be >= 1, got {num_stages}")
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
    num_stages: int = 2,
    epochs_per_stage: int = 1,
    seed: int = 0,
    shuffle_within_stage: bool = True,
    stage_boundaries: Sequence[float] | None = None,
) -> list[int]:
    """Dataset indices in training order.

    Stages are contiguous blocks in ascending score (see ``assign_stages``); each stage block repeats its indices
    ``epochs_per_stage`` times, reshuffled per epoch (a generator seeded with ``(seed, stage, epoch)``) when
    ``shuffle_within_stage``, else in ascending score order (ties by index). Stages never mix; empty stages are
    skipped. Deterministic for fixed arguments.
    """
    if epochs_per_stage < 1:
        raise ValueError(f"epochs_per_stage must be >= 1, got {epochs_per_stage}")
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
    p.add_argument("--num-stages", type=int, default=2)
    p.add_argument("--epochs-per-stage", type=int, default=1, help="repeat each stage's rows in its file")
    p.add_argument("--seed", type=int, default=0)
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
