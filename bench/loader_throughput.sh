#!/usr/bin/env bash
# Data-loading throughput, side by side in one run: the toolchain's record loader (`trainer
# loader-bench`) against PyTorch's DataLoader with torchvision transforms (bench/torch_loader.py) and
# against NVIDIA DALI's CPU pipeline (bench/dali_loader.py, device_id=None: no GPU), on the same real
# JPEGs (crops of the photos in edge-demo/assets/faces, 341x256, quality 95), with the same output size,
# augmentation, batch size and thread count. Two augmentations:
#   book       random 224 crop, flip, rotation within 15 degrees, shear 0.1, normalise (the book's recipe);
#   crop-flip  random 224 crop, flip, normalise.
# Prints images/s and the ratios (targets on 2 cores: >= 2 against the DataLoader, >= 1.0 against DALI in
# both; in crop-flip DALI runs both ways, decoding whole images and decoding only the crop
# (decoders.image_crop), and the ratio is to the faster). Best of ROUNDS alternating rounds.
#   N (1280: a multiple of BATCH, so that every batch is full on every side; DALI's reader runs whole
#   batches only, and the loader's last, partial batch would leave a worker idle), WORKERS (2), BATCH (64), ROUNDS (2), DALI (1: install nvidia-dali-cuda130 2.4.0, ~750 MB,
#   into .venv-dali on first use and compare; 0: skip it).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/setup.sh >/dev/null
cargo build -q -p trainer --bin trainer
N=${N:-1280}; WORKERS=${WORKERS:-2}; BATCH=${BATCH:-64}; ROUNDS=${ROUNDS:-2}; DALI=${DALI:-1}
if [ "$DALI" = 1 ] && ! [ -x .venv-dali/bin/python ]; then
  echo "installing NVIDIA DALI (CPU pipeline) into .venv-dali for the comparison (once; DALI=0 skips it)" >&2
  python3 -m venv .venv-dali
  .venv-dali/bin/pip install -q nvidia-dali-cuda130==2.4.0
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
.venv/bin/python bench/make_jpegs.py "$WORK/jpegs" "$N" "$ROOT/edge-demo/assets/faces" --classes 4
./target/debug/trainer -q prepare folder "$WORK/jpegs" --out "$WORK/rec" --val-fraction 0 --test-fraction 0 --short-side 256 --quality 95 >/dev/null
ips() { python3 -c 'import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])["images_per_sec"])'; }
max() { python3 -c "print(max($1, $2))"; }
for mode in book crop-flip; do
  best_rust=0; best_py=0; best_dali=0
  for r in $(seq "$ROUNDS"); do
    rust_json=$(./target/debug/trainer -q loader-bench "$WORK/rec/train.rec" --batch-size "$BATCH" --workers "$WORKERS" --augment "$mode")
    rust=$(echo "$rust_json" | ips)
    rss=$(echo "$rust_json" | python3 -c 'import json,sys; j=json.load(sys.stdin); print(j["peak_rss_mb"], j["rss_before_mb"])')
    line=$(printf '%s round %d: loader %.0f images/s (peak RSS %.0f MB, %.0f MB before reading)' "$mode" "$r" "$rust" $rss)
    best_rust=$(max "$best_rust" "$rust")
    if [ "$mode" = book ]; then
      py=$(.venv/bin/python bench/torch_loader.py "$WORK/jpegs" --batch "$BATCH" --workers "$WORKERS" | ips)
      line+=$(printf ', torch DataLoader %.0f images/s' "$py"); best_py=$(max "$best_py" "$py")
    fi
    if [ "$DALI" = 1 ]; then
      dali=$(.venv-dali/bin/python bench/dali_loader.py "$WORK/jpegs" --mode "$mode" --batch "$BATCH" --threads "$WORKERS" 2>/dev/null | ips)
      line+=$(printf ', DALI %.0f images/s' "$dali"); best_dali=$(max "$best_dali" "$dali")
      if [ "$mode" = crop-flip ]; then
        # DALI's own fastest way to the same crop: decode only the window (decoders.image_crop)
        roi=$(.venv-dali/bin/python bench/dali_loader.py "$WORK/jpegs" --mode "$mode" --roi --batch "$BATCH" --threads "$WORKERS" 2>/dev/null | ips)
        line+=$(printf ', DALI decoding the crop only %.0f images/s' "$roi"); best_dali=$(max "$best_dali" "$roi")
      fi
    fi
    echo "$line"
  done
  python3 -c "
r, p, d = $best_rust, $best_py, $best_dali
out = f'$mode: decode+augment to 224, $N JPEGs, batch $BATCH, $WORKERS workers: loader {r:.0f} images/s'
if p: out += f', torch DataLoader {p:.0f} images/s, ratio {r/p:.2f} (target >= 2)'
if d: out += f', DALI {d:.0f} images/s, ratio {r/d:.2f} (target >= 1.0)'
print(out)"
done
