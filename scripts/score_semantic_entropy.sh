#!/usr/bin/env bash
# Offline semantic-entropy scoring (SENT's data level). Knobs below via environment; any other Hydra override
# (configs/score_semantic_entropy.yaml) is passed through, e.g.
#   INPUT_FILES=data/dapo.parquet OUTPUT_DIR=scored MODEL_PATH=/models/R1-Distill-1.5B \
#     bash scripts/score_semantic_entropy.sh vllm.tensor_parallel_size=2 sampling.max_tokens=4096
# Data parallel over nodes/GPU groups (e.g. a Slurm array): WORLD_SIZE=4 RANK=$SLURM_ARRAY_TASK_ID; every rank
# scores its shards, rank 0 merges when all are done (or rerun any rank with merge_only=true afterwards).
set -euo pipefail

PYTHON=${PYTHON:-python}
INPUT_FILES=${INPUT_FILES:-data/train.parquet}
OUTPUT_DIR=${OUTPUT_DIR:-outputs/semantic_entropy}
MODEL_PATH=${MODEL_PATH:-deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B}
BACKEND=${BACKEND:-vllm}
NUM_SAMPLES=${NUM_SAMPLES:-8}
MAX_TOKENS=${MAX_TOKENS:-2048}
TEMPERATURE=${TEMPERATURE:-1.0}
SEED=${SEED:-0}
TP_SIZE=${TP_SIZE:-1}
SHARD_SIZE=${SHARD_SIZE:-512}
WORLD_SIZE=${WORLD_SIZE:-1}
RANK=${RANK:-0}

cd "$(dirname "$0")/.."
exec "$PYTHON" -m verl_ext.semantic_entropy \
    "input_files=[${INPUT_FILES}]" \
    "output_dir=${OUTPUT_DIR}" \
    "model.path=${MODEL_PATH}" \
    "backend=${BACKEND}" \
    "sampling.n=${NUM_SAMPLES}" \
    "sampling.max_tokens=${MAX_TOKENS}" \
    "sampling.temperature=${TEMPERATURE}" \
    "sampling.seed=${SEED}" \
    "vllm.tensor_parallel_size=${TP_SIZE}" \
    "shard_size=${SHARD_SIZE}" \
    "world_size=${WORLD_SIZE}" \
    "rank=${RANK}" \
    "$@"
