#!/usr/bin/env python3
"""timm's dispatched aten ops for one training step, the incumbent's side of `trainer benchmark
--census` (BENCH.md): forward + loss + backward, and AdamW + ModelEmaV3, with view ops (no
kernel: view, permute, expand, ...) counted apart. Eager PyTorch launches about one kernel per
non-view op, so this is the number our kernels per step are held against.

    python bench/timm_opcount.py --model maxxvitv2_nano_rw_256 --batch 2 --img-size 128
"""
import argparse
import collections
import json

import timm
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from timm.utils.model_ema import ModelEmaV3

VIEW_NAMES = {
    "view", "_unsafe_view", "reshape", "expand", "permute", "transpose", "t", "select", "slice",
    "unsqueeze", "squeeze", "as_strided", "alias", "detach", "unfold", "split", "split_with_sizes",
    "chunk", "narrow", "unbind", "view_as", "expand_as", "_reshape_alias", "lift_fresh",
}


class OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()
        self.views = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        is_view = getattr(func, "is_view", False) or name.rstrip("_") in VIEW_NAMES
        (self.views if is_view else self.ops)[name] += 1
        return func(*args, **(kwargs or {}))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="maxxvitv2_nano_rw_256")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--img-size", type=int, default=128)
    p.add_argument("--foreach", action="store_true", help="AdamW with foreach kernels (torch's CUDA default)")
    args = p.parse_args()

    torch.manual_seed(0)
    model = timm.create_model(args.model, pretrained=False, img_size=args.img_size)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05, foreach=args.foreach)
    ema = ModelEmaV3(model, decay=0.9998)
    x = torch.randn(args.batch, 3, args.img_size, args.img_size)
    y = torch.randint(0, model.num_classes, (args.batch,))

    def step(count):
        fwd = OpCounter()
        with fwd if count else contextlib_null():
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
        upd = OpCounter()
        with upd if count else contextlib_null():
            opt.step()
            opt.zero_grad(set_to_none=True)
            ema.update(model)
        return fwd, upd

    step(False)  # warm-up: optimizer state and EMA exist, as in the census
    fwd, upd = step(True)
    print(json.dumps({
        "impl": "timm", "timm": timm.__version__, "torch": torch.__version__, "model": args.model,
        "batch": args.batch, "img_size": args.img_size, "foreach": args.foreach,
        "params": sum(1 for _ in model.parameters()),
        "ops_forward_backward": sum(fwd.ops.values()), "views_forward_backward": sum(fwd.views.values()),
        "ops_optimizer_ema": sum(upd.ops.values()), "views_optimizer_ema": sum(upd.views.values()),
        "top_forward_backward": fwd.ops.most_common(12),
        "top_optimizer_ema": upd.ops.most_common(8),
    }))


class contextlib_null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    main()
