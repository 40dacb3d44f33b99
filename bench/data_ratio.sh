#!/usr/bin/env bash
# Ours vs timm + Pillow, decode + transform, one core, same images, same machine: runs
# `trainer data bench` and bench/timm_data_bench.py alternately and prints each pair's ratio.
#
#   bench/data_ratio.sh IMAGE_DIR [--aa SPEC | --eval] [--pairs N]
#
# Env: TRAINER_BIN (default target/release/trainer), PYTHON (a python with timm + Pillow),
# CORE (the core to pin to, default 1). Make images with bench/make_bench_images.py.
set -euo pipefail
cd "$(dirname "$0")/.."
images="${1:?usage: bench/data_ratio.sh IMAGE_DIR [--aa SPEC | --eval] [--pairs N]}"
shift
pairs=3
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --pairs) pairs="$2"; shift 2 ;;
        --aa) extra+=(--aa "$2"); shift 2 ;;
        --eval) extra+=(--eval); shift ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
bin="${TRAINER_BIN:-target/release/trainer}"
python="${PYTHON:-python3}"
core="${CORE:-1}"
[ -x "$bin" ] || { echo "$bin not found: cargo build --release -p trainer" >&2; exit 1; }
rate() { grep -o '"img_per_s_per_core": [0-9.]*' | tail -1 | awk '{print $2}'; }
for i in $(seq "$pairs"); do
    ours=$(taskset -c "$core" "$bin" data bench --images "$images" --rounds 11 "${extra[@]}" 2>/dev/null | rate)
    timm=$(taskset -c "$core" "$python" bench/timm_data_bench.py --images "$images" "${extra[@]}" 2>/dev/null | rate)
    awk -v o="$ours" -v t="$timm" -v i="$i" 'BEGIN { printf "pair %d: ours %.1f img/s/core, timm %.1f, ratio %.2fx\n", i, o, t, o / t }'
done
