"""Drives a running `runtime serve` with Triton's own clients (tritonclient HTTP and gRPC), as a user would,
and checks every answer against independent oracles: Python onnxruntime on the same ONNX file for tensors,
and `runtime predict` (its JSON lines) for encoded images. Prints a JSON summary; exits 1 with the reason
on the first mismatch.

usage: serve_client.py HTTP_ADDR GRPC_ADDR MODEL ONNX_FILE PREDICT_JSONL IMAGE...
"""
import json
import sys

import numpy as np
import onnxruntime as ort
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

http_addr, grpc_addr, model, onnx_file, predict_jsonl, *images = sys.argv[1:]
summary = {}


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


def max_diff(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    check(a.shape == b.shape, f"shapes {a.shape} vs {b.shape}")
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def hin(name, arr, datatype="FP32", binary=True):
    i = httpclient.InferInput(name, list(arr.shape), datatype)
    i.set_data_from_numpy(arr, binary_data=binary)
    return i


def gin(name, arr, datatype="FP32"):
    i = grpcclient.InferInput(name, list(arr.shape), datatype)
    i.set_data_from_numpy(arr)
    return i


h = httpclient.InferenceServerClient(http_addr)
g = grpcclient.InferenceServerClient(grpc_addr)

# ------------------------------------------------------------------ health, metadata, config
check(h.is_server_live() and h.is_server_ready(), "HTTP live/ready")
check(g.is_server_live() and g.is_server_ready(), "gRPC live/ready")
check(h.is_model_ready(model) and g.is_model_ready(model), "model ready")
check(not h.is_model_ready("no-such-model"), "HTTP: an unknown model is not ready")
sm = h.get_server_metadata()
check(sm["name"] == "dlcv" and "classification" in sm["extensions"] and "binary_tensor_data" in sm["extensions"], f"server metadata {sm}")
gsm = g.get_server_metadata(as_json=True)
check(gsm["name"] == "dlcv" and gsm["extensions"] == sm["extensions"], f"gRPC server metadata {gsm}")
md = h.get_model_metadata(model)
gmd = g.get_model_metadata(model, as_json=True)
check(md["name"] == model and md["platform"] == "onnxruntime_onnx", f"model metadata {md}")
inp, out = md["inputs"][0], next(o for o in md["outputs"] if o["name"] == "probabilities")
check(inp["datatype"] == "FP32" and inp["shape"][0] == -1, f"input metadata {inp}")
check([i["name"] for i in gmd["inputs"]] == [inp["name"]] and [int(d) for d in gmd["inputs"][0]["shape"]] == inp["shape"], f"gRPC metadata {gmd}")
cfg = h.get_model_config(model)
gcfg = g.get_model_config(model, as_json=True)["config"]
check(cfg["name"] == model and cfg["max_batch_size"] >= 4 and cfg["platform"] == "onnxruntime_onnx", f"config {cfg}")
check(gcfg["name"] == model and int(gcfg["max_batch_size"]) == cfg["max_batch_size"], f"gRPC config {gcfg}")
check([int(d) for d in cfg["input"][0]["dims"]] == inp["shape"][1:], f"config dims {cfg['input'][0]} vs metadata {inp}")
summary["config"] = {"max_batch_size": cfg["max_batch_size"], "input": inp}

# ------------------------------------------------------------------ tensors: binary, JSON, gRPC raw
session = ort.InferenceSession(onnx_file, providers=["CPUExecutionProvider"])
rng = np.random.default_rng(5)
x = rng.uniform(-2, 2, size=[3] + inp["shape"][1:]).astype(np.float32)
oracle = session.run(["probabilities"], {session.get_inputs()[0].name: x})[0]
classes = oracle.shape[1]


def http_infer(binary):
    o = httpclient.InferRequestedOutput("probabilities", binary_data=binary)
    r = h.infer(model, [hin(inp["name"], x, binary=binary)], outputs=[o], request_id="req-7")
    check(r.get_response()["id"] == "req-7", f"request id: {r.get_response()}")
    return r.as_numpy("probabilities")


binary = http_infer(True)
as_json = http_infer(False)
gi = gin(inp["name"], x)
gres = g.infer(model, [gi], outputs=[grpcclient.InferRequestedOutput("probabilities")])
via_grpc = gres.as_numpy("probabilities")
summary["tensor_max_abs_diff"] = {
    "http_binary": max_diff(binary, oracle),
    "http_json": max_diff(as_json, oracle),
    "grpc": max_diff(via_grpc, oracle),
}
for k, d in summary["tensor_max_abs_diff"].items():
    check(d <= 1e-6, f"{k}: max |diff| {d} against onnxruntime")
# every output when none is named, and an explicit version
allout = h.infer(model, [hin(inp["name"], x)], model_version="1")
check(max_diff(allout.as_numpy("probabilities"), oracle) <= 1e-6, "all outputs, version 1")

# ------------------------------------------------------------------ classification extension
k = 2
hc = h.infer(model, [hin(inp["name"], x)],
             outputs=[httpclient.InferRequestedOutput("probabilities", class_count=k)]).as_numpy("probabilities")
gc = g.infer(model, [gi], outputs=[grpcclient.InferRequestedOutput("probabilities", class_count=k)]).as_numpy("probabilities")
check(hc.shape == (3, k) and gc.shape == (3, k), f"classification shapes {hc.shape} {gc.shape}")
for row in range(3):
    order = np.argsort(-oracle[row], kind="stable")[:k]
    for j in range(k):
        for got in (hc[row][j], gc[row][j]):
            score, index, label = got.decode().split(":", 2)
            check(int(index) == int(order[j]) and abs(float(score) - oracle[row][order[j]]) <= 1e-6, f"classification {got} vs class {order[j]} p={oracle[row][order[j]]}")
            check(label != "", f"classification {got} has no label")
summary["classification_example"] = hc[0][0].decode()

# ------------------------------------------------------------------ encoded images in
expected = [json.loads(line) for line in open(predict_jsonl)]
blobs = np.array([open(p, "rb").read() for p in images], dtype=np.object_)
hi = hin(inp["name"], blobs, "BYTES")
h_img = h.infer(model, [hi], outputs=[httpclient.InferRequestedOutput("probabilities")]).as_numpy("probabilities")
g_img = g.infer(model, [gin(inp["name"], blobs, "BYTES")], outputs=[grpcclient.InferRequestedOutput("probabilities")]).as_numpy("probabilities")
label_index = {}
for s in h.infer(model, [hi], outputs=[httpclient.InferRequestedOutput("probabilities", class_count=classes)]).as_numpy("probabilities")[0]:
    _, index, label = s.decode().split(":", 2)
    label_index[label] = int(index)
worst = 0.0
for n, e in enumerate(expected):
    for label, p in e["top"]:
        for probs in (h_img, g_img):
            worst = max(worst, abs(float(probs[n][label_index[label]]) - p))
summary["images"] = {"count": len(images), "max_abs_diff_vs_runtime_predict": worst}
check(worst <= 1e-6, f"encoded images: max |diff| {worst} against runtime predict")

# ------------------------------------------------------------------ errors reach the client as errors
try:
    h.infer("no-such-model", [hi])
    check(False, "HTTP: an unknown model answered")
except Exception as ex:  # tritonclient raises InferenceServerException
    check("unknown model" in str(ex), f"HTTP unknown model: {ex}")
try:
    g.infer(model, [gin(inp["name"], np.zeros([1, 2], np.float32))])
    check(False, "gRPC: a wrong shape answered")
except Exception as ex:
    check("shape" in str(ex), f"gRPC wrong shape: {ex}")

# ------------------------------------------------------------------ statistics
st = h.get_inference_statistics(model)["model_stats"][0]
gst = g.get_inference_statistics(model, as_json=True)["model_stats"][0]
ok = st["inference_stats"]["success"]["count"]
# nine inferences above succeeded (3 rows each); the wrong shape over gRPC failed; the unknown model is no model's
check(ok == 9 and st["inference_stats"]["fail"]["count"] == 1, f"stats: {st['inference_stats']}")
check(st["inference_count"] == 27 and 1 <= st["execution_count"] <= 9, f"stats counts {st}")
check(st["inference_stats"]["queue"]["count"] == 9 and st["inference_stats"]["compute_infer"]["ns"] > 0, f"stats durations {st}")
check(int(gst["inference_stats"]["success"]["count"]) >= ok, f"gRPC stats {gst['inference_stats']}")
check(any(b["batch_size"] == 3 for b in st["batch_stats"]), f"batch stats {st['batch_stats']}")
summary["stats"] = {"success": ok, "fail": st["inference_stats"]["fail"]["count"], "executions": st["execution_count"]}
print(json.dumps(summary))
