#!/usr/bin/env bash
# Real-time emotion detection, side by side in one run: `edge-demo emotion` against the same pipeline in
# Python with cv2 + onnxruntime (bench/cv2_emotion.py), on the same face video (made here from
# edge-demo/assets/faces by scripts/faces_video.sh) and the same model
# (edge-demo/assets/fer_emotion.onnx), both writing an annotated mp4. Prints both FPS and the ratio
# (target >= 1.5). Best of ROUNDS alternating rounds.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/setup.sh >/dev/null
cargo build -q -p edge-demo --bin edge-demo
ASSETS=$ROOT/edge-demo/assets; ROUNDS=${ROUNDS:-2}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
bash scripts/faces_video.sh "$ASSETS/faces" "$WORK/faces.mp4" >/dev/null
printf 'angry\ndisgust\nfear\nhappy\nsad\nsurprise\nneutral\n' >"$WORK/labels.txt"
best_rust=0; best_py=0
for r in $(seq "$ROUNDS"); do
  ./target/debug/edge-demo -q emotion --model "$ASSETS/fer_emotion.onnx" --size 64x64 --layout nhwc --gray \
    --mean 127.5 --std 127.5 --labels "$WORK/labels.txt" --source "$WORK/faces.mp4" --output "$WORK/rust.mp4" --json "$WORK/rust.jsonl" >/dev/null
  rust=$(tail -1 "$WORK/rust.jsonl" | python3 -c 'import json,sys; s=json.load(sys.stdin)["summary"]; print(s["fps"], s["frames"])')
  py=$(.venv/bin/python bench/cv2_emotion.py "$WORK/faces.mp4" "$ASSETS/fer_emotion.onnx" --output "$WORK/py.mp4" | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["fps"], s["frames"])')
  printf 'round %d: edge-demo %.1f FPS (%d frames), python cv2+onnxruntime %.1f FPS (%d frames)\n' "$r" $rust $py
  best_rust=$(python3 -c "print(max($best_rust, ${rust% *}))"); best_py=$(python3 -c "print(max($best_py, ${py% *}))")
done
python3 -c "print(f'emotion pipeline on faces.mp4: edge-demo {$best_rust:.1f} FPS, python cv2+onnxruntime {$best_py:.1f} FPS, ratio {$best_rust/$best_py:.2f}')"
