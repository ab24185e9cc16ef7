"""Python baseline for bench/edge_bench.sh: the book's real-time emotion detector (§6.6) written the way
its Python code is, with cv2 and onnxruntime, on the same video and model as `edge-demo emotion`:
every frame read with cv2.VideoCapture, a grey copy downscaled to 300 px wide for the Haar cascade
(scaleFactor 1.1, minNeighbors 5, minSize 30x30), the largest face cropped from the grey frame, resized
to the model input, scaled by (x - 127.5) / 127.5, run, then the box, the label and a probability panel
drawn beside the frame and written to an mp4 file. Prints frames and FPS as JSON."""
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
a = p.parse_args()
labels = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]

sess = ort.InferenceSession(a.model, providers=["CPUExecutionProvider"])
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
    rects = det.detectMultiScale(small, scaleFactor=1.1, minNeighbors=5, minSize=(30, 30))
    panel = np.full((frame.shape[0], 260, 3), 30, np.uint8)
    if len(rects):
        x, y, w, h = (int(v / scale) for v in max(rects, key=lambda r: r[2] * r[3]))
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
