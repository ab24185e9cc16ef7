"""Independent answers for models/tests/detection_oracles.rs: reads one JSON object of cases on
stdin and prints the answers as JSON. torchvision for priors, anchors, the box coder and the
matchers; ONNX Runtime's own NonMaxSuppression kernel; the TensorFlow Object Detection API's
PascalDetectionEvaluator (the book's mAP) and podm for mAP."""
import builtins
import json
import sys
import types

import numpy as np
import numpy.ma  # noqa: F401  (before the aliases below: numpy.ma breaks if np.bool is Python's bool)

# numpy 2 removed the aliases the TFOD utils still use
np.float = float
np.bool = bool
np.NAN = np.nan
# and Python 2's unicode() (names only pass through it)
builtins.unicode = lambda s, *_: s


def stub(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


def priors(case):
    import torch
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
    from torchvision.models.detection.image_list import ImageList

    g = DefaultBoxGenerator(case["aspect_ratios"], min_ratio=case["min_ratio"], max_ratio=case["max_ratio"],
                            scales=case["scales"], steps=case["steps"], clip=case["clip"])
    h, w = case["image"]
    images = ImageList(torch.zeros(1, 3, h, w), [(h, w)])
    maps = [torch.zeros(1, 1, gh, gw) for gh, gw in case["grids"]]
    return g(images, maps)[0].tolist()


def anchors(case):
    import torch
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.image_list import ImageList

    g = AnchorGenerator(tuple(tuple(s) for s in case["sizes"]), tuple(tuple(r) for r in case["aspect_ratios"]))
    h, w = case["image"]
    images = ImageList(torch.zeros(1, 3, h, w), [(h, w)])
    maps = [torch.zeros(1, 1, gh, gw) for gh, gw in case["grids"]]
    return g(images, maps)[0].tolist()


def coder(case):
    import torch
    from torchvision.models.detection._utils import BoxCoder

    c = BoxCoder(weights=tuple(case["weights"]))
    gt = torch.tensor(case["gt"], dtype=torch.float32)
    prior = torch.tensor(case["priors"], dtype=torch.float32)
    codes = torch.tensor(case["codes"], dtype=torch.float32)
    return {"encoded": c.encode_single(gt, prior).tolist(), "decoded": c.decode_single(codes, prior).tolist()}


def matcher(case):
    import torch
    from torchvision.models.detection._utils import Matcher, SSDMatcher

    iou = torch.tensor(case["iou"], dtype=torch.float32).view(case["num_gt"], -1)
    if case["kind"] == "ssd":
        m = SSDMatcher(case["high"])
    else:
        m = Matcher(case["high"], case["low"], allow_low_quality_matches=case["allow_low_quality"])
    return m(iou).tolist()


def nms(cases):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    node = helper.make_node("NonMaxSuppression", ["boxes", "scores", "max", "iou", "score"], ["selected"])
    graph = helper.make_graph(
        [node], "nms",
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, None, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, None]),
         helper.make_tensor_value_info("max", TensorProto.INT64, [1]),
         helper.make_tensor_value_info("iou", TensorProto.FLOAT, [1]),
         helper.make_tensor_value_info("score", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("selected", TensorProto.INT64, [None, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out = []
    for c in cases:
        # ONNX's box order is [y0, x0, y1, x1]
        boxes = np.array([[b[1], b[0], b[3], b[2]] for b in c["boxes"]], dtype=np.float32)[None]
        feeds = {"boxes": boxes, "scores": np.array(c["scores"], dtype=np.float32)[None, None],
                 "max": np.array([c["max_output"]], dtype=np.int64), "iou": np.array([c["iou"]], dtype=np.float32),
                 "score": np.array([c["score"]], dtype=np.float32)}
        out.append(session.run(None, feeds)[0][:, 2].tolist())
    return out


def tfod_map(case):
    stub("tensorflow")
    stub("object_detection.protos.string_int_label_map_pb2")
    from object_detection.core import standard_fields as fields
    from object_detection.utils import object_detection_evaluation as ode

    k = case["classes"]
    e = ode.PascalDetectionEvaluator([{"id": c, "name": str(c)} for c in range(1, k + 1)])
    for i, img in enumerate(case["images"]):
        gt = np.array([[b[1], b[0], b[3], b[2]] for b in img["gt_boxes"]], dtype=np.float64).reshape(-1, 4)
        e.add_single_ground_truth_image_info(str(i), {
            fields.InputDataFields.groundtruth_boxes: gt,
            fields.InputDataFields.groundtruth_classes: np.array(img["gt_classes"], dtype=int),
            fields.InputDataFields.groundtruth_difficult: np.array(img["gt_difficult"], dtype=bool)})
        det = np.array([[b[1], b[0], b[3], b[2]] for b in img["det_boxes"]], dtype=np.float64).reshape(-1, 4)
        e.add_single_detected_image_info(str(i), {
            fields.DetectionResultFields.detection_boxes: det,
            fields.DetectionResultFields.detection_scores: np.array(img["det_scores"], dtype=np.float64),
            fields.DetectionResultFields.detection_classes: np.array(img["det_classes"], dtype=int)})
    m = e.evaluate()
    # the mean, then one AP per category in id order (their keys hold Python 2 byte-string names)
    values = list(m.values())
    assert len(values) == k + 1, list(m)
    per_class = values[1:]
    clean = lambda v: None if v is None or np.isnan(v) else float(v)
    return {"mean_ap": clean(m["PascalBoxes_Precision/mAP@0.5IOU"]), "per_class": [clean(v) for v in per_class]}


def podm_map(case):
    stub("shapely")
    stub("shapely.geometry", Polygon=object, Point=object)
    from podm.metrics import BoundingBox, get_pascal_voc_metrics

    gold, preds = [], []
    for i, img in enumerate(case["images"]):
        for b, c, d in zip(img["gt_boxes"], img["gt_classes"], img["gt_difficult"]):
            assert not d, "podm has no difficult flag"
            gold.append(BoundingBox.of_bbox(i, c, *b))
        for b, c, s in zip(img["det_boxes"], img["det_classes"], img["det_scores"]):
            preds.append(BoundingBox.of_bbox(i, c, *b, score=s))
    r = get_pascal_voc_metrics(gold, preds, 0.5)
    per_class = [float(r[c].ap) if c in r and r[c].num_groundtruth > 0 else None for c in range(1, case["classes"] + 1)]
    return {"per_class": per_class}


def coco_map(case):
    """pycocotools' COCOeval on the same images: box IoU, area "all", 100 detections; a difficult
    object is a crowd (COCO's way to ignore one)."""
    import contextlib, io
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    xywh = lambda b: [float(b[0]), float(b[1]), float(b[2]) - float(b[0]), float(b[3]) - float(b[1])]
    images, anns, dets = [], [], []
    for i, img in enumerate(case["images"]):
        images.append({"id": i + 1})
        for b, c, d in zip(img["gt_boxes"], img["gt_classes"], img["gt_difficult"]):
            box = xywh(b)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": c, "bbox": box, "area": box[2] * box[3], "iscrowd": int(d)})
        for b, c, s in zip(img["det_boxes"], img["det_classes"], img["det_scores"]):
            dets.append({"image_id": i + 1, "category_id": c, "bbox": xywh(b), "score": float(s)})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": c} for c in range(1, case["classes"] + 1)]}
        gt.createIndex()
        e = COCOeval(gt, gt.loadRes(dets), "bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
    p = e.eval["precision"][:, :, :, 0, -1]  # [T, R, K] at area "all", 100 detections
    per_class = [float(np.mean(p[:, :, k][p[:, :, k] > -1])) if (p[:, :, k] > -1).any() else None for k in range(p.shape[2])]
    return {"ap": float(e.stats[0]), "ap50": float(e.stats[1]), "ap75": float(e.stats[2]), "per_class": per_class,
            "iou_thresholds": e.params.iouThrs.tolist()}


def main():
    cases = json.load(sys.stdin)
    out = {
        "priors": [priors(c) for c in cases.get("priors", [])],
        "anchors": [anchors(c) for c in cases.get("anchors", [])],
        "coder": [coder(c) for c in cases.get("coder", [])],
        "matcher": [matcher(c) for c in cases.get("matcher", [])],
        "nms": nms(cases["nms"]) if cases.get("nms") else [],
        "tfod_map": [tfod_map(c) for c in cases.get("map", [])],
        "coco_map": [coco_map(c) for c in cases.get("map", [])],
        # podm has no difficult flag: None for cases that use it
        "podm_map": [None if any(any(i["gt_difficult"]) for i in c["images"]) else podm_map(c) for c in cases.get("map", [])],
    }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
