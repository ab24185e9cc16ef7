"""Benchmark inputs shared by the benchmark scripts: N real JPEGs (random crops of the photos in a
folder, e.g. edge-demo/assets/faces, resized to 341x256, quality 95, seed 0), written to OUT, or with
--classes K spread over OUT/class0 .. OUT/class{K-1}.

    python bench/make_jpegs.py OUT N FACES [--classes K]
"""
import argparse, os, random

from PIL import Image

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("n", type=int)
p.add_argument("faces")
p.add_argument("--classes", type=int, default=0)
a = p.parse_args()
srcs = [Image.open(os.path.join(a.faces, f)).convert("RGB") for f in sorted(os.listdir(a.faces))]
if not srcs:
    raise SystemExit(f"{a.faces}: no images")
random.seed(0)
for i in range(a.n):
    im = srcs[i % len(srcs)]
    w, h = im.size
    cw, ch = random.randint(w // 2, w), random.randint(h // 2, h)
    x, y = random.randint(0, w - cw), random.randint(0, h - ch)
    d = os.path.join(a.out, f"class{i % a.classes}") if a.classes else a.out
    os.makedirs(d, exist_ok=True)
    im.crop((x, y, x + cw, y + ch)).resize((341, 256)).save(os.path.join(d, f"{i:05d}.jpg"), quality=95)
