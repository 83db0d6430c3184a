# shellcheck shell=bash
# Ray-on-Slurm helpers, sourced by train.sbatch and score.sbatch (and by tests with stand-in scontrol/srun/ray).
#
#   sent_nodes                  -> SENT_NODES array, one hostname per element (from $SLURM_JOB_NODELIST)
#   sent_head_node              first node (Ray head)
#   sent_worker_nodes           the other nodes, one per line (Ray workers)
#   sent_head_address [node]    IP of the head node (interface $SENT_HEAD_IFACE when set, e.g. ib0), IPv6 in [...]
#   sent_wait_for_nodes N [timeout_s] [address]   wait until `ray status` lists N active nodes ($SENT_RAY: the
#                               ray command, default `ray`)
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

sent_wait_for_nodes() {
    local want=$1 timeout=${2:-600} address=${3:-${RAY_ADDRESS:-}} waited=0 have=0
    local -a ray_cmd
    read -r -a ray_cmd <<<"${SENT_RAY:-ray}" # e.g. SENT_RAY="apptainer exec sent.sif ray"
    while :; do
        have=$("${ray_cmd[@]}" status ${address:+--address "$address"} 2>/dev/null | sent_count_active_nodes)
        if ((have >= want)); then
            echo "[slurm] Ray cluster ready: $have/$want nodes" >&2
            return 0
        fi
        if ((waited >= timeout)); then
            echo "[slurm] timed out after ${timeout}s: $have/$want Ray nodes up" >&2
            return 1
        fi
        sleep "${SENT_WAIT_POLL_S:-5}"
        waited=$((waited + ${SENT_WAIT_POLL_S:-5}))
    done
}

# GPUs per node from Slurm ("4" or "h100:4"), else the given default.
sent_gpus_per_node() {
    local value=${SLURM_GPUS_ON_NODE:-${SLURM_GPUS_PER_NODE:-${1:-8}}}
    echo "${value##*:}"
}
