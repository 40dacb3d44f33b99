"""The incumbent's side of `trainer data bench`: timm's transforms on Pillow, one core.

    python bench/timm_data_bench.py --images DIR [--img-size 224] [--aa rand-m9-mstd0.5-inc1] [--eval]

Decode (`Image.open(...).convert('RGB')`, what timm's readers do) + timm's train transform with
`use_prefetcher=True` (uint8 out, normalisation left to the GPU) or the eval transform, timed
with the thread's CPU time; prints the median images/s over rounds as JSON.
"""
import argparse
import io
import json
import os
import statistics
import time

import PIL
import timm
from PIL import Image
from timm.data import auto_augment, create_transform

# timm 1.0.31's PosterizeIncreasing asks for 0 bits at magnitude 10, which Pillow 13 rejects
# (older Pillow returned a black image); restore the old result so the benchmark can run.
_posterize = auto_augment.posterize
auto_augment.posterize = lambda img, bits, **kw: Image.new(img.mode, img.size) if bits <= 0 else _posterize(img, bits, **kw)
auto_augment.NAME_TO_OP["PosterizeIncreasing"] = auto_augment.posterize

p = argparse.ArgumentParser()
p.add_argument("--images", required=True)
p.add_argument("--img-size", type=int, default=224)
p.add_argument("--aa", default="rand-m9-mstd0.5-inc1")
p.add_argument("--eval", action="store_true")
p.add_argument("--rounds", type=int, default=5)
a = p.parse_args()

files = sorted(f for f in os.listdir(a.images) if f.lower().endswith((".jpg", ".jpeg")))
blobs = [open(os.path.join(a.images, f), "rb").read() for f in files]
t = create_transform(a.img_size, is_training=not a.eval, auto_augment=(a.aa or None) if not a.eval else None,
                     interpolation="random" if not a.eval else "bicubic", crop_pct=0.95,
                     mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), use_prefetcher=True)
rates = []
for r in range(a.rounds + 1):
    start = time.thread_time()
    for b in blobs:
        t(Image.open(io.BytesIO(b)).convert("RGB"))
    cpu = time.thread_time() - start
    if r > 0:
        rates.append(len(blobs) / cpu)
print(json.dumps({"pipeline": f"timm {timm.__version__} Pillow {PIL.__version__} {'eval' if a.eval else 'train'}",
                  "images": len(blobs), "img_size": a.img_size, "auto_augment": "" if a.eval else a.aa,
                  "img_per_s_per_core": round(statistics.median(rates), 1)}))
