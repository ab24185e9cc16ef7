#!/usr/bin/env bash
# ONNX Runtime inference, side by side in one run: `runtime bench` (Rust, through `ort`) against Python
# onnxruntime (bench/ort_bench.py) on the same ONNX file, the same inputs and the same ONNX Runtime
# library, one after the other, alternating ROUNDS times (best of each). Two figures per batch size,
# each with the ratio Rust / Python:
#   - model alone: fixed inputs, images/s from the mean latency (target: ratio >= 1.0);
#   - end to end: decode + preprocess + inference of N real JPEGs (crops of ../shared/data/faces,
#     341x256), preprocessing from the file's metadata (target: ratio >= 1.3).
# End to end, the Rust side decodes on worker threads while the model runs; the Python side is the
# usual loop (PIL, numpy, run). What that can gain is bounded by the share of the time Python spends
# outside the model: the script prints that share and the ratio it allows ("bound") next to each
# end-to-end ratio, so a compute-bound model on few cores is not mistaken for a slow pipeline.
#
# MODELS: registry models exported here from `trainer init` (default: "emotion-vgg resnet18", the book's
# real-time 48x48 grey network and a 224x224 ImageNet network), or MODEL: one ONNX file with dlcv
# metadata instead. BATCH (1,8,32), N (1024 images), ROUNDS (2), THREADS (ONNX Runtime intra-op threads
# on both sides; default: the cores).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/setup.sh >/dev/null
cargo build -q --workspace --bins
N=${N:-1024}; BATCH=${BATCH:-1,8,32}; ROUNDS=${ROUNDS:-2}; THREADS=${THREADS:-$(nproc)}
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
.venv/bin/python bench/make_jpegs.py "$WORK/jpegs" "$N" "${SHARED:-$ROOT/../shared}/data/faces"
for m in "${!FILES[@]}"; do
  for r in $(seq "$ROUNDS"); do
    ./target/debug/runtime -q bench --model "${FILES[$m]}" --batch "$BATCH" --threads "$THREADS" --images "$WORK/jpegs" --json >"$WORK/rust-$m-$r.json"
    .venv/bin/python bench/ort_bench.py "${FILES[$m]}" --batch "$BATCH" --threads "$THREADS" --images "$WORK/jpegs" >"$WORK/py-$m-$r.json"
  done
done
python3 - "$WORK" "$ROUNDS" "$THREADS" "${FILES[@]}" <<'PY'
import json, sys
work, rounds, threads, files = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
print(f"CPU provider, {threads} intra-op threads each, best of {rounds} alternating rounds")
for m, model in enumerate(files):
    load = lambda who: [json.load(open(f"{work}/{who}-{m}-{r}.json")) for r in range(1, rounds + 1)]
    rust, py = load("rust"), load("py")
    print(f"model {model.split('/')[-1]}")
    best = lambda runs, part, i: max(r[part][i]["images_per_sec"] for r in runs)
    for i, row in enumerate(rust[0]["model_alone"]):
        p50 = lambda runs: min(r["model_alone"][i]["p50_ms"] for r in runs)
        a, b = best(rust, "model_alone", i), best(py, "model_alone", i)
        print(f"  model alone, batch {row['batch']}: runtime {a:.1f} images/s, python onnxruntime {b:.1f} images/s, ratio {a / b:.2f} (p50 {p50(rust):.2f} ms vs {p50(py):.2f} ms)")
    for i, row in enumerate(rust[0]["end_to_end"]):
        a, b = best(rust, "end_to_end", i), best(py, "end_to_end", i)
        # Python's time per image is its model time plus its decoding; a pipeline that hid every bit of
        # decoding would run at the model-alone rate: that rate over Python's is the bound.
        model_rate = best(py, "model_alone", i)
        outside = 1 - b / model_rate
        print(f"  end to end, batch {row['batch']}: runtime {a:.1f} images/s, python onnxruntime {b:.1f} images/s, ratio {a / b:.2f}"
              f" (python spends {100 * outside:.0f}% outside the model: bound {model_rate / b:.2f})")
PY
