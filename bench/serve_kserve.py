"""The baseline server of bench/serve_bench.sh: KServe's Python model server (kserve 0.21) serving one of
our ONNX files with Python onnxruntime, over the Open Inference Protocol v2 (REST: /v2/models/NAME/infer,
JSON or Triton's binary tensor extension), the way a KServe user writes a custom model:

- an FP32 input tensor is run as it comes;
- a BYTES input of shape [N] holds encoded images (JPEG/PNG): each element is decoded with PIL and brought
  to the model's input the way the file's dlcv.* metadata says (channels, stretch or shorter side then
  centre crop, (x - mean) / std, NCHW or NHWC), then the batch is run. Elements come as raw bytes, or as
  base64 strings when the request is JSON (KServe 0.21 turns every binary input into JSON data on
  arrival, which a non-UTF-8 BYTES element cannot survive: it answers HTTP 500 "Failed to encode ...
  using UTF-8"; base64 in JSON is then what a KServe user sends).

Decoding and onnxruntime run in a worker thread (--workers of them, default 1: one session run at a time,
as our server's one instance), so that the event loop goes on parsing requests meanwhile; onnxruntime
releases the GIL. The session's intra-op threads do not spin between runs (--spin 0), as in `runtime
serve`, so that both servers run the model with the same ONNX Runtime options (--spin 1: onnxruntime's
default). Latency logging and the access log are off: each costs a log line per request.

    python bench/serve_kserve.py --model FILE.onnx --name NAME --port P --threads T [--workers W] [--spin 0|1]

Loads the model, prints "KServe listening on 127.0.0.1:P" and starts the server (ready when
/v2/models/NAME/ready answers 200); stops on SIGTERM/SIGINT.
"""
import argparse
import asyncio
import base64
import io
import json
import logging
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--name", required=True)
p.add_argument("--port", type=int, required=True)
p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")
p.add_argument("--workers", type=int, default=1, help="threads that decode and run the model (0: in the event loop)")
p.add_argument("--spin", type=int, choices=(0, 1), default=0,
               help="onnxruntime intra-op spinning between runs (0: off, as runtime serve's sessions; 1: on, its default)")
a, rest = p.parse_known_args()
# kserve parses sys.argv at import: leave it only what it knows
sys.argv = [sys.argv[0]] + rest

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from PIL import Image  # noqa: E402
import uvicorn  # noqa: E402

import kserve  # noqa: E402
from kserve import InferOutput, InferRequest, InferResponse  # noqa: E402
from kserve.errors import InvalidInput  # noqa: E402


class Preprocess:
    """The file's dlcv.* metadata, as runtime/src/preprocess.rs reads it."""

    def __init__(self, meta):
        w, h = (int(v) for v in meta["dlcv.input_size"].split("x"))
        self.w, self.h = w, h
        self.c = int(meta.get("dlcv.input_channels", "3"))
        self.layout = meta.get("dlcv.layout", "nchw")
        self.crop = meta.get("dlcv.crop", "center")
        self.short = int(meta.get("dlcv.resize_short_side", "0"))
        mean = np.array(json.loads(meta.get("dlcv.mean", "[0]")), np.float32)
        std = np.array(json.loads(meta.get("dlcv.std", "[1]")), np.float32)
        self.mean = np.broadcast_to(mean, (self.c,)).astype(np.float32)
        self.std = np.broadcast_to(std, (self.c,)).astype(np.float32)

    def __call__(self, blob):
        im = Image.open(io.BytesIO(blob)).convert("L" if self.c == 1 else "RGB")
        if self.crop == "stretch":
            im = im.resize((self.w, self.h), Image.BILINEAR)
        else:
            iw, ih = im.size
            if self.short and min(iw, ih) > self.short:
                s = self.short / min(iw, ih)
                im = im.resize((round(iw * s), round(ih * s)), Image.BICUBIC)
                iw, ih = im.size
            if iw < self.w or ih < self.h:  # too small for the crop: scale up to cover it
                s = max(self.w / iw, self.h / ih)
                im = im.resize((max(self.w, round(iw * s)), max(self.h, round(ih * s))), Image.BICUBIC)
                iw, ih = im.size
            x0, y0 = (iw - self.w) // 2, (ih - self.h) // 2
            im = im.crop((x0, y0, x0 + self.w, y0 + self.h))
        x = np.asarray(im, np.float32).reshape(self.h, self.w, self.c)
        x = (x - self.mean) / self.std
        return x if self.layout == "nhwc" else x.transpose(2, 0, 1)


class OnnxModel(kserve.Model):
    def __init__(self, name, path, threads, workers, spin):
        super().__init__(name)
        self.path, self.threads, self.spin = path, threads, spin
        self.pool = ThreadPoolExecutor(max_workers=workers) if workers > 0 else None
        self.load()

    def load(self):
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.add_session_config_entry("session.intra_op.allow_spinning", str(self.spin))
        self.session = ort.InferenceSession(self.path, so, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.pre = Preprocess(self.session.get_modelmeta().custom_metadata_map)
        self.ready = True
        return True

    def _images(self, blobs):
        out = []
        for i, b in enumerate(blobs):
            if isinstance(b, str):
                b = base64.b64decode(b)
            try:
                out.append(self.pre(b))
            except Exception as e:  # PIL's errors: not an image
                raise InvalidInput(f"input element {i} is not a usable image: {e}")
        return np.stack(out)

    def _run(self, x, names):
        if x.dtype == object:  # BYTES: encoded images
            x = self._images(x.reshape(-1))
        return self.session.run(names, {self.input: x})

    async def predict(self, payload: InferRequest, headers=None) -> InferResponse:
        inp = payload.inputs[0]
        if inp.datatype == "BYTES":
            x = np.array(inp.data, dtype=object) if inp._raw_data is None else inp.as_numpy()
        elif inp.datatype == "FP32":
            x = inp.as_numpy()
        else:
            raise InvalidInput(f"input '{inp.name}': FP32 tensors or BYTES encoded images, not {inp.datatype}")
        names = [o.name for o in payload.request_outputs] if payload.request_outputs else self.outputs
        if self.pool is None:
            ys = self._run(x, names)
        else:
            ys = await asyncio.get_running_loop().run_in_executor(self.pool, self._run, x, names)
        outs = [InferOutput(name=n, shape=list(y.shape), datatype="FP32", data=y) for n, y in zip(names, ys)]
        return InferResponse(
            response_id=payload.id or str(uuid.uuid4()),  # kserve 0.21's JSON answer requires one
            model_name=self.name,
            infer_outputs=outs,
            use_binary_outputs=payload.use_binary_outputs,
            requested_outputs=payload.request_outputs,
        )


class LoopbackConfig(uvicorn.Config):
    """kserve 0.21 binds uvicorn to 0.0.0.0 with no option: this benchmark listens on loopback only."""

    def __init__(self, *args, **kwargs):
        kwargs["host"] = "127.0.0.1"
        super().__init__(*args, **kwargs)


if __name__ == "__main__":
    model = OnnxModel(a.name, a.model, a.threads, a.workers, a.spin)
    uvicorn.Config = LoopbackConfig
    server = kserve.ModelServer(http_port=a.port, enable_grpc=False, workers=1, enable_latency_logging=False)
    logging.getLogger("uvicorn.access").disabled = True  # one line per request otherwise
    print(f"KServe listening on 127.0.0.1:{a.port}", flush=True)
    server.start([model])
