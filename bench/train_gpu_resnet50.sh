#!/usr/bin/env bash
# GPU training throughput, side by side in one run (needs an NVIDIA GPU; exits with a message without
# one): the book's ResNet-50 trained by `trainer train` at 224x224 with bf16 mixed precision and
# channels-last, against PyTorch's torchvision ResNet-50 with torch.autocast(bfloat16) and channels-last
# (bench/torch_train_gpu.py), on the same JPEG records / files, batch size and augmentation (random 224
# crop + flip). The two ResNet-50s differ in block order (the book's is pre-activation) but not in
# convolutions or FLOPs. Prints both images/s and the ratio.
#   BATCH (64), N images (2048), WORKERS (all cores); ORT is not involved.
#   TRAINER (a prebuilt trainer binary) and PYTHON (a Python with torch, torchvision and PIL): set both to
#   run without the project's setup, e.g. on a GPU machine with binaries built elsewhere.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
if ! [ -e /dev/nvidia0 ]; then echo "bench/train_gpu_resnet50.sh: no NVIDIA GPU here (/dev/nvidia0 missing)"; exit 2; fi
if [ -z "${TRAINER:-}" ]; then
  bash scripts/setup.sh >/dev/null
  cargo build -q -p trainer --bin trainer
fi
TRAINER=${TRAINER:-./target/debug/trainer}; PYTHON=${PYTHON:-.venv/bin/python}
N=${N:-2048}; BATCH=${BATCH:-64}; WORKERS=${WORKERS:-$(nproc)}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$PYTHON" - "$WORK/jpegs" "$N" <<'PY'
import os, sys
import numpy as np
from PIL import Image
out, n = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
for i in range(n):
    d = os.path.join(out, f"class{i % 8}")
    os.makedirs(d, exist_ok=True)
    base = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(base).resize((256, 256), Image.BILINEAR).save(os.path.join(d, f"{i:05d}.jpg"), quality=95)
PY
"$TRAINER" -q prepare folder "$WORK/jpegs" --out "$WORK/rec" --val-fraction 0 --test-fraction 0 >/dev/null
cat > "$WORK/r50.toml" <<CFG
[model]
name = "resnet50"
num_classes = 8
[data]
train = "$WORK/rec/train.rec"
mean = [123.68, 116.78, 103.94]
std = [58.4, 57.1, 57.4]
[train]
batch_size = $BATCH
epochs = 2
lr = 0.1
device = "cuda"
precision = "bf16"
channels_last = true
log_every = 0
run = "$WORK/run"
[optimizer]
name = "sgd"
momentum = 0.9
weight_decay = 1e-4
[augment]
flip = true
CFG
# epoch 1 warms up (cuDNN autotuning, allocator); epoch 2 is measured
rust=$("$TRAINER" -q train --config "$WORK/r50.toml" | python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["samples_per_sec"])')
py=$("$PYTHON" bench/torch_train_gpu.py "$WORK/jpegs" --batch "$BATCH" --workers "$WORKERS" | python3 -c 'import json,sys; print(json.load(sys.stdin)["samples_per_sec"])')
python3 -c "print(f'ResNet-50 224 bf16 channels-last, batch $BATCH: trainer {$rust:.0f} images/s, PyTorch {$py:.0f} images/s, ratio {$rust/$py:.2f}')"
