"""torchvision's SSD training targets and loss for the cases on stdin (JSON), answers on stdout.

Each case: priors [P, 4] (pixels), per image the ground-truth boxes and 1-based labels, the head's
logits [N, P, C] and box codes [N, P, 4]. The answer: every prior's class (0 background) from
torchvision's SSDMatcher, the encoded targets of the matched priors, and SSD.compute_loss's two parts
(torchvision.models.detection.ssd.SSD.compute_loss called on an object holding only what it reads).
"""
import json
import sys
import types

import torch
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.ssd import SSD
from torchvision.ops import boxes as box_ops


def answer(case):
    priors = torch.tensor(case["priors"], dtype=torch.float32)
    logits = torch.tensor(case["logits"], dtype=torch.float32)
    codes = torch.tensor(case["codes"], dtype=torch.float32)
    matcher = det_utils.SSDMatcher(case["match_iou"])
    coder = det_utils.BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    fake = types.SimpleNamespace(box_coder=coder, neg_to_pos_ratio=case["neg_pos"])
    targets, matched, labels_out, codes_out = [], [], [], []
    for img in case["images"]:
        boxes = torch.tensor(img["boxes"], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor(img["labels"], dtype=torch.int64)
        targets.append({"boxes": boxes, "labels": labels})
        if boxes.numel() == 0:
            m = torch.full((priors.shape[0],), -1, dtype=torch.int64)
        else:
            m = matcher(box_ops.box_iou(boxes, priors))
        matched.append(m)
        fg = m >= 0
        cls = torch.zeros(priors.shape[0], dtype=torch.int64)
        cls[fg] = labels[m[fg]]
        labels_out.append(cls.tolist())
        enc = torch.zeros(priors.shape[0], 4)
        if fg.any():
            enc[fg] = coder.encode_single(boxes[m[fg]], priors[fg])
        codes_out.append(enc.tolist())
    head = {"bbox_regression": codes, "cls_logits": logits}
    loss = SSD.compute_loss(fake, targets, head, [priors] * len(targets), matched)
    return {
        "labels": labels_out,
        "codes": codes_out,
        "box_loss": loss["bbox_regression"].item(),
        "class_loss": loss["classification"].item(),
    }


cases = json.load(sys.stdin)
json.dump([answer(c) for c in cases], sys.stdout)
