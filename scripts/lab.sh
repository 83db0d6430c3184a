#!/usr/bin/env bash
# The SENT lab on a GPU machine with a real model: every variant (GRPO, KL-Cov, Clip-Cov, SENT and its ablations)
# trained on the same data, seeds and sizes, evaluated on the held-out set, compared in <OUT>/report.md and
# <OUT>/curves.png. Re-running the same command resumes (finished variants are skipped).
#
#   MODEL_PATH=/models/Qwen2.5-Math-1.5B bash scripts/lab.sh                 # knobs from the environment
#   MODEL_PATH=... bash scripts/lab.sh variants='[grpo,sent]' steps=40      # any LabConfig key after (Hydra)
#   MODEL_PATH=... bash scripts/lab.sh steps=100 train_overrides='["actor_rollout_ref.rollout.n=16"]'   # scale every variant
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODEL_PATH=${MODEL_PATH:?set MODEL_PATH to a Hugging Face model folder}
OUT=${OUT:-${REPO}/runs/lab-$(basename "${MODEL_PATH}")}
STEPS=${STEPS:-12}
PYTHON=${PYTHON:-python}

cd "${REPO}"
exec "${PYTHON}" -m recipe.drivers.lab machine=gpu model="${MODEL_PATH}" out="${OUT}" steps="${STEPS}" "$@"
