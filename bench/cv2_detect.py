"""Python peer of `edge-demo detect` (bench/edge_detect_bench.sh, and the oracle of
tests/tests/detect_video.rs): the book's chapter-17 video loop written the way its Python code is,
with cv2 and onnxruntime, for a detector in the TFOD export contract (uint8 [N, H, W, 3] RGB in,
normalised [ymin, xmin, ymax, xmax] out): each frame read with cv2.VideoCapture, resized to SIZE x SIZE
(INTER_LINEAR), BGR -> RGB, run, the boxes at --min-score and above scaled to the frame, drawn with
label and score, and the frame written to a video. Prints frames and FPS as JSON; --json writes one
line per frame with the detections, as edge-demo does."""
import argparse, json, time

import cv2
import numpy as np
import onnxruntime as ort

p = argparse.ArgumentParser()
p.add_argument("video")
p.add_argument("model")
p.add_argument("--output", help="annotated video (mp4v)")
p.add_argument("--json", help="JSON lines, one per frame")
p.add_argument("--size", type=int, default=300)
p.add_argument("--min-score", type=float, default=0.5)
p.add_argument("--max-frames", type=int, default=0)
p.add_argument("--label", default="person")
a = p.parse_args()

sess = ort.InferenceSession(a.model, providers=["CPUExecutionProvider"])
name = sess.get_inputs()[0].name
cap = cv2.VideoCapture(a.video)
writer, frames, objects = None, 0, 0
lines = open(a.json, "w") if a.json else None
start = time.perf_counter()
while not a.max_frames or frames < a.max_frames:
    ok, frame = cap.read()
    if not ok:
        break
    h, w = frame.shape[:2]
    x = cv2.cvtColor(cv2.resize(frame, (a.size, a.size), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB)
    boxes, scores, classes, num = sess.run(None, {name: x[None]})
    dets = []
    for j in range(int(num[0])):
        if scores[0, j] < a.min_score:
            continue
        y0, x0, y1, x1 = boxes[0, j]
        box = [float(x0 * w), float(y0 * h), float(x1 * w), float(y1 * h)]
        dets.append(dict(label=a.label, **{"class": int(classes[0, j])}, score=float(scores[0, j]), box=box))
        p0, p1 = (round(box[0]), round(box[1])), (round(box[2]), round(box[3]))
        cv2.rectangle(frame, p0, p1, (75, 180, 60), 2)
        cv2.putText(frame, f"{a.label}: {scores[0, j]:.2f}", (p0[0], max(14, p0[1] - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1)
    objects += len(dets)
    if lines:
        lines.write(json.dumps(dict(frame=frames, objects=len(dets), detections=dets)) + "\n")
    if a.output:
        if writer is None:
            writer = cv2.VideoWriter(a.output, cv2.VideoWriter_fourcc(*"mp4v"), 25, (w, h))
        writer.write(frame)
    frames += 1
if writer is not None:
    writer.release()
s = time.perf_counter() - start
print(json.dumps(dict(frames=frames, seconds=s, fps=frames / s, objects_per_frame=objects / max(frames, 1))))
