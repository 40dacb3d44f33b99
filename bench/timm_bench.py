"""The incumbent's side of `trainer benchmark`: timm + PyTorch on the same machine.

    python bench/timm_bench.py --model maxxvitv2_nano_rw_256 --batch-size 8 --mode train --threads 2

Prints one JSON line in the same shape as `trainer benchmark`.
"""
import argparse
import json
import statistics
import time

import timm
import torch


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="maxxvitv2_nano_rw_256")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--mode", choices=["train", "infer"], default="train")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    model = timm.create_model(a.model).to(dev)
    cfg = model.pretrained_cfg
    x = torch.randn(a.batch_size, *cfg["input_size"], device=dev)
    y = torch.randint(0, model.num_classes, (a.batch_size,), device=dev)
    model.train(a.mode == "train")
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    times = []
    for step in range(a.warmup + a.steps):
        sync()
        t = time.perf_counter()
        if a.mode == "train":
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            model.zero_grad(set_to_none=True)
        else:
            with torch.inference_mode():
                model(x)
        sync()
        if step >= a.warmup:
            times.append(time.perf_counter() - t)
    med = statistics.median(times)
    print(json.dumps({
        "model": a.model, "backend": f"torch {torch.__version__} timm {timm.__version__} {a.device}",
        "threads": torch.get_num_threads(), "mode": a.mode, "batch": a.batch_size,
        "img_size": list(cfg["input_size"][1:]), "steps": len(times),
        "median_step_s": round(med, 4), "img_per_s": round(a.batch_size / med, 2),
    }))


if __name__ == "__main__":
    main()
