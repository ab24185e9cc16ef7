#!/usr/bin/env bash
# Training throughput, side by side in one run: `trainer train` (Rust, tch) against the same training in
# Python PyTorch (bench/torch_train.py) on the same libtorch, data slice, model, batch size and
# augmentation; prints both samples/s and the ratio (target >= 1.0 on CPU). Each side runs ROUNDS
# times, alternating, and the best of each counts, which damps the noise of a shared machine.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/setup.sh >/dev/null
# TRAINER: another trainer binary to measure (an older build, say); default: this checkout's
if [ -z "${TRAINER:-}" ]; then cargo build -q -p trainer --bin trainer; fi
TRAINER=${TRAINER:-./target/debug/trainer}
LIMIT=${LIMIT:-12800}
BATCH=${BATCH:-128}
ROUNDS=${ROUNDS:-2}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
sed -e "s|^limit_train = .*||" configs/fashion-mnist-mini-vgg.toml \
  | sed -e "s|^\[data\]|[data]\nlimit_train = $LIMIT|" -e "s|^val = .*||" -e "s|^log_every = .*|log_every = 0|" \
  > "$WORK/bench.toml"
best_rust=0; best_py=0
for r in $(seq "$ROUNDS"); do
  rust=$("$TRAINER" -q train --config "$WORK/bench.toml" --run "$WORK/run$r" --epochs 1 --batch-size "$BATCH" \
    | python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["samples_per_sec"])')
  py=$(.venv/bin/python bench/torch_train.py --limit "$LIMIT" --batch "$BATCH" \
    | python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["samples_per_sec"])')
  printf 'round %d: rust %.0f samples/s, python %.0f samples/s\n' "$r" "$rust" "$py"
  best_rust=$(python3 -c "print(max($best_rust, $rust))"); best_py=$(python3 -c "print(max($best_py, $py))")
done
python3 -c "print(f'mini-vgg, Fashion-MNIST x{$LIMIT}, batch $BATCH, CPU: trainer {$best_rust:.0f} samples/s, PyTorch {$best_py:.0f} samples/s, ratio {$best_rust/$best_py:.2f}')"
