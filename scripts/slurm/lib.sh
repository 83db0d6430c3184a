# shellcheck shell=bash
# Ray-on-Slurm helpers, sourced by train.sbatch and score.sbatch, and inside their steps.
#
# In the batch script:
#   sent_nodes                  -> SENT_NODES array, one hostname per element (from $SLURM_JOB_NODELIST)
#   sent_head_node              first node (Ray head)
#   sent_worker_nodes           the other nodes, one per line (Ray workers)
#   sent_head_address [node]    IP of the head node (interface $SENT_HEAD_IFACE when set, e.g. ib0), IPv6 in [...]
#   sent_watch_step PID NAME    a background srun step the wait below watches (e.g. "Ray head on gpu01")
#   sent_wait_for_nodes N [timeout_s] [address]   wait (wall clock) until `ray status` lists N live nodes; fails
#                               early when a watched step has exited ($SENT_RAY: the ray command, default `ray`)
# Inside a step (what the step itself sees, not what the batch script sees):
#   sent_step_devices           drop ROCR_VISIBLE_DEVICES when CUDA_VISIBLE_DEVICES is set (both set by Slurm)
#   sent_step_gpus              GPUs of this step: $SENT_RAY_GPUS, else the devices in CUDA_VISIBLE_DEVICES, else
#                               nvidia-smi's count, else 0
#   sent_ray_node head|worker ADDRESS   start this node's Ray with the step's CPUs and GPUs and block
#   sent_run_launcher NODES LAUNCHER [ARGS]   run a launcher with NNODES and N_GPUS_PER_NODE from the step
#
# verl's example builds the list with nodes_array=("$nodes"): ONE element holding every hostname joined by newlines,
# so with 2+ nodes the "head" is the whole list and no worker ever starts. mapfile gives one element per node.
#
# Multi-NIC clusters: Ray, Gloo and NCCL must agree on the network. Set before sbatch (exported to every step):
#   SENT_HEAD_IFACE=ib0          interface whose IPv4 address the head advertises (default: hostname --ip-address)
#   GLOO_SOCKET_IFNAME=ib0       torch.distributed / Gloo bootstrap interface
#   NCCL_SOCKET_IFNAME=ib0       NCCL bootstrap interface (NCCL_IB_HCA=mlx5 to pick InfiniBand HCAs)

sent_nodes() {
    if [[ -z ${SLURM_JOB_NODELIST:-} ]]; then
        echo "sent_nodes: SLURM_JOB_NODELIST is not set (run inside a Slurm allocation)" >&2
        return 1
    fi
    mapfile -t SENT_NODES < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
    if ((${#SENT_NODES[@]} == 0)); then
        echo "sent_nodes: scontrol returned no hosts for '$SLURM_JOB_NODELIST'" >&2
        return 1
    fi
}

sent_head_node() {
    sent_nodes || return 1
    echo "${SENT_NODES[0]}"
}

sent_worker_nodes() {
    sent_nodes || return 1
    local node
    for node in "${SENT_NODES[@]:1}"; do
        echo "$node"
    done
}

sent_head_address() {
    local head=${1:-}
    [[ -n $head ]] || head=$(sent_head_node) || return 1
    local ip
    if [[ -n ${SENT_HEAD_IFACE:-} ]]; then
        ip=$(srun --overlap --nodes=1 --ntasks=1 -w "$head" ip -4 -o addr show dev "$SENT_HEAD_IFACE" |
            awk '{split($4, a, "/"); print a[1]; exit}')
    else
        ip=$(srun --overlap --nodes=1 --ntasks=1 -w "$head" hostname --ip-address)
    fi
    ip=${ip%%[[:space:]]*} # several addresses: take the first
    ip=${ip#"${ip%%[![:space:]]*}"}
    if [[ -z $ip ]]; then
        echo "sent_head_address: no address for $head${SENT_HEAD_IFACE:+ on $SENT_HEAD_IFACE}" >&2
        return 1
    fi
    [[ $ip == *:* && $ip != \[* ]] && ip="[$ip]" # IPv6
    echo "$ip"
}

# Live nodes in `ray status` output (stdin): lines " 1 node_<id>" under "Active:" and, for Ray's autoscaler v2
# (nodes without running tasks), "Idle:"; "Pending:" and "Recent failures:" do not count.
sent_count_active_nodes() {
    awk '/^(Active|Idle):/ {live = 1; next} /^[A-Za-z].*:/ {live = 0} live && /node_/ {n += $1} END {print n + 0}'
}

declare -gA SENT_WATCHED=() # pid -> name of the background srun steps the wait watches

sent_watch_step() {
    SENT_WATCHED[$1]=$2
}

# A watched step that has exited: say which, with its exit status, and return 0; return 1 while all run.
sent_exited_step() {
    local pid status
    for pid in "${!SENT_WATCHED[@]}"; do
        kill -0 "$pid" 2>/dev/null && continue
        status=0
        wait "$pid" 2>/dev/null || status=$?
        echo "[slurm] ${SENT_WATCHED[$pid]} exited (status $status) before the Ray cluster was up; its output" \
            "is above" >&2
        return 0
    done
    return 1
}

# The wait counts wall time: a `ray status` that cannot reach the head (it is still starting, or gone) takes ~40 s
# to fail, so each call is bounded, and a failing call only means "no nodes yet" (it must not end the script under
# `set -euo pipefail`).
sent_join() {
    local sep=$1 out="" item
    shift
    for item in "$@"; do out+=${out:+$sep}$item; done
    echo "${out:-none}"
}

sent_wait_for_nodes() {
    local want=$1 timeout=${2:-600} address=${3:-${RAY_ADDRESS:-}}
    local poll=${SENT_WAIT_POLL_S:-5} bound=${SENT_STATUS_TIMEOUT_S:-20}
    local deadline=$((SECONDS + timeout)) have=0 left out pid hint
    local -a ray_cmd running
    read -r -a ray_cmd <<<"${SENT_RAY:-ray}" # e.g. SENT_RAY="apptainer exec sent.sif ray"
    while :; do
        left=$((deadline - SECONDS))
        if out=$(timeout "$((left < bound ? (left > 1 ? left : 1) : bound))" \
            "${ray_cmd[@]}" status ${address:+--address "$address"} 2>&1); then
            have=$(sent_count_active_nodes <<<"$out") # a failed call keeps the last count
        fi
        if ((have >= want)); then
            echo "[slurm] Ray cluster ready: $have/$want nodes" >&2
            return 0
        fi
        sent_exited_step && return 1
        if ((SECONDS >= deadline)); then
            running=()
            for pid in "${!SENT_WATCHED[@]}"; do running+=("${SENT_WATCHED[$pid]}"); done
            hint="a worker that runs but never joins cannot reach the head: check SENT_HEAD_IFACE and firewalls"
            ((have > 0)) || hint="the head does not answer \`ray status\`: see its output above"
            echo "[slurm] timed out after ${timeout}s waiting for the Ray cluster at ${address:-?}: $have/$want" \
                "nodes up; Ray steps running: $(sent_join ", " "${running[@]}") ($hint)" >&2
            [[ -n $out ]] && echo "[slurm] last \`ray status\`: $(tail -n 3 <<<"$out" | tr '\n' ' ')" >&2
            return 1
        fi
        sleep "$((poll < left ? poll : (left > 0 ? left : 0)))"
    done
}

# Inside a step. Slurm sets ROCR_VISIBLE_DEVICES beside CUDA_VISIBLE_DEVICES unless gres.conf says
# Flags=nvidia_gpu_env; verl's workers refuse both ("Please don't set ROCR_VISIBLE_DEVICES when HIP/CUDA_VISIBLE_DEVICES
# is set"), and Ray's workers inherit them from `ray start`. HIP honours CUDA_VISIBLE_DEVICES too.
sent_step_devices() {
    if [[ -n ${CUDA_VISIBLE_DEVICES:-} && -n ${ROCR_VISIBLE_DEVICES:-} ]]; then
        unset ROCR_VISIBLE_DEVICES
    fi
}

# Inside a step: the batch script's SLURM_GPUS_ON_NODE can differ from what a step gets (under --exclusive it is
# every GPU of the node, while a step gets the job's --gpus-per-node), so count the step's own devices.
# SENT_RAY_GPUS: logical GPUs to advertise instead (machine=cpu on nodes without GPUs: verl places its workers on
# Ray GPUs).
sent_step_gpus() {
    if [[ -n ${SENT_RAY_GPUS:-} ]]; then
        echo "$SENT_RAY_GPUS"
        return
    fi
    local devices=${CUDA_VISIBLE_DEVICES:-${ROCR_VISIBLE_DEVICES:-}} n
    local -a list
    if [[ -n $devices && $devices != NoDevFiles ]]; then # NoDevFiles: Slurm's value for a gres without File=
        IFS=, read -r -a list <<<"$devices"
        echo "${#list[@]}"
    elif command -v nvidia-smi >/dev/null 2>&1 && n=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU') && ((n > 0)); then
        echo "$n"
    else
        echo 0
    fi
}

# Inside a step: this node's Ray, blocking until the step is stopped (SIGTERM from Slurm or the batch script's
# teardown stops the Ray processes it started, and only those). CPUs: $SENT_RAY_CPUS, else the step's
# --cpus-per-task, else nproc.
sent_ray_node() {
    local role=$1 address=$2
    sent_step_devices
    local -a args=(--num-cpus="${SENT_RAY_CPUS:-${SLURM_CPUS_PER_TASK:-$(nproc)}}" --num-gpus="$(sent_step_gpus)"
        --disable-usage-stats --block)
    if [[ $role == head ]]; then
        local ip=${address%:*} port=${address##*:}
        ip=${ip//[\[\]]/}
        # Ray reports a taken GCS port only after ~50 s ("Failed to start the grpc server"); say it at once.
        if timeout 5 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$ip" "$port" 2>/dev/null; then
            echo "[slurm] cannot start the Ray head on $(hostname): port $port on $ip is already in use (another" \
                "Ray cluster or service there? choose another with RAY_PORT=...)" >&2
            return 1
        fi
        exec ray start --head --node-ip-address="$ip" --port="$port" "${args[@]}"
    fi
    exec ray start --address="$address" "${args[@]}"
}

# Inside the launcher's step on the head: NNODES, and N_GPUS_PER_NODE (unless set) from this step's own GPUs.
sent_run_launcher() {
    local nodes=$1
    shift
    sent_step_devices
    export NNODES=$nodes N_GPUS_PER_NODE=${N_GPUS_PER_NODE:-$(sent_step_gpus)}
    exec bash "$@"
}
