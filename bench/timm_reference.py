"""Write a registered timm model's weights and one input/outputs in this project's formats, to
check `trainer predict` against timm at full size (beyond the tiny golden fixtures).

    python bench/timm_reference.py maxxvitv2_nano_rw_256 OUT_DIR [--batch 2] [--device cpu]

OUT_DIR/weights.safetensors  timm state_dict (random init, BN stats and LayerScale perturbed)
OUT_DIR/io.safetensors       input [B,3,H,W], eval.logits, eval.pre_logits, eval.features
"""
import argparse
import os

import timm
import torch
from safetensors.torch import save_file


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("out")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    torch.manual_seed(0)
    model = timm.create_model(a.model).eval().to(a.device)
    with torch.no_grad():
        # Move values away from their init so every tensor matters (as the golden fixtures do).
        for name, t in model.state_dict().items():
            if t.dtype.is_floating_point and (name.endswith(("running_mean", "gamma", "bias")) or "norm" in name):
                t.add_(torch.randn_like(t) * 0.1)
            elif name.endswith("running_var"):
                t.uniform_(0.5, 1.5)
    x = torch.randn(a.batch, *model.pretrained_cfg["input_size"], device=a.device)
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        logits = model.forward_head(feats)
    os.makedirs(a.out, exist_ok=True)
    save_file({k: v.contiguous().cpu() for k, v in model.state_dict().items()}, f"{a.out}/weights.safetensors")
    io = {"input": x, "eval.logits": logits, "eval.pre_logits": pre, "eval.features": feats}
    save_file({k: v.contiguous().cpu() for k, v in io.items()}, f"{a.out}/io.safetensors")


if __name__ == "__main__":
    main()
