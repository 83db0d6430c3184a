#!/usr/bin/env bash
# Offline semantic-entropy scoring (SENT's data level). Knobs below via environment; any other Hydra override
# (the knobs of ScoringConfig, verl_ext/semantic_entropy/config.py; table in docs/scoring.md) is passed through, e.g.
#   INPUT_FILES=data/dapo.parquet OUTPUT_DIR=scored MODEL_PATH=/models/R1-Distill-1.5B \
#     bash scripts/score_semantic_entropy.sh vllm.tensor_parallel_size=2 sampling.max_tokens=4096
# Data parallel over nodes/GPU groups (e.g. a Slurm array): WORLD_SIZE=4 RANK=$SLURM_ARRAY_TASK_ID; every rank
# scores its shards, rank 0 merges when all are done (or rerun any rank with merge_only=true afterwards).
set -euo pipefail

PYTHON=${PYTHON:-python}
INPUT_FILES=${INPUT_FILES:-data/train.parquet}
OUTPUT_DIR=${OUTPUT_DIR:-outputs/semantic_entropy}
MODEL_PATH=${MODEL_PATH:-deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B}

args=("input_files=[${INPUT_FILES}]" "output_dir=${OUTPUT_DIR}" "model.path=${MODEL_PATH}")
# Optional knobs are passed only when set, so an unset one keeps ScoringConfig's default (defined once, there).
knob() { if [[ -n "${!1:-}" ]]; then args+=("$2=${!1}"); fi; }
knob BACKEND backend
knob NUM_SAMPLES sampling.n
knob MAX_TOKENS sampling.max_tokens
knob TEMPERATURE sampling.temperature
knob SEED sampling.seed
knob TP_SIZE vllm.tensor_parallel_size
knob SHARD_SIZE shard_size
knob WORLD_SIZE world_size
knob RANK rank

cd "$(dirname "$0")/.."
exec "$PYTHON" -m verl_ext.semantic_entropy "${args[@]}" "$@"
