#!/usr/bin/env bash
# The training step's own overhead on the CPU, side by side in one run: mini-vgg at a small batch (8,
# 28x28 grey), where launching work costs as much as doing it, trained by `trainer train` on a
# synthetic batch (data.synthetic: no decoding, no loader) against PyTorch eager doing the same step the
# fast idiomatic way (bench/torch_step.py: fused SGD, set_to_none, metrics kept on the device), with the
# same number of threads on the same libtorch. Also the trainer with its per-tensor optimizer loop
# (train.fused_optimizer = false), what it ran before the fused kernels. Prints ms a step and the ratio of
# samples/s (trainer / PyTorch; above 1.0: the trainer's step costs less). Each side runs ROUNDS
# times, alternating; the best counts.
#   BATCH (8), STEPS (300 an epoch; 2 epochs, the second measured), THREADS (2), ROUNDS (3).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/setup.sh >/dev/null
cargo build -q -p trainer --bin trainer
BATCH=${BATCH:-8}; STEPS=${STEPS:-300}; THREADS=${THREADS:-2}; ROUNDS=${ROUNDS:-3}
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cat > "$WORK/step.toml" <<CFG
[model]
name = "mini-vgg"
num_classes = 10
[data]
train = "unused: synthetic"
synthetic = $((BATCH * STEPS))
mean = 72.94
std = 90.02
[train]
batch_size = $BATCH
epochs = 2
lr = 0.05
log_every = 0
run = "$WORK/run"
[optimizer]
name = "sgd"
momentum = 0.9
nesterov = true
weight_decay = 5e-4
CFG
sps() { python3 -c 'import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])["samples_per_sec"])'; }
best_rust=0; best_loop=0; best_py=0
for r in $(seq "$ROUNDS"); do
  rm -rf "$WORK/run"
  rust=$(./target/debug/trainer -q train --config "$WORK/step.toml" | sps)
  rm -rf "$WORK/run"
  loop=$(./target/debug/trainer -q train --config "$WORK/step.toml" --set train.fused_optimizer=false | sps)
  py=$(.venv/bin/python bench/torch_step.py --batch "$BATCH" --steps "$STEPS" | sps)
  printf 'round %d: trainer %.0f samples/s (per-tensor optimizer %.0f), PyTorch eager %.0f samples/s\n' "$r" "$rust" "$loop" "$py"
  best_rust=$(python3 -c "print(max($best_rust, $rust))"); best_loop=$(python3 -c "print(max($best_loop, $loop))"); best_py=$(python3 -c "print(max($best_py, $py))")
done
python3 -c "
b=$BATCH; r=$best_rust; l=$best_loop; p=$best_py
print(f'mini-vgg step, batch {b}, synthetic input, $THREADS threads, CPU: trainer {1e3*b/r:.3f} ms/step ({r:.0f} samples/s), '
      f'per-tensor optimizer {1e3*b/l:.3f} ms/step, PyTorch eager (fused SGD) {1e3*b/p:.3f} ms/step ({p:.0f} samples/s); ratio {r/p:.2f} (target >= 1.0)')"
