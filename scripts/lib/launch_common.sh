# shellcheck shell=bash
# Shared by scripts/run_*.sh (sourced, not executed). Each launcher sets its knobs and Hydra override arrays, then
# calls `sent_launch "$@"`. Knobs read here (all VAR=${VAR:-default}):
#   NNODES            nodes           (default: $SLURM_NNODES, else 1)
#   N_GPUS_PER_NODE   GPUs per node   (default: $SLURM_GPUS_ON_NODE / $SLURM_GPUS_PER_NODE, else nvidia-smi, else 8)
#   PYTHON            interpreter     (default: the checkout's .venv/bin/python when there is one, else python3)
#   DRY_RUN=1         print the fully composed Hydra config (--cfg job) and exit; no GPU, data or Ray needed
#   RAY_ADDRESS       attach to this running Ray cluster (set by scripts/slurm/train.sbatch; see sent_attach_overrides)
#
# Model merger (FSDP checkpoint -> Hugging Face folder), verl 0.9.1 CLI (python -m verl.model_merger merge --help):
#   python -m verl.model_merger merge --backend fsdp \
#       --local_dir  <CKPT_DIR>/global_step_<N>/actor --target_dir <HF_DIR>/global_step_<N>

SENT_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export PYTHONPATH="${SENT_REPO}${PYTHONPATH:+:${PYTHONPATH}}"

# Numbers from Slurm variables look like "4" or "h100:4" (SLURM_GPUS_PER_NODE); keep the count.
sent_gpu_count() {
    local value=${1##*:}
    [[ $value =~ ^[0-9]+$ ]] && echo "$value"
}

sent_default_gpus() {
    local n
    for var in SLURM_GPUS_ON_NODE SLURM_GPUS_PER_NODE; do
        if [[ -n ${!var:-} ]] && n=$(sent_gpu_count "${!var}") && [[ -n $n ]]; then
            echo "$n"
            return
        fi
    done
    if command -v nvidia-smi >/dev/null 2>&1 && n=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU') && ((n > 0)); then
        echo "$n"
        return
    fi
    echo 8
}

# Variables the trainer's Ray workers need from the launcher's shell; a launcher adds its own (SENT_WORKER_ENV+=(X)).
# On a cluster started before the launcher (RAY_ADDRESS set: scripts/slurm/train.sbatch) the workers run with the
# environment of `ray start`, not this one, so these travel in the job's runtime env (sent_attach_overrides).
# WANDB_*: docs/wandb.md; never WANDB_API_KEY (the overrides are printed and logged).
SENT_WORKER_ENV=(PYTHONPATH WANDB_MODE WANDB_DIR WANDB_ENTITY)

# Hydra overrides, one per line, for a trainer attaching to a running cluster ($RAY_ADDRESS): no resource arguments
# (Ray refuses num_cpus/num_gpus when connecting to an existing cluster; machine=cpu sets both) and SENT_WORKER_ENV in
# the runtime env. Nothing when the trainer starts its own Ray.
sent_attach_overrides() {
    [[ -n ${RAY_ADDRESS:-} ]] || return 0
    echo "++ray_kwargs.ray_init.num_cpus=null"
    echo "++ray_kwargs.ray_init.num_gpus=null"
    local name value
    for name in "${SENT_WORKER_ENV[@]}"; do
        [[ -n ${!name:-} ]] || continue
        value=${!name}
        echo "++ray_kwargs.ray_init.runtime_env.env_vars.${name}='${value//\'/\\\'}'" # a quoted Hydra string
    done
}

NNODES=${NNODES:-${SLURM_NNODES:-1}}
N_GPUS_PER_NODE=${N_GPUS_PER_NODE:-$(sent_default_gpus)}
if [[ -z ${PYTHON:-} && -x ${SENT_REPO}/.venv/bin/python && -z ${VIRTUAL_ENV:-}${CONDA_PREFIX:-} ]]; then
    PYTHON=${SENT_REPO}/.venv/bin/python
fi
PYTHON=${PYTHON:-python3}
DRY_RUN=${DRY_RUN:-0}

# Usage: sent_launch "$@"  (uses the arrays DATA MODEL ACTOR ROLLOUT REF ALGO TRAINER CURRICULUM from the caller)
sent_launch() {
    local -a attach
    mapfile -t attach < <(sent_attach_overrides)
    local -a cmd=("$PYTHON" -m recipe.sent.main_sent
        "${DATA[@]}" "${MODEL[@]}" "${ACTOR[@]}" "${ROLLOUT[@]}" "${REF[@]}" "${ALGO[@]}" "${CURRICULUM[@]}"
        "${TRAINER[@]}" "$@" "${attach[@]}")
    if [[ $DRY_RUN == 1 ]]; then
        echo "# DRY_RUN=1: composed config of: ${cmd[*]}" >&2
        sent_print_paths
        "${cmd[@]}" --cfg job
        return
    fi
    local missing=0
    for file in "$TRAIN_FILE" "$VAL_FILE"; do
        if [[ ! -e $file ]]; then
            echo "error: $file not found. Prepare the data: python scripts/prepare_data.py --out-dir $DATA_DIR;" \
                "score the training set with the initial model: INPUT_FILES=$DATA_DIR/dapo_math_17k.parquet" \
                "OUTPUT_DIR=$DATA_DIR/scored/$MODEL_TAG MODEL_PATH=$MODEL_PATH bash scripts/score_semantic_entropy.sh" \
                "(or sbatch scripts/slurm/score.sbatch); or set TRAIN_FILE / VAL_FILE" >&2
            missing=1
        fi
    done
    ((missing == 0)) || return 1
    mkdir -p "$LOG_DIR" "$CKPT_DIR"
    sent_print_paths
    local status=0
    "${cmd[@]}" 2>&1 | tee -a "$LOG_DIR/train.log" || status=$? # pipefail: the trainer's exit status
    sent_print_paths
    return "$status"
}

sent_print_paths() {
    cat >&2 <<EOF
[sent] experiment : ${EXPERIMENT_NAME} (${NNODES} node(s) x ${N_GPUS_PER_NODE} GPU(s))
[sent] logs       : ${LOG_DIR}/train.log  (Hydra: ${LOG_DIR}/hydra, validation samples: ${LOG_DIR}/val_generations)
[sent] checkpoints: ${CKPT_DIR}/global_step_<N>/actor  (resume_mode=auto resumes from the latest)
[sent] HF export  : ${HF_DIR}/global_step_<N>, made with
    ${PYTHON} -m verl.model_merger merge --backend fsdp \\
        --local_dir ${CKPT_DIR}/global_step_<N>/actor --target_dir ${HF_DIR}/global_step_<N>
EOF
}
