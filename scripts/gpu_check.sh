#!/usr/bin/env bash
# The GPU checks, as one prepared script for a CUDA machine that has no Rust toolchain and no network:
# binaries built elsewhere (stripped copies of target/debug/{trainer,runtime}) and Fashion-MNIST's IDX
# files sit in $BIN (default .gpu/); the machine's own Python supplies libtorch (same version as ours)
# and torchvision for the baseline. It prints, in order:
#   1. the GPU and `trainer doctor --device cuda:0`;
#   2. mini-vgg trained on the real Fashion-MNIST on cuda:0 (3 epochs), then evaluated on the test set;
#      then 2 short runs with the side-stream prefetch on and off, whose losses should agree;
#   2b. multi-process training through c10d: a single-rank NCCL run (one GPU: NCCL refuses two ranks on
#      one device) and 2 Gloo ranks sharing the GPU (DLCV_DIST_BACKEND=gloo), under torchrun, and
#      `trainer allreduce-bench` with NCCL against torch.distributed (bench/dist_bench.sh, DEVICE=cuda);
#   3. `trainer train --profile` of ResNet-50 bf16 channels-last on a synthetic batch (where a step's
#      time goes on the device, from CUDA events, with and without the side-stream prefetch; host reads a step), then bench/train_gpu_resnet50.sh: trainer vs PyTorch eager and
#      torch.compile, synthetic and JPEG input (BATCHES, default "64 256", to fit the device's time);
#   4. ONNX Runtime's CUDA provider (squeezenet.onnx exported here, fer_emotion.onnx) through `runtime doctor/bench --provider cuda` when that machine's
#      onnxruntime has it, else the error our runtime gives (never a silent CPU fallback).
# Everything also goes to $OUT/gpu-check.log when OUT is set.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BIN=$(cd "${BIN:-.gpu}" && pwd)
PY=${PYTHON:-python3}
LOG=${OUT:-/tmp}/gpu-check.log
exec > >(tee "$LOG") 2>&1
TORCH_LIB=$("$PY" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$TORCH_LIB:${LD_LIBRARY_PATH:-}"
step() { printf '\n==> %s (%s)\n' "$*" "$(date +%T)"; }

step "GPU"
nvidia-smi -L
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))'
step "trainer doctor --device cuda:0"
"$BIN/trainer" doctor --device cuda:0

W=$(mktemp -d)
step "mini-vgg on Fashion-MNIST, 3 epochs on cuda:0"
"$BIN/trainer" -q prepare idx --train "$BIN/train" --test "$BIN/t10k" --val-fraction 0.1 --short-side 0 --quality 0 --out "$W/fm" >/dev/null
/usr/bin/time -f "wall %e s" "$BIN/trainer" train --config configs/fashion-mnist-mini-vgg.toml --run "$W/run" --epochs 3 \
  --set 'train.device="cuda:0"' --set 'schedule.max_epochs=3' --set "data.train=\"$W/fm/train.rec\"" \
  --set "data.val=\"$W/fm/val.rec\"" --set "data.mean_file=\"$W/fm/mean.json\"" 2>&1 | grep -v " batch "
"$BIN/trainer" eval --run "$W/run" --data "$W/fm/test.rec"
step "the side-stream prefetch trains as the in-step copy does (cuda:0, 5,120 images, 2 epochs each; the losses should agree up to cuDNN's nondeterminism)"
for pf in true false; do
  "$BIN/trainer" train --config configs/fashion-mnist-mini-vgg.toml --run "$W/pf-$pf" --epochs 2 --set 'train.device="cuda:0"' \
    --set data.limit_train=5120 --set data.val= --set "train.prefetch=$pf" --set "data.train=\"$W/fm/train.rec\"" \
    --set "data.mean_file=\"$W/fm/mean.json\"" 2>&1 | grep '^{' | sed "s/^/prefetch=$pf /"
done

TORCHRUN=$(dirname "$(command -v "$PY")")/torchrun
[ -x "$TORCHRUN" ] || TORCHRUN="$PY -m torch.distributed.run"
step "c10d: 1 NCCL rank on cuda:0, then 2 Gloo ranks sharing cuda:0 (torchrun)"
$TORCHRUN --standalone --nproc-per-node=1 --no-python -- "$BIN/trainer" train --config configs/fashion-mnist-mini-vgg.toml \
  --run "$W/nccl" --epochs 1 --set 'train.device="cuda:0"' --set "data.train=\"$W/fm/train.rec\"" --set "data.val=\"$W/fm/val.rec\"" \
  --set "data.mean_file=\"$W/fm/mean.json\"" 2>&1 | grep -v " batch "
DLCV_DIST_BACKEND=gloo $TORCHRUN --standalone --nproc-per-node=2 --no-python -- "$BIN/trainer" train --config configs/fashion-mnist-mini-vgg.toml \
  --run "$W/gloo2" --epochs 1 --set 'train.devices=["cuda:0", "cuda:0"]' --set "data.train=\"$W/fm/train.rec\"" \
  --set "data.val=\"$W/fm/val.rec\"" --set "data.mean_file=\"$W/fm/mean.json\"" 2>&1 | grep -v " batch "
step "all-reduce bandwidth, NCCL, 1 rank: ours vs torch.distributed"
$TORCHRUN --standalone --nproc-per-node=1 --no-python -- "$BIN/trainer" allreduce-bench --device cuda --sizes 1000,1000000,25000000
$TORCHRUN --standalone --nproc-per-node=1 bench/dist_allreduce_torch.py --device cuda --sizes 1000,1000000,25000000

step "ResNet-50 step profile, synthetic batch 128 (bf16, channels-last)"
cat > "$W/r50.toml" <<CFG
[model]
name = "resnet50"
num_classes = 1000
[data]
train = "unused: synthetic"
synthetic = 2560
[train]
batch_size = 128
epochs = 1
device = "cuda:0"
precision = "bf16"
channels_last = true
log_every = 0
run = "$W/r50"
CFG
"$BIN/trainer" train --config "$W/r50.toml" --profile 2>&1 | grep -v " batch "
# the same without the side-stream copy a step ahead (the device's "host to device" wait should grow)
"$BIN/trainer" train --config "$W/r50.toml" --profile --set train.prefetch=false 2>&1 | grep -v " batch "
step "ResNet-50 training throughput: trainer vs PyTorch eager and torch.compile (bf16, channels-last)"
TRAINER="$BIN/trainer" PYTHON="$PY" N=${N:-2048} BATCHES=${BATCHES:-64 256} bash bench/train_gpu_resnet50.sh

step "ONNX Runtime CUDA provider"
ORT_LIB=$("$PY" - <<'PY'
import glob, os
import onnxruntime as ort
print(ort.__version__, ort.get_available_providers(), file=__import__("sys").stderr)
libs = glob.glob(os.path.join(os.path.dirname(ort.__file__), "capi", "libonnxruntime.so*"))
print(sorted(libs)[-1] if libs else "")
PY
)
if [ -n "$ORT_LIB" ]; then
  export ORT_DYLIB_PATH="$ORT_LIB"
  # SqueezeNet exported by our exporter (random weights, with its metadata), and the FER model in
  # edge-demo/assets (a model made elsewhere, no metadata)
  "$BIN/runtime" doctor --provider cuda:0 --model "$BIN/squeezenet.onnx"
  "$BIN/runtime" bench --provider cuda:0 --model "$BIN/squeezenet.onnx" --batch 1,8,32,128 --seconds 1
  "$BIN/runtime" bench --provider cpu --model "$BIN/squeezenet.onnx" --batch 1,32 --seconds 1
  "$BIN/runtime" bench --provider cuda:0 --model "$ROOT/edge-demo/assets/fer_emotion.onnx" --size 64x64 --layout nhwc --gray --batch 1,64 --seconds 1
fi
step "done"
