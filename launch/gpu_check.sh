#!/usr/bin/env bash
# Everything a lent GPU machine checks, in one call of at most ~8 minutes (BUDGET_S):
#   (a) every golden case on the CUDA backend in f32 (trainer golden-check), fusion on and off
#       (--no-fusion), then its train step under bf16 autocast (golden-check --amp bf16),
#   (b) NCCL all-reduce through our Collective at world size 1 (and across all GPUs if several),
#   (c) our throughput: maxxvitv2_rmlp_base_rw_224, 224², bf16, train at batch 64 and 128, infer 128,
#   (d) timm's on the same card: eager AMP bf16 channels_last, then torch.compile if time is left,
# then one table with the ratios (bench/gpu_table.py). Every phase has its own timeout and the
# script goes on after a failure; it exits non-zero if any phase failed, and 3 at once when no
# GPU is visible.
#
#   TRAINER_BIN=runs/gpu/trainer MAXXVIT_GOLDEN_DIR=runs/gpu/golden launch/gpu_check.sh
#
# TRAINER_BIN: a binary built with `cargo build --profile carry -p trainer --features cuda`.
# Results: $OUT (the device tool's return folder) or runs/gpu_check: check.log, *.jsonl, table.md.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${TRAINER_BIN:-$ROOT/target/carry/trainer}
GOLDEN=${MAXXVIT_GOLDEN_DIR:-$ROOT/fixtures/golden}
RESULTS=${OUT:-$ROOT/runs/gpu_check}
BUDGET_S=${BUDGET_S:-480}
MODEL=${MODEL:-maxxvitv2_rmlp_base_rw_224}
PYTHON=${PYTHON:-python3}
mkdir -p "$RESULTS"
LOG=$RESULTS/check.log
: >"$LOG"
say() { echo "== $* ($(date -u +%H:%M:%S), ${SECONDS}s)" | tee -a "$LOG" >&2; }

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    say "no GPU visible (nvidia-smi missing or failing): nothing to check"
    exit 3
fi
[[ -x $BIN ]] || { say "trainer binary $BIN not found (build: cargo build --profile carry -p trainer --features cuda)"; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$RESULTS/gpu.txt" | tee -a "$LOG" >&2
GPUS=$(nvidia-smi -L | grep -c '^GPU')
# shellcheck source=launch/nccl_env.sh
source "$ROOT/launch/nccl_env.sh"
ensure_nccl 2>&1 | tee -a "$LOG" >&2

FAILED=()
# run NAME CAP_S OUTFILE CMD...: at most CAP_S seconds and never past the budget (30 s are kept
# for the table); stdout is appended to OUTFILE and shown, stderr goes to the log.
run() {
    local name=$1 cap=$2 out=$3
    shift 3
    local left=$((BUDGET_S - SECONDS - 30))
    ((left < cap)) && cap=$left
    if ((cap < 10)); then
        say "$name: skipped, budget spent"
        FAILED+=("$name (skipped)")
        return 1
    fi
    say "$name (limit ${cap}s): $*"
    timeout --kill-after=10 "$cap" "$@" 2>>"$LOG" | tee -a "$out"
    local code=${PIPESTATUS[0]}
    if ((code != 0)); then
        say "$name: FAILED with status $code$( ((code == 124)) && echo ' (timed out)')"
        FAILED+=("$name")
    fi
    return "$code"
}

# (a) Parity: CubeCL compiles its kernels at run time, so the first cases also pay for that.
run golden 150 "$RESULTS/golden.txt" "$BIN" golden-check --dir "$GOLDEN" --device cuda
# The same without the fusion compiler: tells a fusion fault from a kernel fault.
run golden-no-fusion 100 "$RESULTS/golden_no_fusion.txt" "$BIN" golden-check --dir "$GOLDEN" --device cuda --no-fusion
# bf16 autocast on CUDA (cubecl's bf16 casts and matmuls) within timm's own bf16 spread.
run golden-bf16 90 "$RESULTS/golden_bf16.txt" "$BIN" golden-check --dir "$GOLDEN" --device cuda --amp bf16

# (b) NCCL at world size 1, then over every GPU of the machine.
run nccl-world1 60 "$RESULTS/nccl.txt" env MASTER_PORT=29531 "$BIN" collective-check --device cuda --rounds 20 --elems 6553600 --elems 116000000
if ((GPUS > 1)); then
    say "nccl-all-gpus: $GPUS ranks"
    pids=()
    for ((r = 0; r < GPUS; r++)); do
        RANK=$r WORLD_SIZE=$GPUS LOCAL_RANK=$r LOCAL_WORLD_SIZE=$GPUS MASTER_ADDR=127.0.0.1 MASTER_PORT=29532 \
            timeout --kill-after=10 60 "$BIN" collective-check --device cuda --rounds 20 --elems 6553600 --elems 116000000 >>"$RESULTS/nccl.txt" 2>>"$LOG" &
        pids+=($!)
    done
    code=0
    for p in "${pids[@]}"; do wait "$p" || code=1; done
    ((code)) && { say "nccl-all-gpus: FAILED"; FAILED+=(nccl-all-gpus); }
fi

# (c) Ours, then (d) timm eager on the same card; torch.compile last, if time is left.
BENCH=$RESULTS/bench.jsonl
: >"$BENCH"
CASES=("train 128" "train 64" "infer 128")
for c in "${CASES[@]}"; do
    read -r mode batch <<<"$c"
    run "ours-$mode-$batch" 110 "$BENCH" "$BIN" benchmark --model "$MODEL" --mode "$mode" --batch-size "$batch" \
        --amp bf16 --device cuda --warmup 3 --steps 10
done
for c in "${CASES[@]}"; do
    read -r mode batch <<<"$c"
    run "timm-eager-$mode-$batch" 60 "$BENCH" "$PYTHON" "$ROOT/bench/timm_bench.py" --model "$MODEL" --mode "$mode" \
        --batch-size "$batch" --device cuda --amp bf16 --channels-last --warmup 5 --steps 20
done
run timm-compile-train-128 150 "$BENCH" "$PYTHON" "$ROOT/bench/timm_bench.py" --model "$MODEL" --mode train \
    --batch-size 128 --device cuda --amp bf16 --channels-last --compile --warmup 3 --steps 20

"$PYTHON" "$ROOT/bench/gpu_table.py" "$BENCH" | tee "$RESULTS/table.md"
say "done in ${SECONDS}s; failed: ${FAILED[*]:-none}"
((${#FAILED[@]} == 0))
