#!/usr/bin/env bash
# Data-loading throughput, side by side in one run: the toolchain's record loader (`trainer
# loader-bench`) against PyTorch's DataLoader with torchvision transforms (bench/torch_loader.py), on the
# same real JPEGs (crops of the photos in edge-demo/assets/faces, 341x256, quality 95), with the same
# output size, augmentation, batch size and worker count; prints both images/s and the ratio
# (target >= 2 on 2 cores). Best of ROUNDS alternating rounds.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/setup.sh >/dev/null
cargo build -q -p trainer --bin trainer
N=${N:-1200}; WORKERS=${WORKERS:-2}; BATCH=${BATCH:-64}; ROUNDS=${ROUNDS:-2}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
.venv/bin/python bench/make_jpegs.py "$WORK/jpegs" "$N" "$ROOT/edge-demo/assets/faces" --classes 4
./target/debug/trainer -q prepare folder "$WORK/jpegs" --out "$WORK/rec" --val-fraction 0 --test-fraction 0 --short-side 256 --quality 95 >/dev/null
best_rust=0; best_py=0
for r in $(seq "$ROUNDS"); do
  rust=$(./target/debug/trainer -q loader-bench "$WORK/rec/train.rec" --batch-size "$BATCH" --workers "$WORKERS")
  py=$(.venv/bin/python bench/torch_loader.py "$WORK/jpegs" --batch "$BATCH" --workers "$WORKERS")
  r_ips=$(echo "$rust" | python3 -c 'import json,sys; print(json.load(sys.stdin)["images_per_sec"])')
  p_ips=$(echo "$py" | python3 -c 'import json,sys; print(json.load(sys.stdin)["images_per_sec"])')
  rss=$(echo "$rust" | python3 -c 'import json,sys; j=json.load(sys.stdin); print(j["peak_rss_mb"], j["rss_before_mb"])')
  printf 'round %d: loader %.0f images/s (peak RSS %.0f MB, %.0f MB before reading), torch DataLoader %.0f images/s\n' "$r" "$r_ips" $rss "$p_ips"
  best_rust=$(python3 -c "print(max($best_rust, $r_ips))"); best_py=$(python3 -c "print(max($best_py, $p_ips))")
done
python3 -c "print(f'decode+augment to 224, {$N} JPEGs, batch $BATCH, $WORKERS workers: loader {$best_rust:.0f} images/s, torch DataLoader {$best_py:.0f} images/s, ratio {$best_rust/$best_py:.2f}')"
