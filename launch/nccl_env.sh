# Sourced by launch/*.sh: make `libnccl.so` findable. cudarc opens `libnccl.so`, but NCCL's
# runtime packages (libnccl2, the nvidia-nccl-cu12 wheel) ship only `libnccl.so.2`.
ensure_nccl() {
    ldconfig -p 2>/dev/null | grep -q 'libnccl\.so ' && return 0
    local dir candidate="" search=${LD_LIBRARY_PATH:-}
    for dir in ${NCCL_HOME:+$NCCL_HOME/lib} ${search//:/ } \
        "$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib"))' 2>/dev/null || true)" \
        /usr/lib/x86_64-linux-gnu /usr/local/cuda/lib64 /usr/lib64; do
        [[ -n $dir && -e $dir/libnccl.so ]] && return 0
        [[ -n $dir && -e $dir/libnccl.so.2 ]] && { candidate=$dir/libnccl.so.2; break; }
    done
    [[ -z $candidate ]] && candidate=$(ldconfig -p 2>/dev/null | awk '/libnccl\.so\.2 /{print $NF; exit}')
    if [[ -z $candidate ]]; then
        echo "warning: no libnccl.so.2 found (NCCL_HOME, LD_LIBRARY_PATH, the nvidia-nccl wheel, ldconfig); multi-GPU runs need NCCL" >&2
        return 1
    fi
    local shim=${XDG_CACHE_HOME:-$HOME/.cache}/maxxvit/nccl
    mkdir -p "$shim"
    ln -sf "$candidate" "$shim/libnccl.so"
    export LD_LIBRARY_PATH=$shim${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    echo "libnccl.so -> $candidate (in $shim)" >&2
}
