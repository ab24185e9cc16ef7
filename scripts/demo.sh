#!/usr/bin/env bash
# `make demo`: the longest end-to-end slice of the toolchain that exists today, on the built-in data.
#
# Today: the real Fashion-MNIST (Debian's dataset-fashion-mnist) is built into record files, mini-vgg
# trains on them on the CPU and is evaluated on the 10,000 test images, and its curves are plotted; the back ends every later step stands on are checked for real:
# ONNX Runtime runs a real pretrained model (../shared/models/fer_emotion.onnx), the exporter reads that
# model's graph, and OpenCV decodes a real face video (made here from ../shared/data/faces) and finds the
# faces in it. The trained model is exported to ONNX (with its labels and preprocessing, verified
# against libtorch) and run by ONNX Runtime. Video inference of it is added as it lands.
# DEMO_EPOCHS (default 1, about 1.5 minutes an epoch on 2 cores) sets how long it trains.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
OUT=${DEMO_OUT:-$ROOT/demo-out}
SHARED=${SHARED:-$ROOT/../shared}
MODEL="$SHARED/models/fer_emotion.onnx"
FACES="$SHARED/data/faces"
mkdir -p "$OUT"
step() { printf '\n\033[1;32m==> %s\033[0m\n' "$*"; }

step "building the four binaries"
cargo build --workspace --bins -q
BIN="$ROOT/target/debug"

step "trainer doctor: libtorch and the CPU device"
"$BIN/trainer" doctor --device cpu | tee "$OUT/trainer-doctor.txt"

EPOCHS=${DEMO_EPOCHS:-1}
RUN="$OUT/run-mini-vgg"
rm -rf "$RUN"
step "trainer models describe mini-vgg: the network, from the model zoo"
"$BIN/trainer" models describe mini-vgg | tail -8 | tee "$OUT/mini-vgg.describe.txt"

DATA="$OUT/fashion-mnist"
step "trainer prepare idx: Fashion-MNIST into record files (train / val / test)"
"$BIN/trainer" prepare idx --train /usr/share/datasets/fashion-mnist/train --test /usr/share/datasets/fashion-mnist/t10k \
  --val-fraction 0.1 --short-side 0 --quality 0 --out "$DATA" | tee "$OUT/prepare.txt"

step "trainer train: mini-vgg on the 54,000 training records, $EPOCHS epoch(s) on the CPU"
"$BIN/trainer" train --config configs/fashion-mnist-mini-vgg.toml --run "$RUN" --epochs "$EPOCHS" \
  --set "data.train=\"$DATA/train.rec\"" --set "data.val=\"$DATA/val.rec\"" --set "data.mean_file=\"$DATA/mean.json\"" 2>&1 \
 | grep -v " batch " | tee "$OUT/train.txt"

step "trainer eval: the last checkpoint on the 10,000 test records"
"$BIN/trainer" eval --run "$RUN" --data "$DATA/test.rec" | tee "$OUT/eval.txt"

step "trainer plot: loss and accuracy curves"
"$BIN/trainer" plot --run "$RUN" --out "$OUT/curves.png" | tee "$OUT/plot.txt"

step "exporter export: the checkpoint to ONNX with labels and preprocessing, checked against libtorch"
"$BIN/exporter" export --run "$RUN" --out "$OUT/mini-vgg.onnx" | tee "$OUT/export.txt"
"$BIN/exporter" inspect "$OUT/mini-vgg.onnx" | tee -a "$OUT/export.txt"
"$BIN/runtime" doctor --model "$OUT/mini-vgg.onnx" | tail -2 | tee -a "$OUT/export.txt"

step "runtime doctor: ONNX Runtime running $MODEL on the CPU provider"
"$BIN/runtime" doctor --provider cpu --model "$MODEL" | tee "$OUT/runtime-doctor.txt"

step "exporter inspect: the graph of $MODEL"
"$BIN/exporter" inspect "$MODEL" | tee "$OUT/fer_emotion.inspect.txt"

step "making a face video from $FACES (ffmpeg)"
Z="scale=640:480:force_original_aspect_ratio=decrease,pad=640:480:(ow-iw)/2:(oh-ih)/2,setsar=1,zoompan=z='min(zoom+0.002,1.15)':d=75:s=640x480:fps=25,setsar=1"
ffmpeg -loglevel error -y -i "$FACES/astronaut.png" -i "$FACES/obama.jpg" -i "$FACES/grace_hopper.jpg" \
  -filter_complex "[0:v]$Z[a];[1:v]$Z[b];[2:v]$Z[c];[a][b][c]concat=n=3:v=1:a=0,format=yuv420p[v]" \
  -map "[v]" -c:v libx264 "$OUT/faces.mp4"
echo "wrote $OUT/faces.mp4"

step "edge-demo doctor: OpenCV decodes the video and the Haar cascade finds a face"
"$BIN/edge-demo" doctor --source "$OUT/faces.mp4" | tee "$OUT/edge-demo-doctor.txt"

REPORT="$OUT/REPORT.md"
{
  echo "# Demo report ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
  echo
  echo "What ran: Fashion-MNIST built into record files, mini-vgg trained on them for $EPOCHS epoch(s) and"
  echo "evaluated on the test records (curves: ![curves](curves.png)),"
  echo "then the back-end checks (libtorch, ONNX Runtime, ONNX reading, OpenCV video + face detection)."
  echo "Run directory: $RUN (config, checkpoints, metrics-*.jsonl, train.log)."
  for f in prepare mini-vgg.describe train eval export trainer-doctor runtime-doctor fer_emotion.inspect edge-demo-doctor; do
    echo; echo "## $f"; echo; echo '```'; cat "$OUT/$f.txt"; echo '```'
  done
} > "$REPORT"
step "done: report at $REPORT"
