#!/usr/bin/env bash
# SENT on Qwen3-14B: the released 7B setup (scripts/run_qwen7b.sh, every knob and Hydra override the same) with this
# model's defaults: vLLM tensor parallel 4, actor parameter/optimizer offload, micro-batch 2 per GPU. The authors did
# not release per-model settings for 14B (sent-method notes §9.2). Qwen3's chat template thinks by default; pass
# +data.apply_chat_template_kwargs.enable_thinking=False to turn it off.
#
#   DRY_RUN=1 bash scripts/run_qwen3_14b.sh              # composed config on any machine
#   NNODES=2 bash scripts/run_qwen3_14b.sh               # or through scripts/slurm/train.sbatch
set -euo pipefail
export MODEL_PATH=${MODEL_PATH:-Qwen/Qwen3-14B}
export MODEL_TAG=${MODEL_TAG:-qwen3-14b}
export ROLLOUT_TP=${ROLLOUT_TP:-4}
export ACTOR_OFFLOAD=${ACTOR_OFFLOAD:-True}
export MICRO_BATCH_PER_GPU=${MICRO_BATCH_PER_GPU:-2}
exec bash "$(dirname "${BASH_SOURCE[0]}")/run_qwen7b.sh" "$@"
