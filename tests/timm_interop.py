"""Released weights load in timm as their model card says, and give our logits.

    python tests/timm_interop.py --trainer target/debug/trainer

Trains two models for two steps on Fashion-MNIST (10 classes) with our trainer and releases
them: timm's registered `test_coatnet`, and the smoke run's custom config
(`configs/models/smoke_coatnet.toml`, which timm has no name for). Then in timm + torch:
  1. the Python snippet of the release's model card (README.md), executed as written from the
     release directory (both releases),
  2. `timm.create_model("local-dir:<release>", pretrained=True)` (registered only: timm needs an
     architecture name),
  3. `load_state_dict(strict=True)` of the raw file into `timm.create_model(name)` (registered),
and compares their eval logits with `trainer predict --save` on the same input.
"""
import argparse
import json
import os
import re
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
repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sh(*args):
    r = subprocess.run([trainer, *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"trainer {' '.join(args)} failed:\n{r.stderr}")
    return r.stdout


def card_model(release):
    """Run the model card's Python block from the release directory; return its `model`."""
    card = open(f"{release}/README.md").read()
    blocks = re.findall(r"```python\n(.*?)```", card, re.S)
    assert len(blocks) == 1, f"{release}/README.md: expected one python block, found {len(blocks)}"
    cwd = os.getcwd()
    os.chdir(release)
    try:
        scope = {}
        exec(blocks[0], scope)
    finally:
        os.chdir(cwd)
    return scope["model"]


def train_and_release(tmp, name, model_section, img):
    with open(f"{tmp}/{name}.toml", "w") as f:
        f.write(f"""
name = "{name}"
output_dir = "{tmp}/runs"
[model]
{model_section}
num_classes = 10
img_size = {img}
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
    sh("train", "--config", f"{tmp}/{name}.toml")
    release = f"{tmp}/{name}-release"
    print(sh("release", f"{tmp}/runs/{name}", "--out", release, "--ema").strip())
    return release


def our_logits(tmp, release, model_args, x):
    save_file({"input": x}, f"{tmp}/x.safetensors")
    sh("predict", *model_args, "--weights", f"{release}/model.safetensors",
       "--tensor-input", f"{tmp}/x.safetensors", "--save", f"{tmp}/ours.safetensors")
    return load_file(f"{tmp}/ours.safetensors")["logits"]


def compare(label, models, ours, x):
    worst = 0.0
    for name, m in models.items():
        with torch.no_grad():
            logits = m.eval()(x)
        err = float((logits - ours).norm() / logits.norm())
        worst = max(worst, err)
        print(f"{label}, {name}: logits rel err vs trainer predict {err:.2e}")
    assert worst < 1e-4, (label, worst)


with tempfile.TemporaryDirectory() as tmp:
    sh("data", "prepare", "--out", f"{tmp}/data", "--limit", "256")
    torch.manual_seed(0)

    # A registered architecture: the card, local-dir and a strict load by name.
    rel = train_and_release(tmp, "interop", 'name = "test_coatnet"', 160)
    cfg = json.load(open(f"{rel}/config.json"))
    assert cfg["architecture"] == "test_coatnet" and cfg["num_classes"] == 10, cfg
    x = torch.randn(2, 3, 160, 160)
    ours = our_logits(tmp, rel, ["--model", "test_coatnet", "--num-classes", "10"], x)
    strict = timm.create_model("test_coatnet", num_classes=10)
    strict.load_state_dict(load_file(f"{rel}/model.safetensors"), strict=True)
    compare("test_coatnet", {
        "model card snippet": card_model(rel),
        "local-dir": timm.create_model(f"local-dir:{rel}", pretrained=True),
        "load_state_dict(strict=True)": strict,
    }, ours, x)

    # The smoke run's custom config: the card builds timm's MaxxVit from config.json.
    smoke_cfg = os.path.join(repo, "configs/models/smoke_coatnet.toml")
    rel = train_and_release(tmp, "custom", f'name = ""\nconfig_file = "{smoke_cfg}"', 32)
    assert "maxxvit_cfg" in json.load(open(f"{rel}/config.json"))
    x = torch.randn(2, 3, 32, 32)
    ours = our_logits(tmp, rel, ["--model-config", f"{rel}/config.json"], x)
    compare("smoke custom config", {"model card snippet": card_model(rel)}, ours, x)

    # Our releases read back with --pretrained (directory) give the same logits.
    save_file({"input": x}, f"{tmp}/x.safetensors")
    sh("predict", "--pretrained", rel, "--tensor-input", f"{tmp}/x.safetensors", "--save", f"{tmp}/dir.safetensors")
    assert torch.equal(load_file(f"{tmp}/dir.safetensors")["logits"], ours), "--pretrained <release>"

    # timm's own hub format (save_for_hf: config.json + model.safetensors), read by
    # `--pretrained DIR` and, laid out as huggingface_hub's cache, by `hf-hub:ORG/NAME`.
    from timm.models._hub import save_for_hf
    hub_model = timm.create_model("test_coatnet").eval()
    snap = f"{tmp}/hub/models--timm--test_coatnet.untrained/snapshots/0123456789abcdef"
    save_for_hf(hub_model, snap, safe_serialization=True, model_config=dict(
        label_names=[f"n{i:08d}" for i in range(1000)], label_descriptions={"n00000007": "seventh class"}))
    os.makedirs(f"{tmp}/hub/models--timm--test_coatnet.untrained/refs")
    open(f"{tmp}/hub/models--timm--test_coatnet.untrained/refs/main", "w").write("0123456789abcdef")
    x = torch.randn(2, 3, 160, 160)
    save_file({"input": x}, f"{tmp}/x.safetensors")
    os.environ["HF_HUB_CACHE"] = f"{tmp}/hub"
    for source in [snap, "hf-hub:timm/test_coatnet.untrained"]:
        out = sh("predict", "--pretrained", source, "--tensor-input", f"{tmp}/x.safetensors",
                 "--save", f"{tmp}/hub.safetensors")
        compare(f"timm save_for_hf via --pretrained {source.split('/')[-1]}", {"timm": hub_model},
                load_file(f"{tmp}/hub.safetensors")["logits"], x)
        # Class names come from the config's label_names, through label_descriptions.
        entries = [e.split(" (")[0] for line in out.splitlines() for e in line.split(": ", 1)[1].split("), ")]
        for e in entries:
            k, name = e.split(" ", 1)
            assert name == ("seventh class" if k == "7" else f"n{int(k):08d}"), e
    print("timm interop: OK")
