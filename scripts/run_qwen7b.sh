#!/usr/bin/env bash
# SENT on Qwen2.5-Math-7B with the authors' released setup (sent-method notes §9.2): GRPO, 256 prompts x n=8 per
# step, mini-batch 128 (2 updates per step), lr 1e-6 constant, prompt/response 1024/2048, temperature 1.0, a 2-stage
# semantic-entropy curriculum with 5 epochs per stage in ONE run, SENT loss (preset), validation on AIME 2024 every
# 10 steps, checkpoints every 20 steps with resume_mode=auto (a requeued job resumes by itself).
# run_r1_distill_1p5b.sh and run_qwen3_14b.sh run this file with their own MODEL_PATH and per-model defaults.
#
#   bash scripts/run_qwen7b.sh                                   # knobs below from the environment
#   DRY_RUN=1 bash scripts/run_qwen7b.sh                         # print the composed Hydra config, exit (CPU is fine)
#   PRESET=sent_released bash scripts/run_qwen7b.sh actor_rollout_ref.actor.policy_loss.beta_high=0.3   # Hydra "$@"
#   sbatch --nodes=2 scripts/slurm/train.sbatch scripts/run_qwen7b.sh                                    # Slurm
#
# Data: python scripts/prepare_data.py --out-dir data; then score the training set with the initial model
# (bash scripts/score_semantic_entropy.sh) -> TRAIN_FILE. Unscored data trains in file order (curriculum enable=auto).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/launch_common.sh"

MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-Math-7B}
MODEL_TAG=${MODEL_TAG:-qwen2.5-math-7b}
PRESET=${PRESET:-sent}
PROJECT_NAME=${PROJECT_NAME:-sent}
EXPERIMENT_NAME=${EXPERIMENT_NAME:-${MODEL_TAG}-${PRESET}}
DATA_DIR=${DATA_DIR:-${SENT_REPO}/data}
TRAIN_FILE=${TRAIN_FILE:-${DATA_DIR}/scored/${MODEL_TAG}/scored.parquet}
VAL_FILE=${VAL_FILE:-${DATA_DIR}/eval/aime24.parquet}
OUTPUT_ROOT=${OUTPUT_ROOT:-${SENT_REPO}/outputs}
CKPT_DIR=${CKPT_DIR:-${OUTPUT_ROOT}/checkpoints/${PROJECT_NAME}/${EXPERIMENT_NAME}}
LOG_DIR=${LOG_DIR:-${OUTPUT_ROOT}/logs/${PROJECT_NAME}/${EXPERIMENT_NAME}}
HF_DIR=${HF_DIR:-${OUTPUT_ROOT}/hf/${PROJECT_NAME}/${EXPERIMENT_NAME}}

TRAIN_BATCH_SIZE=${TRAIN_BATCH_SIZE:-256}
PPO_MINI_BATCH_SIZE=${PPO_MINI_BATCH_SIZE:-128}
MICRO_BATCH_PER_GPU=${MICRO_BATCH_PER_GPU:-4}
N_SAMPLES=${N_SAMPLES:-8}
LR=${LR:-1e-6}
MAX_PROMPT_LENGTH=${MAX_PROMPT_LENGTH:-1024}
MAX_RESPONSE_LENGTH=${MAX_RESPONSE_LENGTH:-2048}
TEMPERATURE=${TEMPERATURE:-1.0}
VAL_TOP_P=${VAL_TOP_P:-0.6}
NUM_STAGES=${NUM_STAGES:-2}
EPOCHS_PER_STAGE=${EPOCHS_PER_STAGE:-5}
ROLLOUT_TP=${ROLLOUT_TP:-2}
GPU_MEMORY_UTILIZATION=${GPU_MEMORY_UTILIZATION:-0.6}
ACTOR_OFFLOAD=${ACTOR_OFFLOAD:-False}
TEST_FREQ=${TEST_FREQ:-10}
SAVE_FREQ=${SAVE_FREQ:-20}
LOGGER=${LOGGER:-[console,wandb]}
export WANDB_MODE=${WANDB_MODE:-offline}

DATA=(
    data.train_files="$TRAIN_FILE" data.val_files="$VAL_FILE"
    data.train_batch_size="$TRAIN_BATCH_SIZE"
    data.max_prompt_length="$MAX_PROMPT_LENGTH" data.max_response_length="$MAX_RESPONSE_LENGTH"
    data.filter_overlong_prompts=True data.truncation=error
)
MODEL=(
    actor_rollout_ref.model.path="$MODEL_PATH"
    actor_rollout_ref.model.use_remove_padding=True
    actor_rollout_ref.model.enable_gradient_checkpointing=True
)
ACTOR=(
    preset="$PRESET"
    actor_rollout_ref.actor.optim.lr="$LR"
    actor_rollout_ref.actor.optim.lr_warmup_steps_ratio=0.0
    actor_rollout_ref.actor.optim.lr_scheduler_type=constant
    actor_rollout_ref.actor.ppo_mini_batch_size="$PPO_MINI_BATCH_SIZE"
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu="$MICRO_BATCH_PER_GPU"
    actor_rollout_ref.actor.ppo_epochs=1
    actor_rollout_ref.actor.fsdp_config.param_offload="$ACTOR_OFFLOAD"
    actor_rollout_ref.actor.fsdp_config.optimizer_offload="$ACTOR_OFFLOAD"
)
ROLLOUT=(
    actor_rollout_ref.rollout.name=vllm
    actor_rollout_ref.rollout.n="$N_SAMPLES"
    actor_rollout_ref.rollout.temperature="$TEMPERATURE" actor_rollout_ref.rollout.top_p=1.0
    actor_rollout_ref.rollout.top_k=-1
    actor_rollout_ref.rollout.tensor_model_parallel_size="$ROLLOUT_TP"
    actor_rollout_ref.rollout.gpu_memory_utilization="$GPU_MEMORY_UTILIZATION"
    actor_rollout_ref.rollout.max_num_batched_tokens=$((MAX_PROMPT_LENGTH + MAX_RESPONSE_LENGTH))
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu="$MICRO_BATCH_PER_GPU"
    actor_rollout_ref.rollout.val_kwargs.temperature="$TEMPERATURE"
    actor_rollout_ref.rollout.val_kwargs.top_p="$VAL_TOP_P"
    actor_rollout_ref.rollout.val_kwargs.n=1 actor_rollout_ref.rollout.val_kwargs.do_sample=True
)
REF=(
    actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu="$MICRO_BATCH_PER_GPU"
    actor_rollout_ref.ref.fsdp_config.param_offload=True
)
ALGO=(algorithm.adv_estimator=grpo algorithm.use_kl_in_reward=False)
# One pass over the curriculum plan = the whole run: total_epochs=1, the stage count and epochs per stage here.
CURRICULUM=(
    data.curriculum.num_stages="$NUM_STAGES" data.curriculum.epochs_per_stage="$EPOCHS_PER_STAGE"
    trainer.total_epochs=1
)
TRAINER=(
    trainer.project_name="$PROJECT_NAME" trainer.experiment_name="$EXPERIMENT_NAME"
    trainer.logger="$LOGGER"
    trainer.nnodes="$NNODES" trainer.n_gpus_per_node="$N_GPUS_PER_NODE"
    trainer.test_freq="$TEST_FREQ" trainer.save_freq="$SAVE_FREQ" trainer.val_before_train=True
    trainer.resume_mode=auto trainer.default_local_dir="$CKPT_DIR"
    trainer.validation_data_dir="$LOG_DIR/val_generations"
    hydra.run.dir="$LOG_DIR/hydra"
)

sent_launch "$@"
