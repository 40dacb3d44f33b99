"""The incumbent's side of `trainer benchmark`: timm + PyTorch on the same machine.

    python bench/timm_bench.py --model maxxvitv2_nano_rw_256 --batch-size 8 --mode train --threads 2
    python bench/timm_bench.py --model maxxvitv2_rmlp_base_rw_224 --batch-size 128 --device cuda \
        --amp bf16 --channels-last [--compile]

`train` = forward + cross-entropy + backward (no optimizer step), as `trainer benchmark`.
`--amp bf16` is timm's AMP (torch.autocast, f32 weights). Prints a table line and one JSON line
in the same shape as `trainer benchmark`, with forward / backward split on CUDA.
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
    p.add_argument("--amp", choices=["f32", "bf16"], default="f32")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (default mode)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    model = timm.create_model(a.model).to(dev)
    memory_format = torch.channels_last if a.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    cfg = model.pretrained_cfg
    x = torch.randn(a.batch_size, *cfg["input_size"], device=dev).to(memory_format=memory_format)
    y = torch.randint(0, model.num_classes, (a.batch_size,), device=dev)
    model.train(a.mode == "train")
    run = torch.compile(model) if a.compile else model
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.amp == "bf16")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times, fwd, bwd = [], [], []
    for step in range(a.warmup + a.steps):
        sync()
        t = time.perf_counter()
        if a.mode == "train":
            with autocast:
                loss = torch.nn.functional.cross_entropy(run(x), y)
            sync()
            t_fwd = time.perf_counter()
            loss.backward()
            model.zero_grad(set_to_none=True)
        else:
            with torch.inference_mode(), autocast:
                run(x)
            t_fwd = None
        sync()
        t_end = time.perf_counter()
        if step >= a.warmup:
            times.append(t_end - t)
            if t_fwd is not None:
                fwd.append(t_fwd - t)
                bwd.append(t_end - t_fwd)
    med = statistics.median(times)
    out = {
        "impl": "timm", "model": a.model,
        "backend": f"torch {torch.__version__} timm {timm.__version__} {a.device}"
        + (" channels_last" if a.channels_last else "") + (" compile" if a.compile else ""),
        "threads": torch.get_num_threads(), "mode": a.mode, "precision": a.amp, "batch": a.batch_size,
        "img_size": list(cfg["input_size"][1:]), "steps": len(times),
        "median_step_s": med, "img_per_s": a.batch_size / med,
        "forward_s": statistics.median(fwd) if fwd else None,
        "backward_s": statistics.median(bwd) if bwd else None,
        "device_memory_gib": torch.cuda.max_memory_reserved() / 2**30 if cuda else None,
        "compiled": a.compile, "channels_last": a.channels_last,
    }
    print(f"{a.model:<32} {a.mode:<6} {a.amp:<5} batch {a.batch_size:>4}  {out['img_per_s']:>9.2f} img/s  "
          f"{med:>8.4f} s/step  timm{' compile' if a.compile else ''}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
