"""PyTorch's CPU all-reduce (gloo, what DDP uses without GPUs) beside `trainer collective-check`:
one f32 buffer summed over WORLD processes on loopback, median of ROUNDS after one warm-up.

    python bench/torch_allreduce_bench.py [--world 3] [--elems 6553600] [--rounds 5]

Prints one JSON line with the median seconds and the algorithm bandwidth (bytes / time), the
same quantities `trainer collective-check` prints.
"""
import argparse
import json
import os
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def worker(rank, world, elems, rounds, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    buf = torch.full((elems,), float(rank))
    times = []
    for i in range(rounds + 1):
        dist.barrier()
        start = time.perf_counter()
        dist.all_reduce(buf)
        if i > 0:
            times.append(time.perf_counter() - start)
    if rank == 0:
        out.put(statistics.median(times))
    dist.destroy_process_group()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--world", type=int, default=3)
    p.add_argument("--elems", type=int, default=25 * 1024 * 1024 // 4)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--port", type=int, default=29571)
    a = p.parse_args()
    torch.set_num_threads(1)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(r, a.world, a.elems, a.rounds, a.port, q)) for r in range(a.world)]
    for proc in procs:
        proc.start()
    median = q.get()
    for proc in procs:
        proc.join()
    print(json.dumps({"impl": f"torch {torch.__version__} gloo", "world": a.world, "bytes": a.elems * 4,
                      "median_s": median, "algbw_gb_s": a.elems * 4 / median / 1e9}))
