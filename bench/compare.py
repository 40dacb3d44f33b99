"""Relative L2 error of `trainer predict --save` outputs against a timm reference io file.

    python bench/compare.py OURS.safetensors REF_io.safetensors
"""
import sys

from safetensors.numpy import load_file

ours, ref = load_file(sys.argv[1]), load_file(sys.argv[2])
worst = 0.0
for name in ("logits", "pre_logits", "features"):
    a, b = ours[name].astype("float64"), ref[f"eval.{name}"].astype("float64")
    assert a.shape == b.shape, (name, a.shape, b.shape)
    err = float(((a - b) ** 2).sum() ** 0.5 / (b ** 2).sum() ** 0.5)
    worst = max(worst, err)
    print(f"{name}: shape {list(a.shape)} rel L2 err {err:.2e}")
sys.exit(0 if worst < 1e-4 else 1)
