#!/usr/bin/env bash
# pass@k / avg@k on the paper's six benchmarks (python -m verl_ext.eval, configs/eval.yaml). Knobs below via the
# environment; any other Hydra override is passed through, e.g.
#   MODEL_PATH=outputs/hf/sent-7b RUN_NAME=sent-7b bash scripts/eval.sh 'benchmarks=[aime24,math500]' sampling.n=16
# Compare runs afterwards: python -m verl_ext.eval.report runs/eval/*/results.json --paper "GRPO,w/ SENT"
set -euo pipefail

PYTHON=${PYTHON:-python}
MODEL_PATH=${MODEL_PATH:-deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B}
RUN_NAME=${RUN_NAME:-$(basename "$MODEL_PATH")}
DATA_DIR=${DATA_DIR:-data/eval}
OUTPUT_DIR=${OUTPUT_DIR:-runs/eval/${RUN_NAME}}
NUM_SAMPLES=${NUM_SAMPLES:-32}
MAX_TOKENS=${MAX_TOKENS:-8000}
TP_SIZE=${TP_SIZE:-1}

cd "$(dirname "$0")/.."
exec "$PYTHON" -m verl_ext.eval \
    "model.path=${MODEL_PATH}" \
    "run_name=${RUN_NAME}" \
    "data_dir=${DATA_DIR}" \
    "output_dir=${OUTPUT_DIR}" \
    "sampling.n=${NUM_SAMPLES}" \
    "sampling.max_tokens=${MAX_TOKENS}" \
    "vllm.tensor_parallel_size=${TP_SIZE}" \
    "$@"
