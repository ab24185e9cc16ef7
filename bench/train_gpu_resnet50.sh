#!/usr/bin/env bash
# GPU training throughput, side by side in one run (needs an NVIDIA GPU; exits with a message without
# one): the book's ResNet-50 trained by `trainer train` at 224x224 with bf16 mixed precision and
# channels-last, against PyTorch's torchvision ResNet-50 with torch.autocast(bfloat16) and channels-last
# (bench/torch_train_gpu.py, with pinned memory, non_blocking copies, the fused SGD kernel and
# set_to_none zeroing), eager and under torch.compile. The two ResNet-50s differ in block order (the
# book's is pre-activation) but not in convolutions or FLOPs. Two input modes:
#   synthetic  one fixed random batch copied to the GPU each step on both sides (data.synthetic): the
#              compute path alone;
#   jpeg       the same JPEG records / files, decoded and augmented (random 224 crop + flip) on the CPU.
# For each mode and batch size it prints images/s of each, the ratios (target: trainer >= 1.1x PyTorch
# eager), and the share of the physical reference: ResNet-50 training is about 3 x 4.1 GMAC = 24.6 GFLOP
# an image, so 790 TFLOP/s of dense bf16 (H200) is about 32,000 images/s.
#   BATCHES ("64 128 256"), MODES ("synthetic jpeg"), N images (2048), WORKERS (all cores),
#   COMPILE (1: also torch.compile), PEAK_TFLOPS (790).
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
N=${N:-2048}; BATCHES=${BATCHES:-64 128 256}; MODES=${MODES:-synthetic jpeg}; WORKERS=${WORKERS:-$(nproc)}
COMPILE=${COMPILE:-1}; PEAK_TFLOPS=${PEAK_TFLOPS:-790}
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
batch_size = 64
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
# epoch 1 warms up (cuDNN autotuning, allocator, compilation); epoch 2 is measured
sps() { python3 -c 'import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])["samples_per_sec"])'; }
for mode in $MODES; do
  for b in $BATCHES; do
    if [ "$mode" = synthetic ]; then
      rust=$("$TRAINER" -q train --config "$WORK/r50.toml" --batch-size "$b" --run "$WORK/run-$mode-$b" --set "data.synthetic=$N" --set model.num_classes=8 | sps)
      peer=(--synthetic "$N" --classes 8)
    else
      rust=$("$TRAINER" -q train --config "$WORK/r50.toml" --batch-size "$b" --run "$WORK/run-$mode-$b" | sps)
      peer=("$WORK/jpegs" --workers "$WORKERS")
    fi
    eager=$("$PYTHON" bench/torch_train_gpu.py "${peer[@]}" --batch "$b" | sps)
    compiled=0
    if [ "$COMPILE" = 1 ]; then compiled=$("$PYTHON" bench/torch_train_gpu.py "${peer[@]}" --batch "$b" --compile | sps); fi
    python3 -c "
r, e, c = $rust, $eager, $compiled
ref = $PEAK_TFLOPS * 1e12 / 24.6e9
vs_c = f', torch.compile {c:.0f} images/s, ratio {r/c:.2f}' if c else ''
print(f'ResNet-50 224 bf16 channels-last, $mode, batch $b: trainer {r:.0f} images/s, PyTorch eager {e:.0f} images/s, '
      f'ratio {r/e:.2f} (target >= 1.1){vs_c}; trainer at {100*r/ref:.1f}% of the {ref:.0f} images/s physical reference')"
  done
done
