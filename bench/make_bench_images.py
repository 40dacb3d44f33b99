"""ImageNet-like benchmark JPEGs from real photos: random crops of scikit-image's CC0 /
public-domain photos resized to ImageNet's common sizes, saved by Pillow at quality 90 with
4:2:0 subsampling (~ data_pipeline.md's set C).

    pip download --no-deps scikit-image==0.26.0 && unzip -o scikit_image-*.whl 'skimage/data/*'
    python bench/make_bench_images.py skimage/data OUT_DIR [--count 60]
"""
import argparse
import os
import random

from PIL import Image

PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg", "retina.jpg",
          "motorcycle_left.png", "motorcycle_right.png", "ihc.png"]
SIZES = [(500, 375), (500, 333), (375, 500), (400, 300), (333, 500)]

p = argparse.ArgumentParser()
p.add_argument("src")
p.add_argument("out")
p.add_argument("--count", type=int, default=60)
a = p.parse_args()
os.makedirs(a.out, exist_ok=True)
rng = random.Random(0)
photos = [Image.open(os.path.join(a.src, n)).convert("RGB") for n in PHOTOS if os.path.exists(os.path.join(a.src, n))]
for i in range(a.count):
    im = photos[i % len(photos)]
    w, h = SIZES[i % len(SIZES)]
    s = rng.uniform(0.5, 1.0)
    cw, ch = int(im.width * s), int(im.height * s)
    x, y = rng.randint(0, im.width - cw), rng.randint(0, im.height - ch)
    im.crop((x, y, x + cw, y + ch)).resize((w, h), Image.LANCZOS).save(
        os.path.join(a.out, f"img{i:03d}.jpg"), quality=90, subsampling="4:2:0")
