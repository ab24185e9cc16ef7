#!/usr/bin/env bash
# ONNX Runtime inference, side by side in one run: `runtime bench` (Rust, through `ort`) against Python
# onnxruntime (bench/ort_bench.py) on the same ONNX file, the same inputs and the same ONNX Runtime
# library, one after the other, alternating ROUNDS times per batch size (best of each). Two figures per batch size,
# each with the ratio Rust / Python:
#   - model alone: fixed inputs, images/s from the mean latency (target: ratio >= 1.0);
#   - end to end: decode + preprocess + inference of N real JPEGs (crops of edge-demo/assets/faces,
#     341x256), preprocessing from the file's metadata (target: ratio >= 1.3).
# End to end, the Rust side decodes on worker threads while the model runs; the Python side is the
# usual loop (PIL, numpy, run). What that can gain is bounded by the share of the time Python spends
# outside the model: the script prints that share and the ratio it allows ("bound") next to each
# end-to-end ratio, so a compute-bound model on few cores is not mistaken for a slow pipeline.
#
# MODELS: registry models exported here from `trainer init` (default: "emotion-vgg resnet18", the book's
# real-time 48x48 grey network and a 224x224 ImageNet network), or MODEL: one ONNX file with dlcv
# metadata instead. BATCH (1,8,32), N (1024 images), ROUNDS (3), THREADS (ONNX Runtime intra-op threads
# on both sides; default: the cores).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/setup.sh >/dev/null
cargo build -q --workspace --bins
N=${N:-1024}; BATCH=${BATCH:-1,8,32}; ROUNDS=${ROUNDS:-3}; THREADS=${THREADS:-$(nproc)}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
FILES=()
if [ -n "${MODEL:-}" ]; then
  FILES=("$MODEL")
else
  for name in ${MODELS:-emotion-vgg resnet18}; do
    ./target/debug/trainer -q init --model "$name" --num-classes 7 --run "$WORK/run-$name" >/dev/null
    ./target/debug/exporter -q export --run "$WORK/run-$name" --out "$WORK/$name.onnx" >/dev/null
    FILES+=("$WORK/$name.onnx")
  done
fi
.venv/bin/python bench/make_jpegs.py "$WORK/jpegs" "$N" "$ROOT/edge-demo/assets/faces"
# Rounds alternate Rust and Python per model and batch size, so that a slow minute of a shared machine
# hits both sides alike; each side's best round counts.
for m in "${!FILES[@]}"; do
  for b in ${BATCH//,/ }; do
    for r in $(seq "$ROUNDS"); do
      ./target/debug/runtime -q bench --model "${FILES[$m]}" --batch "$b" --threads "$THREADS" --images "$WORK/jpegs" --json >"$WORK/rust-$m-$b-$r.json"
      .venv/bin/python bench/ort_bench.py "${FILES[$m]}" --batch "$b" --threads "$THREADS" --images "$WORK/jpegs" >"$WORK/py-$m-$b-$r.json"
    done
  done
done
python3 - "$WORK" "$ROUNDS" "$THREADS" "$BATCH" "${FILES[@]}" <<'PY'
import json, sys
work, rounds, threads, batches, files = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4].split(","), sys.argv[5:]
print(f"CPU provider, {threads} intra-op threads each, best of {rounds} alternating rounds")
for m, model in enumerate(files):
    print(f"model {model.split('/')[-1]}")
    load = lambda who, b: [json.load(open(f"{work}/{who}-{m}-{b}-{r}.json")) for r in range(1, rounds + 1)]
    best = lambda runs, part: max(r[part][0]["images_per_sec"] for r in runs)
    for part in ("model_alone", "end_to_end"):
        for b in batches:
            rust, py = load("rust", b), load("py", b)
            a, p = best(rust, part), best(py, part)
            line = f"  {part.replace('_', ' ')}, batch {b}: runtime {a:.1f} images/s, python onnxruntime {p:.1f} images/s, ratio {a / p:.2f}"
            if part == "model_alone":
                p50 = lambda runs: min(r[part][0]["p50_ms"] for r in runs)
                line += f" (p50 {p50(rust):.2f} ms vs {p50(py):.2f} ms)"
            else:
                # Python's time per image is its model time plus its decoding; a pipeline that hid all of
                # the decoding would run at the model-alone rate: that rate over Python's is the bound.
                model_rate = best(py, "model_alone")
                line += f" (python spends {100 * (1 - p / model_rate):.0f}% outside the model: bound {model_rate / p:.2f})"
            print(line)
PY
