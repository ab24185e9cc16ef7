#!/usr/bin/env bash
# Detection geometry, side by side in one run on the same seeded inputs (bench/detect_geometry.py gen):
#   1. multi-class NMS of an SSD300-sized output (8732 boxes, 20 foreground classes, score > 0.01,
#      IoU 0.45, at most 200 per class): our models::detect::nms per class against torchvision's
#      batched_nms (one call with class offsets, torch's default threads; ours is one thread);
#   2. mAP@0.5 of 500 images, 20 classes: our MapEvaluator against the TFOD PascalDetectionEvaluator
#      the book's eval.py uses (numpy).
# Both sides must keep the same boxes and report the same mAP; the ratios are theirs / ours (> 1: we
# are faster). Environment: ITERS (10).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
ITERS=${ITERS:-10}
PY=${DLCV_PYTHON:-$ROOT/.venv/bin/python}
OUT=$(mktemp -d /tmp/dlcv-detect-bench.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
cargo build -q --release -p models --example detect_bench
"$PY" bench/detect_geometry.py gen "$OUT/input.json"
ours=$("$ROOT/target/release/examples/detect_bench" "$OUT/input.json" "$ITERS")
theirs=$("$PY" bench/detect_geometry.py run "$OUT/input.json" "$ITERS" 2>/dev/null)
"$PY" - "$ours" "$theirs" <<'PY'
import json, sys
o, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
same_nms = o["nms_kept"] == t["nms_kept"] and o["nms_kept_hash"] == t["nms_kept_hash"]
same_map = abs(o["map"] - t["map"]) < 1e-9
print(f"NMS  8732 boxes x 20 classes: ours {o['nms_ms']:.2f} ms, torchvision batched_nms {t['nms_ms']:.2f} ms "
      f"({t['torch_threads']} threads): ratio {t['nms_ms'] / o['nms_ms']:.2f}x; kept {o['nms_kept']} vs {t['nms_kept']}"
      f"{'' if same_nms else '  <- DIFFERENT BOXES'}")
print(f"mAP  500 images x 20 classes: ours {o['map_ms']:.2f} ms, TFOD evaluator {t['map_ms']:.2f} ms: "
      f"ratio {t['map_ms'] / o['map_ms']:.2f}x; mAP {o['map']:.6f} vs {t['map']:.6f}{'' if same_map else '  <- DIFFERENT'}")
sys.exit(0 if same_nms and same_map else 1)
PY
