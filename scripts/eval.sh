#!/usr/bin/env bash
# pass@k / avg@k on the paper's six benchmarks (python -m verl_ext.eval; the knobs of EvalConfig,
# verl_ext/eval/config.py, table in docs/evaluation.md). Knobs below via the environment; any other Hydra override is
# passed through, e.g.
#   MODEL_PATH=outputs/hf/sent-7b RUN_NAME=sent-7b bash scripts/eval.sh 'benchmarks=[aime24,math500]' sampling.n=16
# Compare runs afterwards: python -m verl_ext.eval.report runs/eval/*/results.json --paper "GRPO,w/ SENT"
set -euo pipefail

PYTHON=${PYTHON:-python}
MODEL_PATH=${MODEL_PATH:-deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B}

args=("model.path=${MODEL_PATH}")
# Optional knobs are passed only when set, so an unset one keeps EvalConfig's default (defined once, there).
knob() { if [[ -n "${!1:-}" ]]; then args+=("$2=${!1}"); fi; }
knob RUN_NAME run_name
knob DATA_DIR data_dir
knob OUTPUT_DIR output_dir
knob NUM_SAMPLES sampling.n
knob MAX_TOKENS sampling.max_tokens
knob TP_SIZE vllm.tensor_parallel_size

cd "$(dirname "$0")/.."
exec "$PYTHON" -m verl_ext.eval "${args[@]}" "$@"
