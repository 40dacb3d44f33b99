"""Released weights load in timm as they are, and give our logits.

    python tests/timm_interop.py --trainer target/debug/trainer

Trains timm's registered `test_coatnet` for two steps on Fashion-MNIST (10 classes) with our
trainer, releases it, then in timm + torch:
  1. `timm.create_model("local-dir:<release>", pretrained=True)` (config.json + model.safetensors),
  2. `timm.create_model('test_coatnet', pretrained=True, num_classes=10,
      pretrained_cfg_overlay=dict(file=..., num_classes=10))`,
  3. `load_state_dict(strict=True)` of the raw file,
and compares their eval logits with `trainer predict --save` on the same input.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import timm
import torch
from safetensors.torch import load_file, save_file

p = argparse.ArgumentParser()
p.add_argument("--trainer", required=True)
a = p.parse_args()
trainer = os.path.abspath(a.trainer)


def sh(*args):
    r = subprocess.run([trainer, *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"trainer {' '.join(args)} failed:\n{r.stderr}")
    return r.stdout


with tempfile.TemporaryDirectory() as tmp:
    sh("data", "prepare", "--out", f"{tmp}/data", "--limit", "256")
    with open(f"{tmp}/interop.toml", "w") as f:
        f.write(f"""
name = "interop"
output_dir = "{tmp}/runs"
[model]
name = "test_coatnet"
num_classes = 10
[data]
root = "{tmp}/data/imagefolder"
workers = 1
[augmentation]
auto_augment = ""
[optimizer]
lr = 1e-3
[schedule]
epochs = 1
warmup_epochs = 0
[training]
batch_size = 8
max_steps = 2
ema = true
ema_decay = 0.9
[logging]
progress = false
""")
    sh("train", "--config", f"{tmp}/interop.toml")
    rel = f"{tmp}/release"
    print(sh("release", f"{tmp}/runs/interop", "--out", rel, "--ema").strip())
    cfg = json.load(open(f"{rel}/config.json"))
    assert cfg["architecture"] == "test_coatnet" and cfg["num_classes"] == 10, cfg

    torch.manual_seed(0)
    x = torch.randn(2, 3, 160, 160)
    save_file({"input": x}, f"{tmp}/x.safetensors")
    sh("predict", "--model", "test_coatnet", "--num-classes", "10", "--weights", f"{rel}/model.safetensors",
       "--tensor-input", f"{tmp}/x.safetensors", "--save", f"{tmp}/ours.safetensors")
    ours = load_file(f"{tmp}/ours.safetensors")["logits"]

    models = {
        "local-dir": timm.create_model(f"local-dir:{rel}", pretrained=True),
        "pretrained_cfg_overlay": timm.create_model(
            "test_coatnet", pretrained=True, num_classes=10,
            pretrained_cfg_overlay=dict(file=f"{rel}/model.safetensors", num_classes=10)),
    }
    strict = timm.create_model("test_coatnet", num_classes=10)
    strict.load_state_dict(load_file(f"{rel}/model.safetensors"), strict=True)
    models["load_state_dict(strict=True)"] = strict
    worst = 0.0
    for name, m in models.items():
        with torch.no_grad():
            logits = m.eval()(x)
        err = float((logits - ours).norm() / logits.norm())
        worst = max(worst, err)
        print(f"{name}: logits rel err vs trainer predict {err:.2e}")
    assert worst < 1e-4, worst
    print("timm interop: OK")
