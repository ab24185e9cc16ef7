"""Python baseline for bench/edge_bench.sh: the book's real-time emotion detector (§6.6) written the way
its Python code is, with cv2 and onnxruntime, on the same video and model as `edge-demo emotion`:
every frame read with cv2.VideoCapture, a grey copy downscaled to 300 px wide for the Haar cascade
(scaleFactor 1.1, minNeighbors 5, minSize 30x30), the largest face cropped from the grey frame, resized
to the model input, scaled by (x - 127.5) / 127.5, run, then the box, the label and a probability panel
drawn beside the frame and written to an mp4 file. Prints frames and FPS as JSON.

With --blazeface MODEL the faces come from MediaPipe's BlazeFace instead, written the way a Python user
would (numpy, after MediaPipe's calculators): the frame letterboxed into the model's square with
cv2.resize (INTER_AREA) and cv2.copyMakeBorder (centred, black), BGR -> RGB, scaled to [-1, 1], run with
onnxruntime, decoded against MediaPipe's SSD anchors, sigmoid scores at --face-threshold and above,
weighted NMS at IoU 0.3; then the same largest-face crop. --json writes each frame's faces (box and
score) for the parity test."""
import argparse, json, time

import cv2
import numpy as np
import onnxruntime as ort

p = argparse.ArgumentParser()
p.add_argument("video")
p.add_argument("model")
p.add_argument("--cascade", default="/usr/share/opencv4/haarcascades/haarcascade_frontalface_default.xml")
p.add_argument("--output", required=True)
p.add_argument("--size", type=int, default=64)
p.add_argument("--blazeface", help="a BlazeFace ONNX model (short range 128 px or full range 192 px)")
p.add_argument("--face-threshold", type=float, default=0.5)
p.add_argument("--json", help="JSON lines, one per frame, with the faces found")
a = p.parse_args()
labels = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]

sess = ort.InferenceSession(a.model, providers=["CPUExecutionProvider"])


def anchors(size, strides, two_per_layer):
    # MediaPipe's SsdAnchorsCalculator with fixed unit anchors: layers of one stride share a grid
    out, i = [], 0
    while i < len(strides):
        j, per_cell = i, 0
        while j < len(strides) and strides[j] == strides[i]:
            j, per_cell = j + 1, per_cell + (2 if two_per_layer else 1)
        g = size // strides[i]
        ys, xs = np.meshgrid((np.arange(g) + 0.5) / g, (np.arange(g) + 0.5) / g, indexing="ij")
        out.append(np.repeat(np.stack([xs.ravel(), ys.ravel()], 1), per_cell, axis=0))
        i = j
    return np.concatenate(out).astype(np.float32)


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class BlazeFace:
    def __init__(self, path, threshold):
        self.sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.input = self.sess.get_inputs()[0].name
        self.size = self.sess.get_inputs()[0].shape[1]
        self.anchors = anchors(128, [8, 16, 16, 16], True) if self.size == 128 else anchors(192, [4], False)
        self.threshold = threshold

    def __call__(self, frame):
        h, w = frame.shape[:2]
        s = self.size
        scale = min(s / w, s / h)
        iw, ih = min(s, max(1, round(w * scale))), min(s, max(1, round(h * scale)))
        ox, oy = (s - iw) // 2, (s - ih) // 2
        small = cv2.resize(frame, (iw, ih), interpolation=cv2.INTER_AREA)
        square = cv2.copyMakeBorder(small, oy, s - ih - oy, ox, s - iw - ox, cv2.BORDER_CONSTANT, value=0)
        x = cv2.cvtColor(square, cv2.COLOR_BGR2RGB).astype(np.float32) / 127.5 - 1.0
        outs = self.sess.run(None, {self.input: x[None]})
        reg, logits = (outs[0][0], outs[1][0, :, 0]) if outs[0].shape[-1] == 16 else (outs[1][0], outs[0][0, :, 0])
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -100, 100)))
        keep = np.nonzero(scores >= self.threshold)[0]
        a = self.anchors[keep] * s
        r = reg[keep]
        cx, cy, bw, bh = r[:, 0] + a[:, 0], r[:, 1] + a[:, 1], r[:, 2], r[:, 3]
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
        sc = scores[keep]
        ok = (bw > 0) & (bh > 0)
        boxes, sc = boxes[ok], sc[ok]
        # MediaPipe's weighted NMS: the best left absorbs what overlaps it, score-weighted
        order = list(np.argsort(-sc, kind="stable"))
        faces = []
        while order:
            lead = order[0]
            cluster = [i for i in order if i == lead or iou(boxes[i], boxes[lead]) > 0.3]
            order = [i for i in order if i not in cluster]
            wts = sc[cluster] / sc[cluster].sum()
            b = (boxes[cluster] * wts[:, None]).sum(0)
            # back through the letterbox to the frame
            b = [(b[0] - ox) / scale, (b[1] - oy) / scale, (b[2] - ox) / scale, (b[3] - oy) / scale]
            x0, y0 = round(max(b[0], 0.0)), round(max(b[1], 0.0))
            x1, y1 = round(min(b[2], w)), round(min(b[3], h))
            faces.append((x0, y0, max(x1 - x0, 1), max(y1 - y0, 1), float(sc[lead])))
        return faces


blaze = BlazeFace(a.blazeface, a.face_threshold) if a.blazeface else None
lines = open(a.json, "w") if a.json else None
name = sess.get_inputs()[0].name
det = cv2.CascadeClassifier(a.cascade)
cap = cv2.VideoCapture(a.video)
writer, frames, happy = None, 0, 0
start = time.perf_counter()
while True:
    ok, frame = cap.read()
    if not ok:
        break
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    scale = min(1.0, 300 / gray.shape[1])
    small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else gray
    if blaze is None:
        rects = [tuple(int(v / scale) for v in r) + (1.0,) for r in det.detectMultiScale(small, scaleFactor=1.1, minNeighbors=5, minSize=(30, 30))]
    else:
        rects = blaze(frame)
    if lines:
        lines.write(json.dumps(dict(frame=frames, faces=[dict(box=list(r[:4]), score=r[4]) for r in rects])) + "\n")
    panel = np.full((frame.shape[0], 260, 3), 30, np.uint8)
    if len(rects):
        x, y, w, h = max(rects, key=lambda r: r[2] * r[3])[:4]
        roi = cv2.resize(gray[y:y + h, x:x + w], (a.size, a.size)).astype(np.float32)
        probs = sess.run(None, {name: ((roi - 127.5) / 127.5)[None, :, :, None]})[0][0]
        best = int(np.argmax(probs))
        happy += labels[best] == "happy"
        cv2.rectangle(frame, (x, y), (x + w, y + h), (0, 200, 0), 2)
        cv2.putText(frame, f"{labels[best]}: {probs[best] * 100:.0f}%", (x, max(14, y - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1)
        for i, (l, pr) in enumerate(zip(labels, probs)):
            cv2.rectangle(panel, (5, 5 + i * 35 + 2), (5 + int(250 * pr), 5 + i * 35 + 31), (0, 200, 0) if i == best else (160, 100, 40), -1)
            cv2.putText(panel, f"{l}: {pr * 100:.1f}%", (10, 5 + i * 35 + 27), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
    out = np.hstack([frame, panel])
    if writer is None:
        writer = cv2.VideoWriter(a.output, cv2.VideoWriter_fourcc(*"mp4v"), 25, (out.shape[1], out.shape[0]))
    writer.write(out)
    frames += 1
writer.release()
s = time.perf_counter() - start
print(json.dumps(dict(frames=frames, seconds=s, fps=frames / s, happy_frames=happy)))
