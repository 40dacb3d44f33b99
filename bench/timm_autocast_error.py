"""How far timm's own bf16 autocast train step moves from its f32 one, per golden case.

    python bench/timm_autocast_error.py [GOLDEN_DIR]

Builds each golden case's tiny model with timm's MaxxVit classes from model.json, loads its
weights, and runs the train forward + cross-entropy + backward once in float32 and once under
torch.autocast("cpu", dtype=torch.bfloat16) (what timm's `--amp --amp-dtype bfloat16` does), then
prints the relative L2 difference of the logits and of all gradients together — the yardstick
for model/tests/autocast.rs, which measures ours the same way.
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from timm.models.maxxvit import MaxxVit, MaxxVitCfg, MaxxVitConvCfg, MaxxVitTransformerCfg


def tuples(d):
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def build(meta):
    cfg = dict(meta["cfg"])
    conv = MaxxVitConvCfg(**tuples(cfg.pop("conv_cfg")))
    tr = MaxxVitTransformerCfg(**tuples(cfg.pop("transformer_cfg")))
    cfg = tuples(cfg)
    cfg["block_type"] = tuple(tuple(b) if isinstance(b, list) else b for b in meta["cfg"]["block_type"])
    model = MaxxVit(MaxxVitCfg(conv_cfg=conv, transformer_cfg=tr, **cfg), img_size=tuple(meta["img_size"]),
                    in_chans=meta["in_chans"], num_classes=meta["num_classes"], global_pool=meta["global_pool"])
    return model


def step(model, x, target, amp):
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        logits = model(x)
        loss = F.cross_entropy(logits.float(), target)
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return logits.float().detach(), grads


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "../fixtures/golden")
for case in sorted(os.listdir(root)):
    path = os.path.join(root, case)
    if not os.path.isfile(os.path.join(path, "model.json")):
        continue
    meta = json.load(open(os.path.join(path, "model.json")))
    io = load_file(os.path.join(path, "io.safetensors"))
    results = []
    for amp in (False, True):
        model = build(meta)
        model.load_state_dict(load_file(os.path.join(path, "weights.safetensors")))
        model.train()
        results.append(step(model, io["input"], io["target"], amp))
    (l32, g32), (l16, g16) = results
    print(json.dumps({"case": case, "logits_rel_l2": rel(l16, l32), "grads_rel_l2": rel(g16, g32)}))
