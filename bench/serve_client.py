"""Request bodies, answer checks and figures for bench/serve_bench.sh; the load itself comes from `hey`,
the same for both servers. Standard library and numpy only (runs from the project's .venv).

    serve_client.py bodies ONNX JPEG OUT_DIR
        writes OUT_DIR/KIND.body and OUT_DIR/KIND.len (the JSON part's length, for Triton's
        Inference-Header-Content-Length header; empty for a JSON body) for each kind:
          tensor-binary  FP32 [1, ...] of fixed random values, binary in and out (Triton's extension)
          tensor-json    the same values as a JSON request and answer
          image-binary   BYTES [1]: the JPEG, binary in, binary out
          image-json     BYTES [1]: the JPEG as a base64 string in JSON (what KServe can take)
        and OUT_DIR/input.json (the model's input name and sample shape).
    serve_client.py check URL MODEL DIR KIND OUT.npy
        posts DIR/KIND.body once; exits 1 unless the answer is 200 with a "probabilities" output of
        shape [1, classes]; saves that output to OUT.npy.
    serve_client.py compare A.npy B.npy
        prints the largest absolute difference between two answers.
    serve_client.py alone ONNX THREADS SECONDS
        the model alone at batch 1 through Python onnxruntime with the session options of `runtime
        serve` (intra-op spinning off), on fixed random inputs: prints {"p50_ms"} as JSON.
    serve_client.py summary HEY.csv
        reads hey's per-request CSV, exits 1 on any non-200 answer, prints
        {"requests", "seconds", "rps", "p50_ms", "p99_ms"} as JSON.
"""
import base64
import csv
import http.client
import json
import os
import struct
import sys
import urllib.parse

import numpy as np


def input_spec(onnx_path):
    """The first input's name and sample shape, from the ONNX file (onnxruntime is in the .venv)."""
    import onnxruntime as ort

    s = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    i = s.get_inputs()[0]
    return i.name, [int(d) for d in i.shape[1:]]


def write(out, kind, header, tail=b""):
    h = json.dumps(header, separators=(",", ":")).encode()
    with open(os.path.join(out, f"{kind}.body"), "wb") as f:
        f.write(h + tail)
    with open(os.path.join(out, f"{kind}.len"), "w") as f:
        f.write(str(len(h)) if tail else "")


def bodies(onnx_path, jpeg, out):
    os.makedirs(out, exist_ok=True)
    name, sample = input_spec(onnx_path)
    x = np.random.default_rng(0).uniform(-2, 2, [1] + sample).astype(np.float32)
    binary_out = [{"name": "probabilities", "parameters": {"binary_data": True}}]
    json_out = [{"name": "probabilities", "parameters": {"binary_data": False}}]
    raw = x.tobytes()
    write(out, "tensor-binary", {"id": "1", "inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32", "parameters": {"binary_data_size": len(raw)}}], "outputs": binary_out}, raw)
    write(out, "tensor-json", {"id": "1", "inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}], "outputs": json_out})
    blob = open(jpeg, "rb").read()
    framed = struct.pack("<I", len(blob)) + blob  # Triton's BYTES framing: 4-byte length, then the bytes
    write(out, "image-binary", {"id": "1", "inputs": [{"name": name, "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(framed)}}], "outputs": binary_out}, framed)
    write(out, "image-json", {"id": "1", "inputs": [{"name": name, "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(blob).decode()]}], "outputs": json_out})
    with open(os.path.join(out, "input.json"), "w") as f:
        json.dump({"name": name, "sample": sample}, f)


def post(url, model, body, header_len):
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    headers = {"Content-Type": "application/octet-stream" if header_len else "application/json"}
    if header_len:
        headers["Inference-Header-Content-Length"] = header_len
    c.request("POST", f"/v2/models/{model}/infer", body=body, headers=headers)
    r = c.getresponse()
    data = r.read()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data


def probabilities(headers, data):
    """The "probabilities" output of a v2 answer, JSON or binary."""
    n = int(headers.get("inference-header-content-length", len(data)))
    head = json.loads(data[:n])
    offset = n
    for o in head["outputs"]:
        size = (o.get("parameters") or {}).get("binary_data_size")
        if o["name"] == "probabilities":
            if size is not None:
                return np.frombuffer(data[offset:offset + size], np.float32).reshape(o["shape"])
            return np.asarray(o["data"], np.float32).reshape(o["shape"])
        offset += size or 0
    raise SystemExit(f"no 'probabilities' output in {head}")


def check(url, model, d, kind, out):
    body = open(os.path.join(d, f"{kind}.body"), "rb").read()
    status, headers, data = post(url, model, body, open(os.path.join(d, f"{kind}.len")).read())
    if status != 200:
        try:
            err = json.loads(data)["error"]
        except (ValueError, KeyError, TypeError):
            err = repr(data[:300])
        if len(err) > 200:  # e.g. an error that quotes the request's bytes
            err = f"{err[:70]} [... {len(err) - 170} characters ...] {err[-100:]}"
        print(f"{url} {kind}: HTTP {status}: {err}", file=sys.stderr)
        sys.exit(1)
    p = probabilities(headers, data)
    if p.ndim != 2 or p.shape[0] != 1 or abs(float(p.sum()) - 1) > 1e-3:
        print(f"{url} {kind}: probabilities of shape {p.shape}, sum {p.sum()}", file=sys.stderr)
        sys.exit(1)
    np.save(out, p)


def alone(onnx_path, threads, seconds):
    import time

    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    s = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    i = s.get_inputs()[0]
    x = np.random.default_rng(0).uniform(-2, 2, [1] + [int(d) for d in i.shape[1:]]).astype(np.float32)
    for _ in range(5):
        s.run(None, {i.name: x})
    times, start = [], time.perf_counter()
    while len(times) < 20 or time.perf_counter() - start < float(seconds):
        t = time.perf_counter()
        s.run(None, {i.name: x})
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    print(json.dumps({"p50_ms": times[len(times) // 2]}))


def summary(path):
    rows = []
    with open(path) as f:
        for r in csv.DictReader(f):
            rows.append(r)
    if not rows:
        raise SystemExit(f"{path}: no requests")
    bad = [r["status-code"] for r in rows if r["status-code"] != "200"]
    if bad:
        raise SystemExit(f"{path}: {len(bad)} of {len(rows)} answers were not 200: {sorted(set(bad))}")
    lat = np.array([float(r["response-time"]) for r in rows]) * 1e3
    start = min(float(r["offset"]) for r in rows)
    end = max(float(r["offset"]) + float(r["response-time"]) for r in rows)
    lat.sort()
    q = lambda f: float(lat[min(len(lat), max(1, int(np.ceil(f * len(lat))))) - 1])
    print(json.dumps({"requests": len(rows), "seconds": end - start, "rps": len(rows) / (end - start), "p50_ms": q(0.5), "p99_ms": q(0.99)}))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "bodies":
        bodies(*args)
    elif cmd == "check":
        check(*args)
    elif cmd == "compare":
        a, b = np.load(args[0]), np.load(args[1])
        print(f"{float(np.max(np.abs(a - b))):.2e}")
    elif cmd == "alone":
        alone(*args)
    elif cmd == "summary":
        summary(*args)
    else:
        raise SystemExit(__doc__)
