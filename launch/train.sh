#!/usr/bin/env bash
# Start a data-parallel training job: one `trainer` process per GPU (torchrun conventions).
#
#   launch/train.sh CONFIG [--nproc N] [--finetune] [--nnodes N --node-rank R]
#                   [--master-addr HOST] [--master-port PORT] [trainer args...]
#
#   --nproc N        processes on this node (default: the visible GPUs; 1 without GPUs)
#   --finetune       run `trainer finetune` instead of `trainer train`
#   --nnodes/--node-rank/--master-addr/--master-port
#                    multi-node without SLURM: run the same command on every node, each with
#                    its own --node-rank; MASTER_ADDR is node 0's host (default 127.0.0.1:29500)
#   trainer args     passed through: --set k=v, --resume auto, --init W ...
#
# Under SLURM (`srun launch/train.sh CONFIG ...`, one task per GPU) it starts nothing itself:
# each task becomes one rank, from SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID.
#
# Each rank writes <run>/logs/rank-<r>.log (and .pid); rank 0's log is echoed here. If any rank
# exits non-zero, the others are stopped and this script exits with that rank's status.
# Environment: TRAINER_BIN (prebuilt binary; otherwise cargo builds one, with --features cuda
# when GPUs are visible), RAYON_NUM_THREADS (CPU threads per rank; default cores / nproc).
set -euo pipefail

die() { echo "launch/train.sh: $*" >&2; exit 2; }
[[ $# -ge 1 && $1 != -* ]] || die "usage: launch/train.sh CONFIG [--nproc N] [--finetune] [trainer args...]"
CONFIG=$1
shift
[[ -f $CONFIG ]] || die "config $CONFIG not found"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NPROC=""
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR_GIVEN=${MASTER_ADDR:+1}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
SUBCOMMAND=train
ARGS=()
while (($#)); do
    case $1 in
        --nproc) NPROC=${2:?--nproc needs a value}; shift 2 ;;
        --nproc=*) NPROC=${1#*=}; shift ;;
        --nnodes) NNODES=${2:?}; shift 2 ;;
        --node-rank) NODE_RANK=${2:?}; shift 2 ;;
        --master-addr) MASTER_ADDR=${2:?}; MASTER_ADDR_GIVEN=1; shift 2 ;;
        --master-port) MASTER_PORT=${2:?}; shift 2 ;;
        --finetune) SUBCOMMAND=finetune; shift ;;
        --) shift; ARGS+=("$@"); break ;;
        *) ARGS+=("$1"); shift ;;
    esac
done

# GPUs this process may use: CUDA_VISIBLE_DEVICES if set, else what nvidia-smi lists.
visible_gpus() {
    if [[ -n ${CUDA_VISIBLE_DEVICES+x} ]]; then
        [[ -z $CUDA_VISIBLE_DEVICES ]] && { echo 0; return; }
        awk -F, '{print NF}' <<<"$CUDA_VISIBLE_DEVICES"
    elif command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true
    else
        echo 0
    fi
}
GPUS=$(visible_gpus)

if [[ -n ${TRAINER_BIN:-} ]]; then
    BIN=$TRAINER_BIN
else
    FEATURES=()
    ((GPUS > 0)) && FEATURES=(--features cuda)
    (cd "$ROOT" && cargo build --release -p trainer "${FEATURES[@]}" >&2)
    BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/trainer
fi
[[ -x $BIN ]] || die "trainer binary $BIN not found or not executable"

# shellcheck source=launch/nccl_env.sh
source "$ROOT/launch/nccl_env.sh"
((GPUS > 0)) && { ensure_nccl || true; }

# The run directory, resolved exactly as the trainer will (file, MAXXVIT_* environment, --set).
SETS=()
for ((i = 0; i < ${#ARGS[@]}; i++)); do
    case ${ARGS[i]} in
        --set) SETS+=(--set "${ARGS[i + 1]:-}"); i=$((i + 1)) ;;
        --set=*) SETS+=("${ARGS[i]}") ;;
    esac
done
RUN_DIR=$("$BIN" config --config "$CONFIG" "${SETS[@]}" --run-dir) || die "cannot resolve the config"
LOG_DIR=$RUN_DIR/logs
mkdir -p "$LOG_DIR"

# Under SLURM each task is one rank: become the trainer, logging to the run directory.
if [[ -n ${SLURM_PROCID:-} && ${SLURM_NTASKS:-1} -gt 1 ]]; then
    if [[ -z $MASTER_ADDR_GIVEN && -n ${SLURM_JOB_NODELIST:-} ]] && command -v scontrol >/dev/null; then
        MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
    fi
    export MASTER_ADDR MASTER_PORT
    echo $$ >"$LOG_DIR/rank-$SLURM_PROCID.pid"
    exec "$BIN" "$SUBCOMMAND" --config "$CONFIG" "${ARGS[@]}" >>"$LOG_DIR/rank-$SLURM_PROCID.log" 2>&1
fi

if [[ -z $NPROC ]]; then
    NPROC=$((GPUS > 0 ? GPUS : 1))
fi
[[ $NPROC =~ ^[1-9][0-9]*$ ]] || die "--nproc $NPROC is not a positive number"
WORLD=$((NNODES * NPROC))
THREADS=${RAYON_NUM_THREADS:-$(($(nproc) / NPROC > 0 ? $(nproc) / NPROC : 1))}

PIDS=()
stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 1 20); do
        local alive=0
        for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || return 0
        sleep 0.5
    done
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}
TAIL_PID=""
cleanup() { [[ -n $TAIL_PID ]] && kill "$TAIL_PID" 2>/dev/null; true; }
trap 'echo "launch/train.sh: interrupted, stopping all ranks" >&2; stop_all; cleanup; exit 130' INT TERM

echo "launch/train.sh: $WORLD ranks ($NPROC here, node $NODE_RANK of $NNODES), master $MASTER_ADDR:$MASTER_PORT, logs in $LOG_DIR" >&2
for ((local_rank = 0; local_rank < NPROC; local_rank++)); do
    rank=$((NODE_RANK * NPROC + local_rank))
    log=$LOG_DIR/rank-$rank.log
    : >"$log"
    RANK=$rank WORLD_SIZE=$WORLD LOCAL_RANK=$local_rank LOCAL_WORLD_SIZE=$NPROC GROUP_RANK=$NODE_RANK \
        MASTER_ADDR=$MASTER_ADDR MASTER_PORT=$MASTER_PORT RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS \
        "$BIN" "$SUBCOMMAND" --config "$CONFIG" "${ARGS[@]}" >"$log" 2>&1 &
    PIDS+=($!)
    echo $! >"$LOG_DIR/rank-$rank.pid"
done
tail -n +1 -f "$LOG_DIR/rank-$((NODE_RANK * NPROC)).log" >&2 &
TAIL_PID=$!

# Wait for every rank; the first failure stops the rest.
status=0
remaining=${#PIDS[@]}
declare -A DONE=()
while ((remaining > 0)); do
    for i in "${!PIDS[@]}"; do
        pid=${PIDS[i]}
        [[ -n ${DONE[$pid]:-} ]] && continue
        kill -0 "$pid" 2>/dev/null && continue
        code=0
        wait "$pid" || code=$?
        DONE[$pid]=1
        remaining=$((remaining - 1))
        if ((code != 0 && status == 0)); then
            rank=$((NODE_RANK * NPROC + i))
            status=$code
            echo "launch/train.sh: rank $rank exited with status $code; stopping the other ranks (log: $LOG_DIR/rank-$rank.log)" >&2
            tail -n 5 "$LOG_DIR/rank-$rank.log" | sed "s/^/  rank $rank | /" >&2
            stop_all
        fi
    done
    ((remaining > 0)) && sleep 0.5
done
sleep 0.2
cleanup
exit "$status"
