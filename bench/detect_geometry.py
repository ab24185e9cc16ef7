"""The Python side of bench/detect_bench.sh.

`gen OUT.json`: seeded inputs: an SSD300-sized NMS problem (8732 boxes around 40 objects, 21 classes,
softmax-like scores) and a mAP problem (500 images, 20 classes, ~8 objects and ~60 detections each).
`run OUT.json ITERS`: times torchvision's batched_nms on the same boxes (score filter per class, then
one call with class offsets, then the per-class cap) and the TFOD PascalDetectionEvaluator on the
same images; prints one JSON line."""
import json
import sys
import time

import numpy as np


def gen(path):
    r = np.random.default_rng(2026)
    objects = r.uniform(0, 250, (40, 2))
    sizes = r.uniform(20, 120, (40, 2))
    centre = objects[r.integers(0, 40, 8732)] + r.normal(0, 8, (8732, 2))
    wh = sizes[r.integers(0, 40, 8732)] * r.uniform(0.7, 1.3, (8732, 2))
    boxes = np.concatenate([centre - wh / 2, centre + wh / 2], 1).astype(np.float32)
    logits = r.normal(0, 1.5, (8732, 21)).astype(np.float32)
    logits[:, 0] += 8  # most boxes are background, as a trained SSD's are
    e = np.exp(logits - logits.max(1, keepdims=True))
    scores = (e / e.sum(1, keepdims=True)).T.astype(np.float32)
    images = []
    for _ in range(500):
        n = int(r.integers(1, 16))
        gt = r.uniform(0, 400, (n, 2))
        gt = np.concatenate([gt, gt + r.uniform(10, 100, (n, 2))], 1)
        gc = r.integers(1, 21, n)
        k = int(r.integers(20, 100))
        src = r.integers(0, n, k)
        det = gt[src] + r.normal(0, 6, (k, 4))
        dc = np.where(r.uniform(size=k) < 0.8, gc[src], r.integers(1, 21, k))
        # float32 values (what the Rust side reads), boxes with positive sides
        det = np.concatenate([np.minimum(det[:, :2], det[:, 2:] - 1), det[:, 2:]], 1)
        f32 = lambda a: a.astype(np.float32).astype(np.float64).tolist()
        images.append({"gt_boxes": f32(gt), "gt_classes": gc.tolist(), "det_boxes": f32(det),
                       "det_classes": dc.tolist(), "det_scores": f32(r.uniform(size=k))})
    json.dump({"nms": {"boxes": boxes.tolist(), "scores": scores.tolist(), "iou": 0.45, "score": 0.01, "max_per_class": 200},
               "map": {"classes": 20, "images": images}}, open(path, "w"))


def run(path, iters):
    import torch
    from torchvision.ops import batched_nms

    sys.path.insert(0, __file__.rsplit("/", 2)[0] + "/models/tests/python")
    import detection_oracle  # noqa: F401  (numpy aliases and stubs for the TFOD utils)
    detection_oracle.stub("tensorflow")
    detection_oracle.stub("object_detection.protos.string_int_label_map_pb2")
    from object_detection.core import standard_fields as fields
    from object_detection.utils import object_detection_evaluation as ode

    d = json.load(open(path))
    n = d["nms"]
    boxes = torch.tensor(n["boxes"])
    scores = torch.tensor(n["scores"])
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        kept = []
        cls, idx = torch.nonzero(scores[1:] > n["score"], as_tuple=True)
        keep = batched_nms(boxes[idx], scores[1:][cls, idx], cls, n["iou"])
        k_cls, k_idx = cls[keep], idx[keep]
        for c in range(scores.shape[0] - 1):
            sel = k_idx[k_cls == c][: n["max_per_class"]]
            kept.extend((c + 1, int(i)) for i in sel)
        times.append((time.perf_counter() - t0) * 1e3)
    nms_ms = sorted(times)[len(times) // 2]
    kept.sort()
    h = 0
    for c, i in kept:
        h = (h * 1_000_003 + c * 1_000_000 + i) % (1 << 64)
    m = d["map"]
    prepared = []
    for im in m["images"]:
        yx = lambda b: np.array([[x[1], x[0], x[3], x[2]] for x in b], dtype=np.float64).reshape(-1, 4)
        prepared.append((yx(im["gt_boxes"]), np.array(im["gt_classes"]), yx(im["det_boxes"]), np.array(im["det_scores"]), np.array(im["det_classes"])))
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        e = ode.PascalDetectionEvaluator([{"id": c, "name": str(c)} for c in range(1, m["classes"] + 1)])
        for i, (gb, gc, db, ds, dc) in enumerate(prepared):
            e.add_single_ground_truth_image_info(str(i), {fields.InputDataFields.groundtruth_boxes: gb,
                                                          fields.InputDataFields.groundtruth_classes: gc})
            e.add_single_detected_image_info(str(i), {fields.DetectionResultFields.detection_boxes: db,
                                                      fields.DetectionResultFields.detection_scores: ds,
                                                      fields.DetectionResultFields.detection_classes: dc})
        mean_ap = float(list(e.evaluate().values())[0])
        times.append((time.perf_counter() - t0) * 1e3)
    print(json.dumps({"nms_ms": nms_ms, "nms_kept": len(kept), "nms_kept_hash": h, "map_ms": sorted(times)[len(times) // 2],
                      "map": mean_ap, "torch_threads": torch.get_num_threads()}))


if __name__ == "__main__":
    if sys.argv[1] == "gen":
        gen(sys.argv[2])
    else:
        run(sys.argv[2], int(sys.argv[3]))
