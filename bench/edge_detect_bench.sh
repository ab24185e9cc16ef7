#!/usr/bin/env bash
# Real-time object detection, side by side in one run: `edge-demo detect` against the same loop in
# Python with cv2 + onnxruntime (bench/cv2_detect.py), on OpenCV's vtest.avi (768x576, 795 frames of
# pedestrians; scripts/vtest_video.sh extracts it from Debian's opencv-doc) with the TFOD person detector
# in edge-demo/assets (ped_ssdlite.onnx, 300x300), both resizing each frame with OpenCV, drawing the boxes
# and writing an annotated mp4. Prints both FPS, persons per frame (they must agree) and the ratio
# (target >= 1.5). Best of ROUNDS alternating rounds; FRAMES limits the clip (default: all of it).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/setup.sh >/dev/null
cargo build -q --release -p edge-demo --bin edge-demo
MODEL=$ROOT/edge-demo/assets/ped_ssdlite.onnx; ROUNDS=${ROUNDS:-2}; FRAMES=${FRAMES:-0}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
bash scripts/vtest_video.sh "$WORK/vtest.avi" >/dev/null
echo person >"$WORK/labels.txt"
limit=(); [[ $FRAMES -gt 0 ]] && limit=(--max-frames "$FRAMES")
best_rust=0; best_py=0
for r in $(seq "$ROUNDS"); do
  ./target/release/edge-demo -q detect --model "$MODEL" --labels "$WORK/labels.txt" --source "$WORK/vtest.avi" \
    --output "$WORK/rust.mp4" --json "$WORK/rust.jsonl" "${limit[@]}" >/dev/null
  rust=$(python3 - "$WORK/rust.jsonl" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
s = lines[-1]["summary"]
print(s["fps"], s["frames"], sum(l["objects"] for l in lines[:-1]) / max(1, s["frames"]))
PY
)
  py=$(.venv/bin/python bench/cv2_detect.py "$WORK/vtest.avi" "$MODEL" --output "$WORK/py.mp4" --max-frames "$FRAMES" \
    | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["fps"], s["frames"], s["objects_per_frame"])')
  read -r rf rn ro <<<"$rust"; read -r pf pn po <<<"$py"
  printf 'round %d: edge-demo %.1f FPS (%d frames, %.2f persons/frame), python cv2+onnxruntime %.1f FPS (%d frames, %.2f persons/frame)\n' \
    "$r" "$rf" "$rn" "$ro" "$pf" "$pn" "$po"
  best_rust=$(python3 -c "print(max($best_rust, $rf))"); best_py=$(python3 -c "print(max($best_py, $pf))")
done
python3 -c "print(f'detection on vtest.avi: edge-demo {$best_rust:.1f} FPS, python cv2+onnxruntime {$best_py:.1f} FPS, ratio {$best_rust/$best_py:.2f} (target >= 1.5)')"
