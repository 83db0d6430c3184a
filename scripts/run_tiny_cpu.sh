#!/usr/bin/env bash
# A tiny SENT training on CPUs (machine=cpu): the tiny random Qwen2 (verl_ext/tiny_model.py, 0.35 M parameters) on
# the bundled math set, 4 prompts x 2 answers a step, 2 steps, a checkpoint every step. About 2 minutes on 2 cores.
# It checks a set-up, not the method: run it where the real job will run, e.g. under Slurm before a GPU run (Slurm,
# Ray, the network between nodes, the venv). Metrics of every step: $LOG_DIR/metrics.jsonl (verl's file logger; an
# earlier run's file is kept as metrics.1.jsonl, metrics.2.jsonl, ...; a step in two files was logged, then killed
# before its checkpoint, and redone: the later file's line counts).
#
#   bash scripts/run_tiny_cpu.sh                                             # here (starts its own Ray)
#   sbatch --nodes=2 --gpus-per-node=1 --cpus-per-task=16 scripts/slurm/train.sbatch scripts/run_tiny_cpu.sh
#   STEPS=4 bash scripts/run_tiny_cpu.sh trainer.save_freq=2                 # knobs below; Hydra overrides "$@"
#
# The model and data are made on first use in $DATA_DIR (on a cluster: a folder every node sees).
set -euo pipefail
GPUS_GIVEN=${N_GPUS_PER_NODE:-} # scripts/slurm/train.sbatch gives what its step sees; here 1 logical GPU
source "$(dirname "${BASH_SOURCE[0]}")/lib/launch_common.sh"
N_GPUS_PER_NODE=${GPUS_GIVEN:-1}

MAKE_MODEL=$([[ -z ${MODEL_PATH:-} ]] && echo 1 || echo 0)
PRESET=${PRESET:-sent}
PROJECT_NAME=${PROJECT_NAME:-sent}
EXPERIMENT_NAME=${EXPERIMENT_NAME:-tiny-cpu-${PRESET}}
OUTPUT_ROOT=${OUTPUT_ROOT:-${SENT_REPO}/outputs}
DATA_DIR=${DATA_DIR:-${OUTPUT_ROOT}/tiny_cpu}
MODEL_PATH=${MODEL_PATH:-${DATA_DIR}/tiny-qwen2}
MODEL_TAG=tiny-qwen2
TRAIN_FILE=${TRAIN_FILE:-${DATA_DIR}/train.parquet}
VAL_FILE=${VAL_FILE:-${DATA_DIR}/val.parquet}
CKPT_DIR=${CKPT_DIR:-${OUTPUT_ROOT}/checkpoints/${PROJECT_NAME}/${EXPERIMENT_NAME}}
LOG_DIR=${LOG_DIR:-${OUTPUT_ROOT}/logs/${PROJECT_NAME}/${EXPERIMENT_NAME}}
HF_DIR=${HF_DIR:-${OUTPUT_ROOT}/hf/${PROJECT_NAME}/${EXPERIMENT_NAME}}
STEPS=${STEPS:-2}
SAVE_FREQ=${SAVE_FREQ:-1}
export VERL_FILE_LOGGER_PATH=${LOG_DIR}/metrics.jsonl # read by verl's trainer, a Ray worker
SENT_WORKER_ENV+=(VERL_FILE_LOGGER_PATH)

DATA=(
    data.train_files="$TRAIN_FILE" data.val_files="$VAL_FILE"
    data.train_batch_size=4 data.max_prompt_length=64 data.max_response_length=32
)
MODEL=(machine=cpu actor_rollout_ref.model.path="$MODEL_PATH")
ACTOR=(
    preset="$PRESET" actor_rollout_ref.actor.optim.lr=1e-3
    actor_rollout_ref.actor.ppo_mini_batch_size=4 actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2
)
ROLLOUT=(
    actor_rollout_ref.rollout.n=2 actor_rollout_ref.rollout.max_model_len=128
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2
)
REF=(actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=2)
ALGO=()
CURRICULUM=()
TRAINER=(
    trainer.project_name="$PROJECT_NAME" trainer.experiment_name="$EXPERIMENT_NAME"
    trainer.logger=[console,file]
    trainer.nnodes="$NNODES" trainer.n_gpus_per_node="$N_GPUS_PER_NODE"
    trainer.total_training_steps="$STEPS" trainer.save_freq="$SAVE_FREQ"
    trainer.test_freq=-1 trainer.val_before_train=False
    trainer.resume_mode=auto trainer.default_local_dir="$CKPT_DIR"
    hydra.run.dir="$LOG_DIR/hydra"
)

if [[ $DRY_RUN != 1 ]]; then
    if [[ ! -e $TRAIN_FILE || ! -e $VAL_FILE || ($MAKE_MODEL == 1 && ! -e $MODEL_PATH/config.json) ]]; then
        MODEL_OUT=$([[ $MAKE_MODEL == 1 ]] && echo "$MODEL_PATH" || echo "") \
            "$PYTHON" - "$TRAIN_FILE" "$VAL_FILE" <<'EOF'
import os, sys
from pathlib import Path

import pandas as pd

from recipe.drivers.demo_data import demo_rows
from verl_ext.tiny_model import build_tiny_model

for path, split in zip(map(Path, sys.argv[1:]), ("train", "test")):
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(demo_rows(split)).to_parquet(path)
        print(f"[sent] bundled {split} set -> {path}", file=sys.stderr)
model = os.environ.get("MODEL_OUT")
if model and not (Path(model) / "config.json").exists():
    build_tiny_model(model, max_positions=512)
    print(f"[sent] tiny random Qwen2 -> {model}", file=sys.stderr)
EOF
    fi
    # verl's file logger truncates its file: keep an earlier run's steps (a requeued job's first run)
    if [[ -s $VERL_FILE_LOGGER_PATH ]]; then
        n=1
        while [[ -e ${VERL_FILE_LOGGER_PATH%.jsonl}.$n.jsonl ]]; do n=$((n + 1)); done
        mv "$VERL_FILE_LOGGER_PATH" "${VERL_FILE_LOGGER_PATH%.jsonl}.$n.jsonl"
    fi
    mkdir -p "$LOG_DIR"
    echo "[sent] metrics    : $VERL_FILE_LOGGER_PATH" >&2
fi

sent_launch "$@"
