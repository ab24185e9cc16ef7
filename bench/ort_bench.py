"""Python baseline for bench/runtime_bench.sh: the same ONNX file through Python onnxruntime.

Model alone: the same batch sizes, fixed random inputs, warm-up runs, then timed runs (at least --iters
and --seconds), p50/p90/p99 latency and images/s. End to end (--images): what a user's script does, one
image at a time decoded with PIL, brought to the input the way the file's dlcv.* metadata says (shorter
side down to resize_short_side with a bicubic filter, centre crop, (x - mean) / std, NCHW), batched and
run. Prints one JSON object shaped like `runtime bench --json`. Python is only the baseline here."""
import argparse, json, os, time

import numpy as np
import onnxruntime as ort
from PIL import Image

p = argparse.ArgumentParser()
p.add_argument("model")
p.add_argument("--batch", default="1,8,32")
p.add_argument("--warmup", type=int, default=5)
p.add_argument("--iters", type=int, default=20)
p.add_argument("--seconds", type=float, default=2.0)
p.add_argument("--images")
p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: ONNX Runtime's default)")
a = p.parse_args()

so = ort.SessionOptions()
so.intra_op_num_threads = a.threads
sess = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
meta = sess.get_modelmeta().custom_metadata_map
inp = sess.get_inputs()[0]
w, h = (int(v) for v in meta["dlcv.input_size"].split("x"))
c = int(meta.get("dlcv.input_channels", "3"))
mean = np.array(json.loads(meta.get("dlcv.mean", "[0]")), np.float32).reshape(-1, 1, 1)
std = np.array(json.loads(meta.get("dlcv.std", "[1]")), np.float32).reshape(-1, 1, 1)
short = int(meta.get("dlcv.resize_short_side", "0"))


def alone(b):
    x = np.random.default_rng(0).uniform(-1, 1, (b, c, h, w)).astype(np.float32)
    for _ in range(a.warmup):
        sess.run(None, {inp.name: x})
    times, start = [], time.perf_counter()
    while len(times) < a.iters or time.perf_counter() - start < a.seconds:
        t = time.perf_counter()
        sess.run(None, {inp.name: x})
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    q = lambda f: times[min(len(times), max(1, int(np.ceil(f * len(times))))) - 1]
    mean_ms = sum(times) / len(times)
    return dict(batch=b, iterations=len(times), mean_ms=mean_ms, p50_ms=q(0.5), p90_ms=q(0.9), p99_ms=q(0.99), images_per_sec=b * 1e3 / mean_ms)


def preprocess(path):
    im = Image.open(path).convert("L" if c == 1 else "RGB")
    iw, ih = im.size
    if short and min(iw, ih) > short:
        s = short / min(iw, ih)
        im = im.resize((round(iw * s), round(ih * s)), Image.BICUBIC)
        iw, ih = im.size
    x0, y0 = (iw - w) // 2, (ih - h) // 2
    x = np.asarray(im.crop((x0, y0, x0 + w, y0 + h)), np.float32)
    x = x[None] if c == 1 else x.transpose(2, 0, 1)
    return (x - mean) / std


def end_to_end(b):
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(a.images) for f in fs if f.lower().endswith((".jpg", ".png")))
    start = time.perf_counter()
    for i in range(0, len(files), b):
        x = np.stack([preprocess(f) for f in files[i:i + b]])
        sess.run(None, {inp.name: x})
    s = time.perf_counter() - start
    return dict(batch=b, images=len(files), seconds=s, images_per_sec=len(files) / s)


batches = [int(b) for b in a.batch.split(",")]
rows = [alone(b) for b in batches]
e2e = [end_to_end(b) for b in batches] if a.images else []
print(json.dumps(dict(model=a.model, provider="cpu", model_alone=rows, end_to_end=e2e)))
