#!/usr/bin/env bash
# `make demo`: the main job end to end on the built-in data, everything into one folder (demo-out/).
#
# The real Fashion-MNIST (Debian's dataset-fashion-mnist) is built into record files; mini-vgg trains
# on them on the CPU, is evaluated on the 10,000 test records and its curves are plotted; it is exported
# to ONNX with its labels and preprocessing (the parity check against libtorch on fixed inputs and on
# real samples), evaluated again by ONNX Runtime, and run by edge-demo on a short video of test images.
# Then the book's real-time emotion detector runs a model made elsewhere
# (edge-demo/assets/fer_emotion.onnx) on a face video made from edge-demo/assets/faces (provenance and
# licences in edge-demo/assets/README.md). Then the ssd-tiny detector trains on Fashion-MNIST composites,
# is evaluated by mAP@0.5, exported with NMS inside, evaluated by ONNX Runtime and run by edge-demo on a
# video of test scenes; a TFOD person detector made elsewhere runs on OpenCV's vtest.avi. REPORT.md holds
# the plots, the metrics, the parity results and the FPS; its path is printed at the end.
# DEMO_EPOCHS (default 4, about 1.5 minutes an epoch on 2 cores) sets how long mini-vgg trains,
# DEMO_DETECT_EPOCHS (default 5, about 20 s an epoch) how long the detector does.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
OUT=${DEMO_OUT:-$ROOT/demo-out}
ASSETS="$ROOT/edge-demo/assets"
MODEL="$ASSETS/fer_emotion.onnx"
FACES="$ASSETS/faces"
mkdir -p "$OUT"
step() { printf '\n\033[1;32m==> %s\033[0m\n' "$*"; }

step "building the four binaries (the first build takes several minutes; cargo shows its progress)"
cargo build --workspace --bins
BIN="$ROOT/target/debug"

step "trainer doctor: libtorch and the CPU device"
"$BIN/trainer" doctor --device cpu | tee "$OUT/trainer-doctor.txt"

EPOCHS=${DEMO_EPOCHS:-4}
RUN="$OUT/run-mini-vgg"
rm -rf "$RUN"
step "trainer models describe mini-vgg: the network, from the model zoo"
"$BIN/trainer" models describe mini-vgg | tail -8 | tee "$OUT/mini-vgg.describe.txt"

DATA="$OUT/fashion-mnist"
step "trainer prepare idx: Fashion-MNIST into record files (train / val / test)"
"$BIN/trainer" prepare idx --train /usr/share/datasets/fashion-mnist/train --test /usr/share/datasets/fashion-mnist/t10k \
  --val-fraction 0.1 --short-side 0 --quality 0 --out "$DATA" | tee "$OUT/prepare.txt"

step "trainer train: mini-vgg on the 54,000 training records, $EPOCHS epoch(s) on the CPU"
"$BIN/trainer" train --config configs/fashion-mnist-mini-vgg.toml --run "$RUN" --epochs "$EPOCHS" --set "schedule.max_epochs=$EPOCHS" \
  --set "data.train=\"$DATA/train.rec\"" --set "data.val=\"$DATA/val.rec\"" --set "data.mean_file=\"$DATA/mean.json\"" 2>&1 \
 | tee "$OUT/train-log.txt"
# the terminal saw every progress line; the report keeps the epoch lines
grep -v " batch " "$OUT/train-log.txt" > "$OUT/train.txt"

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

step "runtime eval: the ONNX file on the 10,000 test records with ONNX Runtime"
"$BIN/runtime" -q eval --model "$OUT/mini-vgg.onnx" --data "$DATA/test.rec" --json "$OUT/runtime-eval.json" | tee "$OUT/runtime-eval.txt"

step "a short video of 200 Fashion-MNIST test images (112x112, 10 fps) and edge-demo classify on it"
"$ROOT/.venv/bin/python" - "$OUT/fashion-frames" <<'PY'
import gzip, os, sys
import numpy as np
from PIL import Image
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
with gzip.open("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz") as f:
    images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
with gzip.open("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz") as f:
    labels = np.frombuffer(f.read(), np.uint8, offset=8)
for i in range(200):
    Image.fromarray(images[i]).resize((112, 112), Image.NEAREST).save(f"{out}/{i:04d}.png")
open(f"{out}/labels.txt", "w").write("\n".join(str(int(l)) for l in labels[:200]))
PY
ffmpeg -loglevel error -y -framerate 10 -i "$OUT/fashion-frames/%04d.png" -c:v libx264 -pix_fmt yuv420p "$OUT/fashion.mp4"
"$BIN/edge-demo" -q classify --model "$OUT/mini-vgg.onnx" --crop stretch --source "$OUT/fashion.mp4" \
  --output "$OUT/classify.mp4" --json "$OUT/classify.jsonl" | tee "$OUT/classify.txt"
python3 - "$OUT/classify.jsonl" "$OUT/fashion-frames/labels.txt" "$DATA/labels.txt" <<'PY' | tee -a "$OUT/classify.txt"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])][:-1]
truth = [int(l) for l in open(sys.argv[2])]
names = open(sys.argv[3]).read().split("\n")
right = sum(names[t] == l["label"] for t, l in zip(truth, lines))
print(f"video frames classified as their test label: {right}/{len(lines)}")
PY

step "making a face video from $FACES (ffmpeg, scripts/faces_video.sh)"
bash scripts/faces_video.sh "$FACES" "$OUT/faces.mp4"

step "edge-demo doctor: OpenCV decodes the video and the Haar cascade finds a face"
"$BIN/edge-demo" doctor --source "$OUT/faces.mp4" | tee "$OUT/edge-demo-doctor.txt"

step "edge-demo emotion: the book's real-time emotion detector with $MODEL (a model made elsewhere), faces by BlazeFace"
printf 'angry\ndisgust\nfear\nhappy\nsad\nsurprise\nneutral\n' > "$OUT/fer_labels.txt"
emotion() { # $1: face detector, $2: output name
  "$BIN/edge-demo" -q emotion --face-detector "$1" --model "$MODEL" --size 64x64 --layout nhwc --gray --mean 127.5 --std 127.5 \
    --labels "$OUT/fer_labels.txt" --source "$OUT/faces.mp4" --output "$OUT/$2.mp4" --json "$OUT/$2.jsonl"
  python3 - "$OUT/$2.jsonl" "$1" <<'PY'
import collections, json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
s, lines = lines[-1]["summary"], lines[:-1]
for name, seg in (("astronaut", 0), ("obama", 1), ("grace_hopper", 2)):
    c = collections.Counter(l["faces"][0]["label"] for l in lines[seg * 75:(seg + 1) * 75] if l["faces"])
    print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in c.most_common(3)) + " (frames)")
print(f"faces by {sys.argv[2]}: {s['fps']:.1f} FPS (debug build), face detection p50 {next(t['p50_ms'] for t in s['stages'] if t['stage'] == 'detect'):.2f} ms")
PY
}
emotion blazeface emotion | tee "$OUT/emotion.txt"
step "edge-demo emotion: the same with the book's Haar cascade"
emotion haar emotion-haar | tee -a "$OUT/emotion.txt"

DET_EPOCHS=${DEMO_DETECT_EPOCHS:-5}
DRUN="$OUT/run-ssd-tiny"
DDATA="$ROOT/runs/datasets/fashion-detect"
rm -rf "$DRUN"
step "trainer train: the ssd-tiny detector on Fashion-MNIST composites, $DET_EPOCHS epoch(s) (the scenes are built on first use)"
"$BIN/trainer" train --config configs/fashion-detect-ssd.toml --run "$DRUN" --epochs "$DET_EPOCHS" --set "schedule.max_epochs=$DET_EPOCHS" 2>&1 \
  | tee "$OUT/detect-train-log.txt"
grep -v " batch " "$OUT/detect-train-log.txt" > "$OUT/detect-train.txt"

step "trainer eval: mAP@0.5 per class on the 500 test scenes"
"$BIN/trainer" eval --run "$DRUN" --data "$DDATA/test.rec" | tee "$OUT/detect-eval.txt"
"$BIN/trainer" plot --run "$DRUN" --out "$OUT/detect-curves.png" > /dev/null

step "exporter export: the detector as one ONNX file with NMS inside, its detections checked against the Rust post-process"
"$BIN/exporter" export --run "$DRUN" --out "$OUT/ssd-tiny.onnx" | tee "$OUT/detect-export.txt"

step "runtime eval: the ONNX detector on the same test scenes with ONNX Runtime"
"$BIN/runtime" eval -m "$OUT/ssd-tiny.onnx" --data "$DDATA/test.rec" | tee "$OUT/detect-runtime-eval.txt"

step "edge-demo detect: a video of 100 test scenes (trainer dump, ffmpeg) through the exported detector"
"$BIN/trainer" dump "$DDATA/test.rec" --out "$OUT/scenes" --max 100 > /dev/null
ffmpeg -loglevel error -y -framerate 5 -i "$OUT/scenes/%06d.png" -vf scale=384:384:flags=neighbor -c:v libx264 -pix_fmt yuv420p "$OUT/scenes.mp4"
"$BIN/edge-demo" -q detect -m "$OUT/ssd-tiny.onnx" --source "$OUT/scenes.mp4" --output "$OUT/detect.mp4" --json "$OUT/detect.jsonl" | tee "$OUT/detect.txt"

step "edge-demo detect: OpenCV's vtest.avi (from Debian's opencv-doc) with a TFOD person detector made elsewhere"
bash scripts/vtest_video.sh "$OUT/vtest.avi"
echo person > "$OUT/person.txt"
"$BIN/edge-demo" -q detect -m "$ASSETS/ped_ssdlite.onnx" --labels "$OUT/person.txt" --source "$OUT/vtest.avi" --max-frames 300 \
  --output "$OUT/pedestrians.mp4" --json "$OUT/pedestrians.jsonl" | tee "$OUT/pedestrians.txt"
python3 - "$OUT/pedestrians.jsonl" <<'PY' | tee -a "$OUT/pedestrians.txt"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])][:-1]
print(f"{sum(l['objects'] for l in lines) / len(lines):.2f} persons per frame at score >= 0.5 over {len(lines)} frames")
PY

REPORT="$OUT/REPORT.md"
{
  echo "# Demo report ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
  echo
  echo "What ran: Fashion-MNIST built into record files, mini-vgg trained on them for $EPOCHS epoch(s) on the CPU,"
  echo "evaluated on the 10,000 test records by libtorch (trainer eval) and, after export with the parity check,"
  echo "by ONNX Runtime (runtime eval); a video of test images classified by edge-demo (classify.mp4), and the"
  echo "book's real-time emotion detector run with a model made elsewhere on a face video, its faces found by"
  echo "MediaPipe's BlazeFace (emotion.mp4) and by the book's Haar cascade (emotion-haar.mp4), both FPS below."
  echo "Then object detection: ssd-tiny trained on Fashion-MNIST composites for $DET_EPOCHS epoch(s), evaluated by"
  echo "mAP@0.5, exported with NMS inside, evaluated again by ONNX Runtime and run by edge-demo on a video of test"
  echo "scenes (detect.mp4); and a TFOD person detector made elsewhere on OpenCV's vtest.avi (pedestrians.mp4)."
  echo
  echo "![training curves](curves.png)"
  echo "![detector curves](detect-curves.png)"
  echo "Run directory: $RUN (config, checkpoints, metrics-*.jsonl, train.log)."
  for f in eval runtime-eval export classify emotion detect-eval detect-runtime-eval detect-export detect pedestrians detect-train train prepare mini-vgg.describe trainer-doctor runtime-doctor fer_emotion.inspect edge-demo-doctor; do
    echo; echo "## $f"; echo; echo '```'; cat "$OUT/$f.txt"; echo '```'
  done
} > "$REPORT"
step "done: report at $REPORT"
