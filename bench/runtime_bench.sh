#!/usr/bin/env bash
# ONNX Runtime inference, side by side in one run: `runtime bench` (Rust, through `ort`) against Python
# onnxruntime (bench/ort_bench.py) on the same ONNX file, the same inputs and the same ONNX Runtime
# library version, one after the other, alternating ROUNDS times (best of each). Two figures per batch
# size, each with the ratio Rust / Python:
#   - model alone: fixed inputs, images/s from the mean latency (targets: ratio >= 1.0);
#   - end to end: decode + preprocess + inference of N real JPEGs (crops of ../shared/data/faces,
#     341x256), preprocessing from the file's metadata (target: ratio >= 1.3).
# MODEL: an ONNX file with dlcv metadata (default: ResNet-18 at 224x224, 10 classes, exported here from
# `trainer init`); BATCH (1,8,32), N (256 images), ROUNDS (2), THREADS (ONNX Runtime intra-op threads on
# both sides; default: the cores).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/setup.sh >/dev/null
cargo build -q --workspace --bins
N=${N:-256}; BATCH=${BATCH:-1,8,32}; ROUNDS=${ROUNDS:-2}; THREADS=${THREADS:-$(nproc)}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
MODEL=${MODEL:-}
if [ -z "$MODEL" ]; then
  ./target/debug/trainer -q init --model resnet18 --num-classes 10 --run "$WORK/run" >/dev/null
  ./target/debug/exporter -q export --run "$WORK/run" --out "$WORK/resnet18.onnx" >/dev/null
  MODEL="$WORK/resnet18.onnx"
fi
.venv/bin/python - "$WORK/jpegs" "$N" "${SHARED:-$ROOT/../shared}/data/faces" <<'PY'
import os, random, sys
from PIL import Image
out, n, faces = sys.argv[1], int(sys.argv[2]), sys.argv[3]
srcs = [Image.open(os.path.join(faces, f)).convert("RGB") for f in sorted(os.listdir(faces))]
random.seed(0)
os.makedirs(out, exist_ok=True)
for i in range(n):
    im = srcs[i % len(srcs)]
    w, h = im.size
    cw, ch = random.randint(w // 2, w), random.randint(h // 2, h)
    x, y = random.randint(0, w - cw), random.randint(0, h - ch)
    im.crop((x, y, x + cw, y + ch)).resize((341, 256)).save(os.path.join(out, f"{i:05d}.jpg"), quality=95)
PY
for r in $(seq "$ROUNDS"); do
  ./target/debug/runtime -q bench --model "$MODEL" --batch "$BATCH" --threads "$THREADS" --images "$WORK/jpegs" --json >"$WORK/rust-$r.json"
  .venv/bin/python bench/ort_bench.py "$MODEL" --batch "$BATCH" --threads "$THREADS" --images "$WORK/jpegs" >"$WORK/py-$r.json"
done
python3 - "$WORK" "$ROUNDS" "$MODEL" "$THREADS" <<'PY'
import json, sys
work, rounds, model = sys.argv[1], int(sys.argv[2]), sys.argv[3]
load = lambda who: [json.load(open(f"{work}/{who}-{r}.json")) for r in range(1, rounds + 1)]
rust, py = load("rust"), load("py")
print(f"model {model.split('/')[-1]}, CPU provider, {sys.argv[4]} intra-op threads each, best of {rounds} alternating rounds")
for part in ("model_alone", "end_to_end"):
    for i, row in enumerate(rust[0][part]):
        b = row["batch"]
        best = lambda runs: max(r[part][i]["images_per_sec"] for r in runs)
        extra = ""
        if part == "model_alone":
            p = lambda runs: min(r[part][i]["p50_ms"] for r in runs)
            extra = f" (p50 {p(rust):.2f} ms vs {p(py):.2f} ms)"
        print(f"{part.replace('_', ' ')}, batch {b}: runtime {best(rust):.1f} images/s, python onnxruntime {best(py):.1f} images/s, ratio {best(rust) / best(py):.2f}{extra}")
PY
