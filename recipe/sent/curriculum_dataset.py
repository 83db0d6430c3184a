"""SENT's semantic-entropy curriculum as a verl dataset: the whole multi-stage curriculum in ONE training run.

Use with::

    data.custom_cls.path=pkg://recipe.sent.curriculum_dataset
    data.custom_cls.name=CurriculumRLDataset
    data.shuffle=False                     # the dataset already is in curriculum order
    trainer.total_epochs=1                 # one pass over the plan; epochs per stage: data.curriculum.epochs_per_stage

``data.curriculum`` is ``verl_ext.curriculum.CurriculumConfig`` (every knob, its default and its check; the block in
``configs/sent_trainer.yaml`` is tested to hold the same defaults, and a misspelt key is an error naming it).

The training set is recognised by its files being ``data.train_files`` (verl's ``create_rl_dataset`` does not pass
``is_train``); every other instance (the validation set) is a plain, untouched ``RLHFDataset``. Rows are served in
``plan_curriculum`` order (``dataframe.select(plan)``), each with an extra ``curriculum_stage`` field (1-based). The
plan is a pure function of the data and the options, and the sampler is sequential, so verl's checkpointed
``StatefulDataLoader`` state resumes at the exact position in the plan.

Resetting the reference model at each stage is not offered: in verl 0.9.1 the reference policy is built once inside
the worker group from ``actor_rollout_ref.model.path`` (or is the LoRA-free actor) and there is no driver-side API to
reload its weights mid-run; doing it would mean custom worker code (a new registered worker method that copies actor
weights into the ref module on every rank) that touches FSDP/Megatron sharding. Users who want the release's
behaviour (stage-2 reference = stage-1 policy) can run stage by stage: ``python -m verl_ext.curriculum`` writes the
per-stage files.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import Any

from verl.utils.dataset.rl_dataset import RLHFDataset

from verl_ext.curriculum import CurriculumConfig, assign_stages, plan_curriculum

logger = logging.getLogger(__name__)

STAGE_FIELD = "curriculum_stage"


class CurriculumDataError(ValueError):
    """The curriculum was requested but the data cannot provide it."""


def curriculum_config(data_config: Any) -> CurriculumConfig:
    """The typed ``data.curriculum`` of verl's data config (its defaults when the block is absent)."""
    section = data_config.curriculum if "curriculum" in data_config else None
    return CurriculumConfig.from_config(section, where="data.curriculum")


def _norm_files(files: Any) -> list[str]:
    if files is None:
        return []
    if isinstance(files, str):
        files = [files]
    return [os.path.abspath(os.path.expanduser(str(f))) for f in files]


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


class CurriculumRLDataset(RLHFDataset):
    """``RLHFDataset`` whose rows are served in SENT curriculum order (ascending semantic entropy, by stage)."""

    def _read_files_and_tokenize(self):
        super()._read_files_and_tokenize()  # reads, concatenates and length-filters self.dataframe
        self.curriculum_active = False
        self.curriculum_plan: list[int] | None = None
        self.curriculum_stages: list[int] | None = None  # 1-based stage per served position
        self.curriculum_scores: list[float] | None = None  # score per served position
        cur = curriculum_config(self.config)
        if cur.enable == "false":
            return
        if not self._is_train_instance():
            return  # the validation set stays a plain RLHFDataset
        key = cur.score_key
        scores = self._read_scores(key)
        missing = [i for i, s in enumerate(scores) if _missing(s)]
        if missing:
            msg = (
                f"curriculum requested on unscored data: {len(missing)} of {len(scores)} training rows of "
                f"{self.original_data_files} have no {key!r} (neither a top-level column nor extra_info.{key}; "
                f"first such row: {missing[0]}). Score them first with `python -m verl_ext.semantic_entropy "
                f"input_files=... output_dir=... model.path=...` and train on <output_dir>/scored.parquet, "
                f"or set data.curriculum.enable=false."
            )
            if cur.enable == "true":
                raise CurriculumDataError(msg)
            logger.warning("%s Training in file order (data.curriculum.enable=auto).", msg)
            return
        scores = [float(s) for s in scores]
        plan = plan_curriculum(
            scores,
            num_stages=cur.num_stages,
            epochs_per_stage=cur.epochs_per_stage,
            seed=cur.seed,
            shuffle_within_stage=cur.shuffle_within_stage,
            stage_boundaries=cur.stage_boundaries,
        )
        stage_of = assign_stages(scores, num_stages=cur.num_stages, stage_boundaries=cur.stage_boundaries)
        self.dataframe = self.dataframe.select(plan)
        self.curriculum_plan = plan
        self.curriculum_stages = [stage_of[i] + 1 for i in plan]
        self.curriculum_scores = [scores[i] for i in plan]
        self.curriculum_active = True
        if self.config.shuffle:
            logger.warning("data.shuffle=True scrambles the curriculum order; set data.shuffle=False")
        sizes: dict[int, int] = {}
        for s in self.curriculum_stages:
            sizes[s] = sizes.get(s, 0) + 1
        logger.info("curriculum: %d served rows, stage sizes %s", len(plan), dict(sorted(sizes.items())))

    def _is_train_instance(self) -> bool:
        train = _norm_files(self.config.train_files)
        mine = _norm_files(self.original_data_files)
        if not train:
            return True  # used outside a trainer config: treat as the training set
        if mine != train:
            return False
        if mine == _norm_files(self.config.val_files):
            logger.warning("train_files == val_files: the validation set gets the curriculum order too")
        return True

    def _read_scores(self, key: str) -> list[Any]:
        cols = self.dataframe.column_names
        if key in cols:
            return list(self.dataframe[key])
        if "extra_info" in cols:
            return [(d or {}).get(key) for d in self.dataframe["extra_info"]]
        return [None] * len(self.dataframe)

    def __getitem__(self, item):
        row = super().__getitem__(item)
        if self.curriculum_active:
            row[STAGE_FIELD] = self.curriculum_stages[item]
        return row


def curriculum_step_metrics(stages: Sequence[Any] | None, scores: Sequence[Any] | None) -> dict[str, float]:
    """Curriculum metrics of one training step.

    Args:
        stages: the 1-based ``curriculum_stage`` of each prompt (or rollout) in the step, i.e.
            ``batch.non_tensor_batch["curriculum_stage"]``; None/missing entries are ignored.
        scores: the semantic entropy of each prompt (or rollout), i.e.
            ``[ei.get("semantic_entropy") for ei in batch.non_tensor_batch["extra_info"]]``; None/NaN ignored.
            Repeated rollouts of a prompt weigh every prompt equally, so per-rollout lists give the same mean.

    Returns:
        ``{"curriculum/stage": highest stage in the step, "curriculum/mean_se": mean SE}``; a key is left out when
        nothing usable was given (e.g. an unscored run).
    """
    out: dict[str, float] = {}
    st = [int(s) for s in (stages if stages is not None else []) if not _missing(s)]
    if st:
        out["curriculum/stage"] = float(max(st))
    sc = [float(s) for s in (scores if scores is not None else []) if not _missing(s)]
    if sc:
        out["curriculum/mean_se"] = float(sum(sc) / len(sc))
    return out
